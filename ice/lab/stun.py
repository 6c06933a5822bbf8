"""STUN inside a lab: endpoints and the embedded server with sockets opened in the lab's nodes."""

from __future__ import annotations

import socket

from ice.aio.stun import StunEndpoint, StunServerRunner, parse_hostport
from ice.lab.mn import Lab
from ice.stun.server import StunServerConfig
from ice.stun.transaction import RetransmissionConfig


class LabEndpoint(StunEndpoint):
    """A :class:`StunEndpoint` whose socket lives in node ``node`` of ``lab``."""

    def __init__(self, lab: Lab, node: str, config: RetransmissionConfig | None = None) -> None:
        super().__init__(config, icmp_errors=False)
        self._lab, self._node = lab, node

    def make_socket(self, family: socket.AddressFamily) -> socket.socket:
        return self._lab.socket(self._node, family)


async def start_stun_server(lab: Lab, node: str = "stun", software: str = "icelab lab") -> StunServerRunner:
    """The embedded RFC 5780 server on the topology's ``stun_primary``/``stun_alternate`` addresses."""
    facts = lab.spec.facts
    config = StunServerConfig(parse_hostport(facts["stun_primary"]), parse_hostport(facts["stun_alternate"]),
                              software=software)
    return await StunServerRunner(config, make_socket=lambda fam: lab.socket(node, fam)).start()
