"""Network namespaces of lab nodes: open sockets inside them and run commands in them.

A socket belongs to the namespace it was created in, so one process can hold sockets in every node of a lab
(``setns(2)`` on the creating thread, then straight back). Python 3.11 has no ``os.setns``; ctypes calls libc.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def inside(pid: int | str) -> Iterator[None]:
    """Run the body with this thread in the network namespace of process ``pid`` (or at a path such as
    ``/run/netns/NAME`` for a namespace made with ``ip netns add``)."""
    path = pid if isinstance(pid, str) else f"/proc/{pid}/ns/net"
    with _lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)


def socket_in(pid: int | str, family: socket.AddressFamily = socket.AF_INET,
              kind: socket.SocketKind = socket.SOCK_DGRAM) -> socket.socket:
    """A new socket that lives in the network namespace of process ``pid`` (or at a namespace path)."""
    with inside(pid):
        return socket.socket(family, kind)


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for lab processes: the kernel sends SIGKILL when the process that started them dies (even by
    SIGKILL), so a crashed test or CLI never leaves a node shell, and so a namespace, behind."""
    import signal

    _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def nsenter(pid: int) -> list[str]:
    """Command prefix that runs a program in the network namespace of ``pid``."""
    return ["nsenter", f"--net=/proc/{pid}/ns/net", "--"]
