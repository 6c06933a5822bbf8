"""How a packet moves through a :class:`TopologySpec`, without NAT state: interfaces, segments, routes, next hops.

The simulation forwards every datagram hop by hop with :meth:`Fabric.step` and lets each NAT node translate it
(:class:`ice.sim.nat.SimNat`); the expectation reasoning walks the same hops with :meth:`Fabric.walk` to find which
NATs stand between a peer and the internet. Both therefore read the one spec the kernel lab realises: its
addresses, its routes (``default`` or a CIDR via a gateway on a connected subnet) and its segments (a switch node
is one segment; a link between two other nodes is a segment of its own).

Forwarding follows the kernel's longest-prefix match over connected subnets and static routes together: the most
specific match wins, a connected subnet beating a static route of the same length; a connected match delivers on
its segment, a route's match to its gateway. No match means no route (the public segment has none to private
space).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ice.topology.spec import NodeKind, NodeSpec, TopologySpec

MAX_HOPS = 32
"""A routing loop in a user's topology ends here instead of spinning."""


@dataclass(frozen=True)
class Interface:
    """One interface of a (non-switch) node."""

    node: str
    link: int
    """Index of its link in the spec."""
    addresses: tuple[ipaddress.IPv4Interface, ...]
    role: str
    """``wan``/``lan`` on a NAT; empty elsewhere."""
    segment: str
    """The switch it is plugged into, or ``link<N>`` for a point-to-point link."""


@dataclass(frozen=True)
class Hop:
    """One forwarding step: out of ``egress`` on ``node``, in at ``ingress`` on ``next_node``, across ``links``."""

    egress: Interface
    next_node: str
    ingress: Interface
    links: tuple[int, ...]
    """The links crossed (two when the segment is a switch: node to switch, switch to next node)."""


@dataclass(frozen=True)
class Walk:
    """Where a packet from a node to an address goes, ignoring NAT state (see :meth:`Fabric.walk`)."""

    reached: str | None
    """The node that owns the destination address, or None if the packet is dropped on the way."""
    translated_by: tuple[str, ...]
    """NAT nodes the packet leaves from LAN to WAN (each rewrites its source), innermost first."""
    nodes: tuple[str, ...]


@dataclass
class Fabric:
    spec: TopologySpec
    interfaces: dict[str, list[Interface]] = field(default_factory=dict)
    """Node name -> its interfaces (switches have none: they are segments)."""
    owners: dict[str, tuple[str, Interface]] = field(default_factory=dict)
    """IP address -> (node, interface) that holds it."""
    _members: dict[str, dict[str, Interface]] = field(default_factory=dict)
    _links_of: dict[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    _steps: dict[tuple[str, str], Hop | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = self.spec
        kinds = {n.name: n.kind for n in spec.nodes}
        for i, link in enumerate(spec.links):
            ends = (link.a, link.b)
            switches = [e for e in ends if kinds[e.node] is NodeKind.SWITCH]
            segment = switches[0].node if switches else f"link{i}"
            for end in ends:
                if kinds[end.node] is NodeKind.SWITCH:
                    continue
                iface = Interface(end.node, i, tuple(ipaddress.IPv4Interface(a) for a in end.addresses), end.role,
                                  segment)
                self.interfaces.setdefault(end.node, []).append(iface)
                self._links_of[(end.node, segment)] = (*self._links_of.get((end.node, segment), ()), i)
                for addr in iface.addresses:
                    ip = str(addr.ip)
                    if ip in self.owners:
                        raise ValueError(f"topology {spec.name}: address {ip} is on both {self.owners[ip][0]} and "
                                         f"{end.node}")
                    self.owners[ip] = (end.node, iface)
                    self._members.setdefault(segment, {})[ip] = iface
        for node in spec.nodes:
            self.interfaces.setdefault(node.name, [])

    def node(self, name: str) -> NodeSpec:
        return self.spec.node(name)

    def addresses(self, node: str) -> list[str]:
        """Every IPv4 address of ``node``, in link order."""
        return [str(a.ip) for iface in self.interfaces[node] for a in iface.addresses]

    def owner(self, ip: str) -> str | None:
        found = self.owners.get(ip)
        return found[0] if found else None

    def wan_address(self, nat: str) -> str:
        """A NAT node's public (WAN) address."""
        wan, _ = self.spec.nat_interfaces(nat)
        return wan.addresses[0].split("/")[0]

    def step(self, node: str, dst: str) -> Hop | None:
        """The next hop from ``node`` towards ``dst`` (None: no route, or nobody holds the next-hop address)."""
        key = (node, dst)
        if key not in self._steps:
            self._steps[key] = self._step(node, dst)
        return self._steps[key]

    def _step(self, node: str, dst: str) -> Hop | None:
        ip = ipaddress.IPv4Address(dst)
        # The kernel's longest-prefix match over the connected subnets and the static routes together; on equal
        # prefixes the connected route wins. Ranked by (prefix length, connected), the first of equals kept.
        best: tuple[tuple[int, bool], Interface, str] | None = None
        for iface in self.interfaces[node]:
            for addr in iface.addresses:
                rank = (addr.network.prefixlen, True)
                if ip in addr.network and (best is None or rank > best[0]):
                    best = (rank, iface, dst)
        for dest, via in self.node(node).routes:
            net = ipaddress.IPv4Network("0.0.0.0/0" if dest == "default" else dest, strict=False)
            rank = (net.prefixlen, False)
            if ip not in net or (best is not None and rank <= best[0]):
                continue
            gateway = ipaddress.IPv4Address(via)
            egress = next((f for f in self.interfaces[node] for a in f.addresses if gateway in a.network), None)
            if egress is not None:
                best = (rank, egress, via)
        if best is None:
            return None
        _, egress, next_ip = best
        ingress = self._members.get(egress.segment, {}).get(next_ip)
        if ingress is None or ingress.node == node:
            return None
        links = (*self._links_of[(node, egress.segment)][:1], *self._links_of[(ingress.node, egress.segment)][:1])
        links = tuple(dict.fromkeys(links))  # a point-to-point link is crossed once
        return Hop(egress, ingress.node, ingress, links)

    def walk(self, src: str, dst: str) -> Walk:
        """Follow a packet from node ``src`` to address ``dst`` as if every NAT had the mappings it needs: a NAT
        translates what it forwards from LAN to WAN, and forwards nothing from WAN to LAN (only translated replies
        and hairpins go that way, which need state). Used to find the NATs between a peer and the internet and
        whether two peers reach each other's host addresses untranslated."""
        node, nodes = src, [src]
        ingress: Interface | None = None
        translated: list[str] = []
        for _ in range(MAX_HOPS):
            if self.owner(dst) == node:
                return Walk(node, tuple(translated), tuple(nodes))
            spec = self.node(node)
            if ingress is not None and spec.kind is NodeKind.HOST:
                break  # hosts do not forward
            hop = self.step(node, dst)
            if hop is None:
                break
            if spec.kind is NodeKind.NAT and ingress is not None:
                if ingress.role == "lan" and hop.egress.role == "wan":
                    translated.append(node)
                elif ingress.role == "wan" and hop.egress.role == "lan":
                    break
            node, ingress = hop.next_node, hop.ingress
            nodes.append(node)
        return Walk(None, tuple(translated), tuple(nodes))

    def spare_address(self, ip: str) -> ipaddress.IPv4Interface:
        """A free address in the subnet of ``ip`` (held by a node): the highest host address nobody holds, with
        ``ip``'s prefix. A renumbered peer moves there (the lab and the sim pick the same one)."""
        _, iface = self.owners[ip]
        held = next(a for a in iface.addresses if str(a.ip) == ip)
        for candidate in reversed(list(held.network.hosts())):
            if str(candidate) not in self.owners:
                return ipaddress.IPv4Interface(f"{candidate}/{held.network.prefixlen}")
        raise ValueError(f"no free address left in {held.network}")

    def move_address(self, old: str, new: ipaddress.IPv4Interface) -> None:
        """The interface holding ``old`` holds ``new`` instead (a peer renumbered): forwarding and ownership follow
        at once."""
        node, iface = self.owners.pop(old)
        moved = Interface(node, iface.link, tuple(new if str(a.ip) == old else a for a in iface.addresses),
                          iface.role, iface.segment)
        self.interfaces[node] = [moved if f is iface else f for f in self.interfaces[node]]
        for ip, (holder, f) in list(self.owners.items()):
            if f is iface:
                self.owners[ip] = (holder, moved)
        self.owners[str(new.ip)] = (node, moved)
        members = self._members[iface.segment]
        members.pop(old, None)
        for ip, f in list(members.items()):
            if f is iface:
                members[ip] = moved
        members[str(new.ip)] = moved
        self._steps.clear()

    def hosts(self) -> list[str]:
        return [n.name for n in self.spec.nodes if n.kind is NodeKind.HOST]
