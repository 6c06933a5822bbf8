"""``icelab report compare``: what changed between two matrix runs."""

from __future__ import annotations

import argparse
import json
import sys
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


def add_parser(sub: Subparsers) -> None:
    rep = sub.add_parser("report", help="work with matrix reports")
    rsub = rep.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    cmp_ = rsub.add_parser("compare", help="what changed between two runs (exit 1 if a cell regressed)")
    cmp_.add_argument("old", help="results.json of the earlier run (or its --out directory)")
    cmp_.add_argument("new", help="results.json of the later run (or its --out directory)")
    cmp_.add_argument("--json", action="store_true", help="machine-readable output")
    cmp_.set_defaults(func=cmd_report_compare)
