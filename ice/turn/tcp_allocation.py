"""TURN TCP allocations (RFC 6062): its REQUESTED-TRANSPORT value and error codes."""

from __future__ import annotations

TCP = 6
"""REQUESTED-TRANSPORT for a TCP allocation (RFC 6062 §6.2: the IANA protocol number of TCP)."""
CONNECTION_ALREADY_EXISTS = (446, "Connection Already Exists")
"""RFC 6062 §6.3: a Connect to a peer the allocation already has a connection to (or one in progress)."""
CONNECTION_TIMEOUT_OR_FAILURE = (447, "Connection Timeout or Failure")
"""RFC 6062 §6.3: the server's connection to the peer failed or timed out."""
