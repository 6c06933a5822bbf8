"""A STUN Binding load generator: one UDP socket, a window of outstanding requests, distinct transaction IDs.

Run as its own process (``python -m bench.stunload HOST PORT N WINDOW``) so it never shares a core's GIL with the
server under test. Prints one JSON line: requests, answered, seconds, rps, lost.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time


def run(host: str, port: int, n: int, window: int, timeout: float = 2.0) -> dict[str, float]:
    head = struct.pack("!HHI", 0x0001, 0, 0x2112A442)
    base = os.urandom(8)
    requests = [head + base + struct.pack("!I", i) for i in range(n)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.connect((host, port))
    s.settimeout(timeout)
    send, recv = s.send, s.recv
    sent = answered = 0
    start = time.perf_counter()
    for _ in range(min(window, n)):
        send(requests[sent])
        sent += 1
    lost = 0
    while answered + lost < n:
        try:
            data = recv(2048)
        except TimeoutError:
            lost = sent - answered  # whatever is still outstanding is lost; top the window up again
            if sent >= n:
                break
            for _ in range(min(window, n - sent)):
                send(requests[sent])
                sent += 1
            continue
        if data[:2] == b"\x01\x01":
            answered += 1
            if sent < n:
                send(requests[sent])
                sent += 1
    elapsed = time.perf_counter() - start
    s.close()
    return {"requests": n, "answered": answered, "lost": n - answered, "seconds": elapsed,
            "rps": answered / elapsed if elapsed else 0.0}


if __name__ == "__main__":
    h, p, count, win = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(run(h, p, count, win)))
