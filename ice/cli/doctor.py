"""``icelab doctor``: the environment checks of :mod:`ice.doctor`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ice.cli.common import repo_root

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_doctor(args: argparse.Namespace) -> int:
    from ice.doctor import run_checks

    return run_checks(json_out=args.json, root=repo_root())


def add_parser(sub: Subparsers) -> None:
    d = sub.add_parser("doctor", help="check root, kernel features, mininet and interop tools")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)
