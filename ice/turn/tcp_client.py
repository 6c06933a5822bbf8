"""TURN TCP allocations (RFC 6062), the client's sans-IO parts beyond the control connection's
:class:`~ice.turn.client.TurnClient` (which sends Allocate with REQUESTED-TRANSPORT TCP and Connect, and reports
:class:`~ice.turn.client.PeerConnectionReady`, :class:`~ice.turn.client.PeerConnectFailed` and
:class:`~ice.turn.client.ConnectionAttempt`).

:class:`ConnectionBinder` is the first and only STUN exchange on a *client data connection* (RFC 6062 §4.4): the
ConnectionBind request with the CONNECTION-ID, signed with the allocation's credentials, retried once with the
server's new NONCE after 401 or 438 (RFC 8489 §9.2.5: a server may bind its nonces to the connection). After its
success response the connection carries the peer's bytes and nothing else, both ways (§4.5).
"""

from __future__ import annotations

import enum

from ice.errors import StunParseError
from ice.stun.attributes import ConnectionId, Nonce, Realm, Username
from ice.stun.integrity import IntegrityKey, long_term_key
from ice.stun.message import Message, MessageClass, Method, parse


class BindState(enum.Enum):
    SENT = "sent"
    BOUND = "bound"
    FAILED = "failed"


class ConnectionBinder:
    """The ConnectionBind of one client data connection (RFC 6062 §4.4). :meth:`request` gives the bytes to send;
    :meth:`receive` takes the one STUN response (framed, as read from the stream) and says what follows: BOUND (the
    byte pipe starts), SENT (send :meth:`request` again: a new nonce) or FAILED (``error`` says why)."""

    def __init__(self, username: str, password: str, connection_id: int, realm: str | None = None,
                 nonce: str | None = None, attempts: int = 3) -> None:
        self.username = username
        self.password = password
        self.connection_id = connection_id
        self.realm, self.nonce = realm, nonce
        self.attempts = attempts
        self.state = BindState.SENT
        self.error: tuple[int, str] | None = None
        self._tid: bytes | None = None
        self._key: IntegrityKey | None = None

    def request(self) -> bytes:
        self.attempts -= 1
        attrs = [ConnectionId(self.connection_id)]
        if self.realm is not None and self.nonce is not None:
            self._key = long_term_key(self.username, self.realm, self.password)
            msg = Message(Method.CONNECTION_BIND, MessageClass.REQUEST,
                          attributes=[*attrs, Username(self.username), Realm(self.realm), Nonce(self.nonce)])
            self._tid = msg.transaction_id
            return msg.encode(self._key, fingerprint=True)
        msg = Message(Method.CONNECTION_BIND, MessageClass.REQUEST, attributes=attrs)
        self._tid = msg.transaction_id
        return msg.encode(fingerprint=True)

    def receive(self, data: bytes) -> BindState:
        """Never raises: anything but the response to our request fails the bind."""
        try:
            msg = parse(data)
            if msg.transaction_id != self._tid or msg.method != Method.CONNECTION_BIND:
                return self._fail(500, "not the ConnectionBind response")
            if msg.message_class is MessageClass.SUCCESS:
                if self._key is not None and msg.has_integrity and not msg.check_integrity(self._key):
                    return self._fail(500, "the ConnectionBind response fails MESSAGE-INTEGRITY")
                self.state = BindState.BOUND
                return self.state
            err = msg.error
            code, reason = (err.code, err.reason) if err is not None else (500, "")
            realm, nonce = msg.get(Realm), msg.get(Nonce)
            if code in (401, 438) and realm is not None and nonce is not None and self.attempts > 0:
                try:
                    long_term_key(self.username, realm.text, self.password)
                except ValueError:
                    # RFC 8489 §9.2.2: no key without OpaqueString(realm); an empty REALM or one with control
                    # characters cannot be answered, so the error response stands (request() would raise).
                    return self._fail(code, f"{reason} (unusable REALM)".lstrip())
                self.realm, self.nonce = realm.text, nonce.text
                return BindState.SENT
            return self._fail(code, reason)
        except (StunParseError, ValueError):
            return self._fail(500, "malformed ConnectionBind response")

    def _fail(self, code: int, reason: str) -> BindState:
        self.state, self.error = BindState.FAILED, (code, reason)
        return self.state


__all__ = ["BindState", "ConnectionBinder"]
