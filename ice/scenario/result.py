"""What a cell did on a back-end, judged against its expectation: one status per cell."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    KNOWN_FAILURE = "known-failure"
    """Fails its expectation, as the pin file says it is known to (does not fail the run)."""
    UNEXPECTED_PASS = "unexpected-pass"
    """Pinned as a known failure but meets its expectation: time to remove the pin's known_failure."""
    SKIPPED = "skipped"
    """The back-end cannot run this cell (the sim has no TURN over TCP, and runs no foreign agents)."""
    NOT_INSTALLED = "not-installed"
    """An agent the cell names is not installed here (the reason says what to install)."""
    UNSUPPORTED = "unsupported"
    """An agent refused a setting the cell needs (``unsupported`` on the agent protocol), with its reason."""


def selected_transport(pair: str) -> str:
    """"tcp" when a pair's text (:func:`ice.agent.candidate.pair_text`) has a TCP candidate, else "udp"."""
    return "tcp" if " tcp " in f" {pair} " else "udp"


@dataclass
class CellResult:
    cell: Cell
    backend: str
    expected: PathKind
    observed: PathKind
    selected: str | None
    """e.g. "srflx 203.0.113.1:5000 -> prflx 203.0.113.2:6000" (peer A's view)."""
    seconds: float | None
    succeeded: list[str] = field(default_factory=list)
    """Pair types ("local-remote") of peer A's valid pairs (RFC 8445 §7.2.5.3.1)."""
    reason: str = ""
    sim_observed: PathKind | None = None
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
    pinned: bool = True
    """False: no pin file entry yet, so the cell was judged by the reasoning's answer (docs/scenarios.md)."""
    source: str = ""
    """The scenario file the cell came from."""
    unrunnable: Status | None = None
    """NOT_INSTALLED or UNSUPPORTED: the cell could not run, ``reason`` says why."""
    pairs_known: bool = True
    """False when the agents do not report their valid pairs (foreign agents): only the path and the selected
    pair's types are judged."""

    def expecting(self, exp: Expected) -> CellResult:
        """Attach the pinned expectation and explain a mismatch in ``reason``."""
        self.expectation = exp
        if not self.reason and not self.skipped and self.unrunnable is None:
            self.reason = self.verdict()
        return self

    def verdict(self) -> str:
        """Why this cell does not meet its expectation ("" when it does)."""
        if self.skipped or self.unrunnable is not None:
            return ""
        if self.sim_observed is not None and self.sim_observed is not self.observed:
            return f"the lab and the sim disagree: lab {self.observed.value}, sim {self.sim_observed.value}"
        if self.observed is not self.expected:
            return f"expected {self.expected.value}, {self.backend} selected {self.selected or 'nothing'}"
        timeline = self.extra.get("timeline_error")
        if timeline:
            return str(timeline)
        bulk = self.extra.get("bulk_error")
        if bulk:
            return str(bulk)
        exp = self.expectation
        if exp is None:
            return ""
        if self.observed is not PathKind.NONE and exp.transport and self.selected is not None \
                and selected_transport(self.selected) != exp.transport:
            return f"selected a {selected_transport(self.selected)} pair ({self.selected}); expected {exp.transport}"
        judged = self.selected_types is not None or self.pairs_known  # process cells may have no RFC-exact side
        if self.observed is not PathKind.NONE and exp.selected and judged \
                and not set(self.readings()) & set(exp.selected):
            return f"selected a {self.selected_types} pair; RFC 4787 reasoning allows {', '.join(exp.selected)}"
        if not self.pairs_known:
            return ""
        bad = sorted(set(exp.never) & set(self.succeeded))
        if bad:
            return f"pairs that cannot work succeeded: {', '.join(bad)}"
        missing = sorted(set(exp.must_succeed) - set(self.succeeded))
        if self.observed is not PathKind.NONE and missing:
            return f"pairs that must work did not succeed: {', '.join(missing)}"
        return ""

    def readings(self) -> list[str]:
        """The selected pair's types (A's view), and the equivalent reading when the side opposite the judged one
        is a foreign agent: its srflx and prflx candidates are the same NAT mapping seen two ways (pion gathers
        srflx candidates on sockets of their own, so its checks come from a mapping the peer learns as prflx)."""
        if self.selected_types is None:
            return []
        readings = [self.selected_types]
        judged = self.extra.get("types_from")
        if judged in ("a", "b") and self.cell.agents["b" if judged == "a" else "a"].foreign:
            parts = self.selected_types.split("-")
            i = 1 if judged == "a" else 0
            swap = {"srflx": "prflx", "prflx": "srflx"}
            if len(parts) == 2 and parts[i] in swap:
                parts[i] = swap[parts[i]]
                readings.append("-".join(parts))
        return readings

    @property
    def status(self) -> Status:
        if self.skipped:
            return Status.SKIPPED
        if self.unrunnable is not None:
            return self.unrunnable
        bad = bool(self.verdict())
        if self.expectation is not None and self.expectation.known_failure is not None:
            if not bad and self.expectation.intermittent:
                return Status.PASS
            return Status.KNOWN_FAILURE if bad else Status.UNEXPECTED_PASS
        return Status.FAIL if bad else Status.PASS

    @property
    def passed(self) -> bool:
        """Does the cell leave the run green (a known failure does; a mismatch does not)?"""
        return self.status is not Status.FAIL

    def as_json(self) -> dict[str, object]:
        exp = self.expectation
        return {
            "scenario": self.cell.name,
            "topology": self.cell.topology,
            "nats": self.cell.labels,
            "group": self.cell.group,
            "source": self.source,
            "pinned": self.pinned,
            "backend": self.backend,
            "expected": self.expected.value,
            "expected_reason": exp.reason if exp else None,
            "expected_selected": list(exp.selected) if exp else [],
            "never": list(exp.never) if exp else [],
            "must_succeed": list(exp.must_succeed) if exp else [],
            "known_failure": exp.known_failure if exp else None,
            "intermittent": exp.intermittent if exp else False,
            "observed": None if self.skipped or self.unrunnable else self.observed.value,
            "sim_observed": None if self.sim_observed is None else self.sim_observed.value,
            "selected": self.selected,
            "selected_types": self.selected_types,
            "selected_b": self.selected_b,
            "succeeded_pairs": self.succeeded,
            "pairs_known": self.pairs_known,
            "seconds_to_connect": None if self.seconds is None else round(self.seconds, 4),
            "status": self.status.value,
            "pass": self.passed,
            "reason": self.reason,
            "artifacts": self.artifacts,
            "repro": self.repro,
            "config": self.cell.as_json(),
            "agent_a": self.cell.agent_a.label,
            "agent_b": self.cell.agent_b.label,
            **self.extra,
        }


def restore_status(res: CellResult, doc: dict[str, Any]) -> None:
    """What a result's JSON says about why it did not run, and whether its pairs are known."""
    status = doc.get("status")
    res.skipped = status == Status.SKIPPED.value
    if status in (Status.NOT_INSTALLED.value, Status.UNSUPPORTED.value):
        res.unrunnable = Status(status)
    res.pairs_known = bool(doc.get("pairs_known", True))


def result_from_json(doc: dict[str, Any], cell: Cell, exp: Expected) -> CellResult:
    """A worker's result line for the cell it was given; a malformed line raises ValueError."""
    if not isinstance(doc, dict):
        raise ValueError("a result line that is not a JSON object")
    try:
        observed = PathKind(doc["observed"]) if doc.get("observed") else PathKind.NONE
        res = CellResult(cell, str(doc["backend"]), exp.path, observed, doc.get("selected"),
                         doc.get("seconds_to_connect"), list(doc.get("succeeded_pairs") or []),
                         str(doc.get("reason", "")), None, doc.get("artifacts"), doc.get("repro"),
                         selected_types=doc.get("selected_types"), selected_b=doc.get("selected_b"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a malformed result line ({exc})") from None
    restore_status(res, doc)
    known = set(res.as_json())
    res.extra = {k: v for k, v in doc.items() if k not in known}
    return res.expecting(exp)
