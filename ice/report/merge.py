"""``icelab report merge DIR... --out DIR``: the reports of ``icelab run --shard I/N`` runs as one run's.

Each shard's cells are read back from its results.json into :class:`CellResult` values and written by the same
report writers as a single run (:func:`ice.report.results.write_reports`), in the suite's order (each shard records
it), so the merged results.json, grids and JUnit are those of one run over every cell.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ice.errors import UserError
from ice.report.compare import load
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected
from ice.scenario.result import CellResult, Status, result_from_json


@dataclass
class Merged:
    results: list[CellResult]
    backend: str
    seconds: float
    """The slowest shard's wall time: how long the parallel run took."""
    extra: dict[str, Any]
    missing: list[str] = field(default_factory=list)
    """Cells of the suite that no shard reported (a shard that did not run, or was not given)."""


def cell_result(doc: dict[str, Any]) -> CellResult:
    """A results.json cell entry back as the :class:`CellResult` that wrote it."""
    name = doc.get("scenario")
    try:
        cell = Cell.from_table(doc["config"], f"cell {name}")
        exp = Expected(PathKind(doc["expected"]), str(doc.get("expected_reason") or ""),
                       tuple(doc.get("expected_selected") or ()), tuple(doc.get("never") or ()),
                       tuple(doc.get("must_succeed") or ()), doc.get("known_failure"),
                       bool(doc.get("intermittent")))
        r = result_from_json(doc, cell, exp)
        r.reason = str(doc.get("reason") or "")
        r.skipped = doc.get("status") == Status.SKIPPED.value
        r.sim_observed = PathKind(doc["sim_observed"]) if doc.get("sim_observed") else None
        r.pinned = bool(doc.get("pinned", True))
        r.source = str(doc.get("source") or "")
        r.extra = {k: v for k, v in r.extra.items() if k not in ("sim_observed", "pinned", "source")}
    except (KeyError, TypeError, ValueError, UserError) as exc:
        raise UserError(f"the results.json entry for cell {name} cannot be read back ({exc})") from None
    return r


def merge(dirs: list[str], out: Path | None = None) -> Merged:
    """The shards' reports in ``dirs`` as one run; with ``out``, failed cells' artifacts are copied under
    ``out/artifacts/`` (so the merged directory holds everything a single run's does)."""
    if not dirs:
        raise UserError("report merge needs the report directories (or results.json files) of the shards")
    docs = [(d, load(d)) for d in dirs]
    backends = {str(doc.get("backend")) for _, doc in docs}
    if len(backends) > 1:
        shown = ", ".join(f"{d}: {doc.get('backend')}" for d, doc in docs)
        raise UserError(f"the shards ran on different back-ends ({shown}), so they are not parts of one run")
    counts = {doc["shard"].split("/")[1] for _, doc in docs if isinstance(doc.get("shard"), str)}
    if len(counts) > 1:
        raise UserError(f"the shards split the suite differently (into {' and '.join(sorted(counts))} parts); "
                        "merge the parts of one split")
    owner: dict[str, str] = {}
    for d, doc in docs:
        for entry in doc["cells"]:
            name = entry["scenario"]
            if name in owner:
                raise UserError(f"cell {name} is in both {owner[name]} and {d}: the shards overlap, so they are not "
                                "parts of one split (same suite, same pins, the same N)")
            owner[name] = d
    results = [cell_result(entry) for _, doc in docs for entry in doc["cells"]]
    order: list[str] = []
    for _, doc in docs:
        whole = doc.get("suite_cells")
        if isinstance(whole, list) and len(whole) > len(order):
            order = [str(n) for n in whole]
    if order and set(owner) <= set(order):
        index = {n: i for i, n in enumerate(order)}
        results.sort(key=lambda r: index[r.cell.name])
    else:
        results.sort(key=lambda r: r.cell.name)
    if out is not None:
        for r in results:
            _copy_artifacts(r, Path(owner[r.cell.name]), out)
    first = docs[0][1]
    extra: dict[str, Any] = {k: first[k] for k in ("jobs", "environment") if k in first}
    extra["sources"] = sorted({str(s) for _, doc in docs for s in doc.get("sources") or ()})
    extra["shards"] = [{"from": d, "shard": doc.get("shard"), "cells": len(doc["cells"]),
                        "seconds": doc.get("seconds")} for d, doc in docs]
    seconds = max(float(doc.get("seconds") or 0.0) for _, doc in docs)
    return Merged(results, backends.pop(), seconds, extra, [n for n in order if n not in owner])


def _copy_artifacts(r: CellResult, shard: Path, out: Path) -> None:
    """A cell's artifacts into ``out/artifacts/CELL`` (found where the shard's run wrote them, or under the shard's
    report directory, where a CI job downloads it)."""
    if not r.artifacts:
        return
    base = shard.parent if shard.name == "results.json" else shard
    src = next((p for p in (Path(r.artifacts), base / "artifacts" / r.cell.name) if p.is_dir()), None)
    if src is None:
        return
    dest = out / "artifacts" / r.cell.name
    if src.resolve() != dest.resolve():
        shutil.copytree(src, dest, dirs_exist_ok=True)
    r.artifacts = str(dest)
