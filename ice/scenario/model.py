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
GRID_GROUPS = ("rfc4787", "special")
"""Groups shown as the NAT A x NAT B grid; the others are listed below it."""


@dataclass(frozen=True)
class MatrixTimers:
    """Every timer of a matrix run (both back-ends), in one place."""

    connect: float = 8.0
    """How long a cell may take to select a pair on both sides before it counts as not connected."""
    connect_lossy: float = 20.0
    """The same on lossy links (a check may need several retransmissions: 0.5 + 1 + 2 + 4 + 8 s)."""
    data: float = 3.0
    """After selection, how long one datagram each way may take to arrive (resent every ``data_resend``)."""
    data_lossy: float = 10.0
    data_resend: float = 0.1
    capture_flush: float = 0.05
    """Before slicing a failed cell's pcaps: tcpdump --immediate-mode -U writes within milliseconds."""
    cell_deadline: float = 120.0
    """A lab worker that returns nothing for this long is killed; its cell fails and the run goes on."""
    worker_stop: float = 15.0
    """How long a lab worker may take to tear its labs down after its last cell."""
    sim_latency: float = 0.001
    """One-way latency of every simulated packet (the lab's veth links are about that fast)."""

    def connect_for(self, lossy: bool) -> float:
        return self.connect_lossy if lossy else self.connect

    def data_for(self, lossy: bool) -> float:
        return self.data_lossy if lossy else self.data


TIMERS = MatrixTimers()


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
    """The candidate-type pairs ("local-remote", as peer A sees it) the selected pair may be; empty: any (relayed
    cells: the path says it; a peer's relay can reach A disguised as peer-reflexive, see docs/scenarios.md)."""
    never: tuple[str, ...] = ()
    """Pair types that must not succeed (e.g. ``host-host`` between two private networks)."""
    must_succeed: tuple[str, ...] = ()
    """Pair types that must have succeeded by the time both sides selected (e.g. ``host-host`` on a shared LAN)."""
    known_failure: str | None = None
    """Set by hand in the pin file: the stack is known not to meet this expectation yet, and why. Such a cell
    does not fail the run; one that meets its expectation anyway is reported as unexpectedly passing."""

    def as_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"path": self.path.value, "reason": self.reason, "selected": list(self.selected),
                                  "never": list(self.never), "must_succeed": list(self.must_succeed)}
        if self.known_failure is not None:
            doc["known_failure"] = self.known_failure
        return doc

    @classmethod
    def from_json(cls, doc: object) -> Expected:
        """Parse one pinned entry; raise ValueError saying what is wrong with it."""
        if not isinstance(doc, dict):
            raise ValueError("an entry must be an object with at least a 'path'")
        try:
            path = Path(doc.get("path"))
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
        return cls(path, str(doc.get("reason", "")), strings("selected"), strings("never"), strings("must_succeed"),
                   known)


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
    a, b = s.effective
    # Private addresses are not routed between networks: a host-to-host pair (as A sees it: its host base, whose
    # check the NAT did not translate, to B's host address) needs both peers public, or one LAN.
    never = () if s.topology == "same_nat" or NatKind.NONE is a.kind is b.kind else ("host-host",)
    if s.relay_only:
        if s.turn:
            return Expected(Path.RELAY, "relay-only policy: only relayed candidates are offered", ("relay-relay",),
                            never, ("relay-relay",))
        return Expected(Path.NONE, "relay-only policy without a TURN server: nothing to offer", (), never)
    if s.topology == "same_nat":
        return Expected(Path.DIRECT, "both peers on one LAN: the host pair works and wins whatever the NAT does",
                        ("host-host",), (), ("host-host",))
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


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    KNOWN_FAILURE = "known-failure"
    """Fails its expectation, as the pin file says it is known to (does not fail the run)."""
    UNEXPECTED_PASS = "unexpected-pass"
    """Pinned as a known failure but meets its expectation: time to remove the pin's known_failure."""
    SKIPPED = "skipped"
    """The back-end cannot run this cell (the sim has no TURN over TCP)."""


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
    """Pair types ("local-remote") of peer A's valid pairs (RFC 8445 §7.2.5.3.1)."""
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
    selected_b: str | None = None
    """Peer B's selected pair."""
    expectation: Expected | None = None
    skipped: bool = False

    def expecting(self, exp: Expected) -> CellResult:
        """Attach the pinned expectation and explain a mismatch in ``reason``."""
        self.expectation = exp
        if not self.reason and not self.skipped:
            self.reason = self.verdict()
        return self

    def verdict(self) -> str:
        """Why this cell does not meet its expectation ("" when it does)."""
        if self.skipped:
            return ""
        if self.sim_observed is not None and self.sim_observed is not self.observed:
            return f"the lab and the sim disagree: lab {self.observed.value}, sim {self.sim_observed.value}"
        if self.observed is not self.expected:
            return f"expected {self.expected.value}, {self.backend} selected {self.selected or 'nothing'}"
        exp = self.expectation
        if exp is None:
            return ""
        if self.observed is not Path.NONE and exp.selected and self.selected_types not in exp.selected:
            return f"selected a {self.selected_types} pair; RFC 4787 reasoning allows {', '.join(exp.selected)}"
        bad = sorted(set(exp.never) & set(self.succeeded))
        if bad:
            return f"pairs that cannot work succeeded: {', '.join(bad)}"
        missing = sorted(set(exp.must_succeed) - set(self.succeeded))
        if self.observed is not Path.NONE and missing:
            return f"pairs that must work did not succeed: {', '.join(missing)}"
        return ""

    @property
    def status(self) -> Status:
        if self.skipped:
            return Status.SKIPPED
        bad = bool(self.verdict())
        if self.expectation is not None and self.expectation.known_failure is not None:
            return Status.KNOWN_FAILURE if bad else Status.UNEXPECTED_PASS
        return Status.FAIL if bad else Status.PASS

    @property
    def passed(self) -> bool:
        """Does the cell leave the run green (a known failure does; a mismatch does not)?"""
        return self.status is not Status.FAIL

    def as_json(self) -> dict[str, object]:
        exp = self.expectation
        return {
            "scenario": self.scenario.name,
            "nat_a": self.scenario.nat_a,
            "nat_b": self.scenario.nat_b,
            "topology": self.scenario.topology,
            "group": self.scenario.group,
            "backend": self.backend,
            "expected": self.expected.value,
            "expected_reason": exp.reason if exp else None,
            "expected_selected": list(exp.selected) if exp else [],
            "never": list(exp.never) if exp else [],
            "must_succeed": list(exp.must_succeed) if exp else [],
            "known_failure": exp.known_failure if exp else None,
            "observed": None if self.skipped else self.observed.value,
            "sim_observed": None if self.sim_observed is None else self.sim_observed.value,
            "selected": self.selected,
            "selected_types": self.selected_types,
            "selected_b": self.selected_b,
            "succeeded_pairs": self.succeeded,
            "seconds_to_connect": None if self.seconds is None else round(self.seconds, 4),
            "status": self.status.value,
            "pass": self.passed,
            "reason": self.reason,
            "artifacts": self.artifacts,
            "repro": self.repro,
            "config": asdict(self.scenario),
            **self.extra,
        }
