"""A "slow wire": forwards Ethernet frames between two interfaces after a delay (no netem on this kernel).

Runs in its own namespace, spliced into a link (docs/lab.md, 'How the NATs are built'):
``python -m ice.lab.wire IF0 IF1 --delay-ms 20 --jitter-ms 5 --seed 1``. Each direction is FIFO: jitter varies
the delay without reordering (a later frame never overtakes an earlier one). Frames read from a veth may carry a
partial L4 checksum (TX offload), so IPv4 UDP/TCP checksums are recomputed before forwarding; other frames pass
unchanged. Prints ``ready`` once bound.

The delay can change while it runs (a timeline's ``link`` step): a line ``set DELAY_MS JITTER_MS`` on its
standard input applies to every frame read from then on and is answered ``ok`` (a bad line: ``error REASON``);
frames already queued keep their times, and a shorter delay never lets a frame overtake an earlier one.
"""

from __future__ import annotations

import argparse
import array
import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(array.array("H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return total & 0xFFFF


def fix_l4_checksum(frame: bytes) -> bytes:
    """Recompute the UDP/TCP checksum of an unfragmented IPv4 packet in an Ethernet frame (RFC 1071, 768, 793)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return frame
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    if proto not in (6, 17) or struct.unpack_from("!H", frame, 20)[0] & 0x3FFF:  # not TCP/UDP, or a fragment
        return frame
    total = struct.unpack_from("!H", frame, 16)[0]
    l4_start, l4_end = 14 + ihl, 14 + total
    if l4_end > len(frame):
        return frame
    offset = 16 if proto == 6 else 6
    seg = bytearray(frame[l4_start:l4_end])
    if len(seg) < offset + 2:
        return frame
    seg[offset : offset + 2] = b"\x00\x00"
    pseudo = frame[26:34] + struct.pack("!BBH", 0, proto, len(seg))
    csum = ~_sum16(pseudo + bytes(seg)) & 0xFFFF
    # array('H') summed in native order; convert the folded sum back to network order
    csum_bytes = struct.pack("H", csum)
    if proto == 17 and csum_bytes == b"\x00\x00":
        csum_bytes = b"\xff\xff"
    seg[offset : offset + 2] = csum_bytes
    return frame[:l4_start] + bytes(seg) + frame[l4_end:]


def parse_set(line: str) -> tuple[float, float]:
    """``set DELAY_MS JITTER_MS`` as (delay, jitter) in seconds; ValueError saying what is wrong."""
    words = line.split()
    if len(words) != 3 or words[0] != "set":
        raise ValueError("a control line is 'set DELAY_MS JITTER_MS'")
    try:
        delay, jitter = float(words[1]), float(words[2])
    except ValueError:
        raise ValueError(f"delay and jitter are milliseconds, not {words[1]!r} {words[2]!r}") from None
    if delay < 0 or jitter < 0 or jitter > delay:
        raise ValueError("delay and jitter must be >= 0 and jitter <= delay")
    return delay / 1000, jitter / 1000


def run(if0: str, if1: str, delay: float, jitter: float, seed: int, control: int | None = None) -> None:
    """Forward between the two interfaces until killed; ``control`` is a file descriptor of ``set`` lines."""
    rng = random.Random(seed)
    socks = []
    for name in (if0, if1):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setblocking(False)
        socks.append(s)
    peer = {socks[0]: socks[1], socks[1]: socks[0]}
    last_due = {socks[0]: 0.0, socks[1]: 0.0}
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    seq = 0
    pending = b""
    watched: list[socket.socket | int] = [*socks, *([control] if control is not None else [])]
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError:
                pass  # a full or vanished interface drops the frame, as a wire would
        timeout = max(0.0, queue[0][0] - now) if queue else None
        readable, _, _ = select.select(watched, [], [], timeout)
        for ready in readable:
            if not isinstance(ready, socket.socket):  # the control pipe
                chunk = os.read(ready, 4096)
                if not chunk:  # nobody will change the delay any more
                    watched.remove(ready)
                    continue
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    try:
                        delay, jitter = parse_set(line.decode(errors="replace"))
                    except ValueError as exc:
                        print(f"error {exc}", flush=True)
                    else:
                        print("ok", flush=True)
                continue
            s = ready
            try:
                frame, addr = s.recvfrom(65535)
            except BlockingIOError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            out = peer[s]
            due = max(time.monotonic() + max(0.0, delay + rng.uniform(-jitter, jitter)), last_due[out])
            last_due[out] = due
            seq += 1
            heapq.heappush(queue, (due, seq, out, fix_l4_checksum(frame)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("if0")
    p.add_argument("if1")
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--control", action="store_true", help="read 'set DELAY_MS JITTER_MS' lines on standard input")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        run(a.if0, a.if1, a.delay_ms / 1000, a.jitter_ms / 1000, a.seed, sys.stdin.fileno() if a.control else None)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
