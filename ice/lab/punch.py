"""UDP hole punching between two peers of a lab, with plain sockets (no ICE): the lab's own reachability check.

Both peers learn their server-reflexive address from the embedded STUN server, then send ``punch`` to each
other's address every ``interval`` for ``rounds`` rounds (A first in each round) and answer whatever address
they hear from (the peer-reflexive learning ICE does).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ice.aio.stun import parse_hostport
from ice.lab.mn import Lab
from ice.lab.stun import LabEndpoint, start_stun_server
from ice.stun.attributes import Address
from ice.stun.transaction import RetransmissionConfig

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
