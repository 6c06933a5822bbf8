"""Errors shared by every layer of icelab.

Bad input from the network never escapes the protocol machines as an exception: the codec raises
:class:`StunParseError`, and the machines turn it into an error response or a counted drop.
Bad input from a user becomes :class:`UserError`, which the CLI prints as one sentence.
"""

from __future__ import annotations


class IcelabError(Exception):
    """Base class of every error icelab raises on purpose."""


class StunParseError(IcelabError, ValueError):
    """Bytes that are not a well-formed STUN message (RFC 8489 §5, §14).

    This is the only exception the codec raises for malformed input.
    """


class StunTimeout(IcelabError):
    """A STUN transaction got no response within the retransmission schedule (RFC 8489 §6.2.1)."""


class StunUnreachable(StunTimeout):
    """The server's host reported the port unreachable (ICMP), so no response will come."""


class StunErrorResponse(IcelabError):
    """The server answered with an error response (RFC 8489 §14.8)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class UserError(IcelabError):
    """Something the user asked for cannot be done; the message says what to do instead."""
