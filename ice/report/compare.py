"""``icelab report compare OLD NEW``: what changed between two matrix runs (two results.json files)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from ice.errors import UserError


def load(path: str | FsPath) -> dict[str, Any]:
    """A results.json, given as the file or as the report directory that holds it."""
    p = FsPath(path)
    if p.is_dir():
        p = p / "results.json"
    try:
        doc: Any = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"{p} does not exist: give a results.json or the --out directory of a run") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{p} is not a results.json ({exc})") from None
    except IsADirectoryError:
        raise UserError(f"{p} is a directory without a results.json") from None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and isinstance(c.get("scenario"), str)
                                              for c in cells):
        raise UserError(f"{p} has no list of cells with scenario names: is it a results.json written by "
                        "`icelab run`?")
    out: dict[str, Any] = doc
    return out


@dataclass
class Comparison:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    regressed: list[dict[str, Any]] = field(default_factory=list)
    """Passed before, fail now."""
    fixed: list[dict[str, Any]] = field(default_factory=list)
    path_changed: list[dict[str, Any]] = field(default_factory=list)
    """The observed path (direct/relay/none) or the selected pair types changed."""
    slower: list[dict[str, Any]] = field(default_factory=list)
    faster: list[dict[str, Any]] = field(default_factory=list)
    median_connect_ms: tuple[float | None, float | None] = (None, None)
    commits: tuple[str | None, str | None] = (None, None)
    backends: tuple[str | None, str | None] = (None, None)
    common: int = 0
    """Cells in both runs (the ones compared)."""
    backend_warning: str | None = None
    """Set when the runs used different back-ends (the sim and the lab differ in paths and times)."""

    @property
    def nothing_to_compare(self) -> str | None:
        """One sentence when no cell is in both runs."""
        if self.common:
            return None
        return (f"no cell is in both runs (old has {len(self.removed)}, new has {len(self.added)}), so there is "
                "nothing to compare; were they runs of the same suite?")

    @property
    def warnings(self) -> list[str]:
        return [w for w in (self.backend_warning, self.nothing_to_compare) if w]

    def as_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "regressed": self.regressed, "fixed": self.fixed,
                "path_changed": self.path_changed, "slower": self.slower, "faster": self.faster,
                "median_connect_ms": {"old": self.median_connect_ms[0], "new": self.median_connect_ms[1]},
                "commits": {"old": self.commits[0], "new": self.commits[1]},
                "backends": {"old": self.backends[0], "new": self.backends[1]},
                "same_backend": self.backends[0] == self.backends[1], "common_cells": self.common,
                "warnings": self.warnings}


def _ms(cell: dict[str, Any]) -> float | None:
    s = cell.get("seconds_to_connect")
    return None if s is None else float(s) * 1000


def _median(values: list[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return round(statistics.median(xs), 1) if xs else None


def compare(old: dict[str, Any], new: dict[str, Any], factor: float = 2.0, floor_ms: float = 50.0) -> Comparison:
    """Cells are matched by scenario name. A connect time counts as changed when it moved by more than ``factor``
    and by more than ``floor_ms`` (timer-bound times jitter by a few ms)."""
    a = {c["scenario"]: c for c in old["cells"]}
    b = {c["scenario"]: c for c in new["cells"]}
    out = Comparison(sorted(set(b) - set(a)), sorted(set(a) - set(b)))
    common = [n for n in b if n in a]
    for name in common:
        x, y = a[name], b[name]
        row = {"scenario": name, "old": _summary(x), "new": _summary(y)}
        if x.get("pass") and not y.get("pass"):
            out.regressed.append({**row, "reason": y.get("reason", "")})
        elif not x.get("pass") and y.get("pass"):
            out.fixed.append(row)
        if (x.get("observed"), x.get("selected_types")) != (y.get("observed"), y.get("selected_types")):
            out.path_changed.append(row)
        tx, ty = _ms(x), _ms(y)
        if tx is not None and ty is not None and abs(ty - tx) > floor_ms:
            if ty > tx * factor:
                out.slower.append({"scenario": name, "old_ms": round(tx, 1), "new_ms": round(ty, 1)})
            elif tx > ty * factor:
                out.faster.append({"scenario": name, "old_ms": round(tx, 1), "new_ms": round(ty, 1)})
    out.median_connect_ms = (_median([_ms(a[n]) for n in common]), _median([_ms(b[n]) for n in common]))
    out.commits = (_commit(old), _commit(new))
    out.backends = (_backend(old), _backend(new))
    out.common = len(common)
    if out.backends[0] != out.backends[1]:
        out.backend_warning = (f"the runs used different back-ends (old: {out.backends[0] or 'unknown'}, new: "
                               f"{out.backends[1] or 'unknown'}): paths and connect times differ between the sim "
                               "and the lab, so a change may come from the back-end, not the code")
    return out


def _backend(doc: dict[str, Any]) -> str | None:
    backend = doc.get("backend")
    return str(backend) if backend else None


def _commit(doc: dict[str, Any]) -> str | None:
    env = doc.get("environment")
    return str(env["commit"]) if isinstance(env, dict) and env.get("commit") else None


def _summary(cell: dict[str, Any]) -> str:
    types = cell.get("selected_types")
    verdict = "pass" if cell.get("pass") else "FAIL"
    return f"{verdict} {cell.get('observed')}" + (f" ({types})" if types else "")


def render(c: Comparison, old_name: str, new_name: str) -> str:
    at = [", ".join(x for x in (f"{backend} back-end" if backend else "", f"commit {commit}" if commit else "")
                    if x) for backend, commit in zip(c.backends, c.commits, strict=True)]
    at = [f" ({x})" if x else "" for x in at]
    lines = [f"compare {old_name}{at[0]} -> {new_name}{at[1]}"]
    if not c.common:
        lines.append(f"No cell is in both runs ({old_name} has {len(c.removed)}, {new_name} has {len(c.added)}), so "
                     "there is nothing to compare.")
        return "\n".join(lines)

    def section(title: str, rows: list[dict[str, Any]], fmt: Callable[[dict[str, Any]], str]) -> None:
        if rows:
            lines.append(f"{title} ({len(rows)}):")
            lines.extend("  " + fmt(r) for r in rows)

    section("REGRESSED: passed before, fail now", c.regressed,
            lambda r: f"{r['scenario']}: {r['old']} -> {r['new']}  {r['reason']}")
    section("fixed", c.fixed, lambda r: f"{r['scenario']}: {r['old']} -> {r['new']}")
    section("path or selected pair changed", c.path_changed, lambda r: f"{r['scenario']}: {r['old']} -> {r['new']}")
    section("slower to connect", c.slower, lambda r: f"{r['scenario']}: {r['old_ms']} ms -> {r['new_ms']} ms")
    section("faster to connect", c.faster, lambda r: f"{r['scenario']}: {r['old_ms']} ms -> {r['new_ms']} ms")
    if c.added:
        lines.append(f"new cells ({len(c.added)}): {', '.join(c.added)}")
    if c.removed:
        lines.append(f"cells gone ({len(c.removed)}): {', '.join(c.removed)}")
    old_ms, new_ms = c.median_connect_ms
    lines.append(f"median time to connect over common cells: {old_ms} ms -> {new_ms} ms")
    if len(lines) == 2:
        lines.insert(1, "no cell changed its verdict, path or selected pair")
    return "\n".join(lines)
