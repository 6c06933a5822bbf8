"""Run scenario cells on a back-end and write the reports (results.json, terminal, Markdown and HTML grids, JUnit).

Back-ends: ``sim`` (in-memory, virtual time, no root) and ``lab`` (kernel NATs in Mininet, root). On the lab,
every cell also runs in the sim and the two must agree. ``-j N`` runs N lab workers (``ice.scenario.worker``
processes), each with its own labs; cells are handed out so that a worker keeps reusing the lab it has built.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path as FsPath
from typing import Any, TextIO

from ice.agent import AgentConfig, Nomination
from ice.errors import UserError
from ice.nat.behaviour import NatKind
from ice.scenario.model import CellResult, Expected, Path, Scenario, expect
from ice.scenario.report import html_grid, junit_xml

SCENARIO_DIR = FsPath(__file__).resolve().parents[2] / "scenarios"
GRID_GROUP = "rfc4787"


def load_matrix(presets: list[str] | None = None) -> list[Scenario]:
    spec = importlib.util.spec_from_file_location("icelab_scenarios_default", SCENARIO_DIR / "default.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cells: list[Scenario] = module.matrix(presets)
    return cells


def expectations_file() -> FsPath:
    """scenarios/expected.json, or the file named by ICELAB_EXPECTATIONS (to try other pins without editing it)."""
    override = os.environ.get("ICELAB_EXPECTATIONS")
    return FsPath(override) if override else SCENARIO_DIR / "expected.json"


def pinned_expectations(cells: Iterable[Scenario]) -> dict[str, dict[str, object]]:
    return {c.name: expect(c).as_json() for c in cells}


@functools.lru_cache(maxsize=1)
def _pinned() -> dict[str, dict[str, object]]:
    try:
        doc: dict[str, dict[str, object]] = json.loads(expectations_file().read_text())
    except FileNotFoundError:
        return {}
    return doc


def pinned(cell: Scenario) -> Expected:
    """The pinned expectation (scenarios/expected.json, reviewed data) or, for a cell not pinned yet, the
    RFC 4787 reasoning of :func:`ice.scenario.model.expect`."""
    doc = _pinned().get(cell.name)
    return Expected.from_json(doc) if doc else expect(cell)


def expected_path(cell: Scenario) -> Path:
    return pinned(cell).path


def run_sim(cell: Scenario) -> CellResult:
    """The in-memory back-end (ice.sim): deterministic, virtual time. A double NAT is simulated as the two NATs
    composed (:func:`ice.scenario.model.compose`)."""
    from ice.sim.scenario import two_nats

    exp = pinned(cell)
    a, b = cell.effective
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        return CellResult(cell, "sim", exp.path, exp.path, None, None,
                          reason="skipped: TURN over TCP is not simulated (the lab runs this cell)")
    config = AgentConfig(nomination=Nomination(cell.nomination))
    r = two_nats(a, b, config, turn=cell.turn, loss=cell.loss, latency=0.001 + cell.delay_ms / 1000,
                 timeout=20.0 if cell.loss else 10.0, same_lan=cell.topology == "same_nat",
                 relay_only=cell.relay_only, trickle=cell.trickle, controlling=cell.controlling)
    if not r.connected or r.selected is None:
        observed = Path.NONE
        selected = None
    else:
        observed = Path.RELAY if r.relayed else Path.DIRECT
        selected = f"{r.selected[0].value} -> {r.selected[1].value}"
    res = CellResult(cell, "sim", exp.path, observed, selected, r.seconds if r.connected else None,
                     sorted(f"{x}-{y}" for x, y in r.succeeded))
    res.selected_types = r.selected_name
    return res.expecting(exp)


def sim_path(cell: Scenario) -> Path | None:
    """What the sim observes for ``cell`` (None where the sim cannot run it)."""
    r = run_sim(cell)
    return None if r.reason.startswith("skipped") else r.observed


def with_sim_check(res: CellResult) -> CellResult:
    """Run the same cell in the sim; a disagreement with the lab fails the cell and names both results."""
    res.sim_observed = sim_path(res.scenario)
    if res.sim_observed is not None and res.sim_observed is not res.observed:
        res.reason = (f"the lab and the sim disagree: lab {res.observed.value}, sim {res.sim_observed.value}"
                      + (f" ({res.reason})" if res.reason else ""))
    return res


def result_from_json(doc: dict[str, Any]) -> CellResult:
    config = dict(doc["config"])
    cell = Scenario(**config)
    res = CellResult(cell, str(doc["backend"]), Path(doc["expected"]), Path(doc["observed"]), doc.get("selected"),
                     doc.get("seconds_to_connect"), list(doc.get("succeeded_pairs") or []), str(doc.get("reason", "")),
                     Path(doc["sim_observed"]) if doc.get("sim_observed") else None, doc.get("artifacts"),
                     doc.get("repro"))
    known = {"scenario", "nat_a", "nat_b", "topology", "group", "backend", "expected", "observed", "sim_observed",
             "selected", "succeeded_pairs", "seconds_to_connect", "pass", "reason", "artifacts", "repro", "config"}
    res.selected_types = doc.get("selected_types")
    res.expected_selected = tuple(doc.get("expected_selected") or ())
    res.never = tuple(doc.get("never") or ())
    known |= {"selected_types", "expected_selected", "never"}
    res.extra = {k: v for k, v in doc.items() if k not in known}
    return res


# ------------------------------------------------------------------------------------------------- running


def run_cells(cells: list[Scenario], backend: Callable[[Scenario], CellResult],
              progress: Callable[[CellResult], None] | None = None) -> list[CellResult]:
    results = []
    for cell in cells:
        r = backend(cell)
        results.append(r)
        if progress is not None:
            progress(r)
    return results


def repro_command(cell: Scenario) -> str:
    return f"sudo ./icelab run --backend lab --scenario {cell.name} --keep-artifacts --out results/{cell.name}"


def _lab_order(cells: list[Scenario]) -> list[Scenario]:
    """Cells grouped by the lab they need (stable within a group), biggest group first."""
    from ice.scenario.lab import lab_key

    groups: dict[Any, list[Scenario]] = {}
    for c in cells:
        groups.setdefault(lab_key(c), []).append(c)
    return [c for g in sorted(groups.values(), key=len, reverse=True) for c in g]


def run_lab_inprocess(cells: list[Scenario], artifacts: FsPath, keep: bool, shell_on_failure: bool,
                      progress: Callable[[CellResult], None] | None) -> list[CellResult]:
    from ice.scenario.lab import LabBackend

    results = []
    with LabBackend(artifacts, keep, repro_command) as backend:
        for cell in _lab_order(cells):
            r = with_sim_check(backend.run(cell, pinned(cell)))
            results.append(r)
            if progress is not None:
                progress(r)
            if shell_on_failure and not r.passed:
                _shell(backend, cell, r)
    return results


def _shell(backend: Any, cell: Scenario, r: CellResult) -> None:
    """Drop into a shell inside the failed cell's lab (node a), with the NAT state as the cell left it."""
    from ice.lab.netns import nsenter
    from ice.scenario.lab import lab_key

    lab = backend.labs[lab_key(cell)]
    pids = "  ".join(f"{name}={lab.pid(name)}" for name in lab.nodes)
    print(f"\n--shell-on-failure: {cell.name} failed ({r.reason}).\nA shell in node 'a' of the lab follows; the NATs "
          f"still hold this cell's rules and conntrack entries.\nOther nodes: nsenter --net=/proc/PID/ns/net with "
          f"PID from: {pids}\nArtifacts: {r.artifacts}. Exit the shell to go on with the run.", file=sys.stderr)
    env = dict(os.environ, PS1=f"icelab[{cell.name}:a]# ")
    subprocess.call([*nsenter(lab.pid("a")), "bash", "--norc", "-i"], env=env)


class _Worker:
    """One ``python -m ice.scenario.worker`` process: cells in on stdin, results out on stdout (JSON lines)."""

    def __init__(self, artifacts: FsPath, keep: bool) -> None:
        from ice.lab.netns import die_with_parent

        argv = [sys.executable, "-m", "ice.scenario.worker", "--artifacts", str(artifacts)]
        self.proc = subprocess.Popen([*argv, *(["--keep-artifacts"] if keep else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, preexec_fn=die_with_parent,
                                     cwd=str(SCENARIO_DIR.parent))
        self.key: Any = None
        self.cell: Scenario | None = None

    def give(self, cell: Scenario) -> None:
        from ice.scenario.lab import lab_key

        assert self.proc.stdin is not None
        self.cell, self.key = cell, lab_key(cell)
        self.proc.stdin.write(json.dumps({"cell": asdict(cell), "expected": pinned(cell).as_json(),
                                          "repro": repro_command(cell)}) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_lab_parallel(cells: list[Scenario], jobs: int, artifacts: FsPath, keep: bool,
                     progress: Callable[[CellResult], None] | None) -> list[CellResult]:
    """Hand cells to ``jobs`` workers; a free worker takes another cell for the lab it already has when there is
    one, else one from the biggest group left (so few labs get built)."""
    import selectors

    from ice.scenario.lab import lab_key

    pending: dict[Any, list[Scenario]] = {}
    for c in _lab_order(cells):
        pending.setdefault(lab_key(c), []).append(c)

    def next_for(w: _Worker) -> Scenario | None:
        if pending.get(w.key):
            group = pending[w.key]
        else:
            live = [g for g in pending.values() if g]
            if not live:
                return None
            group = max(live, key=len)
        return group.pop(0)

    workers = [_Worker(artifacts, keep) for _ in range(max(1, min(jobs, len(cells))))]
    sel = selectors.DefaultSelector()
    results: list[CellResult] = []
    try:
        busy = 0
        for w in workers:
            cell = next_for(w)
            if cell is None:
                break
            w.give(cell)
            assert w.proc.stdout is not None
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
            busy += 1
        while busy:
            for key, _ in sel.select():
                w = key.data
                stream: TextIO = key.fileobj  # type: ignore[assignment]
                line = stream.readline()
                if not line:
                    raise RuntimeError(f"a lab worker died (exit status {w.proc.wait()}) while running "
                                       f"{w.cell.name if w.cell else '?'}; its stderr is above")
                r = with_sim_check(result_from_json(json.loads(line)))
                results.append(r)
                if progress is not None:
                    progress(r)
                cell = next_for(w)
                if cell is None:
                    sel.unregister(stream)
                    busy -= 1
                else:
                    w.give(cell)
    finally:
        for w in workers:
            w.stop()
    order = {c.name: i for i, c in enumerate(cells)}
    return sorted(results, key=lambda r: order[r.scenario.name])


# ------------------------------------------------------------------------------------------------- reports


def _mark(r: CellResult) -> str:
    sym = {Path.DIRECT: "D", Path.RELAY: "R", Path.NONE: "-"}[r.observed]
    return sym if r.passed else sym + "!"


def grid(results: list[CellResult]) -> tuple[list[str], list[str], dict[tuple[str, str], CellResult]]:
    """Rows (NAT A), columns (NAT B) and cells of the two-NAT grid (the ``rfc4787`` and ``special`` groups)."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], CellResult] = {}
    for r in results:
        if r.scenario.group not in (GRID_GROUP, "special"):
            continue
        a, b = r.scenario.nat_a, r.scenario.nat_b
        if a not in rows:
            rows.append(a)
        if b not in cols:
            cols.append(b)
        cells[(a, b)] = r
    return rows, cols, cells


def others(results: list[CellResult]) -> list[CellResult]:
    """Cells outside the grid (same NAT, double NAT, impaired links, agent options)."""
    return [r for r in results if r.scenario.group not in (GRID_GROUP, "special")]


def terminal_grid(results: list[CellResult]) -> str:
    rows, cols, cells = grid(results)
    lines = []
    if rows:
        corner = "A \\ B"
        w = max(len(x) for x in [*rows, corner])
        lines.append(corner.ljust(w) + "  " + " ".join(f"{c[:9]:>9}" for c in cols))
        for a in rows:
            lines.append(a.ljust(w) + "  " + " ".join(f"{_mark(cells[(a, b)]) if (a, b) in cells else '':>9}"
                                                      for b in cols))
    rest = others(results)
    if rest:
        w = max(len(r.scenario.name) for r in rest)
        lines.append("")
        lines += [f"{r.scenario.name.ljust(w)}  {_mark(r)}" for r in rest]
    lines.append("D: direct pair selected, R: relayed pair, -: no connection, !: differs from the expectation")
    return "\n".join(lines)


def _md_mark(r: CellResult) -> str:
    return ("✅ " if r.passed else "❌ ") + r.observed.value


def markdown_grid(results: list[CellResult]) -> str:
    rows, cols, cells = grid(results)
    out = []
    if rows:
        out += ["| A \\ B | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for a in rows:
            out.append(f"| {a} | " + " | ".join(_md_mark(cells[(a, b)]) if (a, b) in cells else "" for b in cols)
                       + " |")
    rest = others(results)
    if rest:
        out += ["", "| scenario | group | expected | observed |", "|---|---|---|---|"]
        out += [f"| {r.scenario.name} | {r.scenario.group} | {r.expected.value} | {_md_mark(r)} |" for r in rest]
    passed = sum(r.passed for r in results)
    out.append(f"\n{passed}/{len(results)} cells as expected.")
    failed = [r for r in results if not r.passed]
    if failed:
        out.append("\nFailed cells:\n")
        out += [f"- `{r.scenario.name}`: {r.reason}" + (f" (artifacts: `{r.artifacts}`)" if r.artifacts else "")
                for r in failed]
    return "\n".join(out)


def write_reports(results: list[CellResult], out: FsPath, backend: str, seconds: float,
                  extra: dict[str, object] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "backend": backend,
        "seconds": round(seconds, 3),
        **(extra or {}),
        "cells": [r.as_json() for r in results],
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "unexpectedly_passing": [r.scenario.name for r in results
                                 if r.expected is Path.NONE and r.observed is not Path.NONE],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "grid.txt").write_text(terminal_grid(results) + "\n")
    (out / "grid.md").write_text(markdown_grid(results) + "\n")
    (out / "grid.html").write_text(html_grid(results, backend, seconds))
    (out / "junit.xml").write_text(junit_xml(results, backend, seconds) + "\n")


# ---------------------------------------------------------------------------------------------------- main


def select_cells(presets: list[str] | None, names: list[str] | None) -> list[Scenario]:
    if names:
        cells = load_matrix()
        unknown = sorted(set(names) - {c.name for c in cells})
        if unknown:
            raise UserError(f"no scenario named {', '.join(unknown)}; names look like 'eim-eifxapdm-apdf' or "
                            "'same-nat-eim-apdf-hairpin' (`icelab run --list` prints them all)")
        return [c for c in cells if c.name in names]
    return load_matrix(presets)


def main(backend_name: str, presets: list[str] | None, out: FsPath, update: bool, quiet: bool = False,
         names: list[str] | None = None, jobs: int = 1, keep_artifacts: bool = False,
         shell_on_failure: bool = False) -> int:
    if update:
        pinned = pinned_expectations(load_matrix())
        expectations_file().write_text(json.dumps(pinned, indent=2, sort_keys=True) + "\n")
        print(f"wrote {len(pinned)} expectations to {expectations_file()}")
        return 0
    if backend_name not in ("sim", "lab"):
        print(f"icelab: unknown backend {backend_name!r}; use --backend lab (kernel NATs, root) or --backend sim "
              "(in-memory).", file=sys.stderr)
        return 2
    try:
        cells = select_cells(presets, names)
    except UserError as exc:
        print(f"icelab: {exc}", file=sys.stderr)
        return 2
    artifacts = out / "artifacts"
    started = time.perf_counter()
    with _Progress(len(cells), quiet) as progress:
        if backend_name == "sim":
            results = run_cells(cells, run_sim, progress.cell)
        elif jobs <= 1 or shell_on_failure:
            results = run_lab_inprocess(cells, artifacts, keep_artifacts, shell_on_failure, progress.cell)
            order = {c.name: i for i, c in enumerate(cells)}
            results.sort(key=lambda r: order[r.scenario.name])
        else:
            results = run_lab_parallel(cells, jobs, artifacts, keep_artifacts, progress.cell)
    elapsed = time.perf_counter() - started
    write_reports(results, out, backend_name, elapsed, {"jobs": jobs if backend_name == "lab" else 1})
    print(terminal_grid(results))
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)}/{len(results)} cells as expected in {elapsed:.1f} s ({backend_name}"
          f"{f', -j {jobs}' if backend_name == 'lab' else ''}); reports in {out}/")
    for r in failed:
        print(f"  FAIL {r.scenario.name}: {r.reason}")
        if r.artifacts:
            print(f"       artifacts: {r.artifacts}")
        if r.repro:
            print(f"       repro:     {r.repro}")
    surprise = [r.scenario.name for r in results if r.expected is Path.NONE and r.observed is not Path.NONE]
    if surprise:
        print(f"  unexpectedly passing (expected to fail): {', '.join(surprise)}")
    return 1 if failed else 0


class _Progress:
    """A live progress bar (rich) with one line per finished cell; plain lines when stderr is not a terminal."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done = total, quiet, 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.quiet:
            return self
        try:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:  # rich is a dependency; a broken install still gets plain lines
            return self
        console = Console(stderr=True, highlight=False)
        self._progress = Progress(TextColumn("matrix"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=console, transient=True)
        self._task = self._progress.add_task("cells", total=self.total)
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def cell(self, r: CellResult) -> None:
        self.done += 1
        if self.quiet:
            return
        line = _line(r, self.done, self.total)
        if self._progress is not None:
            self._progress.console.print(line, markup=False, soft_wrap=True)
            self._progress.advance(self._task)
        else:
            print(line, file=sys.stderr, flush=True)


def _line(r: CellResult, done: int, total: int) -> str:
    took = "" if r.seconds is None else f" in {r.seconds * 1000:.0f} ms"
    width = len(str(total))
    status = "ok  " if r.passed else "FAIL"
    return (f"[{done:>{width}}/{total}] {status} {r.scenario.name:<34} {r.observed.value:<6} "
            f"{r.selected or r.reason}{took}")


def iter_names(cells: Iterable[Scenario]) -> Iterator[str]:
    for c in cells:
        yield f"{c.name}  ({c.group}, {c.topology}, expected {expected_path(c).value})"
