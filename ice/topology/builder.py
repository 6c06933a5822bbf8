"""Building blocks for topology modules: a :class:`TopologyBuilder` accumulates nodes and links into a
:class:`~ice.topology.spec.TopologySpec` with the lab's addressing rules.

Addressing: the public segment is 203.0.113.0/24 (a bridge in its own namespace) with the STUN/TURN host at
203.0.113.10 and 203.0.113.11 (two addresses for RFC 5780); NAT WAN addresses are 203.0.113.1, .2, ...; peers
with public addresses get 203.0.113.101, .102, ...; private LANs are 10.0.N.0/24 or 192.168.N.0/24 and the
carrier-grade segment 100.64.0.0/10 (RFC 6598). The public segment has no route to any private subnet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ice.errors import UserError
from ice.nat.behaviour import NatBehaviour, NatKind, preset
from ice.topology.spec import End, LinkConditions, LinkSpec, LossMode, NodeKind, NodeSpec, TopologySpec

STUN_PRIMARY = ("203.0.113.10", 3478)
STUN_ALTERNATE = ("203.0.113.11", 3479)
TURN_PORT = 3478


class NoNatHere(UserError):
    """A behaviour of kind ``none`` given to :meth:`TopologyBuilder.nat` (which places a NAT box)."""


def behaviour(nat: NatBehaviour | str) -> NatBehaviour:
    return preset(nat) if isinstance(nat, str) else nat


def conditions(delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0, loss_mode: str = "random",
               seed: int = 0, bandwidth_mbit: float = 0) -> LinkConditions | None:
    """Link impairments from topology-builder keyword arguments (None when there are none)."""
    if not (delay_ms or jitter_ms or loss or bandwidth_mbit):
        return None
    try:
        return LinkConditions(float(delay_ms), float(jitter_ms), float(loss), LossMode(loss_mode), int(seed),
                              float(bandwidth_mbit))
    except ValueError as exc:
        raise UserError(f"bad link conditions: {exc} (loss_mode is 'random' or 'nth')") from None


@dataclass
class TopologyBuilder:
    """Accumulates nodes and links; :meth:`spec` freezes them into a :class:`TopologySpec`."""

    name: str
    nodes: list[NodeSpec] = field(default_factory=list)
    links: list[LinkSpec] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    _next_public_host: int = 101
    _next_nat_wan: int = 1

    def add(self, node: NodeSpec) -> str:
        self.nodes.append(node)
        return node.name

    def link(self, a: End, b: End, impairments: LinkConditions | None = None) -> None:
        self.links.append(LinkSpec(a, b, impairments))

    def switch(self, name: str) -> str:
        return self.add(NodeSpec(name, NodeKind.SWITCH))

    def public_segment(self) -> str:
        """The internet: a switch with the STUN/TURN host on two addresses."""
        inet = self.switch("inet")
        self.add(NodeSpec("stun"))
        self.link(End("stun", (f"{STUN_PRIMARY[0]}/24", f"{STUN_ALTERNATE[0]}/24")), End(inet))
        self.facts.update(stun_primary=f"{STUN_PRIMARY[0]}:{STUN_PRIMARY[1]}",
                          stun_alternate=f"{STUN_ALTERNATE[0]}:{STUN_ALTERNATE[1]}",
                          turn=f"{STUN_PRIMARY[0]}:{TURN_PORT}")
        return inet

    def public_host(self, name: str, segment: str, impairments: LinkConditions | None = None) -> str:
        ip = f"203.0.113.{self._next_public_host}"
        self._next_public_host += 1
        self.add(NodeSpec(name))
        self.link(End(name, (f"{ip}/24",)), End(segment), impairments)
        self.facts[name] = ip
        return ip

    def nat(self, name: str, nat: NatBehaviour, lan_subnet: str, upstream: str, wan_cidr: str | None = None,
            gateway: str | None = None, impairments: LinkConditions | None = None) -> tuple[str, str]:
        """A NAT between ``upstream`` (a switch, or another NAT's LAN node) and a new LAN ``lan_subnet`` (x.y.z).

        Returns the LAN switch's name and the NAT's LAN address (the peers' gateway). A behaviour of kind
        ``none`` (no NAT) is a :class:`NoNatHere` error: only a role that places a peer (:meth:`peer`) takes it.
        """
        if nat.kind is NatKind.NONE:
            raise NoNatHere(f"NAT {name}: 'none' (no NAT) cannot stand here; only roles that place a peer "
                            "(TopologyBuilder.peer) take it")
        if wan_cidr is None:
            wan_cidr = f"203.0.113.{self._next_nat_wan}/24"
            self._next_nat_wan += 1
        routes = (("default", gateway),) if gateway else ()
        self.add(NodeSpec(name, NodeKind.NAT, nat, routes=routes))
        self.link(End(name, (wan_cidr,), "wan"), End(upstream), impairments)
        lan = self.switch(f"{name}-lan")
        self.link(End(name, (f"{lan_subnet}.1/24",), "lan"), End(lan))
        self.facts[f"{name}_public"] = wan_cidr.split("/")[0]
        return lan, f"{lan_subnet}.1"

    def private_host(self, name: str, lan: str, ip: str, gateway: str) -> str:
        self.add(NodeSpec(name, routes=(("default", gateway),)))
        self.link(End(name, (f"{ip}/24",)), End(lan))
        self.facts[name] = ip
        return ip

    def peer(self, name: str, nat: NatBehaviour, segment: str, lan_subnet: str,
             impairments: LinkConditions | None = None) -> None:
        """A peer behind its own NAT, or on the public segment when the preset is ``none``. ``impairments``
        apply to its access link (the NAT's WAN link, or the public peer's link)."""
        if nat.kind is NatKind.NONE:
            self.public_host(name, segment, impairments)
            return
        lan, gw = self.nat(f"nat-{name}", nat, lan_subnet, segment, impairments=impairments)
        self.private_host(name, lan, f"{lan_subnet}.2", gw)

    def spec(self) -> TopologySpec:
        return TopologySpec(self.name, tuple(self.nodes), tuple(self.links), dict(self.facts))


def server_problem(spec: TopologySpec) -> str:
    """What keeps the STUN/TURN server from running in ``spec`` ("" when nothing does): it runs on the host holding
    the ``stun_primary`` address, which :meth:`TopologyBuilder.public_segment` places."""
    from ice.topology.fabric import Fabric

    if "stun_primary" not in spec.facts:
        return "has no stun_primary fact: give it a public segment (TopologyBuilder.public_segment())"
    try:
        ip = spec.address("stun_primary")[0]
    except ValueError:
        return f"has a stun_primary fact {spec.facts['stun_primary']!r} that is not IP:PORT"
    server = Fabric(spec).owner(ip)
    if server is None or not spec.has_node(server) or spec.node(server).kind is not NodeKind.HOST:
        return "has no host holding its stun_primary address"
    return ""
