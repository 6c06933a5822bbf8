"""Batched UDP I/O: many datagrams per system call where the platform allows it.

:func:`recv_batch` and :func:`send_batch` are the C accelerator's (``ice/stun/_speedups.c``: one ``recvmmsg(2)`` or
``sendmmsg(2)`` per batch, Linux) when it is built and ``ICELAB_PURE_PYTHON`` is not set, else the pure-Python
loops below (one ``recvfrom``/``sendto`` per datagram), which are the reference: the same arguments, the same
results, tested against each other. The asyncio driver (:mod:`ice.aio.driver`) and the bench load generators use
them; nothing here knows a protocol.

* ``recv_batch(sock, max, size)`` -> ``[((host, port), data), ...]``: up to ``max`` datagrams (each cut to ``size``
  bytes, as ``recvfrom(size)`` cuts it) queued on a non-blocking socket; ``[]`` when none is. An error on the first
  read raises ``OSError``; an error after some datagrams ends the batch and is raised by the next call (what
  ``recvmmsg`` does). Addresses are 2-tuples in both families (an IPv6 host keeps its ``%scope``).
* ``recv_reserve(max, size)``: get ``recv_batch``'s buffer for ``max`` datagrams of ``size`` bytes ready now (the
  page each slot's datagram starts in mapped when a socket is added, not while the first datagram waits); nothing
  to do in pure Python.
* ``send_batch(sock, items, start, gso=True)`` -> the index after the last datagram sent: ``items[i][0]`` is the
  destination ``(host, port)`` (numeric; None: a connected socket's peer), ``items[i][1]`` the bytes -- a
  :class:`~ice.stun.transaction.Transmit` fits as it is.
  It stops at the first datagram the kernel refused (a full buffer included) or that it cannot address itself
  (a host name, another family): the caller sends that one on its own path, where ``sendto`` raises or resolves,
  and goes on after it. With items of three fields (a Transmit's third is its source) it also stops before the
  first whose third field differs from ``items[start]``'s: one call sends one socket's run. With ``gso`` (the
  default) the C version sends each run of datagrams to one destination, all of one size but a shorter last, as
  one message with UDP generic segmentation offload (``UDP_SEGMENT``, Linux 4.18+): the kernel cuts it back into
  those datagrams, so the receiver gets what separate sends would have given it, for one trip down the stack; a
  socket that refuses GSO is sent to without it from then on.
"""

from __future__ import annotations

import socket
import weakref
from collections.abc import Callable
from typing import Any

from ice.stun.attributes import Address
from ice.stun.integrity import _speedups

_deferred: weakref.WeakKeyDictionary[socket.socket, OSError] = weakref.WeakKeyDictionary()
"""A receive error met after some datagrams of a batch, raised by the socket's next :func:`recv_batch_py`."""


def recv_batch_py(sock: socket.socket, max: int, size: int) -> list[tuple[Address, bytes]]:
    """The pure-Python :func:`recv_batch`: ``recvfrom`` until the socket is empty or ``max`` datagrams."""
    exc = _deferred.pop(sock, None)
    if exc is not None:
        raise exc
    out: list[tuple[Address, bytes]] = []
    recvfrom = sock.recvfrom
    for _ in range(max):
        try:
            data, addr = recvfrom(size)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as error:
            if not out:
                raise
            _deferred[sock] = error
            break
        out.append(((addr[0], addr[1]), data))
    return out


def send_batch_py(sock: socket.socket, items: list[Any], start: int, gso: bool = True) -> int:
    """The pure-Python :func:`send_batch`: ``sendto`` each datagram from ``start``; the index of the first refused.
    (``gso`` is the C version's: this one never segments.)"""
    sendto = sock.sendto
    start = max(start, 0)
    runs = start < len(items) and len(items[start]) >= 3
    source = items[start][2] if runs else None
    for i in range(start, len(items)):
        item = items[i]
        if runs and len(item) >= 3 and item[2] != source:
            return i
        try:
            if item[0] is None:
                sock.send(item[1])
            else:
                sendto(item[1], item[0])
        except (OSError, TypeError, ValueError, OverflowError):
            return i
    return len(items)


def recv_reserve_py(max: int, size: int) -> None:
    """Nothing: ``recvfrom`` needs no buffer of ours."""


recv_batch: Callable[[socket.socket, int, int], list[tuple[Address, bytes]]] = recv_batch_py
recv_reserve: Callable[[int, int], None] = recv_reserve_py
send_batch: Callable[[socket.socket, list[Any], int, bool], int] = send_batch_py
if _speedups is not None and hasattr(_speedups, "recv_batch"):
    recv_batch = _speedups.recv_batch
    recv_reserve = _speedups.recv_reserve
    send_batch = _speedups.send_batch


def accelerated() -> bool:
    """Whether the batched system calls (``recvmmsg``/``sendmmsg``) are in use."""
    return recv_batch is not recv_batch_py


__all__ = ["accelerated", "recv_batch", "recv_batch_py", "recv_reserve", "send_batch", "send_batch_py"]
