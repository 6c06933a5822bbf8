"""``icelab topo check``: build a topology and let every peer classify its path to the STUN server (RFC 5780)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ice.aio.discovery import discover_behaviour
from ice.aio.stun import format_address, parse_hostport
from ice.errors import StunTimeout
from ice.lab.mn import Lab
from ice.lab.stun import LabEndpoint, start_stun_server
from ice.stun.transaction import RetransmissionConfig
from ice.topology.spec import NodeKind, TopologySpec

_RETRANS = RetransmissionConfig(rto=0.05, rc=3, rm=4)


@dataclass(frozen=True)
class PeerPath:
    peer: str
    address: str
    mapped: str | None
    mapping: str | None
    filtering: str | None
    hairpinning: bool | None

    def as_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def peers(spec: TopologySpec) -> list[str]:
    return [n.name for n in spec.nodes if n.kind is NodeKind.HOST and n.name != "stun" and n.name in spec.facts]


async def _check(lab: Lab) -> list[PeerPath]:
    runner = await start_stun_server(lab)
    out = []
    try:
        for peer in peers(lab.spec):
            ip = lab.spec.facts[peer]

            def endpoint(config: RetransmissionConfig, peer: str = peer) -> LabEndpoint:
                return LabEndpoint(lab, peer, config)

            try:
                rep = await discover_behaviour(parse_hostport(lab.spec.facts["stun_primary"]), (ip, 0), _RETRANS,
                                               endpoint=endpoint)
            except StunTimeout:
                out.append(PeerPath(peer, ip, None, None, None, None))
                continue
            out.append(PeerPath(peer, ip, format_address(rep.mapped), rep.mapping.value if rep.mapping else None,
                                rep.filtering.value if rep.filtering else None, rep.hairpinning))
    finally:
        runner.close()
    return out


def check(spec: TopologySpec) -> tuple[float, list[PeerPath]]:
    """(build seconds, one PeerPath per peer) for ``spec``."""
    with Lab(spec) as lab:
        return lab.build_seconds, asyncio.run(_check(lab))
