"""``icelab bench matrix``: wall time of the full default matrix, in the simulation and in the kernel lab.

Goals: the default suite in <= 5 s in the sim and <= 60 s in the kernel lab with ``-j 2`` on two cores. Both run
as ``icelab run`` would (a child process each, so the lab run gets its own PID namespace), into a temporary report
directory; reported: wall seconds, cells, how many passed, the median time to connect and the slowest cells.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOALS = {"sim": 5.0, "lab": 60.0}


def one(backend: str, jobs: int, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "ice.cli", "run", "--backend", backend, "--out", str(out), "-q"]
    if backend == "lab":
        cmd += ["-j", str(jobs)]
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    try:
        doc = json.loads((out / "results.json").read_text())
    except FileNotFoundError:
        return {"error": (p.stderr or p.stdout).strip()[-300:], "exit": p.returncode}
    times = [c["seconds_to_connect"] * 1000 for c in doc["cells"] if c["seconds_to_connect"] is not None]
    slowest = sorted(doc["cells"], key=lambda c: -(c["seconds_to_connect"] or 0))[:3]
    return {
        "wall_seconds": round(wall, 2), "goal_seconds": GOALS[backend], "within_goal": wall <= GOALS[backend],
        "cells": len(doc["cells"]), "passed": doc["passed"], "exit": p.returncode,
        "jobs": jobs if backend == "lab" else 1,
        "median_connect_ms": round(statistics.median(times), 1) if times else None,
        "slowest": {c["scenario"]: c["seconds_to_connect"] for c in slowest},
    }


def main(args: argparse.Namespace) -> int:
    jobs = 2
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="icelab-bench-matrix-") as tmp:
        only = getattr(args, "only", None)
        if only != "lab":
            results["sim"] = one("sim", 1, Path(tmp) / "sim")
        if only == "sim":
            pass
        elif os.geteuid() == 0:
            results["lab"] = one("lab", jobs, Path(tmp) / "lab")
        else:
            results["lab"] = {"skipped": "the kernel lab needs root (sudo ./icelab bench matrix)"}
    doc = {"benchmark": "matrix", "results": results}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for backend, r in results.items():
            if "wall_seconds" in r:
                print(f"{backend:>4}: {r['cells']} cells, {r['passed']} as expected, {r['wall_seconds']:.1f} s wall "
                      f"(goal <= {r['goal_seconds']:.0f} s{', -j ' + str(r['jobs']) if backend == 'lab' else ''}: "
                      f"{'met' if r['within_goal'] else 'MISSED'}); median connect {r['median_connect_ms']} ms")
            else:
                print(f"{backend:>4}: {r.get('skipped') or r.get('error')}")
    ok = all(r.get("exit", 0) == 0 for r in results.values())
    return 0 if ok else 1
