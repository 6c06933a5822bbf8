"""Client transactions: the retransmission machine of RFC 8489 §6.2, sans-IO.

Nothing here reads a clock: every entry point takes ``now`` (seconds, any monotonic origin) and the caller asks
:meth:`StunClient.next_timeout` when to call back. Datagrams to send are taken with :meth:`poll_transmit`.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from ice.errors import StunParseError
from ice.stun.attributes import Address, ErrorCode
from ice.stun.integrity import IntegrityKey
from ice.stun.message import Message, MessageClass, parse


@dataclass(frozen=True)
class RetransmissionConfig:
    """RFC 8489 §6.2.1 timers. Defaults are the RFC's; a lab that wants fast failure shortens them."""

    rto: float = 0.5
    """Initial retransmission timeout in seconds (RFC 8489: 500 ms, doubling after every send)."""
    rc: int = 7
    """Total number of requests sent over an unreliable transport (Rc)."""
    rm: int = 16
    """After the last request, wait ``rm * rto`` for a response before giving up (Rm)."""
    reliable_timeout: float = 39.5
    """Over TCP/TLS the request is sent once and the transaction fails after this many seconds (Ti)."""

    def __post_init__(self) -> None:
        if self.rto <= 0 or self.rc < 1 or self.rm < 1 or self.reliable_timeout <= 0:
            raise ValueError("retransmission timers must be positive (rto > 0, rc >= 1, rm >= 1)")

    def schedule(self, reliable: bool = False) -> tuple[tuple[float, ...], float]:
        """Send offsets and the final timeout offset from the first send: ((0, .5, 1.5, ... 31.5), 39.5)."""
        if reliable:
            return (0.0,), self.reliable_timeout
        sends = tuple([self.rto * ((1 << k) - 1) for k in range(self.rc)])
        return sends, sends[-1] + self.rm * self.rto


class TransactionState(enum.Enum):
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed-out"


class Transmit(NamedTuple):
    """A datagram the caller must send: from ``local`` (None: the caller's only socket) to ``remote``.

    A NamedTuple rather than a dataclass: servers emit one per datagram and tuples are 3x cheaper to make.
    """

    remote: Address
    data: bytes
    local: Address | None = None


@dataclass(frozen=True)
class TransactionSucceeded:
    """A success response arrived (RFC 8489 §6.3.3)."""

    transaction_id: bytes
    response: Message
    source: Address
    rtt: float
    """Seconds from the most recent send of the request to the response (Karn: exact when ``sends == 1``)."""
    sends: int


@dataclass(frozen=True)
class TransactionFailed:
    """An error response arrived (RFC 8489 §6.3.4)."""

    transaction_id: bytes
    response: Message
    source: Address
    code: int
    reason: str


@dataclass(frozen=True)
class TransactionTimedOut:
    """No response within the schedule (RFC 8489 §6.2.1): ``sends`` requests went out."""

    transaction_id: bytes
    sends: int
    elapsed: float


TransactionEvent = TransactionSucceeded | TransactionFailed | TransactionTimedOut


class ClientTransaction:
    """One request and its retransmissions (RFC 8489 §6.2.1 unreliable, §6.2.2 reliable)."""

    def __init__(
        self,
        request: bytes,
        transaction_id: bytes,
        remote: Address,
        now: float,
        config: RetransmissionConfig = RetransmissionConfig(),
        reliable: bool = False,
        key: IntegrityKey | None = None,
    ) -> None:
        self.request = request
        self.transaction_id = transaction_id
        self.remote = remote
        self.key = key
        self.state = TransactionState.WAITING
        self.started = now
        offsets, final = config.schedule(reliable)
        self._send_at = deque([now + o for o in offsets])
        self._give_up_at = now + final
        self.sent_at: list[float] = []
        self._pending = 0

    def next_timeout(self) -> float | None:
        if self.state is not TransactionState.WAITING:
            return None
        return self._send_at[0] if self._send_at else self._give_up_at

    def handle_timeout(self, now: float) -> TransactionTimedOut | None:
        """Queue every send that is due; time out when the final wait has passed."""
        if self.state is not TransactionState.WAITING:
            return None
        while self._send_at and self._send_at[0] <= now:
            self.sent_at.append(self._send_at.popleft())
            self._pending += 1
        if not self._send_at and now >= self._give_up_at:
            self.state = TransactionState.TIMED_OUT
            self._pending = 0
            return TransactionTimedOut(self.transaction_id, len(self.sent_at), now - self.started)
        return None

    def poll_transmit(self) -> Transmit | None:
        if self._pending:
            self._pending -= 1
            return Transmit(self.remote, self.request)
        return None

    def handle_response(self, now: float, response: Message, source: Address) -> TransactionEvent | None:
        """Complete the transaction with a parsed response of the same transaction ID."""
        if self.state is not TransactionState.WAITING:
            return None
        tid = self.transaction_id
        if response.message_class is MessageClass.SUCCESS:
            self.state = TransactionState.SUCCEEDED
            last = self.sent_at[-1] if self.sent_at else self.started
            return TransactionSucceeded(tid, response, source, now - last, len(self.sent_at))
        err = response.get(ErrorCode)
        self.state = TransactionState.FAILED
        code, reason = (err.code, err.reason) if err else (500, "error response without ERROR-CODE")
        return TransactionFailed(tid, response, source, code, reason)


@dataclass
class StunClient:
    """Sans-IO STUN client: many concurrent transactions over one socket (RFC 8489 §6.2, §6.3).

    Responses are matched by transaction ID only, not by source address: RFC 5780 CHANGE-REQUEST answers come from
    the server's other address. With an integrity key, a success response must carry valid MESSAGE-INTEGRITY or it
    is dropped as if never received (RFC 8489 §9.1.4); error responses are accepted without it (a 401 has none).
    """

    config: RetransmissionConfig = field(default_factory=RetransmissionConfig)
    reliable: bool = False
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._transactions: dict[bytes, ClientTransaction] = {}
        self._events: deque[TransactionEvent] = deque()

    def request(
        self,
        now: float,
        message: Message,
        remote: Address,
        key: bytes | IntegrityKey | None = None,
        fingerprint: bool = True,
    ) -> bytes:
        """Start a transaction for ``message``; returns its transaction ID. The first send is due at ``now``."""
        k = IntegrityKey(key) if isinstance(key, bytes) else key
        data = message.encode(k, fingerprint=fingerprint)
        tx = ClientTransaction(data, message.transaction_id, remote, now, self.config, self.reliable, k)
        self._transactions[message.transaction_id] = tx
        tx.handle_timeout(now)
        return message.transaction_id

    def cancel(self, transaction_id: bytes) -> None:
        self._transactions.pop(transaction_id, None)

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        """The endpoint contract (:mod:`ice.endpoint`): a datagram received on the client's socket ``local``."""
        self.handle_response(now, data, remote)

    def handle_response(self, now: float, data: bytes, source: Address) -> bool:
        """Feed a received datagram; returns True if it completed (or belonged to) one of our transactions."""
        try:
            msg = parse(data)
        except StunParseError:
            self.stats["malformed"] += 1
            return False
        if msg.message_class not in (MessageClass.SUCCESS, MessageClass.ERROR):
            self.stats["not-a-response"] += 1
            return False
        tx = self._transactions.get(msg.transaction_id)
        if tx is None:
            self.stats["unknown-transaction"] += 1
            return False
        if tx.key is not None and msg.message_class is MessageClass.SUCCESS and not msg.check_integrity(tx.key):
            self.stats["bad-integrity"] += 1
            return True
        event = tx.handle_response(now, msg, source)
        del self._transactions[msg.transaction_id]
        if event is not None:
            self._events.append(event)
        return True

    def handle_timeout(self, now: float) -> None:
        for tid, tx in list(self._transactions.items()):
            event = tx.handle_timeout(now)
            if event is not None:
                self._events.append(event)
                del self._transactions[tid]

    def next_timeout(self) -> float | None:
        deadlines = [t for tx in self._transactions.values() if (t := tx.next_timeout()) is not None]
        return min(deadlines) if deadlines else None

    def poll_transmit(self) -> Transmit | None:
        for tx in self._transactions.values():
            out = tx.poll_transmit()
            if out is not None:
                return out
        return None

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def pending(self) -> int:
        return len(self._transactions)


__all__ = [
    "ClientTransaction",
    "RetransmissionConfig",
    "StunClient",
    "TransactionEvent",
    "TransactionFailed",
    "TransactionState",
    "TransactionSucceeded",
    "TransactionTimedOut",
    "Transmit",
]
