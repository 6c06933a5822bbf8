"""Every exception icelab raises on purpose, in one module (re-exported by :mod:`ice`).

Bad input from the network never escapes the protocol machines as an exception: the codec raises
:class:`StunParseError`, and the machines turn it into an error response or a counted drop.
Bad input from a user becomes :class:`UserError`, which the CLI prints as one sentence.
An ICE session (:class:`ice.Connection`) that cannot connect raises :class:`IceFailed` (its ``reason`` says why);
one that did not finish by its deadline raises :class:`ConnectTimeout`.
"""

from __future__ import annotations


class IceError(Exception):
    """Base class of every error icelab raises on purpose: ``except ice.IceError`` catches them all."""


class StunParseError(IceError, ValueError):
    """Bytes that are not a well-formed STUN message (RFC 8489 §5, §14).

    This is the only exception the codec raises for malformed input.
    """


class StunTimeout(IceError):
    """A STUN transaction got no response within the retransmission schedule (RFC 8489 §6.2.1)."""


class StunUnreachable(StunTimeout):
    """The server's host reported the port unreachable (ICMP), so no response will come."""


class StunErrorResponse(IceError):
    """The server answered with an error response (RFC 8489 §14.8)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class IceFailed(IceError):
    """ICE could not connect (RFC 8445 §8.1.2: every candidate pair failed, or no nomination came).

    ``reason`` is the agent's one-sentence account of the likely cause (e.g. the peer rejected our credentials)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"ICE failed: {reason}")
        self.reason = reason


class ConnectTimeout(IceFailed, TimeoutError):
    """``Connection.connect()`` did not connect within its deadline (the message names the state ICE was in)."""


class GatheringFailed(IceError):
    """Gathering ended without a single local candidate (no usable socket, or relay-only without a relay)."""


class NotConnected(IceError):
    """Data cannot be sent: no pair is selected yet, consent was lost (RFC 7675) or the connection is closed."""


class TurnError(IceError):
    """The TURN server refused or did not answer (RFC 8656)."""


class UserError(IceError):
    """Something the user asked for cannot be done; the message says what to do instead."""
