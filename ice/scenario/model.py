"""A scenario cell: two peers, a NAT in front of each, a STUN/TURN server; and what must happen.

Expectations come from RFC 4787 reasoning written once (:func:`expect`, over
:func:`ice.lab.nat.reach.direct_possible`) and are pinned per cell as data in ``scenarios/expected.json`` so a reader
can review every one; a test keeps the file equal to the function's output.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

from ice.lab.nat.behaviour import NatBehaviour, NatKind, preset
from ice.lab.nat.reach import direct_possible


class Path(enum.Enum):
    DIRECT = "direct"
    """The selected pair has no relayed candidate."""
    RELAY = "relay"
    """The selected pair goes through TURN."""
    NONE = "none"
    """ICE fails."""


@dataclass(frozen=True)
class Scenario:
    name: str
    nat_a: str
    nat_b: str
    turn: bool = True
    """A TURN server on the public segment (both peers allocate)."""
    loss: float = 0.0
    delay_ms: float = 0.0

    @property
    def behaviours(self) -> tuple[NatBehaviour, NatBehaviour]:
        return preset(self.nat_a), preset(self.nat_b)


@dataclass(frozen=True)
class Expected:
    path: Path
    reason: str


def expect(s: Scenario) -> Expected:
    """What RFC 4787 reasoning predicts for a cell (see ice.lab.nat.reach for the reasoning itself)."""
    a, b = s.behaviours
    blocked = NatKind.UDP_BLOCKED in (a.kind, b.kind)
    if not blocked and direct_possible(a, b):
        return Expected(Path.DIRECT, "a direct pair works (RFC 4787 mapping/filtering allow it)")
    if s.turn:
        why = "UDP is blocked: TURN over TCP" if blocked else "no direct pair can work: relayed through TURN"
        return Expected(Path.RELAY, why)
    return Expected(Path.NONE, "no direct pair can work and there is no TURN server")


@dataclass
class CellResult:
    scenario: Scenario
    backend: str
    expected: Path
    observed: Path
    selected: str | None
    """e.g. "host 10.0.1.2:5000 -> srflx 203.0.113.2:5000" (controlling side)."""
    seconds: float | None
    succeeded: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.observed is self.expected

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario.name,
            "nat_a": self.scenario.nat_a,
            "nat_b": self.scenario.nat_b,
            "backend": self.backend,
            "expected": self.expected.value,
            "observed": self.observed.value,
            "selected": self.selected,
            "succeeded_pairs": self.succeeded,
            "seconds_to_connect": None if self.seconds is None else round(self.seconds, 4),
            "pass": self.passed,
            "reason": self.reason,
            "config": asdict(self.scenario),
        }
