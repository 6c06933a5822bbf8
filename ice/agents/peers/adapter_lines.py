"""What the Python adapters do alike on the agent protocol (docs/agent-protocol.md): print a report line, check a
candidate value and a bind address. A sibling module of the adapter scripts (they import it from their own
directory), needing nothing of icelab."""

from __future__ import annotations

import os
import socket
import sys


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
