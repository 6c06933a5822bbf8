"""What the Python adapters do alike on the agent protocol (docs/agent-protocol.md): print a report line, check a
candidate value and a bind address, count bulk datagrams. A sibling module of the adapter scripts (they import it
from their own directory), needing nothing of icelab."""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from dataclasses import dataclass

BULK_MAGIC = b"\x7fblk"
"""A bulk datagram: these 4 bytes, a 32-bit sequence number, padding (docs/agent-protocol.md, Bulk data)."""
BULK_SEQ = struct.Struct("!I")
BULK_SIZES = range(8, 1473)


def out(line: str) -> None:
    """One report line, flushed at once (a line sitting in a buffer is a line not sent)."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        os._exit(0)  # the harness stopped reading our reports: like the end of input, a normal end


def candidate_problem(text: str) -> str | None:
    """What is wrong with an RFC 8839 section 5.1 candidate value (mandatory fields only), or None."""
    f = text.split()
    if len(f) < 8 or f[6] != "typ":
        return "needs FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ TYPE"
    if not (f[1].isdigit() and f[3].isdigit() and f[5].isdigit() and 0 < int(f[5]) < 65536):
        return "component, priority and port must be numbers (port 1-65535)"
    if f[7] not in ("host", "srflx", "prflx", "relay"):
        return f"unknown candidate type {f[7]}"
    return None


def bindable(ip: str) -> bool:
    """Whether a UDP socket can be bound to ip here (the address exists in this network namespace)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((ip, 0))
    except OSError:
        return False
    return True


@dataclass
class BulkCounter:
    """Bulk datagrams received since the last bulk-report."""

    count: int = 0
    size: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    reordered: int = 0
    highest: int = -1

    def add(self, header: bytes, length: int) -> None:
        """One bulk datagram: its first 8 bytes (magic and sequence number) and its whole length."""
        now = time.monotonic()
        (seq,) = BULK_SEQ.unpack_from(header, 4)
        if not self.count:
            self.first_at = now
        self.count += 1
        self.size += length
        self.last_at = now
        if seq < self.highest:
            self.reordered += 1
        else:
            self.highest = seq

    def line(self) -> str:
        return f"bulk-received {self.count} {self.size} {self.first_at:.6f} {self.last_at:.6f} {self.reordered}"
