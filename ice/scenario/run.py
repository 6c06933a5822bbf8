"""Run scenario cells on a back-end and write the reports (results.json, a terminal grid, a Markdown grid)."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path as FsPath

from ice.agent import CandidateType
from ice.lab.nat.behaviour import NatKind
from ice.scenario.model import CellResult, Path, Scenario, expect
from ice.scenario.report import html_grid, junit_xml

SCENARIO_DIR = FsPath(__file__).resolve().parents[2] / "scenarios"


def load_matrix(presets: list[str] | None = None) -> list[Scenario]:
    spec = importlib.util.spec_from_file_location("icelab_scenarios_default", SCENARIO_DIR / "default.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells: list[Scenario] = module.matrix(presets)
    return cells


def expectations_file() -> FsPath:
    return SCENARIO_DIR / "expected.json"


def pinned_expectations(cells: Iterable[Scenario]) -> dict[str, dict[str, str]]:
    return {c.name: {"path": expect(c).path.value, "reason": expect(c).reason} for c in cells}


@functools.lru_cache(maxsize=1)
def _pinned() -> dict[str, dict[str, str]]:
    try:
        doc: dict[str, dict[str, str]] = json.loads(expectations_file().read_text())
    except FileNotFoundError:
        return {}
    return doc


def expected_path(cell: Scenario) -> Path:
    """The pinned expectation (scenarios/expected.json, reviewed data) or, for a cell not pinned yet, the
    RFC 4787 reasoning of :func:`ice.scenario.model.expect`."""
    pinned = _pinned().get(cell.name)
    return Path(pinned["path"]) if pinned else expect(cell).path


def run_sim(cell: Scenario) -> CellResult:
    """The in-memory back-end (ice.sim): deterministic, virtual time."""
    from ice.sim.scenario import two_nats

    expected = expected_path(cell)
    a, b = cell.behaviours
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        return CellResult(cell, "sim", expected, expected, None, None,
                          reason="skipped: TURN over TCP is not simulated (the lab runs this cell)")
    r = two_nats(a, b, turn=cell.turn, loss=cell.loss, latency=0.001 + cell.delay_ms / 1000)
    if not r.connected or r.selected is None:
        observed = Path.NONE
        selected = None
    else:
        observed = Path.RELAY if CandidateType.RELAYED in r.selected else Path.DIRECT
        selected = f"{r.selected[0].value} -> {r.selected[1].value}"
    res = CellResult(cell, "sim", expected, observed, selected, r.seconds if r.connected else None,
                     sorted(f"{x}-{y}" for x, y in r.succeeded))
    if not res.passed:
        res.reason = f"expected {expected.value}, the simulation selected {selected or 'nothing'}"
    return res


def run_cells(cells: list[Scenario], backend: Callable[[Scenario], CellResult],
              progress: Callable[[CellResult], None] | None = None) -> list[CellResult]:
    results = []
    for cell in cells:
        r = backend(cell)
        results.append(r)
        if progress is not None:
            progress(r)
    return results


def _mark(r: CellResult) -> str:
    sym = {Path.DIRECT: "D", Path.RELAY: "R", Path.NONE: "-"}[r.observed]
    return sym if r.passed else sym + "!"


def grid(results: list[CellResult]) -> tuple[list[str], list[str], dict[tuple[str, str], CellResult]]:
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], CellResult] = {}
    for r in results:
        a, b = r.scenario.nat_a, r.scenario.nat_b
        if a not in rows:
            rows.append(a)
        if b not in cols:
            cols.append(b)
        cells[(a, b)] = r
    return rows, cols, cells


def terminal_grid(results: list[CellResult]) -> str:
    rows, cols, cells = grid(results)
    corner = "A \\ B"
    w = max(len(x) for x in [*rows, corner])
    lines = [corner.ljust(w) + "  " + " ".join(f"{c[:9]:>9}" for c in cols)]
    for a in rows:
        lines.append(a.ljust(w) + "  " + " ".join(f"{_mark(cells[(a, b)]) if (a, b) in cells else '':>9}"
                                                  for b in cols))
    lines.append("D: direct pair selected, R: relayed pair, -: no connection, !: differs from the expectation")
    return "\n".join(lines)


def markdown_grid(results: list[CellResult]) -> str:
    rows, cols, cells = grid(results)
    out = ["| A \\ B | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for a in rows:
        marks = []
        for b in cols:
            r = cells.get((a, b))
            marks.append("" if r is None else ("✅ " if r.passed else "❌ ") + r.observed.value)
        out.append(f"| {a} | " + " | ".join(marks) + " |")
    passed = sum(r.passed for r in results)
    out.append(f"\n{passed}/{len(results)} cells as expected.")
    return "\n".join(out)


def write_reports(results: list[CellResult], out: FsPath, backend: str, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "backend": backend,
        "seconds": round(seconds, 3),
        "cells": [r.as_json() for r in results],
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "grid.txt").write_text(terminal_grid(results) + "\n")
    (out / "grid.md").write_text(markdown_grid(results) + "\n")
    (out / "grid.html").write_text(html_grid(results, backend, seconds))
    (out / "junit.xml").write_text(junit_xml(results, backend, seconds) + "\n")


def main(backend_name: str, presets: list[str] | None, out: FsPath, update: bool, quiet: bool = False,
         names: list[str] | None = None) -> int:
    cells = load_matrix(presets)
    if names:
        unknown = sorted(set(names) - {c.name for c in cells})
        if unknown:
            print(f"icelab: no scenario named {', '.join(unknown)}; names look like 'eim-eifxapdm-apdf' "
                  "(see results.json of a full run).", file=sys.stderr)
            return 2
        cells = [c for c in cells if c.name in names]
    if update:
        pinned = pinned_expectations(load_matrix())
        expectations_file().write_text(json.dumps(pinned, indent=2, sort_keys=True) + "\n")
        print(f"wrote {len(pinned)} expectations to {expectations_file()}")
        return 0
    backend = {"sim": run_sim}.get(backend_name)
    if backend is None:
        print(f"icelab: backend {backend_name!r} is not available for the scenario matrix yet; use --backend sim "
              "(the kernel lab grid is `icelab nat grid`).", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results = run_cells(cells, backend, None if quiet else _progress)
    elapsed = time.perf_counter() - started
    write_reports(results, out, backend_name, elapsed)
    print(terminal_grid(results))
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)}/{len(results)} cells as expected in {elapsed:.1f} s ({backend_name}); "
          f"reports in {out}/")
    for r in failed:
        print(f"  FAIL {r.scenario.name}: {r.reason}")
    return 1 if failed else 0


def _progress(r: CellResult) -> None:
    took = "" if r.seconds is None else f" in {r.seconds * 1000:.0f} ms"
    print(f"  {'ok ' if r.passed else 'FAIL'} {r.scenario.name:<34} {r.observed.value:<6}"
          f" {r.selected or ''}{took}", file=sys.stderr, flush=True)
