"""A scenario cell: two peers, the NATs in front of them, a STUN/TURN server; and what must happen.

Expectations come from RFC 4787 reasoning written once (:func:`expect`, over
:func:`ice.nat.reach.direct_possible`) and are pinned per cell as data in ``scenarios/expected.json`` so a reader
can review every one; a test keeps the file equal to the function's output.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind, preset
from ice.nat.reach import direct_possible

TOPOLOGIES = ("two_nats", "same_nat", "double_nat")


class Path(enum.Enum):
    DIRECT = "direct"
    """The selected pair has no relayed candidate."""
    RELAY = "relay"
    """The selected pair goes through TURN."""
    NONE = "none"
    """ICE fails."""


@dataclass(frozen=True)
class Scenario:
    """One cell. ``nat_a``/``nat_b`` are preset names (``none``: a public peer). Topologies:

    - ``two_nats``: A behind ``nat_a``, B behind ``nat_b`` (the 9 x 9 grid);
    - ``same_nat``: A and B on one LAN behind one NAT ``nat_a`` (``nat_b`` repeats it), ``hairpin`` on or off;
    - ``double_nat``: A behind a home NAT ``nat_a`` behind a carrier-grade NAT ``outer``; B behind ``nat_b``.
    """

    name: str
    nat_a: str
    nat_b: str
    topology: str = "two_nats"
    turn: bool = True
    """A TURN server on the public segment (both peers allocate)."""
    loss: float = 0.0
    """Packet loss on A's access link (each direction)."""
    delay_ms: float = 0.0
    """One-way delay on A's access link."""
    hairpin: bool = True
    """``same_nat``: does the NAT hairpin (RFC 4787 §6)?"""
    outer: str | None = None
    """``double_nat``: the carrier-grade NAT's preset."""
    nomination: str = "regular"
    """"regular" (RFC 8445 §8.1.1) or "aggressive" (RFC 5245 §8.1.1.2)."""
    relay_only: bool = False
    """Both peers offer relayed candidates only (the privacy policy)."""
    trickle: bool = True
    """Candidates are signalled as gathered (RFC 8838), or all at once when gathering ends."""
    controlling: str = "a"
    """Which agent starts controlling: "a", "b", or "both" (a role conflict, RFC 8445 §7.3.1.1)."""
    group: str = "rfc4787"
    """Where reports show the cell: ``rfc4787`` is the NAT A x NAT B grid; other groups are listed below it."""

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"scenario {self.name}: topology {self.topology!r} is not one of {', '.join(TOPOLOGIES)}")
        if self.topology == "double_nat" and self.outer is None:
            raise ValueError(f"scenario {self.name}: a double_nat cell names its outer (carrier-grade) NAT")
        if self.controlling not in ("a", "b", "both"):
            raise ValueError(f"scenario {self.name}: controlling is 'a', 'b' or 'both'")
        if self.nomination not in ("regular", "aggressive"):
            raise ValueError(f"scenario {self.name}: nomination is 'regular' or 'aggressive'")

    @property
    def behaviours(self) -> tuple[NatBehaviour, NatBehaviour]:
        """The behaviour of the NAT in front of A and of the one in front of B (for ``same_nat`` the one NAT, as
        configured; for ``double_nat`` A's side is the home NAT)."""
        a, b = preset(self.nat_a), preset(self.nat_b)
        if self.topology == "same_nat" and not self.hairpin:
            a = b = a.with_(hairpinning=False)
        return a, b

    @property
    def outer_behaviour(self) -> NatBehaviour | None:
        return preset(self.outer) if self.outer else None

    @property
    def effective(self) -> tuple[NatBehaviour, NatBehaviour]:
        """What each peer's path to the internet behaves like: for a double NAT, the two NATs composed."""
        a, b = self.behaviours
        outer = self.outer_behaviour
        return (compose(a, outer) if outer else a), b


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


@dataclass(frozen=True)
class Expected:
    path: Path
    reason: str
    selected: tuple[str, ...] = ()
    """For a direct path, the candidate-type pairs ("local-remote", as peer A sees it) the selected
    pair may be; empty: any."""
    never: tuple[str, ...] = ()
    """Pair types that must not succeed (e.g. ``host-host`` between two private networks)."""

    def as_json(self) -> dict[str, object]:
        return {"path": self.path.value, "reason": self.reason, "selected": list(self.selected),
                "never": list(self.never)}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Expected:
        sel, never = doc.get("selected") or [], doc.get("never") or []
        assert isinstance(sel, list) and isinstance(never, list)
        return cls(Path(str(doc["path"])), str(doc.get("reason", "")), tuple(map(str, sel)), tuple(map(str, never)))


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


def expect(s: Scenario) -> Expected:
    """What RFC 4787 reasoning predicts for a cell (see ice.nat.reach for the reasoning itself)."""
    if s.relay_only:
        if s.turn:
            return Expected(Path.RELAY, "relay-only policy: only relayed candidates are offered")
        return Expected(Path.NONE, "relay-only policy without a TURN server: nothing to offer")
    if s.topology == "same_nat":
        return Expected(Path.DIRECT, "both peers on one LAN: the host pair works and wins whatever the NAT does",
                        ("host-host",))
    a, b = s.effective
    both_public = a.kind is NatKind.NONE and b.kind is NatKind.NONE
    never = () if both_public else ("host-host",)  # private addresses are not routed between the networks
    blocked = NatKind.UDP_BLOCKED in (a.kind, b.kind)
    if not blocked and direct_possible(a, b):
        lossy = s.loss > 0
        types = tuple(sorted(f"{x}-{y}" for x in candidate_types(a, True, lossy, b)
                             for y in candidate_types(b, False, lossy, a)))
        return Expected(Path.DIRECT, "a direct pair works (RFC 4787 mapping/filtering allow it)", types, never)
    if s.turn:
        why = "UDP is blocked: TURN over TCP" if blocked else "no direct pair can work: relayed through TURN"
        return Expected(Path.RELAY, why, (), never)
    return Expected(Path.NONE, "no direct pair can work and there is no TURN server", (), never)


@dataclass
class CellResult:
    scenario: Scenario
    backend: str
    expected: Path
    observed: Path
    selected: str | None
    """e.g. "srflx 203.0.113.1:5000 -> prflx 203.0.113.2:6000" (peer A's view)."""
    seconds: float | None
    succeeded: list[str] = field(default_factory=list)
    """Pair types ("local-remote") of the controlling agent's pairs that succeeded."""
    reason: str = ""
    sim_observed: Path | None = None
    """On the lab back-end, what the in-memory sim says for the same cell (they must agree)."""
    artifacts: str | None = None
    """Directory with this cell's artifacts (failed cells, or all with --keep-artifacts)."""
    repro: str | None = None
    """A command that runs just this cell again."""
    extra: dict[str, object] = field(default_factory=dict)
    selected_types: str | None = None
    """The selected pair's candidate types, "local-remote" (peer A's view)."""
    expected_selected: tuple[str, ...] = ()
    never: tuple[str, ...] = ()

    def expecting(self, exp: Expected) -> CellResult:
        """Attach the pinned expectation's pair-type rules and explain a failure in ``reason``."""
        self.expected_selected, self.never = exp.selected, exp.never
        if not self.reason:
            self.reason = self.verdict()
        return self

    def verdict(self) -> str:
        """Why this cell fails its expectation ("" when it passes)."""
        if self.observed is not self.expected:
            return f"expected {self.expected.value}, {self.backend} selected {self.selected or 'nothing'}"
        if (self.observed is Path.DIRECT and self.expected_selected
                and self.selected_types not in self.expected_selected):
            return (f"selected a {self.selected_types} pair; RFC 4787 reasoning allows "
                    f"{', '.join(self.expected_selected)}")
        bad = sorted(set(self.never) & set(self.succeeded))
        if bad:
            return f"pairs that cannot work succeeded: {', '.join(bad)}"
        return ""

    @property
    def passed(self) -> bool:
        agree = self.sim_observed is None or self.sim_observed is self.observed
        return agree and not self.verdict()

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario.name,
            "nat_a": self.scenario.nat_a,
            "nat_b": self.scenario.nat_b,
            "topology": self.scenario.topology,
            "group": self.scenario.group,
            "backend": self.backend,
            "expected": self.expected.value,
            "observed": self.observed.value,
            "sim_observed": None if self.sim_observed is None else self.sim_observed.value,
            "selected": self.selected,
            "selected_types": self.selected_types,
            "expected_selected": list(self.expected_selected),
            "never": list(self.never),
            "succeeded_pairs": self.succeeded,
            "seconds_to_connect": None if self.seconds is None else round(self.seconds, 4),
            "pass": self.passed,
            "reason": self.reason,
            "artifacts": self.artifacts,
            "repro": self.repro,
            "config": asdict(self.scenario),
            **self.extra,
        }
