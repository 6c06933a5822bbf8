"""``icelab test``: ruff, mypy --strict and pytest over the source checkout."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import TYPE_CHECKING

from ice.cli.common import repo_root

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_test(args: argparse.Namespace) -> int:
    """ruff, mypy --strict ice/, then pytest -n auto (pytest's "no tests collected" is a failure)."""
    root = repo_root()
    py = sys.executable
    steps: list[tuple[str, list[str]]] = [
        ("ruff", [py, "-m", "ruff", "check", "."]),
        ("mypy", [py, "-m", "mypy", "--strict", "ice/"]),
        ("pytest", [py, "-m", "pytest", "-n", args.jobs, *args.pytest_args]),
    ]
    for name, cmd in steps:
        if args.only and name not in args.only:
            continue
        print(f"==> {name}: {' '.join(cmd[2:])}", flush=True)
        rc = subprocess.call(cmd, cwd=root)
        if rc != 0:
            print(f"icelab test: {name} failed (exit {rc})", file=sys.stderr)
            return rc
    return 0


def add_parser(sub: Subparsers) -> None:
    t = sub.add_parser("test", help="ruff, mypy --strict ice/, then pytest -n auto over the whole suite")
    t.add_argument("-n", "--jobs", default="auto", help="pytest-xdist workers (default: auto)")
    t.add_argument("--only", action="append", choices=["ruff", "mypy", "pytest"], help="run only this step")
    t.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    t.set_defaults(func=cmd_test)
