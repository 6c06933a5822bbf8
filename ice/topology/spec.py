"""Topologies as data: nodes, point-to-point links, addresses and routes.

A :class:`TopologySpec` is pure (no root, no processes), so it can be printed, compared and tested. One spec has
several readers: the kernel lab realises it with namespaces, veths and nft rules (:mod:`ice.lab.mn`), the
simulation realises it in memory (:mod:`ice.sim.network`, forwarding along :mod:`ice.topology.fabric`), the
expectation reasoning walks it to find the NATs between each peer and the internet, and ``mn --custom`` users get it
as a Mininet ``Topo`` (:mod:`ice.topology.mn`). Every multi-member segment is a ``switch`` node: in the lab a Linux
bridge inside its own namespace, so nothing of a lab appears in the root namespace.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from ice.nat.behaviour import NatBehaviour, NatKind


class NodeKind(enum.Enum):
    HOST = "host"
    """An end host (a peer or a server)."""
    NAT = "nat"
    """A routed box that loads the compiled rules of its :class:`NatBehaviour`."""
    ROUTER = "router"
    """A plain router (IP forwarding, no NAT)."""
    SWITCH = "switch"
    """A Linux bridge in its own namespace: every interface of the node is a bridge port."""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: NodeKind = NodeKind.HOST
    nat: NatBehaviour | None = None
    routes: tuple[tuple[str, str], ...] = ()
    """(destination CIDR or "default", gateway IP)."""

    def __post_init__(self) -> None:
        if (self.kind is NodeKind.NAT) != (self.nat is not None):
            raise ValueError(f"node {self.name}: a NAT node needs a behaviour, and only a NAT node has one")


@dataclass(frozen=True)
class End:
    """One end of a link: the node, the interface's role on it (``wan``/``lan`` for NATs) and its addresses."""

    node: str
    addresses: tuple[str, ...] = ()
    role: str = ""


class LossMode(enum.Enum):
    RANDOM = "random"
    """Each packet is dropped with probability ``loss`` (nft ``numgen random``)."""
    NTH = "nth"
    """Exactly every round(1/loss)-th packet is dropped (nft ``numgen inc``): reproducible."""


@dataclass(frozen=True)
class TokenBucket:
    """How a link's bandwidth is shaped: a token bucket filter (the kernel's ``tbf`` qdisc in the lab, the same
    model in the sim), one per direction. The bucket starts full; a frame leaves once the bucket holds its length
    in bytes (Ethernet header included), and waits in a queue of ``limit_bytes`` until then (a fuller queue drops
    it)."""

    rate_bytes_per_s: float
    burst_bytes: int
    """The bucket's size: this many bytes may leave back to back at line rate."""
    limit_bytes: int
    """The queue of frames waiting for tokens."""

    BURST_MIN = 16 * 1024
    """The smallest bucket: a dozen full frames (tbf needs at least one MTU, and at least rate / HZ)."""
    BURST_S = 0.01
    """... or 10 ms worth of the rate when that is larger."""
    LIMIT_MIN = 64 * 1024
    """The smallest queue: more than a bulk phase's window (ice.scenario.bulk) ever has in flight."""
    LIMIT_S = 0.1
    """... or 100 ms worth of the rate when that is larger."""

    @classmethod
    def of(cls, mbit: float) -> TokenBucket:
        rate = mbit * 1e6 / 8
        return cls(rate, max(cls.BURST_MIN, round(rate * cls.BURST_S)), max(cls.LIMIT_MIN, round(rate * cls.LIMIT_S)))

    def tc_args(self) -> str:
        """The ``tc qdisc ... tbf`` arguments (rate in bit/s, burst and limit in bytes)."""
        return f"rate {round(self.rate_bytes_per_s * 8)}bit burst {self.burst_bytes} limit {self.limit_bytes}"


WIRE_OVERHEAD = 42
"""Bytes a UDP datagram's frame adds to its payload (Ethernet 14, IPv4 20, UDP 8): what tbf counts on a veth."""


@dataclass(frozen=True)
class LinkConditions:
    """Impairments of one link, applied in both directions (no netem on this kernel: docs/lab.md)."""

    delay_ms: float = 0.0
    """One-way delay, by a userspace forwarder spliced into the link (ice/lab/wire.py)."""
    jitter_ms: float = 0.0
    """Uniform +/- variation of the delay; frames are never reordered."""
    loss: float = 0.0
    """Fraction of IPv4 packets dropped in each direction, by nft at each end's ingress."""
    loss_mode: LossMode = LossMode.RANDOM
    seed: int = 0
    """Seeds the forwarder's jitter."""
    bandwidth_mbit: float = 0.0
    """Each direction's rate in Mbit/s (frames with their Ethernet headers), by a ``tbf`` qdisc on each end's egress
    (0: not shaped); see :class:`TokenBucket`."""

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > self.delay_ms:
            raise ValueError("delay and jitter must be >= 0 and jitter <= delay")
        if not 0 <= self.loss <= 1:
            raise ValueError("loss is a fraction in [0, 1]")
        if self.bandwidth_mbit < 0:
            raise ValueError("bandwidth_mbit must be >= 0 (0: not shaped)")

    def token_bucket(self) -> TokenBucket | None:
        """The shaper of each direction (None: not shaped)."""
        return TokenBucket.of(self.bandwidth_mbit) if self.bandwidth_mbit > 0 else None

    def changed(self, changes: Mapping[str, float]) -> LinkConditions:
        """These conditions with some of ``loss``, ``delay_ms``, ``jitter_ms`` and ``bandwidth_mbit`` replaced
        (ValueError for another name or an impossible combination)."""
        unknown = sorted(set(changes) - {"loss", "delay_ms", "jitter_ms", "bandwidth_mbit"})
        if unknown:
            raise ValueError(f"a link's {', '.join(unknown)} cannot change")
        return dataclasses.replace(self, loss=float(changes.get("loss", self.loss)),
                                   delay_ms=float(changes.get("delay_ms", self.delay_ms)),
                                   jitter_ms=float(changes.get("jitter_ms", self.jitter_ms)),
                                   bandwidth_mbit=float(changes.get("bandwidth_mbit", self.bandwidth_mbit)))

    @property
    def any(self) -> bool:
        """Does this impair the link at all?"""
        return bool(self.delay_ms or self.jitter_ms or self.loss or self.bandwidth_mbit)

    def loss_rule(self) -> str | None:
        """The nft expression that drops this link's share of IPv4 packets (None: no loss)."""
        if self.loss <= 0:
            return None
        if self.loss >= 1:  # a dead link
            return "meta protocol ip drop"
        if self.loss_mode is LossMode.NTH:
            return f"meta protocol ip numgen inc mod {round(1 / self.loss)} 0 drop"
        return f"meta protocol ip numgen random mod 1000000 < {round(self.loss * 1_000_000)} drop"


@dataclass(frozen=True)
class LinkSpec:
    a: End
    b: End
    conditions: LinkConditions | None = None


@dataclass(frozen=True)
class TopologySpec:
    name: str
    nodes: tuple[NodeSpec, ...]
    links: tuple[LinkSpec, ...]
    facts: dict[str, str] = field(default_factory=dict, compare=False)
    """Addresses scenarios need (e.g. ``stun_primary``), as strings."""

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"topology {self.name}: duplicate node names")
        for link in self.links:
            for end in (link.a, link.b):
                if end.node not in names:
                    raise ValueError(f"topology {self.name}: link to unknown node {end.node!r}")
                for cidr in end.addresses:
                    ipaddress.ip_interface(cidr)

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    def address(self, fact: str) -> tuple[str, int]:
        """A fact holding ``IP:PORT`` (``stun_primary``, ``turn``...) as an address."""
        ip, _, port = self.facts[fact].rpartition(":")
        return ip, int(port)

    def nat_behaviours(self) -> dict[str, NatBehaviour]:
        """Every NAT node's behaviour, by node name."""
        return {n.name: n.nat for n in self.nodes if n.kind is NodeKind.NAT and n.nat is not None}

    def shape(self) -> tuple[object, ...]:
        """Everything but the NAT behaviours: two specs with one shape are one lab with other NAT rules."""
        return (self.name, tuple((n.name, n.kind, n.routes) for n in self.nodes), self.links)

    def ends(self, node: str) -> list[tuple[int, End]]:
        """(link index, end) for every interface of ``node``, in link order."""
        out: list[tuple[int, End]] = []
        for i, link in enumerate(self.links):
            out.extend((i, end) for end in (link.a, link.b) if end.node == node)
        return out

    def nat_interfaces(self, node: str) -> tuple[End, End]:
        """The (wan, lan) ends of a NAT node."""
        ends = dict((e.role, e) for _, e in self.ends(node))
        if "wan" not in ends or "lan" not in ends:
            raise ValueError(f"topology {self.name}: NAT {node} needs one link with role wan and one with role lan")
        return ends["wan"], ends["lan"]


def nat_or_router(name: str, behaviour: NatBehaviour, routes: tuple[tuple[str, str], ...] = ()) -> NodeSpec:
    """A NAT node, or a plain router when the behaviour is ``none`` (public addresses behind it)."""
    if behaviour.kind is NatKind.NONE:
        return NodeSpec(name, NodeKind.ROUTER, routes=routes)
    return NodeSpec(name, NodeKind.NAT, behaviour, routes=routes)
