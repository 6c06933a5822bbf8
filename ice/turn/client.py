"""Sans-IO TURN client (RFC 8656): one allocation on one server, with permissions and channels.

It meets the endpoint contract (:mod:`ice.endpoint`) on its own socket ``local`` (UDP, or a TCP/TLS stream to the
server, RFC 8656 §3.1): ``allocate(now)``, ``handle_datagram(now, local, remote, data)`` for what the server sends,
``handle_timeout(now)`` at ``next_timeout()``, ``poll_transmit()`` for the :class:`~ice.stun.transaction.Transmit`
to send from ``local`` to the current server (after an ALTERNATE-SERVER redirection, the new one) and
``next_event()`` for what happened. ``send(now, peer, data)`` relays application data (ChannelData once a channel
is bound, a Send indication before); data from peers comes out as :class:`PeerData` events.

Long-term credentials with the 401 REALM/NONCE round trip and 438 Stale Nonce retry (RFC 8489 §9.2), Refresh
before expiry and a new allocation after 437, CreatePermission and ChannelBind refreshed before they expire,
stable channel numbers per peer, 300 ALTERNATE-SERVER followed once, deallocation on close.

With ``relay_transport="tcp"`` (over a TCP/TLS control connection) the allocation is a TCP one (RFC 6062 §4.1):
``connect(now, peer)`` sends Connect and reports :class:`PeerConnectionReady` or :class:`PeerConnectFailed`, a
ConnectionAttempt indication is reported as :class:`ConnectionAttempt`; each data connection is then bound with
:class:`~ice.turn.tcp_client.ConnectionBinder` on a new connection to the server.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass, field
from struct import Struct

from ice.errors import StunParseError
from ice.stun.attributes import (
    Address,
    AlternateServer,
    Attribute,
    ChannelNumber,
    ConnectionId,
    Data,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.integrity import IntegrityKey, long_term_key
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.transaction import ClientTransaction, RetransmissionConfig, Transmit

_CHANNEL_HDR = Struct("!HH")


@dataclass(frozen=True)
class TurnClientConfig:
    server: Address
    username: str
    password: str
    lifetime: int = 600
    refresh_margin: float = 60.0
    """Refresh this long before the allocation expires (libnice and libjuice use 60 s)."""
    refresh_retry: float = 10.0
    """After a Refresh failed (timeout or error), try again this much later while the allocation lives."""
    permission_refresh: float = 240.0
    """Permissions last 300 s (RFC 8656 §9); refresh them after 240 s."""
    channel_refresh: float = 540.0
    """Channels last 600 s (RFC 8656 §12); refresh after 540 s."""
    retransmission: RetransmissionConfig = field(default_factory=RetransmissionConfig)
    transport: str = "udp"
    """"udp", or "tcp"/"tls": a stream, so requests are sent once (RFC 8489 §6.2.2) and ChannelData is padded."""

    relay_transport: str = "udp"
    """"udp", or "tcp" for a TCP allocation (RFC 6062 §4.1: REQUESTED-TRANSPORT 6, over "tcp"/"tls" only)."""

    @property
    def stream(self) -> bool:
        return self.transport in ("tcp", "tls")


class TurnState(enum.Enum):
    IDLE = "idle"
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class Allocated:
    relayed: Address
    mapped: Address | None
    lifetime: int


@dataclass(frozen=True)
class AllocationFailed:
    code: int
    reason: str


@dataclass(frozen=True)
class PeerData:
    peer: Address
    data: bytes


@dataclass(frozen=True)
class ChannelBound:
    """The server confirmed the channel: data to this peer now goes as ChannelData (4-byte header)."""

    peer: Address
    number: int


@dataclass(frozen=True)
class PeerConnectionReady:
    """RFC 6062 §4.3: the server connected to ``peer``; bind a new data connection with ``connection_id``."""

    peer: Address
    connection_id: int


@dataclass(frozen=True)
class PeerConnectFailed:
    """RFC 6062 §4.3: the Connect to ``peer`` failed (447: the server could not connect; 446: one exists)."""

    peer: Address
    code: int
    reason: str


@dataclass(frozen=True)
class ConnectionAttempt:
    """RFC 6062 §4.4: ``peer`` connected to the relayed address; bind a new data connection with
    ``connection_id`` (within 30 s) to accept it."""

    peer: Address
    connection_id: int


TurnEvent = (Allocated | AllocationFailed | PeerData | ChannelBound | PeerConnectionReady | PeerConnectFailed
             | ConnectionAttempt)


@dataclass
class _Pending:
    tx: ClientTransaction
    message: Message
    attempts: int = 1


class TurnClient:
    """One allocation on ``config.server``, from the local address ``local`` (None: the driver's default socket;
    a driver that learns its address later may set it before the first ``poll_transmit``)."""

    def __init__(self, config: TurnClientConfig, local: Address | None = None) -> None:
        self.config = config
        self.local = local
        self.server = config.server
        self.state = TurnState.IDLE
        self.relayed: Address | None = None
        self.mapped: Address | None = None
        self.stats: Counter[str] = Counter()
        self._realm: str | None = None
        self._nonce: str | None = None
        self._key: IntegrityKey | None = None
        self._pending: dict[bytes, _Pending] = {}
        self._out: deque[bytes] = deque()
        self._events: deque[TurnEvent] = deque()
        self._expires = 0.0
        self._refresh_at: float | None = None
        self.permissions: dict[str, float] = {}
        """Peer IP -> when to refresh."""
        self.channels: dict[Address, int] = {}
        self._channel_refresh: dict[Address, float] = {}
        self._channel_ok: set[Address] = set()
        self._next_channel = 0x4000
        self._redirected = False

    # -------------------------------------------------------------------------------------------- requests

    def allocate(self, now: float) -> None:
        self.state = TurnState.ALLOCATING
        transport = 6 if self.config.relay_transport == "tcp" else 17  # RFC 6062 §4.1: TCP
        self._request(now, Method.ALLOCATE, [RequestedTransport(transport), Lifetime(self.config.lifetime)])

    def _request(self, now: float, method: int, attrs: list[Attribute], attempts: int = 1) -> None:
        msg = Message(method, MessageClass.REQUEST, attributes=attrs)
        self._send_request(now, msg, attempts)

    def _send_request(self, now: float, msg: Message, attempts: int) -> None:
        full = list(msg.attributes)
        if self._key is not None and self._realm is not None and self._nonce is not None:
            full += [Username(self.config.username), Realm(self._realm), Nonce(self._nonce)]
        signed = Message(msg.method, MessageClass.REQUEST, None, full)
        data = signed.encode(self._key, fingerprint=True) if self._key is not None else signed.encode(fingerprint=True)
        tx = ClientTransaction(data, signed.transaction_id, self.server, now, self.config.retransmission,
                               reliable=self.config.stream, key=self._key)
        tx.handle_timeout(now)
        self._pending[signed.transaction_id] = _Pending(tx, msg, attempts)
        self._drain(tx)

    def _drain(self, tx: ClientTransaction) -> None:
        while (t := tx.poll_transmit()) is not None:
            self._out.append(t.data)

    def refresh(self, now: float) -> None:
        """Refresh the allocation now (RFC 8656 §8), e.g. to learn whether the server still has it when traffic
        through it stopped: a 437 answer means it does not, and the client allocates again."""
        if self.state is TurnState.ALLOCATED and not any(
                p.message.method == Method.REFRESH for p in self._pending.values()):
            self._refresh_at = None
            self._request(now, Method.REFRESH, [Lifetime(self.config.lifetime)])

    def create_permission(self, now: float, peer: Address) -> None:
        self.permissions[peer[0]] = now + self.config.permission_refresh
        self._request(now, Method.CREATE_PERMISSION, [XorPeerAddress(*peer)])

    def bind_channel(self, now: float, peer: Address) -> int:
        """Bind (or re-bind) a channel for ``peer``; the number stays the same for the allocation's life."""
        number = self.channels.get(peer)
        if number is None:
            number = self._next_channel
            self._next_channel += 1
            self.channels[peer] = number
        self._channel_refresh[peer] = now + self.config.channel_refresh
        self.permissions[peer[0]] = now + self.config.permission_refresh  # ChannelBind installs it too
        self._request(now, Method.CHANNEL_BIND, [ChannelNumber(number), XorPeerAddress(*peer)])
        return number

    def connect(self, now: float, peer: Address) -> bool:
        """RFC 6062 §4.3: ask the server to connect to ``peer`` from the TCP relayed address (a permission for
        its IP first, unless there is one). The answer is a :class:`PeerConnectionReady` or
        :class:`PeerConnectFailed` event. False (nothing sent) unless a TCP allocation is up: on a UDP one the
        server could only refuse it (400)."""
        if self.state is not TurnState.ALLOCATED or self.config.relay_transport != "tcp":
            return False
        if peer[0] not in self.permissions:
            self.create_permission(now, peer)
        self._request(now, Method.CONNECT, [XorPeerAddress(*peer)])
        return True

    def bind_credentials(self) -> tuple[str, str] | None:
        """(realm, nonce) for a data connection's ConnectionBind (RFC 6062 §4.4: the allocation's credentials)."""
        return (self._realm, self._nonce) if self._realm is not None and self._nonce is not None else None

    def send(self, now: float, peer: Address, data: bytes) -> bool:
        """Relay ``data`` to ``peer``: ChannelData once its channel is confirmed, else a Send indication."""
        if self.state is not TurnState.ALLOCATED:
            return False
        if peer[0] not in self.permissions:
            self.create_permission(now, peer)
        number = self.channels.get(peer)
        if number is not None and peer in self._channel_ok:
            frame = _CHANNEL_HDR.pack(number, len(data)) + data
            self._out.append(frame + b"\x00" * (-len(data) & 3) if self.config.stream else frame)
        else:
            ind = Message(Method.SEND, MessageClass.INDICATION, attributes=[XorPeerAddress(*peer), Data(data)])
            self._out.append(ind.encode(fingerprint=True))
        return True

    def close(self, now: float) -> None:
        """Deallocate (Refresh with LIFETIME 0, RFC 8656 §8); no retransmission expected."""
        if self.state is TurnState.ALLOCATED:
            self._request(now, Method.REFRESH, [Lifetime(0)])
        else:
            self._pending.clear()  # an Allocate still in flight must not bring us back to life
        self.state = TurnState.CLOSED

    # -------------------------------------------------------------------------------------------- incoming

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        """Everything the server sends: responses, Data indications, ChannelData. The client has one socket, so
        ``local`` and ``remote`` are not checked (responses are matched by transaction ID)."""
        if len(data) >= 4 and 0x40 <= data[0] <= 0x7F:
            number, length = _CHANNEL_HDR.unpack_from(data)
            peer = next((p for p, n in self.channels.items() if n == number), None)
            if peer is None or length > len(data) - 4:
                self.stats["channel-data-unknown"] += 1
                return
            self._events.append(PeerData(peer, data[4 : 4 + length]))
            return
        try:
            msg = parse(data)
        except StunParseError:
            self.stats["malformed"] += 1
            return
        try:
            if msg.message_class is MessageClass.INDICATION and msg.method == Method.DATA:
                source, payload = msg.get(XorPeerAddress), msg.get(Data)
                if source is not None and payload is not None:
                    self._events.append(PeerData(source.address, payload.data))
                return
            if msg.message_class is MessageClass.INDICATION and msg.method == Method.CONNECTION_ATTEMPT:
                source, cid = msg.get(XorPeerAddress), msg.get(ConnectionId)  # RFC 6062 §4.4
                if source is not None and cid is not None:
                    self._events.append(ConnectionAttempt(source.address, cid.number))
                else:
                    self.stats["connection-attempt-malformed"] += 1
                return
            if msg.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
                self._response(now, msg)
        except StunParseError:
            self.stats["malformed-attribute"] += 1

    def _response(self, now: float, resp: Message) -> None:
        pending = self._pending.pop(resp.transaction_id, None)
        if pending is None:
            self.stats["unknown-transaction"] += 1
            return
        if self.state is TurnState.CLOSED:
            return  # e.g. the answer to our deallocation
        method = pending.message.method
        if resp.message_class is MessageClass.SUCCESS:
            if self._key is not None and resp.has_integrity and not resp.check_integrity(self._key):
                self.stats["bad-integrity"] += 1
                self._pending[resp.transaction_id] = pending  # as if never received (RFC 8489 §9.2.5)
                return
            self._success(now, method, pending.message, resp)
            return
        err = resp.error
        code = err.code if err else 500
        if code in (401, 438) and pending.attempts < 3:
            realm, nonce = resp.get(Realm), resp.get(Nonce)
            key = self._key
            if realm is not None and nonce is not None and (self._realm != realm.text or key is None):
                try:
                    key = long_term_key(self.config.username, realm.text, self.config.password)
                except ValueError:
                    # RFC 8489 §9.2.2: no key without OpaqueString(realm); an empty REALM or one with control
                    # characters cannot be answered, so the error response stands.
                    self.stats["unusable-realm"] += 1
                    realm = None
            if realm is not None and nonce is not None:
                self._key = key
                self._realm, self._nonce = realm.text, nonce.text
                self._send_request(now, pending.message, pending.attempts + 1)
                return
        if code == 300 and method == Method.ALLOCATE and not self._redirected:
            alt = resp.get(AlternateServer)
            if alt is not None:  # RFC 8656 §7.3: follow one redirection
                self._redirected = True
                self.server = alt.address
                self._realm = self._nonce = None
                self._key = None
                self.allocate(now)
                return
        if code == 437 and method in (Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND) \
                and self.state is TurnState.ALLOCATED:
            # The server forgot us (it restarted, or the allocation timed out there): allocate again (RFC 8656 §8;
            # §9.2 and §11.2 answer 437 for a request without an allocation too). Its permissions and channels went
            # with the old allocation; they are installed again once the new one exists (see _success).
            self._channel_ok.clear()
            self.allocate(now)
            return
        if method == Method.REFRESH:
            self._refresh_failed(now, code, err.reason if err else "")
        if method == Method.ALLOCATE:
            self.state = TurnState.FAILED
            self._events.append(AllocationFailed(code, err.reason if err else ""))
        if method == Method.CONNECT:  # RFC 6062 §4.3
            peer = pending.message.get(XorPeerAddress)
            if peer is not None:
                self._events.append(PeerConnectFailed(peer.address, code, err.reason if err else ""))
        self.stats[f"error-{code}"] += 1

    def _success(self, now: float, method: int, request: Message, resp: Message) -> None:
        if method == Method.ALLOCATE:
            relayed, mapped, lifetime = resp.get(XorRelayedAddress), resp.get(XorMappedAddress), resp.get(Lifetime)
            if relayed is None:
                self.state = TurnState.FAILED
                self._events.append(AllocationFailed(500, "no XOR-RELAYED-ADDRESS in the Allocate response"))
                return
            self.relayed, self.mapped = relayed.address, mapped.address if mapped else None
            seconds = lifetime.number if lifetime else self.config.lifetime
            self._expires = now + seconds
            self._refresh_at = now + max(1.0, seconds - self.config.refresh_margin)
            self.state = TurnState.ALLOCATED
            self._events.append(Allocated(self.relayed, self.mapped, seconds))
            for bound in list(self.channels):  # a re-allocation after 437: the peers we had
                self.bind_channel(now, bound)
            for ip in [ip for ip in self.permissions if all(p[0] != ip for p in self.channels)]:
                self.create_permission(now, (ip, 0))
        elif method == Method.REFRESH:
            lifetime = resp.get(Lifetime)
            if lifetime is not None and lifetime.number > 0:
                self._expires = now + lifetime.number
                self._refresh_at = now + max(1.0, lifetime.number - self.config.refresh_margin)
        elif method == Method.CONNECT:  # RFC 6062 §4.3: the CONNECTION-ID of the new peer connection
            peer, cid = request.get(XorPeerAddress), resp.get(ConnectionId)
            if peer is not None and cid is not None:
                self._events.append(PeerConnectionReady(peer.address, cid.number))
            elif peer is not None:
                self._events.append(PeerConnectFailed(peer.address, 500, "no CONNECTION-ID in the Connect response"))
        elif method == Method.CHANNEL_BIND:
            peer = request.get(XorPeerAddress)
            if peer is not None:
                if peer.address not in self._channel_ok:
                    self._events.append(ChannelBound(peer.address, self.channels[peer.address]))
                self._channel_ok.add(peer.address)

    # ---------------------------------------------------------------------------------------------- timers

    def _refresh_failed(self, now: float, code: int, reason: str) -> None:
        """Try again while the allocation still lives; give up (AllocationFailed) once it would have expired."""
        self.stats["refresh-failed"] += 1
        if self.state is not TurnState.ALLOCATED:
            return
        if now + self.config.refresh_retry < self._expires:
            self._refresh_at = now + self.config.refresh_retry
            return
        self.state = TurnState.FAILED
        self._events.append(AllocationFailed(code, f"the allocation expired: Refresh failed ({reason})"))

    def next_timeout(self) -> float | None:
        times = [t for p in self._pending.values() if (t := p.tx.next_timeout()) is not None]
        if self.state is TurnState.ALLOCATED:
            if self._refresh_at is not None:
                times.append(self._refresh_at)
            times += list(self.permissions.values()) + list(self._channel_refresh.values())
        return min(times) if times else None

    def handle_timeout(self, now: float) -> None:
        for tid, pending in list(self._pending.items()):
            timed_out = pending.tx.handle_timeout(now)
            self._drain(pending.tx)
            if timed_out is not None:
                del self._pending[tid]
                if pending.message.method == Method.ALLOCATE and self.state is TurnState.ALLOCATING:
                    self.state = TurnState.FAILED
                    self._events.append(AllocationFailed(408, "the TURN server did not answer"))
                elif pending.message.method == Method.REFRESH:
                    self._refresh_failed(now, 408, "the TURN server did not answer")
                elif pending.message.method == Method.CONNECT:  # RFC 6062 §4.3: its outcome is always reported
                    target = pending.message.get(XorPeerAddress)
                    if target is not None:
                        self._events.append(PeerConnectFailed(target.address, 408, "the TURN server did not answer"))
        if self.state is not TurnState.ALLOCATED:
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._refresh_at = None
            self._request(now, Method.REFRESH, [Lifetime(self.config.lifetime)])
        for ip, at in list(self.permissions.items()):
            if now >= at:  # also with a channel: permissions (300 s) lapse before channels (600 s)
                self.create_permission(now, (ip, 0))
        for peer, at in list(self._channel_refresh.items()):
            if now >= at:
                self.bind_channel(now, peer)

    def poll_transmit(self) -> Transmit | None:
        """The next datagram to send, from ``self.local`` to ``self.server``."""
        return Transmit(self.server, self._out.popleft(), self.local) if self._out else None

    def next_event(self) -> TurnEvent | None:
        return self._events.popleft() if self._events else None
