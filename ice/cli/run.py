"""``icelab run [FILE ...]``: a suite of scenario cells (the default one, or your files) on the sim or the kernel
lab, its grid and reports."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ice.cli.common import isolate

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_run(args: argparse.Namespace) -> int:
    """Every cell of the suite, a grid, reports in --out."""
    from ice.scenario.run import iter_names, main
    from ice.scenario.suite import Suite
    from ice.topology.registry import Topologies

    files = [Path(f) for f in args.files]
    topologies = [Path(d) for d in args.topologies]
    if args.list:
        suite = Suite.load(files, Topologies(topologies), args.presets).select(args.scenario)
        for line in iter_names(suite):
            print(line)
        return 0
    backend = args.backend
    if backend is None:
        backend = "lab" if os.geteuid() == 0 else "sim"
        if backend == "sim" and not args.quiet and not args.update_expectations:
            print("icelab run: not root, so the in-memory sim back-end runs the cells; `sudo ./icelab run` runs "
                  "them with kernel NATs.", file=sys.stderr)
    if backend == "lab" and not args.update_expectations:
        from ice.lab.mn import require_root

        Suite.load(files, Topologies(topologies), args.presets).select(args.scenario)  # usage errors before root
        require_root()
        isolate()
    jobs = args.jobs if args.jobs is not None else max(1, min(4, os.cpu_count() or 1))
    return main(backend, Path(args.out), files, args.presets, args.update_expectations, quiet=args.quiet,
                names=args.scenario, jobs=jobs, keep_artifacts=args.keep_artifacts,
                shell_on_failure=args.shell_on_failure, topologies=topologies)


def add_parser(sub: Subparsers) -> None:
    r = sub.add_parser("run", help="the main job: the NAT x NAT scenario suite (or your scenario files), a grid "
                                   "and reports")
    r.add_argument("files", nargs="*", metavar="FILE",
                   help="scenario files (.toml with [[cells]]/[[matrix]] tables, or .py with cells()); default: "
                        "the built-in suite (docs/scenarios.md)")
    r.add_argument("--backend", choices=["sim", "lab"], default=None,
                   help="lab: kernel NATs in Mininet (the default as root); sim: in-memory NATs, no root, seconds "
                        "(the default otherwise)")
    r.add_argument("--topologies", action="append", default=[], metavar="DIR",
                   help="also load the topology modules in DIR (repeatable)")
    r.add_argument("--presets", nargs="+", metavar="PRESET",
                   help="instead of a suite: these NAT presets against each other in two_nats")
    r.add_argument("--scenario", action="append", metavar="NAME", help="only this cell (repeatable)")
    r.add_argument("-j", "--jobs", type=int, default=None,
                   help="lab workers in parallel, each with its own labs (default: CPUs, at most 4)")
    r.add_argument("--out", default="results", help="report directory (default: results/)")
    r.add_argument("--keep-artifacts", action="store_true",
                   help="keep pcaps, traces, rules and conntrack dumps of every cell, not only of failed ones")
    r.add_argument("--shell-on-failure", action="store_true",
                   help="open a shell inside the lab of each failed cell (runs the cells one at a time)")
    r.add_argument("--list", action="store_true", help="print the cells (name, group, expectation) and exit")
    r.add_argument("--update-expectations", action="store_true",
                   help="re-pin each file's expectations (FILE's stem + .expected.json beside it) from the RFC 4787 "
                        "reasoning, then review the diff")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress or per-cell lines")
    r.set_defaults(func=cmd_run)
