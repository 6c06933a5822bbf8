"""``icelab bench robustness``: one table of how the stack stands up to hostile input, faults and load.

- fuzzing: the figures of the last long campaign per target (fuzz/figures.json, written by
  ``./icelab fuzz all --runs 1000000 --figures fuzz/figures.json``): inputs, exceptions, hangs, memory;
- faults: scenarios/faults.toml run now in the simulation (every cell's timeline: paths blocked, NATs rebooted, the
  TURN server restarted, links made lossy) and how many cells came through;
- load: the TURN server core with 1,000 allocations (``bench turnscale``, measured now): memory per allocation and
  growth per set-up/delete cycle (a leak shows here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ice.errors import UserError

HERE = Path(__file__).resolve().parent
FIGURES = HERE.parent / "fuzz" / "figures.json"
FAULTS = HERE.parent / "scenarios" / "faults.toml"


def _fuzz() -> dict[str, Any]:
    if not FIGURES.is_file():
        raise UserError(f"no fuzzing figures in {FIGURES}: run ./icelab fuzz all --runs 1000000 --figures "
                        "fuzz/figures.json first")
    doc = json.loads(FIGURES.read_text())
    keep = ("inputs", "seconds", "execs_per_s", "exceptions", "hangs", "out_of_memory", "rss_start_kb", "rss_end_kb",
            "date", "commit")
    return {target: {k: v for k, v in fig.items() if k in keep} for target, fig in doc.items()}


def _faults() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="icelab-robustness-") as out:
        p = subprocess.run([sys.executable, "-m", "ice.cli", "run", "--backend", "sim", str(FAULTS), "--out", out,
                            "-q"], capture_output=True, text=True, timeout=300)
        if not (Path(out) / "results.json").is_file():
            raise UserError(f"the faults suite did not run: {p.stderr.strip()[-300:]}")
        cells = json.loads((Path(out) / "results.json").read_text())["cells"]
    return {"suite": "scenarios/faults.toml", "backend": "sim", "cells": len(cells),
            "survived": sum(c["status"] == "pass" for c in cells),
            "failed": [c["scenario"] for c in cells if c["status"] != "pass"]}


def _load() -> dict[str, Any]:
    from bench import turnscale

    doc = turnscale.measure()
    return {"turn_allocations": doc["allocations"], "turn_bytes_per_allocation": doc["memory_per_allocation_bytes"],
            "turn_leak_bytes_per_cycle": doc["leak_bytes_per_cycle"], "turn_relay_p99_us": doc["relay_processing_us"]}


def main(args: argparse.Namespace) -> int:
    doc = {"benchmark": "robustness", "fuzz": _fuzz(), "faults": _faults(), "load": _load()}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print("fuzzing (the last long campaign per target, fuzz/figures.json):")
    for target, f in doc["fuzz"].items():
        print(f"  {target:<12} {f.get('inputs', 0):>10,} inputs  {f.get('exceptions', '?')} exceptions  "
              f"{f.get('hangs', '?')} hangs  memory {f.get('rss_start_kb', '?')} -> {f.get('rss_end_kb', '?')} KB  "
              f"({f.get('date', '?')}, {f.get('commit', '?')})")
    faults = doc["faults"]
    print(f"faults: {faults['survived']} of {faults['cells']} cells of {faults['suite']} came through (sim)")
    load = doc["load"]
    print(f"load: {load['turn_allocations']} TURN allocations at {load['turn_bytes_per_allocation']} bytes each; "
          f"{load['turn_leak_bytes_per_cycle']} bytes kept per set-up/delete cycle")
    return 0 if not faults["failed"] else 1
