"""Sans-IO TURN server (RFC 8656) that also answers STUN Binding: the lab's one STUN+TURN process.

The core never opens a socket. Relay addresses come from a :class:`RelayPorts` allocator the I/O layer provides
(it binds a socket and says which address it got). It is driven only through the endpoint contract
(:mod:`ice.endpoint`): :meth:`TurnServer.handle_datagram` routes by the local address (a relayed address: from a
peer; anything else: from a client) and queues the datagrams to send for :meth:`TurnServer.poll_transmit` as
:class:`~ice.stun.transaction.Transmit` (``local`` = the address to send from). Nothing from the network raises: bad
requests get the RFC's error code, everything else is a counted drop. A TCP/TLS client's connection is announced
with :meth:`TurnServer.stream_opened` and :meth:`TurnServer.stream_closed` (RFC 8656 §3.1, §6: its allocation ends
with the connection). TCP allocations (RFC 6062) live in :mod:`ice.turn.tcp_allocation`; this module only routes
to them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from struct import Struct
from typing import Any, Protocol

from ice.errors import StunParseError
from ice.stun.attributes import (
    AdditionalAddressFamily,
    Address,
    AddressErrorCode,
    Attribute,
    AttributeType,
    ChannelNumber,
    Data,
    ErrorCode,
    EvenPort,
    Lifetime,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    UnknownAttributes,
    UserHash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.integrity import IntegrityKey, _speedups, long_term_key, userhash
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import Transmit
from ice.turn.tcp_allocation import TCP, TcpAllocationConfig, TcpRelay

_CHANNEL_HDR = Struct("!HH")
RFC5766_CHANNELS = (0x4000, 0x7FFF)
"""The channel numbers of RFC 5766, which RFC 8656 §12 narrowed to 0x4000-0x4FFF; coturn's turnutils_uclient still
picks numbers at random up to 0x7FFF (``TurnServerConfig.channel_numbers`` may widen the range to this)."""
UDP = 17
IPV4, IPV6 = 0x01, 0x02
"""Address family codes of REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.6)."""
TUNNELED = ("2001::/32", "2002::/16")
"""Teredo and 6to4: a TURN server MUST NOT accept them in Allocate or ChannelBind requests (RFC 8656 §21.4), so
they are refused whatever ``allowed_peers`` says."""
_DATA_INDICATION_ROOM = {False: 0xFFFF - 12 - 4 - 8, True: 0xFFFF - 24 - 4 - 8}
"""The most DATA (padded) a Data indication holds beside XOR-PEER-ADDRESS (IPv4: False, IPv6: True), DATA's header
and FINGERPRINT (RFC 8656 §11.3)."""

def _channel_relay_py(batch: list[tuple[Address, bytes]], start: int, routes: Mapping[Any, tuple[Any, ...]], now: float,
                      to_client: bool, out: list[Transmit]) -> int:
    """Relay ``batch[start:]`` while each datagram has a route valid at ``now`` (a Transmit appended to ``out``
    each); the index of the first that has not (the general path's). ``to_client``: datagrams from peers on a
    relayed address, ``routes[peer] = (until, channel, client, server)``, sent to the client as ChannelData
    (RFC 8656 §12.7; over UDP, unpadded: §12.5); else ChannelData from clients on a listening address,
    ``routes[(client, channel)] = (until, peer, relayed)``, its application data sent to the peer (§12.6). The
    reference of the C accelerator's ``channel_relay``."""
    for i in range(start, len(batch)):
        remote, data = batch[i]
        if to_client:
            route = routes.get(remote)
            if route is None or not route[0] > now or len(data) > 0xFFFF:
                return i
            _, number, client, server = route
            out.append(Transmit(client, _CHANNEL_HDR.pack(number, len(data)) + data, server))
        else:
            if len(data) < 4 or not 0x40 <= data[0] <= 0x7F:
                return i
            number, length = _CHANNEL_HDR.unpack_from(data)
            route = routes.get((remote, number))
            if route is None or not route[0] > now or length > len(data) - 4:
                return i
            _, peer, relayed = route
            out.append(Transmit(peer, data[4 : 4 + length], relayed))
    return len(batch)


_channel_relay = _channel_relay_py
if _speedups is not None and hasattr(_speedups, "channel_relay"):  # (one built from older sources lacks it)
    _speedups.set_transmit(Transmit)
    _channel_relay = _speedups.channel_relay

DEFAULT_DENIED = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32", "::/128",
                  "::1/128", "fe80::/10", "ff00::/8")
"""Peers a relay refuses by default, as coturn does (RFC 8656 §21.2.3 asks operators to restrict them)."""


_Handler = Callable[[float, Address, Address, Message, IntegrityKey, str], Transmit | None]
"""A request's handler: (now, local, client, request, key, username) -> the response (None: it comes later, e.g.
RFC 6062's Connect)."""


def _family(host: str) -> int:
    return 6 if ":" in host else 4


class RelayPorts(Protocol):
    """Where relayed addresses come from: the I/O layer binds and releases the sockets."""

    def reserve(self, family: int) -> Address | None:
        """A new relay transport address (a bound socket) of ``family`` (4 or 6), or None when the range is
        exhausted. An address of the other family means this one is not supported (the server releases it and
        answers 440, RFC 8656 §7.2)."""

    def release(self, relayed: Address) -> None:
        """The allocation is gone: close that socket."""


class SpecificPorts(RelayPorts, Protocol):
    """A :class:`RelayPorts` that can also bind one given address: the port after an even one, held for an
    EVEN-PORT reservation (RFC 8656 §7.2). Without it the server looks for such a pair among what ``reserve``
    gives (sequential allocators give it at once)."""

    def reserve_at(self, relayed: Address) -> Address | None:
        """Exactly that relayed address (a bound socket), or None when it is taken or outside the range."""


@dataclass(frozen=True)
class TurnServerConfig:
    listen: Address
    realm: str = "icelab"
    users: dict[str, str] = field(default_factory=dict)
    """username -> password (long-term credentials, RFC 8489 §9.2)."""
    software: str | None = "icelab"
    default_lifetime: int = 600
    """RFC 8656 §3.2: allocations last 10 minutes unless refreshed."""
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    """RFC 8656 §9: permissions last 5 minutes."""
    channel_lifetime: int = 600
    """RFC 8656 §12: channel bindings last 10 minutes."""
    channel_numbers: tuple[int, int] = (0x4000, 0x4FFF)
    """The channel numbers ChannelBind accepts (RFC 8656 §12.2: 0x4000-0x4FFF, else 400); :data:`RFC5766_CHANNELS`
    serves RFC 5766 clients too."""
    channel_reserve: float = 300.0
    """After a channel expires its number stays reserved for its peer this long (RFC 8656 §12)."""
    nonce_lifetime: int = 3600
    """How long a NONCE is accepted before 438 Stale Nonce (RFC 8489 §9.2.4)."""
    user_quota: int = 10
    """Allocations one username may hold at once (486 Allocation Quota Reached beyond, RFC 8656 §7.2 step 10)."""
    even_port_attempts: int = 8
    """Relayed addresses tried for an EVEN-PORT request (the unused ones are released) before 508 (RFC 8656 §7.2)."""
    reservation_lifetime: float = 30.0
    """How long the port after an EVEN-PORT (R bit) allocation's is held for its RESERVATION-TOKEN (RFC 8656 §7.2:
    at least 30 s)."""
    denied_peers: tuple[str, ...] = DEFAULT_DENIED
    allowed_peers: tuple[str, ...] = ()
    """Exceptions to ``denied_peers`` (the lab allows its own subnets, e.g. 127.0.0.0/8 on loopback)."""
    tcp: TcpAllocationConfig = field(default_factory=TcpAllocationConfig)
    """TCP allocations (RFC 6062): timers, buffering and connection quotas."""


@dataclass
class Allocation:
    """RFC 8656 §2.2: keyed by the client's 5-tuple; owns one relayed transport address."""

    client: Address
    server: Address
    relayed: Address
    username: str
    key: IntegrityKey
    expires: float
    permissions: dict[str, float] = field(default_factory=dict)
    """Peer IP -> expiry (RFC 8656 §9: permissions are per IP, any port)."""
    channels: dict[int, tuple[Address, float]] = field(default_factory=dict)
    """Channel number -> (peer, expiry)."""
    by_peer: dict[Address, int] = field(default_factory=dict)
    """Peer -> channel number (a peer has at most one channel, RFC 8656 §12)."""
    allocate_tid: bytes = b""
    """The Allocate request that made it: a retransmission gets the success again (RFC 8656 §7.2)."""
    address_error: AddressErrorCode | None = None
    """Why the other family of an ADDITIONAL-ADDRESS-FAMILY request was not allocated (RFC 8656 §7.2 step 9)."""
    token: int | None = None
    """The RESERVATION-TOKEN of the port held after this one (EVEN-PORT with the R bit, RFC 8656 §7.2)."""
    stream: bool = False
    """The client reaches us over TCP/TLS: ChannelData to it is padded to four bytes (RFC 8656 §12.5)."""
    tcp: bool = False
    """A TCP allocation (RFC 6062): its relayed address listens on TCP; :class:`TcpRelay` has its connections."""


class TurnServer:
    """Allocations, permissions, channels, authentication and relaying (RFC 8656 §6-§12)."""

    def __init__(self, config: TurnServerConfig, ports: RelayPorts, secret: bytes | None = None) -> None:
        self.config = config
        self.ports = ports
        self.stats: Counter[str] = Counter()
        self.stun = StunServer(StunServerConfig(config.listen, software=config.software))
        self.allocations: dict[tuple[Address, Address], Allocation] = {}
        self.by_relay: dict[Address, Allocation] = {}
        self._secret = secret or os.urandom(16)
        self._keys = {u: long_term_key(u, config.realm, p) for u, p in config.users.items()}
        self._by_hash: dict[bytes, str] = {}
        """USERHASH -> username (RFC 8489 §14.4), for clients that send USERHASH instead of USERNAME."""
        for u in config.users:
            try:
                self._by_hash[userhash(u, config.realm)] = u
            except ValueError:  # a name OpaqueString refuses has no USERHASH; USERNAME still works
                pass
        self._denied = [ipaddress.ip_network(n) for n in config.denied_peers]
        self._tunneled = [ipaddress.ip_network(n) for n in TUNNELED]
        self._allowed = [ipaddress.ip_network(n) for n in config.allowed_peers]
        self._software: list[Attribute] = [Software(config.software)] if config.software else []
        self._stream = False
        self._reservations: dict[int, tuple[Address, float]] = {}
        """RESERVATION-TOKEN -> (the relayed address held, when the hold ends) (RFC 8656 §7.2)."""
        self._sweep_at: float | None = None
        """The earliest time a permission or channel could need pruning (kept cheap: the relay loop asks often)."""
        self._expiry: float | None = None
        self._expiry_stale = False
        """The earliest allocation expiry, recomputed only after an allocation was made, refreshed or deleted."""
        self._out: deque[Transmit] = deque()
        self._stream_clients: set[tuple[Address, Address]] = set()
        """(local, client) of the connected TCP/TLS clients."""
        self._to_peer: dict[Address, dict[tuple[Address, int], tuple[float, Address, Address]]] = {}
        """Routes of ChannelData from UDP clients, per listening address: (client, channel) -> (valid until, peer,
        relayed address). Learnt when the general path relays a datagram, valid until the first of the
        allocation's, the channel's and the permission's expiry, and all forgotten whenever a request, a timeout
        or a closed stream may have changed any state: a cache of the general path's decision, never a second
        set of rules (:meth:`handle_datagrams`)."""
        self._to_client: dict[Address, dict[Address, tuple[float, int, Address, Address]]] = {}
        """Routes of peers' datagrams on channels, per relayed address: peer -> (valid until, channel, client,
        listening address); learnt and forgotten as ``_to_peer``."""
        self._handlers: dict[int, _Handler] = {
            Method.ALLOCATE: self._allocate,
            Method.REFRESH: self._refresh,
            Method.CREATE_PERMISSION: self._create_permission,
            Method.CHANNEL_BIND: self._channel_bind,
        }
        """The requests a TURN server serves (RFC 8656 §17); Binding goes to the STUN server."""
        # -- RFC 6062 hook: TCP allocations' requests and state
        self.tcp = TcpRelay(self, config.tcp)
        if hasattr(ports, "reserve_tcp"):  # relay ports that listen on TCP: Connect and ConnectionBind are served
            self._handlers[Method.CONNECT] = self.tcp.connect
            self._handlers[Method.CONNECTION_BIND] = self.tcp.connection_bind

    # ------------------------------------------------------------------------------------- endpoint contract

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        """What arrived on ``local``: on a relayed address, from a peer (a Data indication or ChannelData to its
        client, RFC 8656 §11.3, §12.5); on a listening address or a client's stream, from a client (a STUN/TURN
        message or ChannelData, RFC 8656 §12.4). The answers queue for :meth:`poll_transmit`."""
        alloc = self.by_relay.get(local)
        if alloc is not None:
            out = self._from_peer(now, alloc, remote, data)
        elif len(data) >= 4 and 0x40 <= data[0] <= 0x7F:  # ChannelData, the other hot path (RFC 8656 §12.4)
            out = self._channel_data_from_client(now, local, remote, data)
        else:
            stream = bool(self._stream_clients) and (local, remote) in self._stream_clients
            self._out.extend(self._from_client(now, local, remote, data, stream))
            return
        if out is not None:
            self._out.append(out)

    def handle_datagrams(self, now: float, local: Address, batch: list[tuple[Address, bytes]]) -> None:
        """:meth:`handle_datagram` for each ``(remote, data)`` of a batch received on ``local``, in order. The
        ChannelData relay (RFC 8656 §12.6, §12.7) runs over the batch in one pass (:func:`_channel_relay_py`, or
        the C accelerator's copy of it) for each datagram whose route the general path has already decided and
        whose route is still valid at ``now``; any other datagram goes through :meth:`handle_datagram`."""
        to_client = local in self.by_relay
        tables = self._to_client if to_client else self._to_peer
        relayed: list[Transmit] = []
        i, n = 0, len(batch)
        while True:
            routes = tables.get(local)
            j = _channel_relay(batch, i, routes, now, to_client, relayed) if routes else i
            if j > i:
                self.stats["relayed-to-client" if to_client else "relayed-to-peer"] += j - i
                self._out.extend(relayed)
                relayed.clear()
            if j >= n:
                return
            remote, data = batch[j]
            self.handle_datagram(now, local, remote, data)
            i = j + 1

    def _forget_routes(self) -> None:
        """State changed (a request, a timeout, a closed stream): the relay fast path learns its routes again."""
        if self._to_peer or self._to_client:
            self._to_peer.clear()
            self._to_client.clear()

    def poll_transmit(self) -> Transmit | None:
        return self._out.popleft() if self._out else None

    def poll_transmits(self) -> list[Transmit]:
        """Everything :meth:`poll_transmit` would give, in order, at once (the driver drains a batch's answers)."""
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> None:
        """The server emits no events (its counters are in ``stats``; the intents of TCP allocations come out of
        ``self.tcp.next_intent()``, RFC 6062)."""
        return None

    def stream_opened(self, local: Address, client: Address) -> None:
        """A client connected over TCP or TLS (RFC 8656 §3.1): its messages are framed, ChannelData padded."""
        self._stream_clients.add((local, client))

    def stream_closed(self, local: Address, client: Address) -> None:
        """The client's connection ended: so does its allocation (RFC 8656 §6)."""
        self._stream_clients.discard((local, client))
        self._forget_routes()
        if (client, local) in self.allocations:
            self._delete((client, local))

    # ------------------------------------------------------------------------------------------ housekeeping

    def next_timeout(self) -> float | None:
        if not self._expiry_stale and self._sweep_at is None:
            return self._expiry  # the relay loop asks after every batch
        if self._expiry_stale:
            self._expiry = min((a.expires for a in self.allocations.values()), default=None)
            self._expiry_stale = False
        expiry = self._expiry
        if self._sweep_at is None or not (self.allocations or self._reservations):
            return expiry
        return self._sweep_at if expiry is None else min(expiry, self._sweep_at)

    def _sweep_no_later_than(self, at: float) -> None:
        if self._sweep_at is None or at < self._sweep_at:
            self._sweep_at = at

    def handle_timeout(self, now: float) -> None:
        """Expire allocations (RFC 8656 §6: their relay address is released), permissions (§9), channels (§12: a
        channel number stays reserved for its peer ``channel_reserve`` past its expiry, then is freed) and
        EVEN-PORT reservations nobody claimed (§7.2)."""
        self._forget_routes()
        if self.tcp.conns:  # RFC 6062 hook: connect and ConnectionBind timers
            self.tcp.handle_timeout(now)
        for token, (relayed, until) in list(self._reservations.items()):
            if until <= now:
                del self._reservations[token]
                self.ports.release(relayed)
                self.stats["reservation-expired"] += 1
        for key, alloc in list(self.allocations.items()):
            if alloc.expires <= now:
                self._delete(key)
                self.stats["allocation-expired"] += 1
                continue
            for ip in [ip for ip, at in alloc.permissions.items() if at <= now]:
                del alloc.permissions[ip]
            for number in [n for n, (_, at) in alloc.channels.items() if at + self.config.channel_reserve <= now]:
                peer, _ = alloc.channels.pop(number)
                alloc.by_peer.pop(peer, None)
        if self._sweep_at is not None and self._sweep_at <= now:  # what is left decides the next sweep
            pending = [t for a in self.allocations.values() for t in (
                *a.permissions.values(), *(at + self.config.channel_reserve for _, at in a.channels.values()))]
            pending.extend(until for _, until in self._reservations.values())
            pending.extend(self.tcp.deadlines())  # RFC 6062 hook
            self._sweep_at = min(pending, default=None)

    def _delete(self, key: tuple[Address, Address]) -> None:
        self._forget_routes()
        self._expiry_stale = True
        alloc = self.allocations.pop(key)
        if alloc.tcp:  # RFC 6062 hook: its connections close, its listening socket too
            self.tcp.deleted(alloc)
            return
        self.by_relay.pop(alloc.relayed, None)
        self.ports.release(alloc.relayed)

    # ----------------------------------------------------------------------------------------------- nonces

    def _nonce_mac(self, t: int, client: Address) -> str:
        material = t.to_bytes(8, "big") + f"{client[0]}|{client[1]}".encode()
        return hmac.new(self._secret, material, hashlib.sha256).hexdigest()[:16]

    def _nonce(self, now: float, client: Address) -> str:
        """A stateless nonce: issue time and an HMAC of it and of the client's address, so any server instance can
        check its age, and two sources never get the same nonce (RFC 8489 §9.2.4)."""
        t = int(now)
        if self._stream:  # RFC 6062 hook: the port goes in the clear too, see _nonce_fresh
            return f"{t:x}-{self._nonce_mac(t, client)}{client[1]:04x}"
        return f"{t:x}-{self._nonce_mac(t, client)}"

    def _nonce_fresh(self, nonce: str, now: float, client: Address) -> bool:
        t_hex, _, mac = nonce.partition("-")
        if self._stream and len(mac) == 20 and mac.isascii():
            # RFC 6062 hook: a nonce issued on one TCP/TLS connection serves the client's other connections from
            # the same IP (a control connection's nonce on its data connections, RFC 6062 §4.4: coturn's client
            # shares one nonce between them); it names the port it was issued to, so it stays source-specific.
            try:
                client = (client[0], int(mac[16:], 16))
            except ValueError:
                return False
            mac = mac[:16]
        # The nonce is network input: anything that is not exactly what _nonce() made is simply stale.
        if len(t_hex) > 16 or len(mac) != 16 or not t_hex.isascii() or not mac.isascii():
            return False
        try:
            t = int(t_hex, 16)
        except ValueError:
            return False
        if t < 0:
            return False
        want = self._nonce_mac(t, client)
        return hmac.compare_digest(mac.encode(), want.encode()) and now - t < self.config.nonce_lifetime

    # --------------------------------------------------------------------------------------------- clients

    def _from_client(self, now: float, local: Address, client: Address, data: bytes, stream: bool
                     ) -> list[Transmit]:
        """A STUN/TURN message from a client on a listening address (ChannelData takes the fast path in
        :meth:`handle_datagram`). ``stream``: it came over TCP/TLS (one framed message per call)."""
        self._stream = stream
        self._forget_routes()  # whatever the message, it may change an allocation, a permission or a channel
        try:
            msg = parse(data)
        except StunParseError:
            self.stats["malformed"] += 1
            return []
        try:
            return self._message(now, local, client, msg, data)
        except StunParseError:
            self.stats["bad-attribute"] += 1
            if msg.message_class is MessageClass.REQUEST:
                return [self._error(local, client, msg, 400, "Bad Request")]
            return []

    def _error(self, local: Address, client: Address, req: Message, code: int, reason: str,
               *extra: Attribute, key: IntegrityKey | None = None) -> Transmit:
        resp = Message(req.method, MessageClass.ERROR, req.transaction_id,
                       [ErrorCode(code, reason), *extra, *self._software])
        return Transmit(client, resp.encode(key, fingerprint=True), local)

    def _ok(self, local: Address, client: Address, req: Message, attrs: Iterable[Attribute],
            key: IntegrityKey) -> Transmit:
        resp = Message(req.method, MessageClass.SUCCESS, req.transaction_id, [*attrs, *self._software])
        return Transmit(client, resp.encode(key, fingerprint=True), local)

    def _message(self, now: float, local: Address, client: Address, msg: Message, raw: bytes) -> list[Transmit]:
        method, cls = msg.method, msg.message_class
        if method == Method.BINDING:
            out = self.stun.handle(local, client, raw)
            return [out] if out is not None else []
        if cls is MessageClass.INDICATION:
            if method == Method.SEND:
                return self._send_indication(now, local, client, msg)
            self.stats["indication-ignored"] += 1
            return []
        if cls is not MessageClass.REQUEST:
            self.stats["not-a-request"] += 1
            return []
        handler = self._handlers.get(method)
        if handler is None:  # RFC 8489 §6.3: a method the server does not support is silently discarded
            self.stats["unknown-method"] += 1
            return []
        auth = self._authenticate(now, local, client, msg)
        if isinstance(auth, Transmit):
            return [auth]
        key, username = auth
        # RFC 8489 §6.3: unknown attributes are looked at once authentication is done, and every response to an
        # authenticated request carries MESSAGE-INTEGRITY (§9.2.4), a 400 for a malformed attribute too.
        try:
            unknown = msg.unknown_comprehension_required()
            if unknown:
                self.stats["unknown-attribute"] += 1
                return [self._error(local, client, msg, 420, "Unknown Attribute", UnknownAttributes(tuple(unknown)),
                                    key=key)]
            out = handler(now, local, client, msg, key, username)
            return [out] if out is not None else []
        except StunParseError:
            self.stats["bad-attribute"] += 1
            return [self._error(local, client, msg, 400, "Bad Request: malformed attribute", key=key)]

    def _authenticate(self, now: float, local: Address, client: Address, msg: Message
                      ) -> tuple[IntegrityKey, str] | Transmit:
        """RFC 8489 §9.2.4, its checks in order: 401 without MESSAGE-INTEGRITY, 400 when USERNAME (or USERHASH),
        REALM or NONCE is missing, 401 for an unknown user or a wrong MESSAGE-INTEGRITY, 438 for a stale nonce.
        The key and the username, or the error response (none of which is signed)."""
        realm, nonce = msg.get(Realm), msg.get(Nonce)
        user, hashed = msg.get(Username), msg.get(UserHash)
        if not msg.has_integrity:
            return self._challenge(now, local, client, msg, 401, "Unauthorized")
        if (user is None and hashed is None) or realm is None or nonce is None:
            self.stats["auth-400"] += 1  # no REALM, NONCE or integrity in this one
            return self._error(local, client, msg, 400, "Bad Request: MESSAGE-INTEGRITY without USERNAME, REALM "
                                                        "and NONCE")
        name = user.text if user is not None else self._by_hash.get(hashed.data) if hashed is not None else None
        key = self._keys.get(name) if name is not None else None
        if name is None or key is None or realm.text != self.config.realm or not msg.check_integrity(key):
            return self._challenge(now, local, client, msg, 401, "Unauthorized")
        if not self._nonce_fresh(nonce.text, now, client):
            return self._challenge(now, local, client, msg, 438, "Stale Nonce")
        return key, name

    def _challenge(self, now: float, local: Address, client: Address, msg: Message, code: int, reason: str
                   ) -> Transmit:
        """A 401 or 438 with the REALM and a fresh NONCE for this source (RFC 8489 §9.2.4), unsigned."""
        self.stats[f"auth-{code}"] += 1
        return self._error(local, client, msg, code, reason, Realm(self.config.realm), Nonce(self._nonce(now, client)))

    # ----------------------------------------------------------------------------------------- requests

    def _allocate(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                  username: str) -> Transmit:
        """RFC 8656 §7.2: its checks in order (authentication was step 1), then the relayed address.

        Reservations are not offered: EVEN-PORT with the R bit and any RESERVATION-TOKEN (this server never issues
        one, so none is valid) are 508, and an ADDITIONAL-ADDRESS-FAMILY request gets one family, the other named
        in ADDRESS-ERROR-CODE (440): a partial success as step 9 allows.
        """
        five = (client, local)
        existing = self._live(five, now)
        if existing is not None:  # step 2
            if existing.allocate_tid == msg.transaction_id and existing.username == username:
                # Our success response was lost and the client retransmitted (RFC 8656 §5, §7.2).
                return self._allocated(now, local, client, msg, key, existing)
            return self._error(local, client, msg, 437, "Allocation Mismatch", key=key)
        if self._tunneled_ip(client[0]):  # RFC 8656 §21.4
            self.stats["client-tunneled"] += 1
            return self._error(local, client, msg, 403, "Forbidden: Teredo and 6to4 clients are refused", key=key)
        transport = msg.get(RequestedTransport)
        if transport is None:  # step 3 (a malformed one is a 400 too, from the caller)
            return self._error(local, client, msg, 400, "Bad Request: no REQUESTED-TRANSPORT", key=key)
        tcp = transport.protocol == TCP
        if tcp:  # RFC 6062 hook (§5.1): over TCP/TLS only, without DONT-FRAGMENT, EVEN-PORT, RESERVATION-TOKEN
            refusal = self.tcp.allocate_refusal(msg, self._stream)
            if refusal is not None:
                return self._error(local, client, msg, *refusal, key=key)
        elif transport.protocol != UDP:
            return self._error(local, client, msg, 442, "Unsupported Transport Protocol", key=key)
        if msg.has(AttributeType.DONT_FRAGMENT):  # step 4: the relay cannot set DF on what it sends
            self.stats["unknown-attribute"] += 1
            return self._error(local, client, msg, 420, "Unknown Attribute: DONT-FRAGMENT is not supported",
                                UnknownAttributes((AttributeType.DONT_FRAGMENT,)), key=key)
        even, token = msg.get(EvenPort), msg.get(ReservationToken)
        family, additional = msg.get(RequestedAddressFamily), msg.get(AdditionalAddressFamily)
        if token is not None:  # step 5
            if even is not None or family is not None or additional is not None:
                return self._error(local, client, msg, 400, "Bad Request: RESERVATION-TOKEN with EVEN-PORT or an "
                                                            "address family", key=key)
            held = self._reservations.get(token.number)
            if held is None or held[1] <= now:
                return self._error(local, client, msg, 508, "Insufficient Capacity: no such reservation", key=key)
        if family is not None and additional is not None:  # step 6
            return self._error(local, client, msg, 400, "Bad Request: REQUESTED-ADDRESS-FAMILY with "
                                                        "ADDITIONAL-ADDRESS-FAMILY", key=key)
        if family is not None and family.family not in (IPV4, IPV6):  # step 7 (a family the server cannot have)
            return self._error(local, client, msg, 440, "Address Family not Supported", key=key)
        if even is not None and even.reserve and additional is not None:  # step 8 (508 below if unsatisfiable)
            return self._error(local, client, msg, 400, "Bad Request: EVEN-PORT with the R bit and "
                                                        "ADDITIONAL-ADDRESS-FAMILY", key=key)
        if additional is not None and additional.family != IPV6:  # step 9
            return self._error(local, client, msg, 400, "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                               key=key)
        if sum(1 for a in self.allocations.values() if a.username == username) >= self.config.user_quota:
            return self._error(local, client, msg, 486, "Allocation Quota Reached", key=key)  # step 10
        lifetime = self._lifetime(msg)  # a malformed LIFETIME is a 400 (from the caller) before anything is held
        want = 6 if family is not None and family.family == IPV6 else 4  # step 7: IPv4 unless asked
        if tcp:  # RFC 6062 hook: a listening TCP socket
            tcp_relayed = self.tcp.reserve(want)
            if tcp_relayed is None:
                return self._error(local, client, msg, 508, "Insufficient Capacity", key=key)
            got = [tcp_relayed]
            relayed = tcp_relayed
        elif token is not None:  # the reserved address, whatever the 5-tuple (RFC 8656 §7.2)
            relayed = self._reservations.pop(token.number)[0]
            got = [relayed]
            want = _family(relayed[0])
        else:
            got = self._reserve(want, even is not None, even is not None and even.reserve)
            if not got:
                return self._error(local, client, msg, 508, "Insufficient Capacity", key=key)
            relayed = got[0]
        address_error = None
        if additional is not None:  # step 9: one family only; the other is named in ADDRESS-ERROR-CODE
            missing = IPV6 if _family(relayed[0]) == 4 else IPV4
            address_error = AddressErrorCode(missing, 440, "Address Family not Supported")
        elif _family(relayed[0]) != want:  # step 7: this family is not supported
            for a in got:
                if tcp:
                    self.tcp.release(a)
                else:
                    self.ports.release(a)
            return self._error(local, client, msg, 440, "Address Family not Supported", key=key)
        reservation = None
        if len(got) == 2:  # EVEN-PORT with the R bit: the next port is held for a later Allocate
            reservation = int.from_bytes(os.urandom(8), "big")
            self._reservations[reservation] = (got[1], now + self.config.reservation_lifetime)
            self._sweep_no_later_than(now + self.config.reservation_lifetime)
        alloc = Allocation(client, local, relayed, username, key, now + lifetime,
                           allocate_tid=msg.transaction_id, address_error=address_error, token=reservation,
                           stream=self._stream, tcp=tcp)
        self.allocations[five] = alloc
        if tcp:  # RFC 6062 hook: TCP relayed addresses are another port space
            self.tcp.allocated(alloc)
        else:
            self.by_relay[relayed] = alloc
        self._expiry_stale = True
        self.stats["allocate"] += 1
        return self._allocated(now, local, client, msg, key, alloc)

    def _allocated(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                   alloc: Allocation) -> Transmit:
        """The Allocate success response (RFC 8656 §7.2): relayed and mapped addresses, the time to expiry."""
        attrs: list[Attribute] = [XorRelayedAddress(*alloc.relayed), XorMappedAddress(*client),
                                  Lifetime(max(0, int(alloc.expires - now)))]
        if alloc.address_error is not None:
            attrs.append(alloc.address_error)
        if alloc.token is not None:
            attrs.append(ReservationToken(alloc.token))
        return self._ok(local, client, msg, attrs, key)

    def _reserve(self, family: int, even: bool, pair: bool) -> list[Address]:
        """Relayed addresses from the I/O layer: one of any port; with ``even`` (EVEN-PORT, RFC 8656 §7.2) an even
        port N, and with ``pair`` (its R bit) N and N + 1 on the same IP. Up to ``even_port_attempts`` addresses
        are asked for; those not used are released. Empty: 508. An address of another family comes back alone
        (the caller answers 440)."""
        if not even:
            got = self.ports.reserve(family)
            return [] if got is None else [got]
        reserve_at = getattr(self.ports, "reserve_at", None)
        held: list[Address] = []
        take: list[Address] = []
        for _ in range(max(1, self.config.even_port_attempts)):
            got = self.ports.reserve(family)
            if got is None:
                break
            if _family(got[0]) != family:
                take = [got]
                break
            held.append(got)
            take = self._even(held, pair, reserve_at)
            if take:
                break
        for a in held:
            if a not in take:
                self.ports.release(a)
        return take

    @staticmethod
    def _even(held: list[Address], pair: bool, reserve_at: Callable[[Address], Address | None] | None
              ) -> list[Address]:
        """An even port among ``held`` (and, with ``pair``, the next one: held too, or bound with ``reserve_at``)."""
        host, port = held[-1]
        if not pair:
            return [held[-1]] if port % 2 == 0 else []
        for h, n in held:
            if n % 2 == 0 and (h, n + 1) in held:
                return [(h, n), (h, n + 1)]
        if port % 2 == 0 and port < 0xFFFF and reserve_at is not None:
            nxt = reserve_at((host, port + 1))
            if nxt is not None:
                return [held[-1], nxt]
        return []

    def _live(self, five: tuple[Address, Address], now: float) -> Allocation | None:
        """The allocation on this 5-tuple; one past its expiry is deleted first, whether or not the timer has run
        yet (RFC 8656 §6: an expired allocation's state is gone)."""
        alloc = self.allocations.get(five)
        if alloc is not None and alloc.expires <= now:
            self._delete(five)
            self.stats["allocation-expired"] += 1
            return None
        return alloc

    def _lifetime(self, msg: Message) -> int:
        """RFC 8656 §7.2, §8.2: the smaller of the asked LIFETIME and ``max_lifetime`` if that exceeds the
        default, else ``default_lifetime`` (also when no LIFETIME was asked for)."""
        asked = msg.get(Lifetime)
        if asked is None:
            return self.config.default_lifetime
        computed = min(asked.number, self.config.max_lifetime)
        return computed if computed > self.config.default_lifetime else self.config.default_lifetime

    def _refresh(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                 username: str) -> Transmit:
        """RFC 8656 §8.2: 437 without an allocation, 441 for another user (§5), 443 when REQUESTED-ADDRESS-FAMILY
        is not the allocation's; LIFETIME 0 deletes it, any other sets its time to expiry (§7.2's rule)."""
        alloc = self._owned(now, local, client, msg, key, username)
        if isinstance(alloc, Transmit):
            return alloc
        family = msg.get(RequestedAddressFamily)
        if family is not None and family.family != (IPV6 if _family(alloc.relayed[0]) == 6 else IPV4):
            return self._error(local, client, msg, 443, "Peer Address Family Mismatch", key=key)
        asked = msg.get(Lifetime)
        if asked is not None and asked.number == 0:
            self._delete((client, local))
            self.stats["deallocate"] += 1
            return self._ok(local, client, msg, [Lifetime(0)], key)
        lifetime = self._lifetime(msg)
        alloc.expires = now + lifetime
        self._expiry_stale = True
        self.stats["refresh"] += 1
        return self._ok(local, client, msg, [Lifetime(lifetime)], key)

    def _tunneled_ip(self, host: str) -> bool:
        ip = ipaddress.ip_address(host)
        return any(ip in n for n in self._tunneled)

    def _peer_allowed(self, host: str) -> bool:
        """RFC 8656 §21.2.2: the operator's denied ranges (minus ``allowed_peers``); Teredo and 6to4 always
        refused (§21.4)."""
        if self._tunneled_ip(host):
            return False
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        if any(ip in n for n in self._allowed):
            return True
        return not any(ip in n for n in self._denied)

    def _owned(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey, username: str
               ) -> Allocation | Transmit:
        """RFC 8656 §5: a request other than Allocate needs the allocation on its 5-tuple (437) and the username
        that made it (441)."""
        alloc = self._live((client, local), now)
        if alloc is None:
            return self._error(local, client, msg, 437, "Allocation Mismatch", key=key)
        if alloc.username != username:
            return self._error(local, client, msg, 441, "Wrong Credentials", key=key)
        return alloc

    def _create_permission(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                           username: str) -> Transmit:
        """RFC 8656 §10.2: one or more XOR-PEER-ADDRESS (400 without, or with a malformed one), each of the relay's
        family (443) and allowed (403); all or nothing. Installs or refreshes a permission per IP (§9)."""
        alloc = self._owned(now, local, client, msg, key, username)
        if isinstance(alloc, Transmit):
            return alloc
        peers = [a for a in msg.attributes if isinstance(a, XorPeerAddress)]
        if not peers:
            return self._error(local, client, msg, 400, "Bad Request: no XOR-PEER-ADDRESS", key=key)
        for p in peers:
            if (":" in p.host) != (":" in alloc.relayed[0]):
                return self._error(local, client, msg, 443, "Peer Address Family Mismatch", key=key)
            if not self._peer_allowed(p.host):
                self.stats["peer-forbidden"] += 1
                return self._error(local, client, msg, 403, "Forbidden", key=key)
        for p in peers:
            alloc.permissions[p.host] = now + self.config.permission_lifetime
            self._sweep_no_later_than(now + self.config.permission_lifetime)
        self.stats["create-permission"] += 1
        return self._ok(local, client, msg, [], key)

    def _channel_bind(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                      username: str) -> Transmit:
        """RFC 8656 §12.2: CHANNEL-NUMBER in range and XOR-PEER-ADDRESS (400), the peer's family the relay's
        (443), a peer the operator allows (403), neither bound to another (400); binds or refreshes the channel
        and installs or refreshes the permission (§9)."""
        alloc = self._owned(now, local, client, msg, key, username)
        if isinstance(alloc, Transmit):
            return alloc
        if alloc.tcp:  # RFC 6062 hook: no channels on a TCP allocation (data goes over data connections)
            return self._error(local, client, msg, 400, "Bad Request: no channels on a TCP allocation", key=key)
        chan, peer = msg.get(ChannelNumber), msg.get(XorPeerAddress)
        low, high = self.config.channel_numbers
        if chan is None or peer is None or not low <= chan.number <= high:
            if chan is not None and high < chan.number <= RFC5766_CHANNELS[1]:
                self.stats["channel-rfc5766-range"] += 1
            return self._error(local, client, msg, 400, f"Bad Request: a channel {low:#06x}-{high:#06x} and a peer",
                               key=key)
        if (":" in peer.host) != (":" in alloc.relayed[0]):
            return self._error(local, client, msg, 443, "Peer Address Family Mismatch", key=key)
        if not self._peer_allowed(peer.host):
            self.stats["peer-forbidden"] += 1
            return self._error(local, client, msg, 403, "Forbidden", key=key)
        bound = alloc.channels.get(chan.number)
        other = alloc.by_peer.get(peer.address)
        if (bound is not None and bound[0] != peer.address) or (other is not None and other != chan.number):
            return self._error(local, client, msg, 400, "Bad Request: channel or peer already bound", key=key)
        alloc.channels[chan.number] = (peer.address, now + self.config.channel_lifetime)
        alloc.by_peer[peer.address] = chan.number
        alloc.permissions[peer.host] = now + self.config.permission_lifetime
        self._sweep_no_later_than(now + self.config.channel_lifetime + self.config.channel_reserve)
        self._sweep_no_later_than(now + self.config.permission_lifetime)
        self.stats["channel-bind"] += 1
        return self._ok(local, client, msg, [], key)

    # -------------------------------------------------------------------------------------------- relaying

    def _permitted(self, alloc: Allocation, peer: Address, now: float) -> bool:
        expiry = alloc.permissions.get(peer[0])
        return expiry is not None and expiry > now

    def _send_indication(self, now: float, local: Address, client: Address, msg: Message) -> list[Transmit]:
        """RFC 8656 §11.2: relay DATA to XOR-PEER-ADDRESS if a permission exists (no response either way). An
        unknown comprehension-required attribute discards it (RFC 8489 §6.3.2), and so does DONT-FRAGMENT, which
        the relay cannot honour, unless the families differ (§13: then it is ignored)."""
        alloc = self.allocations.get((client, local))
        peer, data = msg.get(XorPeerAddress), msg.get(Data)
        if alloc is None or peer is None or data is None or alloc.expires <= now:
            self.stats["send-dropped"] += 1
            return []
        if alloc.tcp:  # RFC 6062 hook: a TCP allocation relays over its data connections only
            self.stats["send-tcp-allocation"] += 1
            return []
        if msg.unknown_comprehension_required():
            self.stats["send-unknown-attribute"] += 1
            return []
        if msg.has(AttributeType.DONT_FRAGMENT) and _family(client[0]) == _family(alloc.relayed[0]):
            self.stats["send-dont-fragment"] += 1
            return []
        if not self._permitted(alloc, peer.address, now):
            self.stats["send-no-permission"] += 1
            return []
        self.stats["relayed-to-peer"] += 1
        return [Transmit(peer.address, data.data, alloc.relayed)]

    def _channel_data_from_client(self, now: float, local: Address, client: Address, data: bytes
                                  ) -> Transmit | None:
        """RFC 8656 §12.6: ChannelData from the client goes to the channel's peer (while the peer's permission
        lasts too); it refreshes neither. Shorter than its length field, on an unbound channel or without an
        allocation (§5) it is silently discarded, and counted."""
        number, length = _CHANNEL_HDR.unpack_from(data)
        alloc = self.allocations.get((client, local))
        if alloc is None or length > len(data) - 4 or alloc.expires <= now:
            self.stats["channel-data-dropped"] += 1
            return None
        bound = alloc.channels.get(number)
        if bound is None or bound[1] <= now or not self._permitted(alloc, bound[0], now):
            # RFC 8656 §12.6: a reserved number (0x5000-0xFFFF) or an unbound channel is silently discarded
            self.stats["channel-data-reserved" if number > self.config.channel_numbers[1] else
                       "channel-data-unbound"] += 1
            return None
        self.stats["relayed-to-peer"] += 1
        if not alloc.stream:  # the batch fast path may take this client's next ones on this channel
            until = min(alloc.expires, bound[1], alloc.permissions[bound[0][0]])
            self._to_peer.setdefault(local, {})[(client, number)] = (until, bound[0], alloc.relayed)
        return Transmit(bound[0], data[4 : 4 + length], alloc.relayed)

    def _from_peer(self, now: float, alloc: Allocation | None, peer: Address, data: bytes) -> Transmit | None:
        """A datagram from a peer to a relayed address: ChannelData if a channel is bound (RFC 8656 §12.7, §12.5:
        padded to four bytes over TCP/TLS), else a Data indication with XOR-PEER-ADDRESS and DATA (§11.3);
        dropped without a permission for the peer's IP (§9: ports are not compared)."""
        if alloc is None or alloc.expires <= now:
            self.stats["peer-data-no-allocation"] += 1
            return None
        if not self._permitted(alloc, peer, now):
            self.stats["peer-data-no-permission"] += 1
            return None
        number = alloc.by_peer.get(peer)
        if number is not None and alloc.channels[number][1] > now:
            framed = _CHANNEL_HDR.pack(number, len(data)) + data  # no padding over UDP (RFC 8656 §12.5)
            if alloc.stream:
                framed += b"\x00" * (-len(data) & 3)
            else:  # the batch fast path may take this peer's next ones
                until = min(alloc.expires, alloc.channels[number][1], alloc.permissions[peer[0]])
                self._to_client.setdefault(alloc.relayed, {})[peer] = (until, number, alloc.client, alloc.server)
            self.stats["relayed-to-client"] += 1
            return Transmit(alloc.client, framed, alloc.server)
        if len(data) + (-len(data) & 3) > _DATA_INDICATION_ROOM[":" in peer[0]]:
            # XOR-PEER-ADDRESS, DATA and FINGERPRINT must fit STUN's 16-bit length: a larger datagram (an IPv6 peer
            # may send 65,527 bytes) can only be relayed on a channel.
            self.stats["peer-data-too-large"] += 1
            return None
        ind = Message(Method.DATA, MessageClass.INDICATION, attributes=[XorPeerAddress(*peer), Data(data)])
        self.stats["relayed-to-client"] += 1
        return Transmit(alloc.client, ind.encode(fingerprint=True), alloc.server)
