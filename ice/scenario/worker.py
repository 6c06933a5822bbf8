"""A lab worker of ``icelab run -j N``: cells in as JSON lines on stdin, one result JSON line each on stdout.

It keeps its labs between cells (see :class:`ice.scenario.lab.LabBackend`) and removes them when stdin closes,
on SIGTERM/SIGINT, or (through PR_SET_PDEATHSIG on everything it starts) when it dies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path as FsPath

from ice.lab.netns import die_with_parent
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected
from ice.scenario.lab import LabBackend
from ice.scenario.result import CellResult
from ice.scenario.suite import Suite
from ice.topology.registry import Topologies


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ice.scenario.worker")
    p.add_argument("--artifacts", required=True)
    p.add_argument("--keep-artifacts", action="store_true")
    p.add_argument("--topologies", action="append", default=[], help="topology directories of the run")
    p.add_argument("--parent", type=int, help="die with this process (the run that started us)")
    args = p.parse_args(argv)
    if args.parent is not None:
        die_with_parent()  # set here, not through preexec_fn: the parent may run threads
        if os.getppid() != args.parent:
            return 1  # the parent died before the death signal was armed

    def stop(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):  # one stop is enough: let the labs' teardown finish
            signal.signal(sig, signal.SIG_IGN)
        # The cell in progress unwinds through its event loop, whose tasks die cancelled: a stop, not an error
        # to print on the user's terminal.
        logging.getLogger("asyncio").disabled = True
        raise SystemExit(128 + signum) if signum != signal.SIGINT else KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The protocol owns the real stdout; anything else written to fd 1 (Mininet's messages, a child process's
    # output) goes to stderr instead.
    results = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    repro: dict[str, str] = {}
    suite = Suite(Topologies(args.topologies))
    with LabBackend(FsPath(args.artifacts), args.keep_artifacts, lambda c: repro.get(c.name, "")) as backend:
        for line in sys.stdin:
            msg = json.loads(line)
            expected = Expected.from_json(msg["expected"])
            try:
                cell = Cell.from_table(msg["cell"])
                repro[cell.name] = msg.get("repro", "")
                res = backend.run(cell, suite.spec(cell), expected)
            except Exception as exc:  # whatever breaks, the parent gets one answer per cell
                given = msg.get("cell") if isinstance(msg.get("cell"), dict) else {}
                try:  # the parent matches the answer to its cell by name
                    cell = Cell(str(given.get("name", "unknown")), str(given.get("topology")))
                except ValueError:
                    cell = Cell("unknown", str(given.get("topology")))
                res = CellResult(cell, "lab", expected.path, PathKind.NONE, None, None,
                                 reason=f"the worker failed on this cell: {type(exc).__name__}: {exc}")
                res.expecting(expected)
            results.write(json.dumps(res.as_json()) + "\n")
            results.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
