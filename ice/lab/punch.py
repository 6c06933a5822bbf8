"""UDP hole punching between two peers of a lab, with plain sockets (no ICE): the lab's own reachability check.

Both peers learn their server-reflexive address from the embedded STUN server, then send ``punch`` to each
other's address every ``interval`` for ``rounds`` rounds (A first in each round) and answer whatever address
they hear from (the peer-reflexive learning ICE does). :func:`punch_grid` repeats it for every pairing of NAT
presets and compares with :mod:`ice.nat.reach` (docs/lab.md, "How the NATs are built").
"""

from __future__ import annotations

import asyncio
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
