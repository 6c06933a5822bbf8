"""A "slow wire": forwards Ethernet frames between two interfaces after a delay (no netem on this kernel).

Runs in its own namespace, spliced into a link (docs/lab.md, 'How the NATs are built'):
``python -m ice.lab.wire IF0 IF1 --delay-ms 20 --jitter-ms 5 --seed 1``. Each direction is FIFO: jitter varies
the delay without reordering (a later frame never overtakes an earlier one). Frames read from a veth may carry a
partial L4 checksum (TX offload), so IPv4 UDP/TCP checksums are recomputed before forwarding; other frames pass
unchanged. Prints ``ready`` once bound.
"""

from __future__ import annotations

import argparse
import array
import heapq
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


def run(if0: str, if1: str, delay: float, jitter: float, seed: int) -> None:
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
        readable, _, _ = select.select(socks, [], [], timeout)
        for s in readable:
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
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        run(a.if0, a.if1, a.delay_ms / 1000, a.jitter_ms / 1000, a.seed)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
