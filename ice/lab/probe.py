"""The conformance probe: build a minimal lab around one NAT and measure it against its declared behaviour.

Topology: client 10.0.0.2 -- NAT (10.0.0.1 | 203.0.113.1) -- STUN server 203.0.113.10 and 203.0.113.11 (RFC 5780).
One process holds the server's sockets and the client's sockets (created in their namespaces) and runs the
embedded STUN server and RFC 5780 discovery on one event loop; raw UDP sockets check the mapping timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field

from ice.aio.discovery import Behaviour, BehaviourReport, discover_behaviour
from ice.aio.stun import StunServerRunner
from ice.errors import StunTimeout
from ice.lab.mn import Lab
from ice.lab.stun import LabEndpoint
from ice.nat.behaviour import NatBehaviour, NatKind
from ice.stun.server import StunServerConfig
from ice.stun.transaction import RetransmissionConfig
from ice.topology.spec import End, LinkSpec, NodeSpec, TopologySpec, nat_or_router

SERVER_1 = ("203.0.113.10", 3478)
SERVER_2 = ("203.0.113.11", 3479)
CLIENT_PORT = 40404
PROBE_TIMEOUT = 2
"""Mapping timeout the probe builds the NAT with (seconds), so expiry is measured in a few seconds."""
_RETRANS = RetransmissionConfig(rto=0.05, rc=3, rm=4)  # zero-latency lab: silence means filtered


def probe_topology(behaviour: NatBehaviour) -> TopologySpec:
    """client -- nat -- server (two public addresses); the server has no route to the private subnet."""
    public_client = behaviour.kind is NatKind.NONE
    lan = "198.51.100" if public_client else "10.0.0"
    server_routes = (("198.51.100.0/24", "203.0.113.1"),) if public_client else ()
    return TopologySpec(
        "nat-probe",
        nodes=(
            NodeSpec("client", routes=(("default", f"{lan}.1"),)),
            nat_or_router("nat", behaviour),
            NodeSpec("server", routes=server_routes),
        ),
        links=(
            LinkSpec(End("client", (f"{lan}.2/24",)), End("nat", (f"{lan}.1/24",), "lan")),
            LinkSpec(End("nat", ("203.0.113.1/24",), "wan"), End("server", ("203.0.113.10/24", "203.0.113.11/24"))),
        ),
        facts={"client": f"{lan}.2", "public": "203.0.113.1"},
    )


@dataclass
class Measured:
    udp: bool = True
    behind_nat: bool | None = None
    mapping: str | None = None
    filtering: str | None = None
    hairpinning: bool | None = None
    port_preservation: bool | None = None
    alive_before_timeout: bool | None = None
    inbound_refreshes: bool | None = None
    expired_after_timeout: bool | None = None


@dataclass
class ProbeResult:
    preset: str
    declared: dict[str, object]
    expected: Measured
    """What the declared behaviour predicts for each measurement (None: not checked)."""
    measured: Measured
    mismatches: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    probe_seconds: float = 0.0
    ruleset: str = ""

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_json(self) -> dict[str, object]:
        return {
            "preset": self.preset,
            "ok": self.ok,
            "declared": self.declared,
            "expected": asdict(self.expected),
            "measured": asdict(self.measured),
            "mismatches": self.mismatches,
            "build_seconds": round(self.build_seconds, 3),
            "probe_seconds": round(self.probe_seconds, 3),
        }


def expected(behaviour: NatBehaviour) -> Measured:
    """What the probe must measure for this behaviour."""
    if behaviour.kind is NatKind.UDP_BLOCKED:
        return Measured(udp=False)
    if behaviour.kind is NatKind.NONE:
        return Measured(behind_nat=False, mapping=Behaviour.ENDPOINT_INDEPENDENT.value,
                        filtering=Behaviour.ENDPOINT_INDEPENDENT.value)
    assert behaviour.mapping is not None and behaviour.filtering is not None
    return Measured(
        behind_nat=True,
        mapping=behaviour.mapping.value,
        filtering=behaviour.filtering.value,
        hairpinning=behaviour.hairpinning,
        port_preservation=behaviour.port_preservation,
        alive_before_timeout=True,
        inbound_refreshes=behaviour.inbound_refresh,
        expired_after_timeout=True,
    )


async def _measure(lab: Lab, behaviour: NatBehaviour, timeout_check: bool) -> Measured:
    cfg = StunServerConfig(SERVER_1, SERVER_2, software="icelab probe")
    runner = await StunServerRunner(cfg, make_socket=lambda fam: lab.socket("server", fam)).start()
    m = Measured()
    client_ip = lab.spec.facts["client"]
    try:
        try:
            rep: BehaviourReport = await discover_behaviour(
                SERVER_1, (client_ip, CLIENT_PORT), _RETRANS, endpoint=lambda c: LabEndpoint(lab, "client", c)
            )
        except StunTimeout:
            m.udp = False
            return m
        m.behind_nat = rep.behind_nat
        m.mapping = rep.mapping.value if rep.mapping else None
        m.filtering = rep.filtering.value if rep.filtering else None
        if rep.behind_nat:
            m.hairpinning = rep.hairpinning
            m.port_preservation = rep.mapped[1] == CLIENT_PORT
            if timeout_check:
                m.alive_before_timeout, m.inbound_refreshes, m.expired_after_timeout = await _timeout_check(
                    lab, behaviour)
    finally:
        runner.close()
    return m


async def _timeout_check(lab: Lab, behaviour: NatBehaviour) -> tuple[bool, bool, bool]:
    """RFC 4787 §4.3 with one outbound packet at 0 and inbound ones from the same server endpoint after it:

    * at 0.6 T: must arrive (the mapping is alive);
    * at 1.2 T: arrives only if the inbound packet at 0.6 T refreshed the mapping (Linux does; RFC 4787's
      outbound-only refresh does not);
    * after T + 1 s of silence: must not arrive (expired).
    """
    loop = asyncio.get_running_loop()
    t = behaviour.mapping_timeout
    client = lab.socket("client")
    server = lab.socket("server")
    try:
        client.bind((lab.spec.facts["client"], CLIENT_PORT + 1))
        server.bind((SERVER_1[0], 4000))
        client.setblocking(False)
        server.setblocking(False)
        await loop.sock_sendto(client, b"out", (SERVER_1[0], 4000))
        start = loop.time()
        _, mapped = await asyncio.wait_for(loop.sock_recvfrom(server, 100), 2)

        async def inbound(at: float) -> bool:
            # The timeout under test is wall-clock kernel state: waiting in real time is the point here.
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            await loop.sock_sendto(server, b"in", mapped)
            try:
                await asyncio.wait_for(loop.sock_recvfrom(client, 100), 0.3)
                return True
            except TimeoutError:
                return False

        alive = await inbound(0.6 * t)
        refreshed = await inbound(1.3 * t)
        expired = not await inbound((1.3 * t if refreshed else 0.0) + t + 1.0)
        return alive, refreshed, expired
    finally:
        client.close()
        server.close()


def probe(name: str, behaviour: NatBehaviour, timeout_check: bool = True, timeout: int = PROBE_TIMEOUT
          ) -> ProbeResult:
    """Build the probe lab for ``behaviour`` (with a short mapping timeout) and compare measured with declared."""
    timed = behaviour.kind in (NatKind.ENGINE, NatKind.MASQUERADE)
    under_test = behaviour.with_(mapping_timeout=timeout) if timed else behaviour
    want = expected(under_test)
    if not (timeout_check and timed):
        want.alive_before_timeout = want.inbound_refreshes = want.expired_after_timeout = None
    declared = under_test.as_json()
    with Lab(probe_topology(under_test)) as lab:
        started = time.perf_counter()
        measured = asyncio.run(_measure(lab, under_test, timeout_check and timed))
        result = ProbeResult(name, declared, want, measured, build_seconds=lab.build_seconds,
                             probe_seconds=time.perf_counter() - started,
                             ruleset=lab.ruleset("nat") if under_test.kind is not NatKind.NONE else "")
    for key, value in asdict(want).items():
        got = getattr(measured, key)
        if value is not None and got != value:
            result.mismatches.append(f"{key}: declared {value}, measured {got}")
    return result
