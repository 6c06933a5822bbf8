"""``icelab test``: ruff, mypy --strict and pytest over the source checkout."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from ice.cli.common import repo_root

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def userns_prefix() -> list[str]:
    """For a normal user where user namespaces work: run pytest as uid 0 of its own user namespace (with its own
    network and mount namespaces), so the ``lab`` tests build their labs there (docs/lab.md, "Without root"). No PID
    namespace: as its PID 1, pytest would not reap the orphans a killed lab command leaves (zombies)."""
    import os
    import shutil

    from ice.lab.userns import USERNS_FLAGS, lab_problem

    unshare = shutil.which("unshare")
    if os.geteuid() == 0 or unshare is None or lab_problem() is not None:
        return []
    return [unshare, *USERNS_FLAGS]


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
        if name == "pytest":
            cmd = [*userns_prefix(), *cmd]
        # The tests run the sources, not a compiled build (ice/native.py): some replace methods, which a compiled
        # class does not allow; tests/test_native.py runs the build itself.
        rc = subprocess.call(cmd, cwd=root, env={**os.environ, "ICELAB_NATIVE": "0"})
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
