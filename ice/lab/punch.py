"""UDP hole punching between two peers of a lab, with plain sockets (no ICE): the lab's own reachability check.
TCP too: :func:`tcp_punch` tries a TCP simultaneous open (RFC 5382, docs/tcp.md).

Both peers learn their server-reflexive address from the embedded STUN server, then send ``punch`` to each
other's address every ``interval`` for ``rounds`` rounds (A first in each round) and answer whatever address
they hear from (the peer-reflexive learning ICE does). :func:`punch_grid` repeats it for every pairing of NAT
presets and compares with :mod:`ice.nat.reach` (docs/lab.md, "How the NATs are built").
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ice.aio.stun import parse_hostport
from ice.lab.mn import Lab
from ice.lab.stun import LabEndpoint, start_stun_server
from ice.nat.behaviour import preset
from ice.nat.reach import direct_possible
from ice.stun.attributes import Address
from ice.stun.transaction import RetransmissionConfig
from ice.topology.registry import topology

_RETRANS = RetransmissionConfig(rto=0.05, rc=3, rm=4)


@dataclass(frozen=True)
class PunchResult:
    a_mapped: Address
    b_mapped: Address
    a_heard_from: frozenset[Address]
    b_heard_from: frozenset[Address]

    @property
    def direct(self) -> bool:
        """Both sides received the other's packets."""
        return bool(self.a_heard_from) and bool(self.b_heard_from)


async def punch(lab: Lab, port: int, a: str = "a", b: str = "b", rounds: int = 6, interval: float = 0.02
                ) -> PunchResult:
    facts = lab.spec.facts
    server = parse_hostport(facts["stun_primary"])
    runner = await start_stun_server(lab)
    ea = await LabEndpoint(lab, a, _RETRANS).open((facts[a], port))
    eb = await LabEndpoint(lab, b, _RETRANS).open((facts[b], port))
    heard: dict[str, set[Address]] = {a: set(), b: set()}

    def listener(name: str, ep: LabEndpoint) -> None:
        def on_datagram(data: bytes, source: Address) -> None:
            if data in (b"punch", b"ack"):
                heard[name].add(source)
                if data == b"punch":
                    ep.send_raw(b"ack", source)

        ep.on_other = on_datagram

    try:
        ma = (await ea.binding(server)).mapped
        mb = (await eb.binding(server)).mapped
        listener(a, ea)
        listener(b, eb)
        for _ in range(rounds):
            ea.send_raw(b"punch", mb)
            eb.send_raw(b"punch", ma)
            await asyncio.sleep(interval)  # pacing, as an agent's Ta: the NATs' reaction is what is measured
    finally:
        ea.close()
        eb.close()
        runner.close()
    return PunchResult(ma, mb, frozenset(heard[a]), frozenset(heard[b]))


DEFAULT_GRID = ("linux-masquerade", "eim-eif", "eim-adf", "eim-apdf", "adm-adf", "adm-apdf", "apdm-apdf")
"""Seven representative presets: the grid ``icelab nat grid`` punches when given none."""


@dataclass(frozen=True)
class GridCell:
    """One pairing of the grid: A behind preset ``a``, B behind preset ``b``."""

    a: str
    b: str
    direct: bool
    """Direct UDP worked, both ways."""
    expected: bool
    """What :func:`ice.nat.reach.direct_possible` says for the two behaviours."""

    @property
    def matches(self) -> bool:
        return self.direct == self.expected

    def as_json(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "direct": self.direct, "expected": self.expected}


def punch_grid(names: Sequence[str]) -> list[GridCell]:
    """Hole-punch every pairing of the presets ``names`` (rows A, columns B, in order) on one reused two_nats lab.

    Needs root (and, from the command line, the lab's isolation); an unknown name is a UserError before any lab
    is built.
    """
    behaviours = [preset(n) for n in names]
    cells = []
    with Lab(topology("two_nats")) as lab:
        for i, (ra, a) in enumerate(zip(names, behaviours, strict=True)):
            for j, (rb, b) in enumerate(zip(names, behaviours, strict=True)):
                lab.set_nat("nat-a", a)
                lab.set_nat("nat-b", b)
                got = asyncio.run(punch(lab, port=42000 + i * len(names) + j)).direct
                cells.append(GridCell(ra, rb, got, direct_possible(a, b)))
    return cells


# ------------------------------------------------------------------------------------------------------- TCP


@dataclass(frozen=True)
class TcpPunchResult:
    connected: bool
    """Both hosts ended up with a connected socket to each other (a TCP simultaneous open)."""
    a_mapped: Address
    b_mapped: Address
    refusals: tuple[str, ...]
    """How each failed attempt ended (``ECONNREFUSED``...), A's then B's."""
    seconds: float


def tcp_punch(lab: Lab, port: int, a: str = "a", b: str = "b", start_b: float = 0.05, retry: float = 0.2,
              deadline: float = 4.0) -> TcpPunchResult:
    """A TCP simultaneous open between hosts ``a`` and ``b`` with kernel sockets, as
    :func:`ice.sim.scenario.run_tcp_pair` does it in the simulation.

    Each host connects from ``port`` (SO_REUSEADDR) to a listener on the STUN host, which sees its
    server-reflexive address, and keeps that connection open; then A connects from the same port to B's address,
    B ``start_b`` later to A's; a refused connect() is tried again ``retry`` after it started (paced: an unpaced
    loop could brute-force a symmetric NAT's random port). It succeeds when both sockets are connected."""
    facts = lab.spec.facts
    server = parse_hostport(facts["stun_primary"])
    socks: list[socket.socket] = []

    def sock(node: str, local: Address | None = None) -> socket.socket:
        with lab.inside(node):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        socks.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: no TIME_WAIT left
        if local is not None:
            s.bind(local)
        return s

    try:
        listener = sock("stun", (server[0], port))
        listener.listen(4)
        listener.settimeout(2)
        mapped: dict[str, Address] = {}
        for peer in (a, b):
            c = sock(peer, (facts[peer], port))
            c.settimeout(2)
            c.connect((server[0], port))
            conn, mapped[peer] = listener.accept()
            socks.append(conn)
        other = {a: b, b: a}
        start = time.monotonic()
        due = {a: start, b: start + start_b}
        pending: dict[str, socket.socket] = {}
        connected: dict[str, socket.socket] = {}
        refusals: list[tuple[str, str]] = []
        while len(connected) < 2 and time.monotonic() < start + deadline:
            now = time.monotonic()
            for peer in (a, b):
                if peer not in pending and peer not in connected and due[peer] <= now:
                    s = sock(peer, (facts[peer], port))
                    s.setblocking(False)
                    s.connect_ex(mapped[other[peer]])
                    pending[peer] = s
                    due[peer] = now + retry
            wake = [due[p] for p in (a, b) if p not in pending and p not in connected]
            timeout = max(0.0, min([*wake, start + deadline]) - time.monotonic())
            _, ready, _ = select.select([], list(pending.values()), [], timeout)
            for peer, s in list(pending.items()):
                if s in ready:
                    del pending[peer]
                    error = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error == 0:
                        connected[peer] = s
                    else:
                        refusals.append((peer, errno.errorcode.get(error, str(error))))
                        s.close()
        return TcpPunchResult(len(connected) == 2, mapped[a], mapped[b],
                              tuple(r for p in (a, b) for q, r in refusals if q == p), time.monotonic() - start)
    finally:
        for s in socks:
            s.close()
