"""Run a lab command as PID 1 of a private PID namespace, so everything it starts dies with it.

``unshare --pid --fork --kill-child --mount-proc`` re-runs the command; when it ends for any reason (exit,
exception, Ctrl-C, SIGTERM, even SIGKILL), the kernel kills every process left in the namespace, and the lab's
network namespaces, links and rules, which only those processes hold, disappear with them. Nothing is ever
cleaned up by name or by a global sweep.

A normal user's command also gets ``--user --map-root-user --net --mount`` (:mod:`ice.lab.userns`): it runs as
uid 0 of a fresh user namespace with its own network and mount namespaces, where it may build the lab as root
would; the lab's namespaces are nested inside it, so none of them is visible from the host either.

The calling process stays as a thin parent: ``unshare`` blocks SIGINT and SIGTERM while it waits (so a
``kill -TERM`` or a CI runner's cancellation sent to the command's PID would otherwise be ignored), so the parent
forwards SIGINT, SIGTERM and SIGHUP to the isolated command and exits with its status. The command tells the
parent (one byte on an inherited pipe) once its handlers are in place: a PID-namespace init ignores signals it
has no handler for, so a signal that comes earlier ends the run by SIGKILL of ``unshare`` instead (its
``--kill-child`` takes the command with it). If the parent itself is killed, ``unshare`` gets SIGKILL too
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ENV = "ICELAB_ISOLATED"
READY_ENV = "ICELAB_READY_FD"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def isolated() -> bool:
    return os.environ.get(ENV) == "1"


def reexec_isolated(command: Sequence[str]) -> None:
    """Run ``command`` (the caller's own command line: the lab layer does not know the CLI) inside a private PID
    namespace (and, for a normal user, a user namespace) and exit with its status; inside the namespace (the re-run
    itself) this returns at once."""
    if isolated():
        _as_init()
        return
    unshare = shutil.which("unshare")
    if unshare is None:  # util-linux is part of every Debian; without it, run unisolated (Lab.stop still cleans up)
        return
    from ice.lab.netns import die_with_parent
    from ice.lab.userns import USERNS_FLAGS

    ready = False
    early: list[int] = []
    child: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if not ready or not child:
            early.append(signum)
            return
        inner = _child_of(child[0])
        if inner is not None:
            with contextlib.suppress(ProcessLookupError):  # it may just have exited
                os.kill(inner, signum)

    for sig in _FORWARDED:  # before anything starts: no moment in which a signal would take the default action
        signal.signal(sig, forward)
    ready_r, ready_w = os.pipe()
    env = dict(os.environ, **{ENV: "1", READY_ENV: str(ready_w)})
    sys.stdout.flush()
    sys.stderr.flush()
    flags = [*(USERNS_FLAGS if os.geteuid() != 0 else ()), "--pid", "--fork", "--kill-child", "--mount-proc"]
    proc = subprocess.Popen([unshare, *flags, *command], env=env,
                            pass_fds=(ready_w,), preexec_fn=die_with_parent)  # no threads yet: the CLI just started
    child.append(proc.pid)
    os.close(ready_w)
    while not ready and not early and proc.poll() is None:
        readable, _, _ = select.select([ready_r], [], [], 0.1)
        if readable:
            ready = os.read(ready_r, 1) == b"1"  # b"": the command exited before it was ready
            if not ready:
                break
    os.close(ready_r)
    if early and not ready:
        proc.kill()  # signalled before the command could take it: --kill-child ends it and its labs
        proc.wait()
        sys.exit(128 + early[0])
    if early:  # it arrived while the ready byte was on its way: the command takes it now
        forward(early[0], None)
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
    """PID 1 ignores signals it has no handler for: the first of SIGINT (KeyboardInterrupt), SIGTERM or SIGHUP
    (SystemExit) starts a normal, cleaning exit, and later ones are ignored so they cannot cut the cleanup short
    (a terminal's Ctrl-C or hangup reaches this process both directly and through the parent that forwards it).
    Then tell the parent that signals will now be taken."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    for sig in _FORWARDED:
        signal.signal(sig, stop)
    fd = os.environ.pop(READY_ENV, None)
    if fd is not None and fd.isdigit():
        with contextlib.suppress(OSError):
            os.write(int(fd), b"1")
            os.close(int(fd))
