"""A lab worker of ``icelab run -j N``: cells in as JSON lines on stdin, one result JSON line each on stdout.

It keeps its labs between cells (see :class:`ice.scenario.lab.LabBackend`) and removes them when stdin closes,
on SIGTERM/SIGINT, or (through PR_SET_PDEATHSIG on everything it starts) when it dies.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path as FsPath

from ice.scenario.lab import LabBackend
from ice.scenario.model import Expected, Scenario


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ice.scenario.worker")
    p.add_argument("--artifacts", required=True)
    p.add_argument("--keep-artifacts", action="store_true")
    args = p.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    # The protocol owns the real stdout; anything else printed (Mininet's messages) goes to stderr.
    results = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr
    repro: dict[str, str] = {}
    with LabBackend(FsPath(args.artifacts), args.keep_artifacts, lambda c: repro.get(c.name, "")) as backend:
        for line in sys.stdin:
            msg = json.loads(line)
            cell = Scenario(**msg["cell"])
            repro[cell.name] = msg.get("repro", "")
            res = backend.run(cell, Expected.from_json(msg["expected"]))
            results.write(json.dumps(res.as_json()) + "\n")
            results.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
