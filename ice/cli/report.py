"""``icelab report compare``: what changed between two matrix runs; ``icelab report merge``: shards' reports as one
run's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_report_compare(args: argparse.Namespace) -> int:
    from ice.report.compare import compare, load, render

    c = compare(load(args.old), load(args.new))
    for warning in c.warnings if args.json else [c.backend_warning]:  # text: no common cell is its output
        if warning:
            print(f"icelab report compare: warning: {warning}", file=sys.stderr)
    print(json.dumps(c.as_json(), indent=2) if args.json else render(c, args.old, args.new))
    return 1 if c.regressed else 0


def cmd_report_merge(args: argparse.Namespace) -> int:
    """One results.json, grid, HTML and JUnit from the shards' reports; exit 1 if a cell failed or is missing."""
    from ice.report.merge import merge
    from ice.report.results import write_reports
    from ice.report.text import terminal_grid

    out = Path(args.out)
    m = merge(args.dirs, out)
    write_reports(m.results, out, m.backend, m.seconds, m.extra)
    print(terminal_grid(m.results))
    failed = [r for r in m.results if not r.passed]
    print(f"{len(m.results) - len(failed)}/{len(m.results)} cells as expected, merged from {len(args.dirs)} "
          f"shards ({m.backend}, slowest {m.seconds:.1f} s); reports in {out}/")
    for r in failed:
        print(f"  FAIL {r.cell.name}: {r.reason}")
        if r.artifacts:
            print(f"       artifacts: {r.artifacts}")
    if m.missing:
        shown = ", ".join(m.missing[:6]) + (f" and {len(m.missing) - 6} more" if len(m.missing) > 6 else "")
        print(f"icelab report merge: {len(m.missing)} cells of the suite are in no shard given ({shown}); did a "
              "shard not run?", file=sys.stderr)
    return 1 if failed or m.missing else 0


def add_parser(sub: Subparsers) -> None:
    rep = sub.add_parser("report", help="work with matrix reports")
    rsub = rep.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    cmp_ = rsub.add_parser("compare", help="what changed between two runs (exit 1 if a cell regressed)")
    cmp_.add_argument("old", help="results.json of the earlier run (or its --out directory)")
    cmp_.add_argument("new", help="results.json of the later run (or its --out directory)")
    cmp_.add_argument("--json", action="store_true", help="machine-readable output")
    cmp_.set_defaults(func=cmd_report_compare)
    mrg = rsub.add_parser("merge", help="the reports of `icelab run --shard I/N` runs as one run's (exit 1 if a "
                                        "cell failed or no shard has it)")
    mrg.add_argument("dirs", nargs="+", metavar="DIR", help="a shard's --out directory (or its results.json)")
    mrg.add_argument("--out", required=True, metavar="DIR",
                     help="where the merged results.json, grids, HTML, JUnit and failed cells' artifacts go")
    mrg.set_defaults(func=cmd_report_merge)
