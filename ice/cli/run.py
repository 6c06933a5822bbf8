"""``icelab run [FILE ...]``: a suite of scenario cells (the default one, or your files) on the sim or the kernel
lab, its progress, grid and reports.

The scenario layer judges the cells (:class:`ice.scenario.runner.Runner`); this module, the top layer, loads the
suite, shows progress, prints the grid and writes the reports (:mod:`ice.report`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ice.cli.common import isolate
from ice.errors import UserError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ice.cli.common import Subparsers
    from ice.scenario.cell import Cell
    from ice.scenario.lab import LabBackend
    from ice.scenario.result import CellResult
    from ice.scenario.suite import Suite
    from ice.scenario.timers import MatrixTimers
    from ice.topology.spec import TopologySpec


def cmd_run(args: argparse.Namespace) -> int:
    """Every cell of the suite, a grid, reports in --out."""
    from ice.scenario.shard import parse_shard
    from ice.scenario.suite import Suite
    from ice.topology.registry import Topologies

    files = [Path(f) for f in args.files]
    topologies = [Path(d) for d in args.topologies]
    shard = parse_shard(args.shard) if args.shard else None
    if args.update_expectations and shard:
        raise UserError("--update-expectations re-pins the whole suite, so it does not take --shard")
    if args.costs_from and not args.update_expectations:
        raise UserError("--costs-from DIR goes with --update-expectations (it writes the measured costs into the "
                        "pins)")
    if args.list:
        suite = Suite.load(files, Topologies(topologies), args.presets).select(args.scenario)
        if shard:
            suite = suite.shard(*shard)
        for line in iter_names(suite):
            print(line)
        return 0
    backend = args.backend
    if backend is None:
        from ice.lab.userns import lab_problem

        problem = None if args.update_expectations else lab_problem()
        backend = "sim" if problem else "lab"
        if problem and not args.quiet:
            print(f"icelab run: not root, and {problem}, so the in-memory sim back-end runs the cells; "
                  "`sudo ./icelab run` runs them with kernel NATs.", file=sys.stderr)
    if backend == "lab" and not args.update_expectations:
        from ice.lab.mn import require_lab

        Suite.load(files, Topologies(topologies), args.presets).select(args.scenario)  # usage errors before root
        require_lab()
        isolate()
    jobs = args.jobs if args.jobs is not None else max(1, min(4, os.cpu_count() or 1))
    return run_suite(backend, Path(args.out), files, args.presets, args.update_expectations, quiet=args.quiet,
                     names=args.scenario, jobs=jobs, keep_artifacts=args.keep_artifacts,
                     shell_on_failure=args.shell_on_failure, topologies=topologies, shard=shard,
                     costs_from=[Path(d) for d in args.costs_from or ()])


def run_suite(backend_name: str, out: Path, files: list[Path] | None = None, presets: list[str] | None = None,
              update: bool = False, quiet: bool = False, names: list[str] | None = None, jobs: int = 1,
              keep_artifacts: bool = False, shell_on_failure: bool = False, topologies: list[Path] | None = None,
              timers: MatrixTimers | None = None, shard: tuple[int, int] | None = None,
              costs_from: list[Path] | None = None) -> int:
    """``icelab run``: load the suite (``files``, or the default one), run it (only part I of N with ``shard``),
    print and write the reports. With ``update``, re-pin instead (and write the costs measured by the runs whose
    reports are in ``costs_from``). Returns the exit status (1 if a cell failed, 2 for a usage error, said in one
    sentence)."""
    from ice.scenario.suite import Suite
    from ice.scenario.timers import TIMERS
    from ice.topology.registry import Topologies

    try:
        suite = Suite.load(files or (), Topologies(topologies or ()), presets)
        return _run(suite, backend_name, out, update, quiet, names, jobs, keep_artifacts, shell_on_failure,
                    timers or TIMERS, shard, costs_from or [])
    except UserError as exc:
        print(f"icelab: {exc}", file=sys.stderr)
        return 2


def _run(suite: Suite, backend_name: str, out: Path, update: bool, quiet: bool, names: list[str] | None,
         jobs: int, keep_artifacts: bool, shell_on_failure: bool, timers: MatrixTimers,
         shard: tuple[int, int] | None = None, costs_from: list[Path] | None = None) -> int:
    from ice.report.results import write_reports
    from ice.report.text import summary, terminal_grid
    from ice.scenario.controls import note_controls
    from ice.scenario.result import Status
    from ice.scenario.runner import Runner

    if update:
        for path, count, changed, kept in suite.update_pins():
            print(f"wrote {count} expectations to {path}" + (f" (kept {kept} known failures)" if kept else ""))
            if changed:
                shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
                print(f"{len(changed)} changed or new: {shown}; review them (git diff {path.name}) before "
                      "committing")
        if costs_from:
            write_costs(suite, costs_from)
        return 0
    if backend_name not in ("sim", "lab"):
        raise UserError(f"unknown backend {backend_name!r}; use --backend lab (kernel NATs, root) or --backend sim "
                        "(in-memory)")
    suite = suite.select(names)
    whole = [c.name for c in suite.cells]
    if shard:
        suite = suite.shard(*shard)
    suite.out = out  # repro lines write under the run's own report directory
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
            results = runner.lab_inprocess(artifacts, keep_artifacts, _shell if shell_on_failure else None,
                                           progress.cell)
        else:
            results = runner.lab_parallel(jobs, artifacts, keep_artifacts, progress.cell)
    elapsed = time.perf_counter() - started
    note_controls(results)
    write_reports(results, out, backend_name, elapsed,
                  {"jobs": jobs if backend_name == "lab" else 1, "environment": environment(),
                   "sources": sorted({str(p) for p in suite.source.values()}),
                   **({"shard": f"{shard[0]}/{shard[1]}", "total_cells": len(whole), "suite_cells": whole}
                      if shard else {})})
    print(terminal_grid(results))
    failed = [r for r in results if not r.passed]
    counts = ", ".join(f"{n} {k}" for k, n in summary(results).items() if n and k != Status.PASS.value)
    part = f", shard {shard[0]}/{shard[1]} of {len(whole)} cells" if shard else ""
    print(f"{len(results) - len(failed)}/{len(results)} cells as expected in {elapsed:.1f} s ({backend_name}"
          f"{f', -j {jobs}' if backend_name == 'lab' else ''}{part}{'; ' + counts if counts else ''}); "
          f"reports in {out}/")
    unpinned = [r.cell.name for r in results if not r.pinned]
    if unpinned:
        shown = ", ".join(unpinned[:6]) + (f" and {len(unpinned) - 6} more" if len(unpinned) > 6 else "")
        print(f"  unpinned (judged by the reasoning; pin them with --update-expectations): {shown}")
    for r in results:
        if r.status in (Status.NOT_INSTALLED, Status.UNSUPPORTED):
            print(f"  {r.status.value.upper()} {r.cell.name}: {r.reason}")
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


def write_costs(suite: Suite, dirs: list[Path]) -> None:
    """Write the costs measured by the runs whose reports are in ``dirs`` into ``suite``'s pins."""
    from ice.report.compare import load
    from ice.scenario.shard import costs_from

    costs = costs_from(load(d) for d in dirs)
    for path, count in suite.update_costs(costs):
        print(f"wrote {count} measured costs to {path}")


def _shell(backend: LabBackend, cell: Cell, spec: TopologySpec, r: CellResult) -> None:
    """``--shell-on-failure``: a shell inside the failed cell's lab (host a), with the NAT state as the cell left
    it."""
    from ice.lab.netns import nsenter

    lab = backend.lab_of(spec, cell)
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


def source_checkout() -> Path | None:
    """The source checkout the running ``ice`` package lives in (``pyproject.toml`` and the ``icelab`` script next
    to ``ice/``), or None for an installed package."""
    import ice

    root = Path(ice.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "icelab").is_file() and (root / "ice").is_dir():
        return root
    return None


def environment() -> dict[str, str | None]:
    """What produced a results.json, so two runs compared later can be told apart. The commit is the checkout's
    own (None for an installed package, even one inside some other repository, say a venv in a project)."""
    import platform

    from ice import __version__

    commit = None
    root = source_checkout()
    if root is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            # safe.directory: inside a user namespace the checkout's owner is unmapped, and git would refuse it
            done = subprocess.run(["git", "-c", f"safe.directory={root}", "-C", str(root), "rev-parse",
                                   "--show-toplevel", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
            lines = done.stdout.split()
            if done.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == root:
                commit = lines[1]
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
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    from ice.scenario.result import Status

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


def add_parser(sub: Subparsers) -> None:
    r = sub.add_parser("run", help="the main job: the NAT x NAT scenario suite (or your scenario files), a grid "
                                   "and reports")
    r.add_argument("files", nargs="*", metavar="FILE",
                   help="scenario files (.toml with [[cells]]/[[matrix]] tables, or .py with cells()); default: "
                        "the built-in suite (docs/scenarios.md)")
    r.add_argument("--backend", choices=["sim", "lab"], default=None,
                   help="lab: kernel NATs in Mininet (the default as root, or as a normal user where user "
                        "namespaces are allowed); sim: in-memory NATs, seconds (the default otherwise)")
    r.add_argument("--topologies", action="append", default=[], metavar="DIR",
                   help="also load the topology modules in DIR (repeatable)")
    r.add_argument("--presets", nargs="+", metavar="PRESET",
                   help="instead of a suite: these NAT presets against each other in two_nats")
    r.add_argument("--scenario", action="append", metavar="NAME", help="only this cell (repeatable)")
    r.add_argument("-j", "--jobs", type=int, default=None,
                   help="lab workers in parallel, each with its own labs (default: CPUs, at most 4)")
    r.add_argument("--out", default="results",
                   help="report directory (default: results/ under the current directory); repro lines write "
                        "under OUT/repro/CELL")
    r.add_argument("--keep-artifacts", action="store_true",
                   help="keep pcaps, traces, rules and conntrack dumps of every cell, not only of failed ones")
    r.add_argument("--shell-on-failure", action="store_true",
                   help="open a shell inside the lab of each failed cell (runs the cells one at a time)")
    r.add_argument("--list", action="store_true", help="print the cells (name, group, expectation) and exit")
    r.add_argument("--update-expectations", action="store_true",
                   help="re-pin each file's expectations (FILE's stem + .expected.json beside it) from the RFC 4787 "
                        "reasoning, then review the diff")
    r.add_argument("--shard", metavar="I/N",
                   help="run only part I of N: the cells split into N parts of about equal measured cost, the same "
                        "split on every machine (docs/ci.md); merge the parts' reports with `icelab report merge`")
    r.add_argument("--costs-from", action="append", metavar="DIR",
                   help="with --update-expectations: also write each cell's cost measured by the run whose report "
                        "directory (or results.json) is DIR into the pins, for --shard (repeatable)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress or per-cell lines")
    r.set_defaults(func=cmd_run)
