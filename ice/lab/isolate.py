"""Run a lab command as PID 1 of a private PID namespace, so everything it starts dies with it.

``unshare --pid --fork --kill-child --mount-proc`` re-runs the command; when it ends for any reason (exit,
exception, Ctrl-C, SIGTERM, even SIGKILL), the kernel kills every process left in the namespace, and the lab's
network namespaces, links and rules, which only those processes hold, disappear with them. Nothing is ever
cleaned up by name or by a global sweep.

The calling process stays as a thin parent: ``unshare`` blocks SIGINT and SIGTERM while it waits (so a
``kill -TERM`` or a CI runner's cancellation sent to the command's PID would otherwise be ignored), so the parent
forwards SIGINT, SIGTERM and SIGHUP to the isolated command and exits with its status; if the parent is killed
outright, ``unshare`` gets SIGKILL (PR_SET_PDEATHSIG) and ``--kill-child`` takes the command with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ENV = "ICELAB_ISOLATED"


def isolated() -> bool:
    return os.environ.get(ENV) == "1"


def reexec_isolated(command: Sequence[str]) -> None:
    """Run ``command`` (the caller's own command line: the lab layer does not know the CLI) inside a private PID
    namespace and exit with its status; inside the namespace (the re-run itself) this returns at once."""
    if isolated():
        _as_init()
        return
    unshare = shutil.which("unshare")
    if unshare is None:  # util-linux is part of every Debian; without it, run unisolated (Lab.stop still cleans up)
        return
    from ice.lab.netns import die_with_parent

    env = dict(os.environ, **{ENV: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.Popen([unshare, "--pid", "--fork", "--kill-child", "--mount-proc", *command], env=env,
                            preexec_fn=die_with_parent)  # no threads run yet: the CLI has just started

    def forward(signum: int, frame: object) -> None:
        inner = _child_of(proc.pid)
        if inner is not None:
            os.kill(inner, signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    rc = proc.wait()
    sys.exit(rc if rc >= 0 else 128 - rc)


def _child_of(pid: int) -> int | None:
    """The (first) child process of ``pid``: the isolated command, PID 1 of the new namespace."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _as_init() -> None:
    """PID 1 ignores signals it has no handler for: turn SIGTERM and SIGHUP into a normal, cleaning exit, and
    take SIGINT once (a terminal's Ctrl-C reaches both this process and the parent that forwards it; a second
    KeyboardInterrupt must not cut the cleanup short)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, interrupt)
