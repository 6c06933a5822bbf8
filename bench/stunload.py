"""A STUN Binding load generator: one UDP socket, a window of outstanding requests, distinct transaction IDs.

Run as its own process (``python -m bench.stunload HOST PORT N WINDOW``) so it never shares a core's GIL with the
server under test. It moves datagrams in batches (UDP GSO sends, :func:`segmenter`, else :mod:`ice.aio.udp`'s
``sendmmsg``; ``recvmmsg`` with the C accelerator) and yields the CPU after each read (:func:`fair_wait`), so it
costs less per request than a server does, whichever server it drives: its own CPU use is reported (``load_cpu``:
CPU seconds over wall seconds) to show it was not the limit. Prints one JSON line: requests, answered, seconds,
rps, lost, load_cpu.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable

from ice.aio.udp import recv_batch, send_batch

UDP_SEGMENT = 103
"""Linux <linux/udp.h>: UDP generic segmentation offload (GSO): one send of a buffer of N equal-sized datagrams."""
GSO_SEGMENTS = 64
"""The most datagrams one GSO send may carry (UDP_MAX_SEGMENTS)."""
def fair_wait() -> None:
    """What the load process does after each read: yield the CPU (``sched_yield``) before it polls again. Where the
    server and the load process share a core, the load would otherwise wake for each datagram of a server that
    answers one per system call (coturn) and its wake-ups would eat the server's time; where they do not, the
    call returns at once. Measured here: the load's CPU per request against coturn fell from 2.3 us to 0.6 us and
    coturn's rate rose by 40 % to 50 %; against icelab it costs about the same (0.5-0.8 us), so both servers
    meet the same, cheap load."""
    os.sched_yield()


def segmenter(sock: socket.socket, size: int) -> Callable[[list[bytes]], int] | None:
    """A sender of equal-sized datagrams (``size`` bytes each) on a connected socket, ``GSO_SEGMENTS`` per system
    call with UDP GSO, which the server receives as the separate datagrams they are (the kernel splits them on the
    way, in the sender's time); how many it sent (a full buffer stops it, as if lost). None where there is no GSO.
    It makes the load process cheaper per datagram than the servers it measures."""
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_SEGMENT, size)
    except (OSError, AttributeError):
        return None

    def send(payloads: list[bytes]) -> int:
        done = 0
        while done < len(payloads):
            chunk = payloads[done : done + GSO_SEGMENTS]
            try:
                sock.send(b"".join(chunk))
            except OSError:
                break
            done += len(chunk)
        return done

    return send


def run(host: str, port: int, n: int, window: int, timeout: float = 2.0) -> dict[str, float]:
    head = struct.pack("!HHI", 0x0001, 0, 0x2112A442)
    base = os.urandom(8)
    server = (host, port)
    requests = [(None, head + base + struct.pack("!I", i)) for i in range(n)]
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("::1" if ":" in host else "127.0.0.1", 0))
    s.connect(server)  # the kernel keeps the route: cheaper sends than sendto
    s.setblocking(False)
    poller = select.poll()
    poller.register(s.fileno(), select.POLLIN)
    sent = answered = 0
    cpu0, start = time.process_time(), time.perf_counter()

    gso = segmenter(s, len(requests[0][1])) if requests else None
    payloads = [r[1] for r in requests] if gso else []

    def send_up_to(limit: int) -> int:
        """Send requests[sent:limit]; a refused one (full buffer) is retried on the next round."""
        if gso is not None:
            return sent + gso(payloads[sent:limit])
        batch = requests[sent:limit]
        done = 0
        while done < len(batch):
            k = send_batch(s, batch, done, True)
            if k == done:
                break
            done = k
        return sent + done

    sent = send_up_to(min(window, n))
    lost = 0
    while answered + lost < n:
        if not poller.poll(timeout * 1000):
            lost = sent - answered  # whatever is still outstanding is lost; top the window up again
            if sent >= n:
                break
            sent = send_up_to(min(answered + lost + window, n))
            continue
        got = recv_batch(s, 1024, 2048)
        answered += sum(1 for _, data in got if data[:2] == b"\x01\x01")
        if sent < n:
            sent = send_up_to(min(answered + lost + window, n))
        fair_wait()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    s.close()
    return {"requests": n, "answered": answered, "lost": n - answered, "seconds": elapsed,
            "rps": answered / elapsed if elapsed else 0.0, "load_cpu": cpu / elapsed if elapsed else 0.0}


if __name__ == "__main__":
    h, p, count, win = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(run(h, p, count, win)))
