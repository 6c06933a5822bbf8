"""The ``icelab`` command line (the top layer: it may import everything, nothing imports it).

One module per command group; each has ``add_parser(sub)``, which adds its command (and its sub-commands) to the
top-level sub-parsers and sets ``func`` on each to the function that runs it: ``func(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ice import __version__
from ice.cli import agent, bench, demo, docs, doctor, fuzz, nat, peer, report, run, server, stun, test, topo, vm
from ice.cli.common import ICELAB_COMMAND, isolate, repo_root
from ice.errors import IceError, StunErrorResponse, StunTimeout, UserError

__all__ = ["ICELAB_COMMAND", "build_parser", "isolate", "main", "repo_root"]

COMMANDS = (run, demo, test, doctor, docs, stun, server, peer, agent, nat, topo, report, bench, fuzz, vm)
"""The command modules, in the order ``icelab --help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icelab",
        description="A sans-IO ICE/STUN/TURN stack and the emulated-network lab that proves it works.",
    )
    p.add_argument("--version", action="version", version=f"icelab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        print("icelab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `icelab run --list | head`: the reader has gone, which is not an error to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except StunTimeout as exc:
        print(f"icelab: no answer from the STUN server: {exc}", file=sys.stderr)
        return 1
    except StunErrorResponse as exc:
        print(f"icelab: the server answered with an error: {exc}", file=sys.stderr)
        return 1
    except (UserError, IceError) as exc:
        print(f"icelab: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"icelab: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of icelab's: one sentence here, the traceback in a file
        where = crash_report(exc, argv if argv is not None else sys.argv[1:])
        print(f"icelab: internal error ({type(exc).__name__}: {exc}); the traceback is in {where}: please report "
              "it with that file", file=sys.stderr)
        return 70


def crash_report(exc: BaseException, argv: Sequence[str]) -> str:
    """Write ``exc``'s traceback and the command line to a file in the temporary directory; its path."""
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="icelab-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"icelab {__version__}: {' '.join(['icelab', *argv])}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path
