"""Run scenario cells on a back-end and write the reports (results.json, terminal, Markdown and HTML grids, JUnit).

Back-ends: ``sim`` (in-memory, virtual time, no root) and ``lab`` (kernel NATs in Mininet, root). On the lab,
every cell also runs in the sim and the two must agree. ``-j N`` runs N lab workers (``ice.scenario.worker``
processes), each with its own labs; cells are handed out so that a worker keeps reusing the lab it has built.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ice.agent import AgentConfig, Nomination
from ice.errors import UserError
from ice.nat.behaviour import NatKind
from ice.scenario.model import GRID_GROUPS, TIMERS, CellResult, Expected, MatrixTimers, Path, Scenario, Status, expect
from ice.scenario.report import html_grid, junit_xml

if TYPE_CHECKING:
    from ice.scenario.lab import LabBackend

SCENARIO_DIR = FsPath(__file__).resolve().parents[2] / "scenarios"


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


def pinned_expectations(cells: Iterable[Scenario], keep: dict[str, dict[str, object]] | None = None
                        ) -> dict[str, dict[str, object]]:
    """Every cell's expectation from the reasoning, keeping the hand-written ``known_failure`` of ``keep``."""
    out = {}
    for c in cells:
        doc = expect(c).as_json()
        known = (keep or {}).get(c.name, {}).get("known_failure")
        if known is not None:
            doc["known_failure"] = known
        out[c.name] = doc
    return out


@functools.lru_cache(maxsize=1)
def _pinned() -> dict[str, dict[str, object]]:
    path = expectations_file()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        if os.environ.get("ICELAB_EXPECTATIONS"):
            raise UserError(f"ICELAB_EXPECTATIONS names {path}, which does not exist") from None
        return {}
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); fix it or re-pin with --update-expectations") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} must map scenario names to expectations")
    return doc


def pinned(cell: Scenario) -> Expected:
    """The pinned expectation (scenarios/expected.json, reviewed data) or, for a cell not pinned yet, the
    RFC 4787 reasoning of :func:`ice.scenario.model.expect`."""
    doc = _pinned().get(cell.name)
    if doc is None:
        return expect(cell)
    try:
        return Expected.from_json(doc)
    except ValueError as exc:
        raise UserError(f"{expectations_file()}: the entry for {cell.name} is wrong: {exc}") from None


def expected_path(cell: Scenario) -> Path:
    return pinned(cell).path


def run_sim(cell: Scenario, timers: MatrixTimers = TIMERS) -> CellResult:
    """The in-memory back-end (ice.sim): deterministic, virtual time, the cell's loss and delay on A's access link
    as in the lab. A double NAT is simulated as the two NATs composed (:func:`ice.scenario.model.compose`)."""
    from ice.sim.scenario import two_nats

    exp = pinned(cell)
    a, b = cell.effective
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        res = CellResult(cell, "sim", exp.path, Path.NONE, None, None, skipped=True,
                         reason="skipped: TURN over TCP is not simulated (the lab runs this cell)")
        res.repro = repro_command(cell, "sim")
        return res.expecting(exp)
    config = AgentConfig(nomination=Nomination(cell.nomination))
    r = two_nats(a, b, config, turn=cell.turn, latency=timers.sim_latency, a_loss=cell.loss,
                 a_delay=cell.delay_ms / 1000, timeout=timers.connect_for(cell.loss > 0),
                 same_lan=cell.topology == "same_nat", relay_only=cell.relay_only, trickle=cell.trickle,
                 controlling=cell.controlling)
    observed = Path.NONE if not r.connected else Path.RELAY if r.relayed else Path.DIRECT
    res = CellResult(cell, "sim", exp.path, observed, r.selected_pair, r.seconds if r.connected else None,
                     sorted(f"{x}-{y}" for x, y in r.succeeded), selected_types=r.selected_name,
                     selected_b=r.selected_pair_b)
    res.repro = repro_command(cell, "sim")
    return res.expecting(exp)


def sim_path(cell: Scenario) -> Path | None:
    """What the sim observes for ``cell`` (None where the sim cannot run it)."""
    r = run_sim(cell)
    return None if r.skipped else r.observed


def with_sim_check(res: CellResult) -> CellResult:
    """Run the same cell in the sim; a different path fails the cell and names both results."""
    res.sim_observed = sim_path(res.scenario)
    if res.sim_observed is not None and res.sim_observed is not res.observed:
        res.reason = res.verdict() + (f" ({res.reason})" if res.reason else "")
    return res


def result_from_json(doc: dict[str, Any], cell: Scenario, exp: Expected) -> CellResult:
    """A worker's result line for the cell it was given; a malformed line raises ValueError."""
    if not isinstance(doc, dict):
        raise ValueError("a result line that is not a JSON object")
    try:
        observed = Path(doc["observed"]) if doc.get("observed") else Path.NONE
        res = CellResult(cell, str(doc["backend"]), exp.path, observed, doc.get("selected"),
                         doc.get("seconds_to_connect"), list(doc.get("succeeded_pairs") or []),
                         str(doc.get("reason", "")), None, doc.get("artifacts"), doc.get("repro"),
                         selected_types=doc.get("selected_types"), selected_b=doc.get("selected_b"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"a malformed result line ({exc})") from None
    known = set(res.as_json())
    res.extra = {k: v for k, v in doc.items() if k not in known}
    return res.expecting(exp)


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


@functools.lru_cache(maxsize=1)
def _default_names() -> frozenset[str]:
    return frozenset(c.name for c in load_matrix())


def repro_command(cell: Scenario, backend: str = "lab") -> str:
    """One line that runs just this cell again (with every artifact kept)."""
    select = f"--scenario {cell.name}"
    if cell.name not in _default_names():  # a cell of a --presets sub-matrix
        select = f"--presets {' '.join(sorted({cell.nat_a, cell.nat_b}))} {select}"
    env = f"ICELAB_EXPECTATIONS={os.environ['ICELAB_EXPECTATIONS']} " if os.environ.get("ICELAB_EXPECTATIONS") else ""
    if backend == "sim":
        return f"{env}./icelab run --backend sim {select} --out results/{cell.name}"
    return f"sudo {env}./icelab run --backend lab {select} --keep-artifacts --out results/{cell.name}"


def _lab_order(cells: list[Scenario]) -> list[Scenario]:
    """Cells grouped by the lab they need (stable within a group), biggest group first."""
    from ice.scenario.lab import lab_key

    groups: dict[object, list[Scenario]] = {}
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
            if shell_on_failure and r.status is Status.FAIL:
                _shell(backend, cell, r)
    return results


def _shell(backend: LabBackend, cell: Scenario, r: CellResult) -> None:
    """Drop into a shell inside the failed cell's lab (node a), with the NAT state as the cell left it."""
    from ice.lab.netns import nsenter

    lab = backend.lab_of(cell)
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


WORKER_COMMAND = [sys.executable, "-m", "ice.scenario.worker"]


class _Worker:
    """One ``python -m ice.scenario.worker`` process: cells in on stdin, results out on stdout (JSON lines, read
    from the raw pipe so a partial line never blocks the run). It sets its own death signal (no ``preexec_fn`` in a
    process that may run threads)."""

    def __init__(self, artifacts: FsPath, keep: bool) -> None:
        self.artifacts = artifacts
        argv = [*WORKER_COMMAND, "--artifacts", str(artifacts), "--parent", str(os.getpid())]
        self.proc = subprocess.Popen([*argv, *(["--keep-artifacts"] if keep else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=str(SCENARIO_DIR.parent))
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.key: object = None
        self.cell: Scenario | None = None
        self.expected: Expected | None = None
        self.since = 0.0

    def give(self, cell: Scenario) -> None:
        from ice.scenario.lab import lab_key

        assert self.proc.stdin is not None
        self.cell, self.key, self.expected, self.since = cell, lab_key(cell), pinned(cell), time.monotonic()
        line = json.dumps({"cell": asdict(cell), "expected": self.expected.as_json(), "repro": repro_command(cell)})
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def read(self) -> tuple[list[bytes], bool]:
        """Complete lines that have arrived, and whether the worker closed its end."""
        chunk = os.read(self.fd, 65536)
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return lines, not chunk

    def answer(self, line: bytes) -> CellResult:
        """The result line for the cell in flight; ValueError if it is not one."""
        assert self.cell is not None and self.expected is not None
        try:
            doc = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("scenario") != self.cell.name:
            raise ValueError("not a result for the cell it was given")
        res = result_from_json(doc, self.cell, self.expected)
        self.cell = self.expected = None
        return res

    def lost(self, why: str) -> CellResult:
        """The in-flight cell, failed because its worker is gone."""
        cell, exp = self.cell, self.expected
        assert cell is not None and exp is not None
        self.cell = self.expected = None
        return CellResult(cell, "lab", exp.path, Path.NONE, None, None, reason=why,
                          repro=repro_command(cell)).expecting(exp)

    def status(self) -> str:
        rc = self.proc.poll()
        if rc is None:
            return "still running"
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        return f"exit status {rc}"

    def stop(self, wait: float, force: bool = False) -> None:
        """End the worker: close its input (it tears its labs down and exits), or with ``force`` SIGTERM it; then
        SIGKILL if it takes longer than ``wait``, and remove the captures a killed worker could not."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if force and self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        captures = self.artifacts.parent / ".captures"
        shutil.rmtree(captures / str(self.proc.pid), ignore_errors=True)
        with contextlib.suppress(OSError):
            captures.rmdir()


def run_lab_parallel(cells: list[Scenario], jobs: int, artifacts: FsPath, keep: bool,
                     progress: Callable[[CellResult], None] | None, timers: MatrixTimers = TIMERS
                     ) -> list[CellResult]:
    """Hand cells to ``jobs`` workers; a free worker takes another cell for the lab it already has when there is
    one, else one from the biggest group left (so few labs get built). A worker that dies, garbles its answer or
    says nothing for ``timers.cell_deadline`` fails the cell it held and is replaced; every cell gets exactly one
    result and the run always completes."""
    import selectors

    from ice.scenario.lab import lab_key

    pending: dict[object, list[Scenario]] = {}
    for c in _lab_order(cells):
        pending.setdefault(lab_key(c), []).append(c)

    def next_for(key: object) -> Scenario | None:
        if pending.get(key):
            group = pending[key]
        else:
            live = [g for g in pending.values() if g]
            if not live:
                return None
            group = max(live, key=len)
        return group.pop(0)

    sel = selectors.DefaultSelector()
    results: list[CellResult] = []
    workers: list[_Worker] = []

    def finish(r: CellResult) -> None:
        r = with_sim_check(r)
        results.append(r)
        if progress is not None:
            progress(r)

    def fail(cell: Scenario, why: str) -> None:
        exp = pinned(cell)
        finish(CellResult(cell, "lab", exp.path, Path.NONE, None, None, reason=why,
                          repro=repro_command(cell)).expecting(exp))

    def retire(w: _Worker, force: bool = False) -> None:
        if w.fd in sel.get_map():
            sel.unregister(w.fd)
        w.stop(timers.worker_stop, force)

    def assign(w: _Worker | None, key: object) -> None:
        """Give the next cell to ``w`` (or to a new worker); a worker that cannot take it fails it and goes."""
        cell = next_for(key)
        if cell is None:
            if w is not None:
                retire(w)
            return
        if w is None:
            try:
                w = _Worker(artifacts, keep)
            except OSError as exc:
                fail(cell, f"a lab worker could not start: {exc}")
                return
            workers.append(w)
            sel.register(w.fd, selectors.EVENT_READ, w)
        try:
            w.give(cell)
        except OSError as exc:
            finish(w.lost(f"its lab worker went away before taking it ({exc})"))
            retire(w, force=True)

    def lose(w: _Worker, why: str) -> None:
        key = w.key
        finish(w.lost(why))
        retire(w, force=True)
        assign(None, key)  # a replacement worker takes the next cell

    try:
        for _ in range(max(1, min(jobs, len(cells)))):
            assign(None, None)
        while sel.get_map() or any(pending.values()):
            if not sel.get_map():  # every worker is gone but cells are left: start another
                assign(None, None)
                continue
            for key, _ in sel.select(timeout=1.0):
                w = key.data
                lines, closed = w.read()
                for line in lines:
                    if w.cell is None:
                        continue  # after a lost cell the worker is on its way out
                    try:
                        finish(w.answer(line))
                    except ValueError as exc:
                        lose(w, f"its lab worker answered garbage ({exc}): {line[:120]!r}")
                        break
                    assign(w, w.key)
                if closed and w.fd in sel.get_map():
                    if w.cell is not None:
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            w.proc.wait(timers.worker_stop)  # closed its output: reap it to say how it ended
                        lose(w, f"its lab worker died ({w.status()}); see its stderr above")
                    else:
                        retire(w)
            now = time.monotonic()
            for key in list(sel.get_map().values()):
                w = key.data
                if w.cell is not None and now - w.since > timers.cell_deadline:
                    lose(w, f"no answer from its lab worker within {timers.cell_deadline:.0f} s")
    except BaseException:  # Ctrl-C, SIGTERM: stop the workers now (they tear their labs down), not after a cell
        for w in workers:
            if w.proc.poll() is None:
                w.proc.terminate()
        raise
    finally:
        for w in workers:
            if w.proc.returncode is None:
                retire(w)
        sel.close()
    order = {c.name: i for i, c in enumerate(cells)}
    return sorted(results, key=lambda r: order[r.scenario.name])


# ------------------------------------------------------------------------------------------------- reports


_STATUS_MARK = {Status.PASS: "", Status.FAIL: "!", Status.KNOWN_FAILURE: "k", Status.UNEXPECTED_PASS: "?",
                Status.SKIPPED: ""}


def _mark(r: CellResult) -> str:
    if r.skipped:
        return "s"
    return {Path.DIRECT: "D", Path.RELAY: "R", Path.NONE: "-"}[r.observed] + _STATUS_MARK[r.status]


LEGEND = ("D: direct pair selected, R: relayed pair, -: no connection, s: skipped by this back-end; "
          "!: differs from the expectation, k: a known failure, ?: a known failure that passed")


def grid(results: list[CellResult]) -> tuple[list[str], list[str], dict[tuple[str, str], CellResult]]:
    """Rows (NAT A), columns (NAT B) and cells of the two-NAT grid (the GRID_GROUPS)."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], CellResult] = {}
    for r in results:
        if r.scenario.group not in GRID_GROUPS:
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
    return [r for r in results if r.scenario.group not in GRID_GROUPS]


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
    lines.append(LEGEND)
    return "\n".join(lines)


def _md_mark(r: CellResult) -> str:
    icon = {Status.PASS: "✅", Status.FAIL: "❌", Status.KNOWN_FAILURE: "⚠️", Status.UNEXPECTED_PASS: "❓",
            Status.SKIPPED: "⏭️"}[r.status]
    return f"{icon} {'skipped' if r.skipped else r.observed.value}"


def summary(results: list[CellResult]) -> dict[str, int]:
    return {s.value: sum(r.status is s for r in results) for s in Status}


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
    counts = summary(results)
    out.append(f"\n{sum(r.passed for r in results)}/{len(results)} cells as expected "
               f"({', '.join(f'{n} {k}' for k, n in counts.items() if n)}).")
    for title, status in (("Failed cells", Status.FAIL), ("Known failures", Status.KNOWN_FAILURE),
                          ("Unexpectedly passing (remove their known_failure pin)", Status.UNEXPECTED_PASS)):
        chosen = [r for r in results if r.status is status]
        if chosen:
            out.append(f"\n{title}:\n")
            out += [f"- `{r.scenario.name}`: {r.reason or (r.expectation.known_failure if r.expectation else '')}"
                    + (f" (artifacts: `{r.artifacts}`)" if r.artifacts else "") for r in chosen]
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
        "statuses": summary(results),
        "unexpectedly_passing": [r.scenario.name for r in results if r.status is Status.UNEXPECTED_PASS],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "grid.txt").write_text(terminal_grid(results) + "\n")
    (out / "grid.md").write_text(markdown_grid(results) + "\n")
    (out / "grid.html").write_text(html_grid(results, backend, seconds))
    (out / "junit.xml").write_text(junit_xml(results, backend, seconds) + "\n")


# ---------------------------------------------------------------------------------------------------- main


def select_cells(presets: list[str] | None, names: list[str] | None) -> list[Scenario]:
    """The default matrix, or the RFC 4787 sub-matrix of ``presets``; then only the cells named (if any)."""
    if presets:
        from ice.nat.behaviour import preset

        for name in presets:
            preset(name)  # a typo is a UserError listing the presets
    cells = load_matrix(presets)
    if names:
        unknown = sorted(set(names) - {c.name for c in cells})
        if unknown:
            where = "in this --presets sub-matrix" if presets else "in the default matrix"
            raise UserError(f"no scenario named {', '.join(unknown)} {where}; names look like 'eim-eifxapdm-apdf' "
                            "or 'same-nat-eim-apdf-hairpin' (`icelab run --list` prints them all)")
        cells = [c for c in cells if c.name in names]
    return cells


def main(backend_name: str, presets: list[str] | None, out: FsPath, update: bool, quiet: bool = False,
         names: list[str] | None = None, jobs: int = 1, keep_artifacts: bool = False,
         shell_on_failure: bool = False) -> int:
    try:
        return _main(backend_name, presets, out, update, quiet, names, jobs, keep_artifacts, shell_on_failure)
    except UserError as exc:
        print(f"icelab: {exc}", file=sys.stderr)
        return 2


def _main(backend_name: str, presets: list[str] | None, out: FsPath, update: bool, quiet: bool,
          names: list[str] | None, jobs: int, keep_artifacts: bool, shell_on_failure: bool) -> int:
    if update:
        path = expectations_file()
        keep = _pinned() if path.exists() else {}
        doc = pinned_expectations(load_matrix(), keep)
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        _pinned.cache_clear()
        kept = sum("known_failure" in v for v in doc.values())
        changed = sorted(n for n in doc if keep.get(n) != doc[n])
        print(f"wrote {len(doc)} expectations to {path}" + (f" (kept {kept} known failures)" if kept else ""))
        if changed:
            shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
            print(f"{len(changed)} changed or new: {shown}; review them (git diff {path.name}) before committing")
        return 0
    if backend_name not in ("sim", "lab"):
        raise UserError(f"unknown backend {backend_name!r}; use --backend lab (kernel NATs, root) or --backend sim "
                        "(in-memory)")
    cells = select_cells(presets, names)
    for c in cells:
        pinned(c)  # a broken pin file is one clear error now, not a traceback halfway through the run
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
    write_reports(results, out, backend_name, elapsed,
                  {"jobs": jobs if backend_name == "lab" else 1, "environment": environment()})
    print(terminal_grid(results))
    failed = [r for r in results if not r.passed]
    counts = ", ".join(f"{n} {k}" for k, n in summary(results).items() if n and k != Status.PASS.value)
    print(f"{len(results) - len(failed)}/{len(results)} cells as expected in {elapsed:.1f} s ({backend_name}"
          f"{f', -j {jobs}' if backend_name == 'lab' else ''}{'; ' + counts if counts else ''}); "
          f"reports in {out}/")
    for r in failed:
        print(f"  FAIL {r.scenario.name}: {r.reason}")
        if r.artifacts:
            print(f"       artifacts: {r.artifacts}")
        if r.repro:
            print(f"       repro:     {r.repro}")
    surprise = [r.scenario.name for r in results if r.status is Status.UNEXPECTED_PASS]
    if surprise:
        print(f"  unexpectedly passing (pinned as known failures; remove their known_failure): {', '.join(surprise)}")
    return 1 if failed else 0


def environment() -> dict[str, str | None]:
    """What produced a results.json, so two runs compared later can be told apart."""
    import platform

    from ice import __version__

    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", "-C", str(SCENARIO_DIR.parent), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        commit = done.stdout.strip() or None
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
    return (f"[{done:>{width}}/{total}] {status} {r.scenario.name:<34} {observed:<6} "
            f"{r.selected or r.reason}{took}")


def iter_names(cells: Iterable[Scenario]) -> Iterator[str]:
    for c in cells:
        exp = pinned(c)
        known = f"; known failure: {exp.known_failure}" if exp.known_failure else ""
        yield f"{c.name}  ({c.group}, {c.topology}, expected {exp.path.value}{known})"
