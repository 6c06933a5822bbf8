"""TURN TCP allocations (RFC 6062), sans-IO: the server's side of Connect, ConnectionAttempt and ConnectionBind.

A TCP allocation is made with an Allocate carrying REQUESTED-TRANSPORT 6 over a TCP or TLS *control connection*
(RFC 6062 §5.1); its relayed transport address is a listening TCP socket. Each TCP connection between the relayed
address and a peer (a *peer data connection*) is made by the server on the client's Connect (§5.2) or accepted from
a permitted peer and announced with a ConnectionAttempt indication (§5.3); the client then opens a new connection to
the server (a *client data connection*) whose first and only STUN message is ConnectionBind (§5.4), and from then
on the two connections are one raw byte pipe (§5.5).

:class:`TcpRelay` (the server's ``tcp``) decides; it never opens a socket. What the I/O layer must do comes out as
frozen *intents* (:class:`ConnectPeer`, :class:`Splice`, :class:`CloseConnection`) through
:meth:`TcpRelay.next_intent` (the asyncio runner hands them to its driver as the endpoint's events), and what
happened goes back in as frozen *events* (:class:`PeerConnected`, :class:`PeerConnectFailed`,
:class:`PeerAccepted`, :class:`ConnectionClosed`) through :meth:`TcpRelay.handle_event`. Without TCP relay ports
(:class:`TcpRelayPorts`) the server answers a TCP Allocate with 442 and ignores Connect and ConnectionBind as
methods it does not serve (RFC 8489 §6.3).
A peer data connection is named by its two ends, the relayed address and the peer's address (a TCP 4-tuple), on
both sides of that interface; the CONNECTION-ID the client sees is the core's own. The listening socket of a
relayed address is opened and closed through :class:`TcpRelayPorts` when the allocation is made and deleted, like
the UDP relay's sockets (:class:`~ice.turn.server.RelayPorts`).
"""

from __future__ import annotations

import enum
import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ice.stun.attributes import Address, AttributeType, ConnectionId, XorPeerAddress
from ice.stun.message import Message, MessageClass, Method
from ice.stun.transaction import Transmit

if TYPE_CHECKING:
    from ice.stun.integrity import IntegrityKey
    from ice.turn.server import Allocation, TurnServer

TCP = 6
"""REQUESTED-TRANSPORT for a TCP allocation (RFC 6062 §6.2: the IANA protocol number of TCP)."""
CONNECTION_ALREADY_EXISTS = (446, "Connection Already Exists")
"""RFC 6062 §6.3: a Connect to a peer the allocation already has a connection to (or one in progress)."""
CONNECTION_TIMEOUT_OR_FAILURE = (447, "Connection Timeout or Failure")
"""RFC 6062 §6.3: the server's connection to the peer failed or timed out."""


@dataclass(frozen=True)
class TcpAllocationConfig:
    """The knobs of RFC 6062 on the server (a field of :class:`~ice.turn.server.TurnServerConfig`)."""

    connect_timeout: float = 30.0
    """How long the server's connection to a peer may take before 447 (RFC 6062 §5.2: at least 30 s)."""
    bind_timeout: float = 30.0
    """How long a peer data connection waits for its ConnectionBind before it is closed (RFC 6062 §5.2, §5.3)."""
    peer_buffer: int = 65536
    """Bytes the I/O layer reads from a peer data connection before its ConnectionBind (and per direction while
    spliced) before it stops reading, so TCP's window closes (RFC 6062 §5.2, §5.3: the server buffers and adjusts
    its receive window to the empty buffer space)."""
    max_connections: int = 64
    """Peer data connections (pending or bound) one allocation may have: a Connect beyond is 508, an incoming
    connection beyond is closed."""
    user_connections: int = 128
    """Peer data connections one username may have over all its allocations (quotas as for allocations, RFC 8656
    §7.2 step 10): a Connect beyond is 486, an incoming connection beyond is closed."""
    connect_needs_permission: bool = True
    """A Connect needs a permission for the peer's IP, like any data toward a peer (RFC 8656 §9); False lets
    Connect reach any peer the operator allows."""


class TcpRelayPorts(Protocol):
    """Listening TCP sockets for relayed addresses (RFC 6062 §5.1: the server accepts connections on the relayed
    transport address). A :class:`~ice.turn.server.RelayPorts` that has these methods serves TCP allocations;
    without them a TCP Allocate is 442."""

    def reserve_tcp(self, family: int) -> Address | None:
        """A listening TCP socket on a new relayed address of ``family`` (4 or 6), or None when none is free."""

    def release_tcp(self, relayed: Address) -> None:
        """The TCP allocation is gone: close its listening socket."""


# ------------------------------------------------------------------------------------ intents (core -> I/O)


@dataclass(frozen=True)
class ConnectPeer:
    """Open a TCP connection from ``relayed`` (RFC 6062 §5.2: the source SHOULD be the relayed transport address)
    to ``peer``; report :class:`PeerConnected` or :class:`PeerConnectFailed`. A :class:`CloseConnection` for the
    same pair cancels it (the core's timer ran out)."""

    relayed: Address
    peer: Address


@dataclass(frozen=True)
class Splice:
    """The client data connection ``(local, client)`` (where the ConnectionBind came from) and the peer data
    connection ``(relayed, peer)`` are now one byte pipe (RFC 6062 §5.4): first what was buffered from the peer,
    then everything, as is, both ways. The ConnectionBind success response is queued before this intent."""

    local: Address
    client: Address
    relayed: Address
    peer: Address


@dataclass(frozen=True)
class CloseConnection:
    """Close the peer data connection ``(relayed, peer)``, cancel its connection attempt, and close the client
    data connection spliced to it if any (RFC 6062 §5.5: either side closing closes the other)."""

    relayed: Address
    peer: Address
    reason: str


TcpIntent = ConnectPeer | Splice | CloseConnection


# ------------------------------------------------------------------------------------- events (I/O -> core)


@dataclass(frozen=True)
class PeerConnected:
    """The connection a :class:`ConnectPeer` asked for is established."""

    relayed: Address
    peer: Address


@dataclass(frozen=True)
class PeerConnectFailed:
    """The connection a :class:`ConnectPeer` asked for failed (refused, unreachable...)."""

    relayed: Address
    peer: Address
    reason: str = ""


@dataclass(frozen=True)
class PeerAccepted:
    """A peer connected to a relayed address (RFC 6062 §5.3); the I/O layer holds it, unread beyond
    ``peer_buffer``, until the core says :class:`Splice` or :class:`CloseConnection`."""

    relayed: Address
    peer: Address


@dataclass(frozen=True)
class ConnectionClosed:
    """The peer data connection ``(relayed, peer)`` or the client data connection spliced to it ended."""

    relayed: Address
    peer: Address


TcpEvent = PeerConnected | PeerConnectFailed | PeerAccepted | ConnectionClosed


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    """A Connect is in progress (RFC 6062 §5.2): its response waits for the peer."""
    PENDING = "pending"
    """A peer data connection waits for its ConnectionBind."""
    BOUND = "bound"
    """Spliced to a client data connection."""


@dataclass
class PeerConnection:
    """One peer data connection of a TCP allocation (RFC 6062 §3)."""

    cid: int
    alloc: Allocation
    peer: Address
    state: ConnState
    deadline: float | None
    """When the connect attempt (CONNECTING) or the wait for ConnectionBind (PENDING) ends."""
    request: tuple[bytes, IntegrityKey] | None = None
    """The Connect request waiting for its response: (transaction ID, the key to sign it with)."""

    @property
    def pair(self) -> tuple[Address, Address]:
        return self.alloc.relayed, self.peer


class TcpRelay:
    """The TCP allocations of one :class:`~ice.turn.server.TurnServer` and their connections (RFC 6062 §5)."""

    def __init__(self, server: TurnServer, config: TcpAllocationConfig) -> None:
        self.server = server
        self.config = config
        self.stats = server.stats
        self.by_relay: dict[Address, Allocation] = {}
        """Relayed TCP address -> its allocation (apart from the UDP relays' ``by_relay``: another port space)."""
        self.conns: dict[int, PeerConnection] = {}
        """CONNECTION-ID -> connection."""
        self.by_pair: dict[tuple[Address, Address], PeerConnection] = {}
        self.intents: deque[TcpIntent] = deque()

    def next_intent(self) -> TcpIntent | None:
        """The next thing the I/O layer must do (in order, after the transmits queued before it)."""
        return self.intents.popleft() if self.intents else None

    # ------------------------------------------------------------------------------------------- allocation

    def allocate_refusal(self, msg: Message, stream: bool) -> tuple[int, str] | None:
        """RFC 6062 §5.1: a TCP allocation over UDP is 400, and so is one with DONT-FRAGMENT, EVEN-PORT or
        RESERVATION-TOKEN; a server whose relay ports cannot listen on TCP answers 442."""
        if not hasattr(self.server.ports, "reserve_tcp"):
            return 442, "Unsupported Transport Protocol"
        if not stream:
            self.stats["tcp-allocate-over-udp"] += 1
            return 400, "Bad Request: a TCP allocation needs a TCP or TLS connection"
        for code, name in ((AttributeType.DONT_FRAGMENT, "DONT-FRAGMENT"), (AttributeType.EVEN_PORT, "EVEN-PORT"),
                           (AttributeType.RESERVATION_TOKEN, "RESERVATION-TOKEN")):
            if msg.has(code):
                return 400, f"Bad Request: {name} in a TCP allocation"
        return None

    def reserve(self, family: int) -> Address | None:
        ports: TcpRelayPorts = self.server.ports  # type: ignore[assignment]  # allocate_refusal checked it
        return ports.reserve_tcp(family)

    def release(self, relayed: Address) -> None:
        """A listening socket reserved and not used (e.g. of the wrong family: 440)."""
        ports: TcpRelayPorts = self.server.ports  # type: ignore[assignment]
        ports.release_tcp(relayed)

    def allocated(self, alloc: Allocation) -> None:
        self.by_relay[alloc.relayed] = alloc
        self.stats["tcp-allocate"] += 1

    def deleted(self, alloc: Allocation) -> None:
        """The allocation expired, was deleted or lost its control connection: all its connections close (RFC
        6062 §5.5) and its listening socket with them."""
        for conn in [c for c in self.conns.values() if c.alloc is alloc]:
            self._close(conn, "allocation deleted")
        self.by_relay.pop(alloc.relayed, None)
        ports: TcpRelayPorts = self.server.ports  # type: ignore[assignment]
        ports.release_tcp(alloc.relayed)

    # -------------------------------------------------------------------------------------------- requests

    def connect(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                username: str) -> Transmit | None:
        """RFC 6062 §5.2: 437 without an allocation on this connection (441 for another user, RFC 8656 §5), 400
        for a UDP allocation or without a valid XOR-PEER-ADDRESS, 443 for a peer of the other family, 403 for a
        peer the operator refuses or without a permission, 446 when a connection to that peer exists or is in
        progress, 486/508 over the quotas; else the server connects to the peer and answers when that is done
        (the CONNECTION-ID) or has failed (447). None: the response comes later."""
        server = self.server
        alloc = server._owned(now, local, client, msg, key, username)
        if isinstance(alloc, Transmit):
            return alloc
        if not alloc.tcp:
            return server._error(local, client, msg, 400, "Bad Request: Connect needs a TCP allocation", key=key)
        peer = msg.get(XorPeerAddress)
        if peer is None:
            return server._error(local, client, msg, 400, "Bad Request: no XOR-PEER-ADDRESS", key=key)
        if (":" in peer.host) != (":" in alloc.relayed[0]):
            return server._error(local, client, msg, 443, "Peer Address Family Mismatch", key=key)
        if peer.port == 0 or not server._peer_allowed(peer.host):
            self.stats["peer-forbidden"] += 1
            return server._error(local, client, msg, 403, "Forbidden", key=key)
        if self.config.connect_needs_permission and not server._permitted(alloc, peer.address, now):
            self.stats["tcp-connect-no-permission"] += 1
            return server._error(local, client, msg, 403, "Forbidden: no permission for this peer", key=key)
        if (alloc.relayed, peer.address) in self.by_pair:
            self.stats["tcp-connect-exists"] += 1
            return server._error(local, client, msg, *CONNECTION_ALREADY_EXISTS, key=key)
        quota = self._over_quota(alloc)
        if quota is not None:
            return server._error(local, client, msg, *quota, key=key)
        conn = self._new(alloc, peer.address, ConnState.CONNECTING, now + self.config.connect_timeout)
        conn.request = (msg.transaction_id, key)
        self.intents.append(ConnectPeer(alloc.relayed, peer.address))
        self.stats["tcp-connect"] += 1
        return None

    def connection_bind(self, now: float, local: Address, client: Address, msg: Message, key: IntegrityKey,
                        username: str) -> Transmit:
        """RFC 6062 §5.4: over UDP 400; without CONNECTION-ID, or one that names no peer data connection waiting
        for its bind, 400; from another user than the allocation's 441 (RFC 8656 §5); on a connection that holds
        an allocation (a control connection) 400. Else this connection is the client data connection: the success
        response goes out, then :class:`Splice`."""
        server = self.server
        if not server._stream:
            self.stats["tcp-bind-over-udp"] += 1
            return server._error(local, client, msg, 400, "Bad Request: ConnectionBind needs a TCP or TLS "
                                                          "connection", key=key)
        cid = msg.get(ConnectionId)
        conn = self.conns.get(cid.number) if cid is not None else None
        if cid is None or conn is None or conn.state is not ConnState.PENDING:
            self.stats["tcp-bind-unknown"] += 1
            return server._error(local, client, msg, 400, "Bad Request: no connection waits for this "
                                                          "CONNECTION-ID", key=key)
        if conn.alloc.username != username:
            self.stats["tcp-bind-wrong-user"] += 1
            return server._error(local, client, msg, 441, "Wrong Credentials", key=key)
        if (client, local) in server.allocations:
            self.stats["tcp-bind-on-control"] += 1
            return server._error(local, client, msg, 400, "Bad Request: ConnectionBind on a control connection",
                                 key=key)
        conn.state, conn.deadline = ConnState.BOUND, None
        out = server._ok(local, client, msg, [], key)
        self.intents.append(Splice(local, client, conn.alloc.relayed, conn.peer))
        self.stats["tcp-bind"] += 1
        return out

    # ----------------------------------------------------------------------------------------------- events

    def handle_event(self, now: float, event: TcpEvent) -> None:
        """What the I/O layer reports: a connection made, failed, accepted or closed. Nothing raises: an event
        about a connection the core no longer has is counted (and answered with :class:`CloseConnection` where
        something is still open)."""
        pair = (event.relayed, event.peer)
        conn = self.by_pair.get(pair)
        if isinstance(event, PeerAccepted):
            self._accepted(now, event)
        elif isinstance(event, PeerConnected):
            if conn is None or conn.state is not ConnState.CONNECTING:
                self.stats["tcp-connected-unknown"] += 1
                self.intents.append(CloseConnection(*pair, "no Connect waits for it"))
                return
            conn.state, conn.deadline = ConnState.PENDING, now + self.config.bind_timeout
            self.server._sweep_no_later_than(conn.deadline)
            self._answer_connect(conn, None)
            self.stats["tcp-peer-connected"] += 1
        elif isinstance(event, PeerConnectFailed):
            if conn is None or conn.state is not ConnState.CONNECTING:
                self.stats["tcp-connect-failed-unknown"] += 1
                return
            self.stats["tcp-connect-failed"] += 1
            self._answer_connect(conn, CONNECTION_TIMEOUT_OR_FAILURE)
            self._forget(conn)
        else:  # ConnectionClosed: one side ended, the other goes too (RFC 6062 §5.5)
            if conn is None:
                self.stats["tcp-closed-unknown"] += 1
                return
            self.stats["tcp-connection-closed"] += 1
            if conn.state is ConnState.CONNECTING:
                self._answer_connect(conn, CONNECTION_TIMEOUT_OR_FAILURE)
            self._close(conn, "the other side closed")

    def _accepted(self, now: float, event: PeerAccepted) -> None:
        """RFC 6062 §5.3: a connection to a relayed address is kept only from a peer with a permission (else
        closed at once), within the quotas; the client learns of it with a ConnectionAttempt indication and has
        ``bind_timeout`` to bind it."""
        pair = (event.relayed, event.peer)
        alloc = self.by_relay.get(event.relayed)
        reason = None
        if alloc is None or alloc.expires <= now:
            self.stats["tcp-accept-no-allocation"] += 1
            reason = "no allocation"
        elif not self.server._permitted(alloc, event.peer, now):
            self.stats["tcp-accept-no-permission"] += 1
            reason = "no permission"
        elif pair in self.by_pair:
            self.stats["tcp-accept-duplicate"] += 1
            reason = "duplicate"
        elif self._over_quota(alloc) is not None:
            reason = "quota"
        if reason is not None or alloc is None:
            self.intents.append(CloseConnection(*pair, reason or "no allocation"))
            return
        conn = self._new(alloc, event.peer, ConnState.PENDING, now + self.config.bind_timeout)
        ind = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION,
                      attributes=[XorPeerAddress(*event.peer), ConnectionId(conn.cid)])
        self.server._out.append(Transmit(alloc.client, ind.encode(fingerprint=True), alloc.server))
        self.stats["tcp-peer-accepted"] += 1

    # ----------------------------------------------------------------------------------------------- timers

    def deadlines(self) -> list[float]:
        return [c.deadline for c in self.conns.values() if c.deadline is not None]

    def handle_timeout(self, now: float) -> None:
        """RFC 6062 §5.2: a connection attempt past ``connect_timeout`` is 447; a peer data connection not bound
        within ``bind_timeout`` is closed (§5.2, §5.3)."""
        for conn in [c for c in self.conns.values() if c.deadline is not None and c.deadline <= now]:
            if conn.state is ConnState.CONNECTING:
                self.stats["tcp-connect-timeout"] += 1
                self._answer_connect(conn, CONNECTION_TIMEOUT_OR_FAILURE)
                self._close(conn, "connect timeout")
            else:
                self.stats["tcp-bind-timeout"] += 1
                self._close(conn, "no ConnectionBind in time")

    # -------------------------------------------------------------------------------------------- internals

    def _over_quota(self, alloc: Allocation) -> tuple[int, str] | None:
        if sum(1 for c in self.conns.values() if c.alloc is alloc) >= self.config.max_connections:
            self.stats["tcp-allocation-connections-full"] += 1
            return 508, "Insufficient Capacity: too many connections on this allocation"
        if sum(1 for c in self.conns.values() if c.alloc.username == alloc.username) >= self.config.user_connections:
            self.stats["tcp-user-quota"] += 1
            return 486, "Allocation Quota Reached: too many connections for this user"
        return None

    def _new(self, alloc: Allocation, peer: Address, state: ConnState, deadline: float) -> PeerConnection:
        cid = int.from_bytes(os.urandom(4), "big")
        while cid == 0 or cid in self.conns:
            cid = int.from_bytes(os.urandom(4), "big")
        conn = PeerConnection(cid, alloc, peer, state, deadline)
        self.conns[cid] = conn
        self.by_pair[conn.pair] = conn
        self.server._sweep_no_later_than(deadline)
        return conn

    def _answer_connect(self, conn: PeerConnection, error: tuple[int, str] | None) -> None:
        """The Connect response (RFC 6062 §5.2): success with CONNECTION-ID, or the error; on the control
        connection, signed with the request's key."""
        if conn.request is None:
            return
        tid, key = conn.request
        conn.request = None
        alloc = self.server.allocations.get((conn.alloc.client, conn.alloc.server))
        if alloc is not conn.alloc:
            self.stats["tcp-connect-answer-no-allocation"] += 1
            return
        req = Message(Method.CONNECT, MessageClass.REQUEST, tid)
        local, client = alloc.server, alloc.client
        if error is None:
            self.server._out.append(self.server._ok(local, client, req, [ConnectionId(conn.cid)], key))
        else:
            self.server._out.append(self.server._error(local, client, req, *error, key=key))

    def _forget(self, conn: PeerConnection) -> None:
        self.conns.pop(conn.cid, None)
        if self.by_pair.get(conn.pair) is conn:
            del self.by_pair[conn.pair]

    def _close(self, conn: PeerConnection, reason: str) -> None:
        self._forget(conn)
        self.intents.append(CloseConnection(conn.alloc.relayed, conn.peer, reason))


__all__ = [
    "CONNECTION_ALREADY_EXISTS",
    "CONNECTION_TIMEOUT_OR_FAILURE",
    "TCP",
    "CloseConnection",
    "ConnState",
    "ConnectPeer",
    "ConnectionClosed",
    "PeerAccepted",
    "PeerConnectFailed",
    "PeerConnected",
    "PeerConnection",
    "Splice",
    "TcpAllocationConfig",
    "TcpEvent",
    "TcpIntent",
    "TcpRelay",
    "TcpRelayPorts",
]
