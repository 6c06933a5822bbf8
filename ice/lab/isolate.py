"""Run a lab command as PID 1 of a private PID namespace, so everything it starts dies with it.

``unshare --pid --fork --kill-child --mount-proc`` re-runs the command; when it ends for any reason (exit,
exception, Ctrl-C, SIGTERM, even SIGKILL of the outer process, which --kill-child turns into SIGKILL of ours),
the kernel kills every process left in the namespace, and the lab's network namespaces, links and rules,
which only those processes hold, disappear with them. Nothing is ever cleaned up by name or by a global sweep.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Sequence

ENV = "ICELAB_ISOLATED"


def isolated() -> bool:
    return os.environ.get(ENV) == "1"


def reexec_isolated(command: Sequence[str]) -> None:
    """Replace this process with ``command`` (the caller's own command line: the lab layer does not know the CLI)
    run inside a private PID namespace; a no-op when already inside."""
    if isolated():
        _as_init()
        return
    unshare = shutil.which("unshare")
    if unshare is None:  # util-linux is part of every Debian; without it, run unisolated (Lab.stop still cleans up)
        return
    env = dict(os.environ, **{ENV: "1"})
    cmd = [unshare, "--pid", "--fork", "--kill-child", "--mount-proc", *command]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(unshare, cmd, env)


def _as_init() -> None:
    """PID 1 ignores signals it has no handler for: turn SIGTERM and SIGHUP into a normal, cleaning exit."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
