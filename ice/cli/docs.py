"""``icelab docs``: the API reference, built offline with pdoc from the docstrings (``docs/_build/`` in a checkout)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_docs(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("pdoc") is None:
        raise UserError("the API reference is built with pdoc, which is not installed: pip install pdoc (./icelab "
                        "installs it with the development tools)")
    if args.out is None:
        from ice.cli.common import repo_root

        out = repo_root() / "docs" / "_build"
    else:
        out = Path(args.out)
    # Every module by name: ``ice.__all__`` lists the public names, and pdoc would otherwise show only those. The
    # CLI's __main__ would run the CLI when imported, so it is left out.
    import pkgutil

    import ice

    modules = ["ice", *(m.name for m in pkgutil.walk_packages(ice.__path__, "ice.")
                        if not m.name.endswith("__main__") and not m.name.endswith("._speedups"))]
    cmd = [sys.executable, "-m", "pdoc", "--docformat", "restructuredtext", "-o", str(out), *modules]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    print(f"API reference written to {out}/index.html")
    return 0


def add_parser(sub: Subparsers) -> None:
    d = sub.add_parser("docs", help="build the API reference (pdoc, offline) into docs/_build/")
    d.add_argument("--out", metavar="DIR", help="where to write it (default: docs/_build/ of the checkout)")
    d.set_defaults(func=cmd_docs)
