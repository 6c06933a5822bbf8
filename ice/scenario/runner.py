"""Judge a suite's cells on a back-end: the simulation, the kernel lab in this process or in parallel workers, and
the sim check of every lab cell.

Back-ends: ``sim`` (in-memory, virtual time, no root) and ``lab`` (kernel NATs in Mininet, root). On the lab,
every cell also runs in the sim and the two must agree. ``lab_parallel`` runs N lab workers
(:mod:`ice.scenario.pool`). Printing the results and writing the reports is the CLI's job (:mod:`ice.cli.run`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ice.scenario.cell import Cell
from ice.scenario.result import CellResult, Status
from ice.scenario.sim import run_sim
from ice.scenario.suite import Suite
from ice.scenario.timers import TIMERS, MatrixTimers
from ice.topology.spec import TopologySpec

if TYPE_CHECKING:
    from ice.scenario.lab import LabBackend

OnFailure = Callable[["LabBackend", Cell, TopologySpec, CellResult], None]
"""Called with the lab still up after a lab cell fails in-process (``--shell-on-failure`` opens a shell there)."""


def sync_artifacts(res: CellResult) -> CellResult:
    """Rewrite the cell's ``<artifacts>/result.json`` with its final record: the lab (or its worker) wrote it
    before the sim check and the annotations, so it must match the cell's entry in results.json."""
    if res.artifacts:
        with contextlib.suppress(OSError):  # a full disk costs the copy, not the run
            (Path(res.artifacts) / "result.json").write_text(json.dumps(res.as_json(), indent=2) + "\n")
    return res


def timeline_paths(r: CellResult) -> list[str]:
    """What each step of a cell's timeline observed (the paths of its expect steps, or ok/failed)."""
    steps = r.extra.get("timeline")
    if not isinstance(steps, list):
        return []
    return [str(s.get("observed") or ("ok" if s.get("ok") else "failed")) for s in steps if isinstance(s, dict)]


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
        if "bulk" in sim.extra:  # the sim's model figures beside the lab's, and its band check
            res.extra["sim_bulk"] = sim.extra["bulk"]
            if sim.extra.get("bulk_error") and not res.extra.get("bulk_error"):
                res.extra["bulk_error"] = f"the sim's model: {sim.extra['bulk_error']}"
                res.reason = res.reason or res.verdict()
        if res.sim_observed is not None and res.sim_observed is not res.observed:
            res.reason = res.verdict() + (f" ({res.reason})" if res.reason else "")
        elif not sim.skipped and timeline_paths(res) != timeline_paths(sim):
            res.extra["sim_timeline"] = sim.extra.get("timeline")
            disagree = f"the lab and the sim disagree on the timeline: lab {timeline_paths(res)}, sim " \
                       f"{timeline_paths(sim)}"
            res.extra["timeline_error"] = disagree
            res.reason = disagree + (f" ({res.reason})" if res.reason else "")
        return sync_artifacts(self.annotate(res))

    def lab_inprocess(self, artifacts: Path, keep: bool, on_failure: OnFailure | None,
                      progress: Callable[[CellResult], None] | None) -> list[CellResult]:
        """Every cell in this process's labs, one at a time; ``on_failure`` runs inside each failed cell's lab."""
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
                if on_failure is not None and r.status is Status.FAIL:
                    on_failure(backend, cell, spec, r)
        order = {c.name: i for i, c in enumerate(self.suite.cells)}
        return sorted(results, key=lambda r: order[r.cell.name])

    def lab_parallel(self, jobs: int, artifacts: Path, keep: bool,
                     progress: Callable[[CellResult], None] | None) -> list[CellResult]:
        from ice.scenario.pool import run_lab_parallel

        return run_lab_parallel(self.suite, jobs, artifacts, keep, self.with_sim_check, progress, self.timers)
