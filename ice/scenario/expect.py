"""What RFC 4787 reasoning predicts for a cell, from its topology spec alone: written once, pinned as data.

The reasoning walks each peer's way to the internet through the spec (:meth:`ice.topology.fabric.Fabric.walk`)
and asks :func:`ice.nat.reach.direct_possible_through` whether the two chains of NATs let a direct pair work
(each NAT filters on its own binding; one NAT per side is RFC 4787's classic case). The NATs composed
(:func:`compose`) say which candidate types the selected pair may have.

Peers behind a shared NAT meet at that NAT's hairpin: their server-reflexive addresses are both on its public
address, so a check from one to the other reaches it only if the NAT hairpins (RFC 4787 §6, REQ-9). The hairpinned
packet carries the sender's existing external address (REQ-9a; for a destination-dependent NAT the binding the
sender already has, as the kernel lab's rules do) and is not filtered by the shared NAT (neither the lab's rules nor
the simulation filter hairpinned packets), so for this packet the shared NAT is endpoint-independent in both
respects and each side's own NATs decide.

Answers are pinned per cell beside each scenario file (``FILE.expected.json``) so a reader can review every one; a
test keeps the default suite's pins equal to this module's output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind, preset
from ice.nat.reach import direct_possible_through, tcp_reachable, tcp_simultaneous_open_possible
from ice.scenario.cell import Cell, PathKind
from ice.topology.fabric import Fabric
from ice.topology.spec import TopologySpec

PEERS = ("a", "b")

_MAPPING_ORDER = [Mapping.ENDPOINT_INDEPENDENT, Mapping.ADDRESS_DEPENDENT, Mapping.ADDRESS_AND_PORT_DEPENDENT]
_FILTERING_ORDER = [Filtering.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT]


def compose(inner: NatBehaviour, outer: NatBehaviour) -> NatBehaviour:
    """Two NATs in a row, as seen from the internet (RFC 4787 terms): the mapping depends on the destination as
    soon as either NAT's does, and a packet must pass both filters (the outer NAT rewrites only the destination,
    so the inner one filters on the same remote endpoint), so the stricter of each wins. A UDP-blocking box
    anywhere blocks UDP."""
    for box in (inner, outer):
        if box.kind is NatKind.UDP_BLOCKED:
            return box
    if inner.kind is NatKind.NONE:
        return outer
    if outer.kind is NatKind.NONE:
        return inner
    assert inner.mapping and outer.mapping and inner.filtering and outer.filtering
    mapping = max(inner.mapping, outer.mapping, key=_MAPPING_ORDER.index)
    filtering = max(inner.filtering, outer.filtering, key=_FILTERING_ORDER.index)
    return NatBehaviour(mapping, filtering, hairpinning=False, description=f"{inner.name} behind {outer.name}")


def compose_all(chain: list[NatBehaviour]) -> NatBehaviour:
    """A chain of NATs, innermost first, as one (no NAT at all: ``none``)."""
    return functools.reduce(compose, chain, preset("none"))


def _hairpinned(nat: NatBehaviour) -> NatBehaviour:
    """The shared NAT as a hairpinned packet meets it: no filter, and the sender's existing external address as
    the source (RFC 4787 REQ-9a), whatever its mapping behaviour does for flows to the outside: so, for this
    packet, endpoint-independent in both respects."""
    if nat.kind is NatKind.UDP_BLOCKED or nat.mapping is None:
        return nat
    return NatBehaviour(Mapping.ENDPOINT_INDEPENDENT, Filtering.ENDPOINT_INDEPENDENT,
                        description=f"{nat.name}, hairpinned")


@dataclass(frozen=True)
class PeerPaths:
    """What the reasoning reads off a spec about the two peers."""

    chain_a: tuple[str, ...]
    """The NAT nodes between peer A and the STUN server, innermost first."""
    chain_b: tuple[str, ...]
    shared: tuple[str, ...]
    """NAT nodes both chains end with (both peers are behind them), innermost first."""
    host_reach: bool
    """Each peer reaches the other's host address untranslated (one LAN, or both public)."""
    way_a: tuple[NatBehaviour, ...]
    """The NATs A's packets to B's server-reflexive address cross, innermost first (through a shared NAT's
    hairpin: that NAT as the hairpin treats the packet, see :func:`_hairpinned`)."""
    way_b: tuple[NatBehaviour, ...]
    no_hairpin: str | None
    """The shared NAT the peers' server-reflexive addresses meet at, when it does not hairpin."""
    blocked: bool
    """A UDP-blocking box stands on either peer's way out."""

    @classmethod
    def of(cls, spec: TopologySpec) -> PeerPaths:
        fabric = Fabric(spec)
        stun = spec.address("stun_primary")[0]
        nats = spec.nat_behaviours()
        chain_a = fabric.walk(PEERS[0], stun).translated_by
        chain_b = fabric.walk(PEERS[1], stun).translated_by
        n = 0
        while n < min(len(chain_a), len(chain_b)) and chain_a[len(chain_a) - 1 - n] == chain_b[len(chain_b) - 1 - n]:
            n += 1
        shared = chain_a[len(chain_a) - n:] if n else ()
        reach = all(fabric.walk(x, ip).reached == y and not fabric.walk(x, ip).translated_by
                    for x, y in (PEERS, PEERS[::-1]) for ip in fabric.addresses(y)[:1])
        no_hairpin = None
        if shared:
            outer = nats[shared[-1]]
            if not outer.hairpinning:
                no_hairpin = shared[-1]
            meet = [nats[s] for s in shared[:-1]] + [_hairpinned(outer)]
            way_a = [nats[x] for x in chain_a[:len(chain_a) - n]] + meet
            way_b = [nats[x] for x in chain_b[:len(chain_b) - n]] + meet
        else:
            way_a = [nats[x] for x in chain_a]
            way_b = [nats[x] for x in chain_b]
        blocked = any(nats[x].kind is NatKind.UDP_BLOCKED for x in (*chain_a, *chain_b))
        return cls(chain_a, chain_b, shared, reach, tuple(way_a), tuple(way_b), no_hairpin, blocked)

    @property
    def effective_a(self) -> NatBehaviour:
        """A's NATs composed: what the peer's address towards others behaves like."""
        return compose_all(list(self.way_a))

    @property
    def effective_b(self) -> NatBehaviour:
        return compose_all(list(self.way_b))


@dataclass(frozen=True)
class Expected:
    path: PathKind
    reason: str
    selected: tuple[str, ...] = ()
    """The candidate-type pairs ("local-remote", as peer A sees it) the selected pair may be; empty: any (relayed
    cells: the path says it; a peer's relay can reach A disguised as peer-reflexive, see docs/scenarios.md)."""
    never: tuple[str, ...] = ()
    """Pair types that must not succeed (e.g. ``host-host`` between two private networks)."""
    must_succeed: tuple[str, ...] = ()
    """Pair types that must have succeeded by the time both sides selected (e.g. ``host-host`` on a shared LAN)."""
    known_failure: str | None = None
    """Set by hand in the pin file: the stack is known not to meet this expectation yet, and why. Such a cell
    does not fail the run; one that meets its expectation anyway is reported as unexpectedly passing."""
    intermittent: bool = False
    """Set by hand with ``known_failure``: the failure comes and goes (e.g. on which side's random tie-breaker is
    larger), so a run that meets the expectation is a plain pass, not an unexpected one."""
    transport: str = ""
    """"udp" or "tcp": the transport A's selected pair must have (ICE-TCP cells); empty: not judged."""

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.path.value, "reason": self.reason, "selected": list(self.selected),
                                  "never": list(self.never), "must_succeed": list(self.must_succeed)}
        if self.transport:
            doc["transport"] = self.transport
        if self.known_failure is not None:
            doc["known_failure"] = self.known_failure
        if self.intermittent:
            doc["intermittent"] = True
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Expected:
        """Parse one pinned entry; raise ValueError saying what is wrong with it."""
        if not isinstance(doc, dict):
            raise ValueError("an entry must be an object with at least a 'path'")
        try:
            path = PathKind(doc.get("path"))
        except ValueError:
            raise ValueError(f"'path' is {doc.get('path')!r}, not one of direct, relay, none") from None

        def strings(key: str) -> tuple[str, ...]:
            value = doc.get(key) or []
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"'{key}' must be a list of pair types such as \"srflx-prflx\"")
            return tuple(value)

        known = doc.get("known_failure")
        if known is not None and not isinstance(known, str):
            raise ValueError("'known_failure' must be a sentence saying why")
        intermittent = doc.get("intermittent", False)
        if not isinstance(intermittent, bool) or (intermittent and known is None):
            raise ValueError("'intermittent' is true or false, and goes with a 'known_failure'")
        transport = doc.get("transport", "")
        if transport not in ("", "udp", "tcp"):
            raise ValueError(f"'transport' is \"udp\" or \"tcp\", not {transport!r}")
        return cls(path, str(doc.get("reason", "")), strings("selected"), strings("never"), strings("must_succeed"),
                   known, intermittent, str(transport))


def candidate_types(nat: NatBehaviour, local: bool, lossy: bool = False, other: NatBehaviour | None = None
                    ) -> set[str]:
    """The type a peer behind ``nat`` has in a direct selected pair (RFC 8445 §7.2.5.3.1 valid pairs), seen from
    itself (``local``) or from the other side (behind ``other``).

    No NAT: its host address. An endpoint-independent mapping gives the peer the same address towards everyone,
    its srflx candidate, but the other side may learn it from a check before the signalled candidate arrives, as
    peer-reflexive. A mapping that depends on the destination gives a new address (peer-reflexive), unless port
    preservation happens to land on the srflx port again. Two more ways to a peer-reflexive local candidate: on
    lossy links a check's answer can beat the STUN server's; and when the other NAT's mapping depends on the
    destination, its peer's flow out to us and our flow in to it cross in its conntrack table, and Linux gives
    our packets a new source port to resolve the tuple clash, so the peer reports us at that address."""
    if nat.kind is NatKind.NONE:
        return {"host"}
    crossing = other is not None and other.kind is not NatKind.NONE and other.mapping is not None \
        and other.mapping is not Mapping.ENDPOINT_INDEPENDENT
    if nat.mapping is Mapping.ENDPOINT_INDEPENDENT and local and not lossy and not crossing:
        return {"srflx"}
    return {"srflx", "prflx"}


def expect(cell: Cell, spec: TopologySpec) -> Expected:
    """What RFC 4787 reasoning predicts for ``cell`` run in ``spec`` (its topology built with the cell's NATs); for
    ICE-TCP cells RFC 5382's too (:func:`expect_tcp`)."""
    if cell.tcp:
        return expect_tcp(cell, spec)
    return _expect_udp(cell, spec)


def tcp_direct_ways(cell: Cell, a: NatBehaviour, b: NatBehaviour) -> list[str]:
    """The ways ICE-TCP (RFC 6544) can connect A and B directly through their NATs ``a`` and ``b`` (RFC 5382, the
    theory of :mod:`ice.nat.reach`), given each side's tcptypes: "so" (a simultaneous open between the so
    candidates, or one so side connecting to the other's reachable so listener), "active->passive" (A connects
    to B's reachable passive candidate), "passive<-active" (B connects to A's)."""
    ways = []
    if "so" in cell.tcp_types_a and "so" in cell.tcp_types_b and (
            tcp_reachable(a) or tcp_reachable(b) or tcp_simultaneous_open_possible(a, b)):
        ways.append("so")
    if "active" in cell.tcp_types_a and "passive" in cell.tcp_types_b and tcp_reachable(b):
        ways.append("active->passive")
    if "active" in cell.tcp_types_b and "passive" in cell.tcp_types_a and tcp_reachable(a):
        ways.append("passive<-active")
    return ways


def tcp_text(nat: NatBehaviour) -> str:
    """A NAT's TCP section in a few words (RFC 5382 terms): ``eim-apdf, early SYN dropped``."""
    if nat.kind is NatKind.NONE:
        return "no NAT"
    if nat.kind is NatKind.UDP_BLOCKED:
        return "a UDP-blocking firewall"
    mapping, filtering = nat.tcp_mapping, nat.tcp_filtering
    assert mapping is not None and filtering is not None
    answers = {"drop": "dropped", "rst": "answered with RST", "icmp": "answered with ICMP"}
    answer = answers[nat.tcp.unsolicited_syn.value]
    return f"{mapping.short}-{filtering.short}, early SYN {answer}"


def expect_tcp(cell: Cell, spec: TopologySpec) -> Expected:
    """What an ICE-TCP cell (``transports`` "tcp" or "both", or UDP blocked between the peers) should select.

    UDP first: with UDP usable (``transports`` "both" and not ``udp_blocked``) a direct UDP pair wins whenever RFC
    4787 reasoning says one works, because a UDP candidate's local preference is above every TCP one of its type
    (RFC 6544 §4.2). Otherwise a direct TCP pair works when :func:`tcp_direct_ways` finds a way (one NAT per side:
    the TCP sections of the NATs on each peer's way out, composed like the UDP ones); its local candidate is A's
    host candidate (a TCP pair is its own valid pair, RFC 6544 §7.2.2), its remote one B's server-reflexive or host
    candidate, or peer-reflexive when B's connection comes from a port B never signalled (an active candidate).
    Else the relay: with TCP candidates only, through a TURN TCP allocation (RFC 6062; the selected pair is a TCP
    one, relayed on at least one side, RFC 6544 §5.3)."""
    p = PeerPaths.of(spec)
    udp = cell.transports != "tcp" and not cell.udp_blocked
    if cell.relay_only:
        return _expect_udp(cell, spec)  # relayed candidates only: TCP changes nothing
    if udp:
        base = _expect_udp(cell, spec)
        if base.path is PathKind.DIRECT:
            return Expected(base.path, f"{base.reason}; UDP wins over TCP (RFC 6544 §4.2 local preferences)",
                            base.selected, base.never, base.must_succeed,
                            transport="udp")
    # A TCP pair is its own valid pair, so a host-host TCP pair can succeed through a NAT (A's active candidate to a
    # public B's passive one): "host-host" says nothing about translation here.
    never = () if p.host_reach or cell.transports != "udp" else ("host-host",)
    a, b = p.effective_a, p.effective_b
    ways = [] if p.no_hairpin is not None or p.shared else tcp_direct_ways(cell, a, b)
    if cell.transports != "udp" and ways:
        remote = {"host" if b.kind is NatKind.NONE else "srflx", "prflx"}
        why = (f"a direct TCP connection opens ({', '.join(ways)}; RFC 5382: {tcp_text(a)} x {tcp_text(b)})"
               + ("" if udp else ", UDP between the peers being " + ("blocked" if cell.udp_blocked else "unused")))
        return Expected(PathKind.DIRECT, why, tuple(sorted(f"host-{r}" for r in remote)), never,
                        transport="tcp")
    why = f"no direct TCP connection can open (RFC 5382: {tcp_text(a)} x {tcp_text(b)})"
    how, transport = "", ""
    if cell.transports == "tcp":  # relayed TCP candidates (RFC 6544 §5.3): a peer connects to the other's relayed one
        how, transport = " over a TCP allocation (RFC 6062)", "tcp"
    if cell.transports == "udp":
        why = "UDP between the peers is blocked and they gather no TCP candidates"
    if cell.turn:
        return Expected(PathKind.RELAY, f"{why}: relayed through TURN{how}", (), never, transport=transport)
    return Expected(PathKind.NONE, f"{why} and there is no TURN server", (), never)


def _expect_udp(cell: Cell, spec: TopologySpec) -> Expected:
    p = PeerPaths.of(spec)
    a, b = p.effective_a, p.effective_b
    # Private addresses are not routed between networks: a host-to-host pair (as A sees it: its host base, whose
    # check no NAT translated, to B's host address) needs the peers to reach each other untranslated.
    never = () if p.host_reach else ("host-host",)
    if cell.relay_only:
        if cell.turn:
            return Expected(PathKind.RELAY, "relay-only policy: only relayed candidates are offered", ("relay-relay",),
                            never, ("relay-relay",))
        return Expected(PathKind.NONE, "relay-only policy without a TURN server: nothing to offer", (), never)
    if p.host_reach and p.chain_a and p.chain_b:
        return Expected(PathKind.DIRECT, "both peers on one LAN: the host pair works and wins whatever the NAT does",
                        ("host-host",), (), ("host-host",))
    if not p.blocked and p.no_hairpin is None and direct_possible_through(p.way_a, p.way_b):
        types = tuple(sorted(f"{x}-{y}" for x in candidate_types(a, True, cell.lossy, b)
                             for y in candidate_types(b, False, cell.lossy, a)))
        why = "a direct pair works (RFC 4787 mapping/filtering allow it)"
        if p.shared:
            why = f"a direct pair works through the hairpin of the shared NAT {p.shared[-1]} (RFC 4787 REQ-9)"
        return Expected(PathKind.DIRECT, why, types, never)
    if p.blocked:
        why = "UDP is blocked: TURN over TCP"
    elif p.no_hairpin is not None:
        why = f"both peers are behind {p.no_hairpin}, which does not hairpin: their srflx addresses do not meet"
    else:
        why = "no direct pair can work"
    if cell.turn:
        return Expected(PathKind.RELAY, why if p.blocked else f"{why}: relayed through TURN", (), never)
    if p.blocked:
        why = "UDP is blocked"
    return Expected(PathKind.NONE, f"{why} and there is no TURN server", (), never)
