"""Run a suite's cells on a back-end and write the reports.

Back-ends: ``sim`` (in-memory, virtual time, no root) and ``lab`` (kernel NATs in Mininet, root). On the lab,
every cell also runs in the sim and the two must agree. ``-j N`` runs N lab workers (:mod:`ice.scenario.pool`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path as FsPath
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ice.errors import UserError
from ice.report.results import write_reports
from ice.report.text import summary, terminal_grid
from ice.scenario.cell import Cell
from ice.scenario.result import CellResult, Status
from ice.scenario.sim import run_sim
from ice.scenario.suite import Suite
from ice.scenario.timers import TIMERS, MatrixTimers
from ice.topology.registry import Topologies
from ice.topology.spec import TopologySpec

if TYPE_CHECKING:
    from ice.scenario.lab import LabBackend


class Runner:
    """Judges a suite's cells: expectation (pinned, or the reasoning's answer), repro, the sim check of lab
    cells."""

    def __init__(self, suite: Suite, timers: MatrixTimers = TIMERS) -> None:
        self.suite = suite
        self.timers = timers

    def annotate(self, r: CellResult) -> CellResult:
        """Mark where the cell came from, whether its expectation is pinned, and how to run it again."""
        r.pinned = self.suite.expectation(r.cell)[1]
        r.source = str(self.suite.source.get(r.cell.name, ""))
        if not r.repro:
            r.repro = self.suite.repro(r.cell, r.backend)
        return r

    def sim(self, cell: Cell) -> CellResult:
        exp, _ = self.suite.expectation(cell)
        return self.annotate(run_sim(cell, self.suite.spec(cell), exp, self.timers))

    def with_sim_check(self, res: CellResult) -> CellResult:
        """Run the same cell in the sim; a different path fails the cell and names both results."""
        sim = self.sim(res.cell)
        res.sim_observed = None if sim.skipped else sim.observed
        if res.sim_observed is not None and res.sim_observed is not res.observed:
            res.reason = res.verdict() + (f" ({res.reason})" if res.reason else "")
        return self.annotate(res)

    def lab_inprocess(self, artifacts: FsPath, keep: bool, shell_on_failure: bool,
                      progress: Callable[[CellResult], None] | None) -> list[CellResult]:
        from ice.scenario.lab import LabBackend
        from ice.scenario.pool import lab_order

        results = []
        with LabBackend(artifacts, keep, self.suite.repro, timers=self.timers) as backend:
            for cell in lab_order(self.suite):
                spec = self.suite.spec(cell)
                r = self.with_sim_check(backend.run(cell, spec, self.suite.expectation(cell)[0]))
                results.append(r)
                if progress is not None:
                    progress(r)
                if shell_on_failure and r.status is Status.FAIL:
                    _shell(backend, cell, spec, r)
        order = {c.name: i for i, c in enumerate(self.suite.cells)}
        return sorted(results, key=lambda r: order[r.cell.name])

    def lab_parallel(self, jobs: int, artifacts: FsPath, keep: bool,
                     progress: Callable[[CellResult], None] | None) -> list[CellResult]:
        from ice.scenario.pool import run_lab_parallel

        return run_lab_parallel(self.suite, jobs, artifacts, keep, self.with_sim_check, progress, self.timers)


def _shell(backend: LabBackend, cell: Cell, spec: TopologySpec, r: CellResult) -> None:
    """Drop into a shell inside the failed cell's lab (host a), with the NAT state as the cell left it."""
    from ice.lab.netns import nsenter

    lab = backend.lab_of(spec)
    if lab is None:
        print(f"\n--shell-on-failure: {cell.name} failed before its lab was up ({r.reason}); no shell to open.",
              file=sys.stderr)
        return
    pids = "  ".join(f"{name}={lab.pid(name)}" for name in lab.nodes)
    print(f"\n--shell-on-failure: {cell.name} failed ({r.reason}).\nA shell in node 'a' of the lab follows; the "
          f"NATs still hold this cell's rules and conntrack entries.\nOther nodes: nsenter --net=/proc/PID/ns/net "
          f"with PID from: {pids}\nArtifacts: {r.artifacts}. Exit the shell to go on with the run.", file=sys.stderr)
    env = dict(os.environ, PS1=f"icelab[{cell.name}:a]# ")
    subprocess.call([*nsenter(lab.pid("a")), "bash", "--norc", "-i"], env=env)


# ---------------------------------------------------------------------------------------------------- main


def main(backend_name: str, out: FsPath, files: list[FsPath] | None = None, presets: list[str] | None = None,
         update: bool = False, quiet: bool = False, names: list[str] | None = None, jobs: int = 1,
         keep_artifacts: bool = False, shell_on_failure: bool = False, topologies: list[FsPath] | None = None,
         timers: MatrixTimers = TIMERS) -> int:
    """``icelab run``: load the suite (``files``, or the default one), run it, print and write the reports.
    Returns the exit status (1 if a cell failed, 2 for a usage error, said in one sentence)."""
    try:
        suite = Suite.load(files or (), Topologies(topologies or ()), presets)
        return _main(suite, backend_name, out, update, quiet, names, jobs, keep_artifacts, shell_on_failure, timers)
    except UserError as exc:
        print(f"icelab: {exc}", file=sys.stderr)
        return 2


def _main(suite: Suite, backend_name: str, out: FsPath, update: bool, quiet: bool, names: list[str] | None,
          jobs: int, keep_artifacts: bool, shell_on_failure: bool, timers: MatrixTimers) -> int:
    if update:
        for path, count, changed, kept in suite.update_pins():
            print(f"wrote {count} expectations to {path}" + (f" (kept {kept} known failures)" if kept else ""))
            if changed:
                shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
                print(f"{len(changed)} changed or new: {shown}; review them (git diff {path.name}) before "
                      "committing")
        return 0
    if backend_name not in ("sim", "lab"):
        raise UserError(f"unknown backend {backend_name!r}; use --backend lab (kernel NATs, root) or --backend sim "
                        "(in-memory)")
    suite = suite.select(names)
    for c in suite.cells:
        suite.expectation(c)  # a broken pin file is one clear error now, not a traceback halfway through the run
    runner = Runner(suite, timers)
    artifacts = out / "artifacts"
    started = time.perf_counter()
    with _Progress(len(suite.cells), quiet) as progress:
        if backend_name == "sim":
            results = []
            for cell in suite.cells:
                results.append(runner.sim(cell))
                progress.cell(results[-1])
        elif jobs <= 1 or shell_on_failure:
            results = runner.lab_inprocess(artifacts, keep_artifacts, shell_on_failure, progress.cell)
        else:
            results = runner.lab_parallel(jobs, artifacts, keep_artifacts, progress.cell)
    elapsed = time.perf_counter() - started
    write_reports(results, out, backend_name, elapsed,
                  {"jobs": jobs if backend_name == "lab" else 1, "environment": environment(),
                   "sources": sorted({str(p) for p in suite.source.values()})})
    print(terminal_grid(results))
    failed = [r for r in results if not r.passed]
    counts = ", ".join(f"{n} {k}" for k, n in summary(results).items() if n and k != Status.PASS.value)
    print(f"{len(results) - len(failed)}/{len(results)} cells as expected in {elapsed:.1f} s ({backend_name}"
          f"{f', -j {jobs}' if backend_name == 'lab' else ''}{'; ' + counts if counts else ''}); "
          f"reports in {out}/")
    unpinned = [r.cell.name for r in results if not r.pinned]
    if unpinned:
        shown = ", ".join(unpinned[:6]) + (f" and {len(unpinned) - 6} more" if len(unpinned) > 6 else "")
        print(f"  unpinned (judged by the reasoning; pin them with --update-expectations): {shown}")
    for r in failed:
        print(f"  FAIL {r.cell.name}: {r.reason}")
        if r.artifacts:
            print(f"       artifacts: {r.artifacts}")
        if r.repro:
            print(f"       repro:     {r.repro}")
    surprise = [r.cell.name for r in results if r.status is Status.UNEXPECTED_PASS]
    if surprise:
        print(f"  unexpectedly passing (pinned as known failures; remove their known_failure): {', '.join(surprise)}")
    return 1 if failed else 0


def environment() -> dict[str, str | None]:
    """What produced a results.json, so two runs compared later can be told apart."""
    import platform

    from ice import __version__

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(FsPath(__file__).resolve().parents[2]), "rev-parse", "--short",
                               "HEAD"], capture_output=True, text=True, timeout=5)
        commit = (done.stdout.strip() or None) if done.returncode == 0 else None
    return {"icelab": __version__, "commit": commit, "python": platform.python_version(),
            "kernel": platform.release(), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class _Progress:
    """A progress bar (rich) with one line per finished cell; plain lines when stderr is not a terminal. The bar
    is redrawn per cell, not by rich's refresh thread: the run starts processes, and forking next to a running
    thread is what ``subprocess``'s documentation warns against."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet, self.done = total, quiet, 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _Progress:
        if self.quiet:
            return self
        console = Console(stderr=True, highlight=False)
        self._progress = Progress(TextColumn("matrix"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=console, transient=True, auto_refresh=False)
        self._task = self._progress.add_task("cells", total=self.total)
        self._progress.start()
        self._progress.refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def cell(self, r: CellResult) -> None:
        self.done += 1
        if self.quiet:
            return
        line = _line(r, self.done, self.total)
        if self._progress is not None and self._task is not None:
            self._progress.console.print(line, markup=False, soft_wrap=True)
            self._progress.advance(self._task)
            self._progress.refresh()
        else:
            print(line, file=sys.stderr, flush=True)


def _line(r: CellResult, done: int, total: int) -> str:
    took = "" if r.seconds is None else f" in {r.seconds * 1000:.0f} ms"
    width = len(str(total))
    status = {Status.PASS: "ok  ", Status.FAIL: "FAIL", Status.KNOWN_FAILURE: "xf  ", Status.UNEXPECTED_PASS: "XP  ",
              Status.SKIPPED: "skip"}[r.status]
    observed = "-" if r.skipped else r.observed.value
    return (f"[{done:>{width}}/{total}] {status} {r.cell.name:<34} {observed:<6} "
            f"{r.selected or r.reason}{took}")


def iter_names(suite: Suite) -> Iterator[str]:
    """One line per cell: name, group, topology and NATs, expectation (and whether it is pinned)."""
    for c in suite.cells:
        exp, pinned = suite.expectation(c)
        known = f"; known failure: {exp.known_failure}" if exp.known_failure else ""
        nats = ", ".join(f"{k}={v}" for k, v in c.labels.items())
        yield (f"{c.name}  ({c.group}, {c.topology}{': ' + nats if nats else ''}; expected {exp.path.value}"
               f"{'' if pinned else ', unpinned'}{known})")
