"""The lab worker pool of ``icelab run -j N``: N ``python -m ice.scenario.worker`` processes, each with its own
labs, fed cells so that a worker keeps reusing the lab it has built; a worker that dies, garbles or falls silent
fails only the cell it held and is replaced."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path as FsPath

from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected
from ice.scenario.lab import lab_key
from ice.scenario.result import CellResult, result_from_json
from ice.scenario.suite import Suite
from ice.scenario.timers import TIMERS, MatrixTimers


def lab_order(suite: Suite) -> list[Cell]:
    """Cells grouped by the lab they need (stable within a group), biggest group first."""
    groups: dict[object, list[Cell]] = {}
    for c in suite.cells:
        groups.setdefault(lab_key(suite.spec(c)), []).append(c)
    return [c for g in sorted(groups.values(), key=len, reverse=True) for c in g]


WORKER_COMMAND = [sys.executable, "-m", "ice.scenario.worker"]


class _Worker:
    """One ``python -m ice.scenario.worker`` process: cells in on stdin, results out on stdout (JSON lines, read
    from the raw pipe so a partial line never blocks the run). It sets its own death signal (no ``preexec_fn`` in a
    process that may run threads)."""

    def __init__(self, suite: Suite, artifacts: FsPath, keep: bool) -> None:
        self.suite = suite
        self.artifacts = artifacts
        argv = [*WORKER_COMMAND, "--artifacts", str(artifacts), "--parent", str(os.getpid())]
        for d in suite.topologies.directories:
            argv += ["--topologies", str(d.resolve())]
        self.proc = subprocess.Popen([*argv, *(["--keep-artifacts"] if keep else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.key: object = None
        self.cell: Cell | None = None
        self.expected: Expected | None = None
        self.since = 0.0

    def give(self, cell: Cell) -> None:
        assert self.proc.stdin is not None
        self.cell, self.key, self.since = cell, lab_key(self.suite.spec(cell)), time.monotonic()
        self.expected = self.suite.expectation(cell)[0]
        line = json.dumps({"cell": cell.as_json(), "expected": self.expected.as_json(),
                           "repro": self.suite.repro(cell)})
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
        return CellResult(cell, "lab", exp.path, PathKind.NONE, None, None, reason=why,
                          repro=self.suite.repro(cell)).expecting(exp)

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


def run_lab_parallel(suite: Suite, jobs: int, artifacts: FsPath, keep: bool,
                     judge: Callable[[CellResult], CellResult], progress: Callable[[CellResult], None] | None,
                     timers: MatrixTimers = TIMERS) -> list[CellResult]:
    """Hand cells to ``jobs`` workers; a free worker takes another cell for the lab it already has when there is
    one, else one from the biggest group left (so few labs get built). A worker that dies, garbles its answer or
    says nothing for ``timers.cell_deadline`` fails the cell it held and is replaced; every cell gets exactly one
    result and the run always completes."""
    import selectors

    cells = suite.cells
    pending: dict[object, list[Cell]] = {}
    for c in lab_order(suite):
        pending.setdefault(lab_key(suite.spec(c)), []).append(c)

    def next_for(key: object) -> Cell | None:
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
        r = judge(r)
        results.append(r)
        if progress is not None:
            progress(r)

    def fail(cell: Cell, why: str) -> None:
        exp = suite.expectation(cell)[0]
        finish(CellResult(cell, "lab", exp.path, PathKind.NONE, None, None, reason=why,
                          repro=suite.repro(cell)).expecting(exp))

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
                w = _Worker(suite, artifacts, keep)
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
    return sorted(results, key=lambda r: order[r.cell.name])
