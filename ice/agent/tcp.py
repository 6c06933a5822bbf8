"""ICE-TCP (RFC 6544) for the sans-IO agent: TCP candidates, their priorities and pairing, RFC 4571 framing, and
the intents and events through which the agent and its driver share TCP connections.

Nothing here opens a socket or reads a clock. The agent asks for connections with :class:`TcpConnect` (an
active candidate's outgoing connection, or a simultaneous open from an ``so`` candidate's port), sends RFC 4571
frames with :class:`TcpSend` and ends connections with :class:`TcpClose`; the driver reports back with
:class:`TcpConnected`, :class:`TcpConnectFailed` and :class:`TcpClosed` (``IceAgent.handle_tcp_event``), hands
over accepted connections (``IceAgent.accept_tcp``) and the bytes it reads (``IceAgent.handle_tcp_data``).
"""

from __future__ import annotations

import enum
import struct
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ice.agent.candidate import TYPE_PREFERENCE, Candidate, CandidateType, foundation
from ice.stun.attributes import Address

DISCARD_PORT = 9
"""RFC 6544 §4.5: an active candidate's port is meaningless (the OS picks it per connection); it is signalled
as 9, the discard port."""

P = TypeVar("P")

MAX_FRAME = 0xFFFF
"""RFC 4571 §2: a frame's 16-bit length prefix bounds a frame to 65535 bytes."""


class TcpType(enum.Enum):
    """The ``tcptype`` of a TCP candidate (RFC 6544 §4.5)."""

    ACTIVE = "active"
    """Opens outgoing connections, never accepts."""
    PASSIVE = "passive"
    """Accepts incoming connections, never opens."""
    SO = "so"
    """Simultaneous open: both ends connect() to each other from their candidates' ports at once."""

    @classmethod
    def of(cls, candidate: Candidate) -> TcpType | None:
        """The candidate's tcptype; None for a UDP candidate or a TCP one whose tcptype is missing or unknown."""
        if candidate.transport != "tcp" or candidate.tcptype is None:
            return None
        try:
            return cls(candidate.tcptype)
        except ValueError:
            return None

    @property
    def opposite(self) -> TcpType:
        """The tcptype this one pairs with (RFC 6544 §6.2), and that of a peer-reflexive remote candidate learnt
        from a connection on a local candidate of this type (RFC 6544 §7.2)."""
        return {TcpType.ACTIVE: TcpType.PASSIVE, TcpType.PASSIVE: TcpType.ACTIVE, TcpType.SO: TcpType.SO}[self]


@dataclass(frozen=True)
class TcpConfig:
    """ICE-TCP settings of the agent (``AgentConfig.tcp``). Timers are seconds."""

    enabled: bool = False
    """Accept and pair remote TCP candidates. Off by default: an agent stays UDP-only unless asked."""
    direction_host: tuple[int, int, int] = (6, 4, 2)
    """RFC 6544 §4.2 direction-pref (0-7) of (active, passive, so) host, relayed and UDP-tunneled candidates: a
    direct connection needs no hole, so active (and passive) beat simultaneous open."""
    direction_nat: tuple[int, int, int] = (4, 2, 6)
    """RFC 6544 §4.2 direction-pref of (active, passive, so) server- and peer-reflexive candidates: through a NAT
    simultaneous open has the best chance, a passive candidate the least."""
    connect_timeout: float = 2.0
    """An outgoing connection not up after this long is abandoned (the driver is told to close it) and counts as
    a failed attempt; the kernel's own SYN schedule would wait minutes."""
    reconnect_interval: float = 0.1
    """The wait before a pair's second connection attempt; it doubles after every further failed attempt (up to
    ``reconnect_max_interval``). Reconnects are always paced: an unpaced connect loop can find a random-port
    NAT's mapping by brute force, and the result says nothing about the NAT."""
    reconnect_max_interval: float = 1.6
    connect_pace: float = 0.02
    """At least this long between any two connection attempts of the agent (RFC 8445 §6.1.4.2's Ta in spirit:
    retries across many pairs do not turn into a burst of SYNs)."""
    max_connect_attempts: int = 5
    """Connection attempts for one pair's checks; after the last one fails, the pair fails."""
    accept_idle: float = 10.0
    """An accepted connection on which no authenticated check has arrived after this long is closed: whoever
    opened it is not the peer (or gave up), and it holds one of ``AgentConfig.max_pairs`` accept slots."""
    max_frame: int = MAX_FRAME
    """Frames longer than this are skipped (counted), never buffered; at most RFC 4571's 65535."""
    so_syn_ttl: int | None = None
    """The controlled agent's simultaneous-open SYNs leave with this TTL (hops): enough to cross its own NAT and
    open the mapping, too few to reach the peer's NAT, which would answer with a RST that ends the mapping
    (STUNT's technique, for NATs that reset unsolicited SYNs). The peer's SYN then crosses the open mapping and
    meets the so port's pending connection or its listener. None: the default TTL. Needs a router between the
    NATs (a TTL that expires on one's own NAT opens nothing)."""
    stun_timeout: float = 2.0
    """The asyncio driver's bound on one STUN Binding over TCP (connect and answer) when it gathers a TCP
    server-reflexive candidate."""

    def __post_init__(self) -> None:
        if not all(0 <= d <= 7 for d in (*self.direction_host, *self.direction_nat)):
            raise ValueError("direction-pref is 0..7 (RFC 6544 section 4.2)")
        if self.connect_timeout <= 0 or self.reconnect_interval <= 0 or self.max_connect_attempts < 1 \
                or self.connect_pace < 0 or self.reconnect_max_interval < self.reconnect_interval:
            raise ValueError("connect_timeout and reconnect_interval > 0, max_connect_attempts >= 1, "
                             "connect_pace >= 0, reconnect_max_interval >= reconnect_interval")
        if not 1 <= self.max_frame <= MAX_FRAME:
            raise ValueError("max_frame is 1..65535 (RFC 4571 section 2)")

    def direction_pref(self, kind: CandidateType, tcptype: TcpType) -> int:
        """RFC 6544 §4.2: reflexive candidates take the NAT table, host and relayed ones the host table."""
        table = self.direction_nat if kind in (CandidateType.SERVER_REFLEXIVE, CandidateType.PEER_REFLEXIVE) \
            else self.direction_host
        return table[(TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO).index(tcptype)]

    def backoff(self, attempts: int) -> float:
        """The wait before the next attempt after ``attempts`` failed ones (paced, doubling, capped)."""
        return min(self.reconnect_interval * (1 << max(0, min(attempts - 1, 16))), self.reconnect_max_interval)


def tcp_local_preference(direction_pref: int, other_pref: int = 8191) -> int:
    """RFC 6544 §4.2: local preference = 2^13 * direction-pref + other-pref (other-pref 0..8191 plays the role
    of RFC 8445 §5.1.2.1's local preference among interfaces)."""
    if not 0 <= direction_pref <= 7 or not 0 <= other_pref <= 8191:
        raise ValueError("direction-pref is 0..7 and other-pref 0..8191 (RFC 6544 section 4.2)")
    return (direction_pref << 13) | other_pref


def tcp_candidate_priority(kind: CandidateType, tcptype: TcpType, other_pref: int = 8191, component: int = 1,
                           config: TcpConfig | None = None) -> int:
    """RFC 6544 §4.2 with RFC 8445 §5.1.2.1's formula: the type preferences are RFC 8445's (as in RFC 6544's own
    examples, e.g. 2128609279 for an active host candidate); the local preference carries the direction.

    A UDP candidate's local preference (65535 - n) is above any TCP one with the recommended direction-prefs (at
    most 6 * 8192 + 8191 = 57343), so of two candidates of one type UDP wins (RFC 6544 §4.2: UDP candidates may
    be preferred for their lower latency)."""
    cfg = config or TcpConfig()
    pref = tcp_local_preference(cfg.direction_pref(kind, tcptype), other_pref)
    if not 1 <= component <= 256:
        raise ValueError("component ID is 1..256")
    return (TYPE_PREFERENCE[kind] << 24) | (pref << 8) | (256 - component)


def tcp_pairable(local: Candidate, remote: Candidate) -> bool:
    """RFC 6544 §6.2: never across transports; for TCP, active pairs with passive, passive with active and so with
    so (a candidate without a known tcptype pairs with nothing)."""
    if local.transport != remote.transport:
        return False
    if local.transport != "tcp":
        return True
    mine, theirs = TcpType.of(local), TcpType.of(remote)
    return mine is not None and theirs is not None and theirs is mine.opposite


# ============================================================================================ RFC 4571 framing


def frame(data: bytes) -> bytes:
    """One RFC 4571 §2 frame: a 16-bit big-endian length, then ``data``. Raises ValueError past 65535 bytes (the
    agent checks first and counts such a send as dropped)."""
    if len(data) > MAX_FRAME:
        raise ValueError("an RFC 4571 frame carries at most 65535 bytes")
    return struct.pack("!H", len(data)) + data


@dataclass
class Rfc4571Framer:
    """Splits a TCP byte stream into RFC 4571 frames, whatever the reads' sizes (a length prefix may straddle two
    reads). Never raises: an empty frame or one over ``max_frame`` is skipped and counted in ``stats``, and the
    buffer never holds more than one frame's worth of bytes."""

    max_frame: int = MAX_FRAME
    stats: Counter[str] = field(default_factory=Counter)
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _skip: int = 0
    """Bytes of an oversized frame still to throw away."""

    def feed(self, data: bytes) -> list[bytes]:
        """The frames completed by ``data`` (possibly none)."""
        frames: list[bytes] = []
        view = memoryview(data)
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            view = view[n:]
        self._buffer += view
        buf = self._buffer
        start = 0
        while len(buf) - start >= 2:
            length = (buf[start] << 8) | buf[start + 1]
            if length == 0:
                self.stats["tcp-frame-empty"] += 1
                start += 2
                continue
            if length > self.max_frame:
                self.stats["tcp-frame-too-long"] += 1
                available = len(buf) - start - 2
                if available >= length:
                    start += 2 + length
                    continue
                self._skip = length - available
                start = len(buf)
                break
            if len(buf) - start - 2 < length:
                break
            frames.append(bytes(buf[start + 2:start + 2 + length]))
            start += 2 + length
        if start:
            del buf[:start]
        self.stats["tcp-frames"] += len(frames)
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buffer)


# ================================================================================ agent <-> driver, frozen


@dataclass(frozen=True)
class TcpConnect:
    """Intent: open connection ``conn`` from ``local`` to ``remote``. ``local`` port 0: any port (an active
    candidate, RFC 6544 §4.5); otherwise bind that port with SO_REUSEADDR/SO_REUSEPORT first (the ``so``
    candidate's port, which also listens): with ``simultaneous`` both ends do this at once (RFC 6544 §7.1, TCP
    simultaneous open, RFC 9293 §3.5). Answer with :class:`TcpConnected` or :class:`TcpConnectFailed`."""

    conn: int
    local: Address
    remote: Address
    simultaneous: bool = False
    syn_ttl: int | None = None
    """Send the SYN with this IP TTL (hop limit), then restore the default (``TcpConfig.so_syn_ttl``)."""
    relayed: Address | None = None
    """Not for a socket: connect through the TURN TCP allocation whose relayed transport address this is (an active
    relayed candidate, RFC 6544 §5.3 with RFC 6062 §4.3). The ICE-over-TURN composition
    (:class:`~ice.relayed.RelayedAgent`) carries it out; a driver never sees one."""


@dataclass(frozen=True)
class TcpSend:
    """Intent: write ``data`` (already RFC 4571-framed) on connection ``conn``."""

    conn: int
    data: bytes


@dataclass(frozen=True)
class TcpClose:
    """Intent: close connection ``conn`` (an abandoned attempt, a duplicate, or the agent closing)."""

    conn: int


TcpIntent = TcpConnect | TcpSend | TcpClose


@dataclass(frozen=True)
class TcpConnected:
    """Event: the connection asked for with :class:`TcpConnect` is up."""

    conn: int


@dataclass(frozen=True)
class TcpConnectFailed:
    """Event: the connection asked for could not be opened (refused, unreachable, address in use, ...)."""

    conn: int
    reason: str


@dataclass(frozen=True)
class TcpClosed:
    """Event: an established connection ended (FIN or RST from the peer, or a write error)."""

    conn: int


TcpEvent = TcpConnected | TcpConnectFailed | TcpClosed


class TcpDriven(Protocol):
    """What a TCP driver calls: the agent itself, or the ICE-over-TURN composition
    (:class:`~ice.relayed.RelayedAgent`), which also has the TURN TCP allocations' data connections."""

    def poll_tcp(self) -> TcpIntent | None: ...

    def handle_tcp_event(self, now: float, event: TcpEvent) -> None: ...

    def handle_tcp_data(self, now: float, conn_id: int, data: bytes) -> None: ...

    def accept_tcp(self, now: float, local: Address, remote: Address) -> int | None: ...


# ========================================================================================== agent-side state


class ConnState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    CLOSED = "closed"


@dataclass(eq=False)
class TcpConn:
    """One TCP connection as the agent sees it. ``base`` is the agent's base address of the local candidate it
    belongs to (an active candidate's is its signalled address, port 9); ``remote`` the peer's end."""

    id: int
    base: Address
    remote: Address
    outgoing: bool
    framer: Rfc4571Framer
    state: ConnState = ConnState.CONNECTING
    started_at: float | None = None
    """When the driver was asked for it (None: not yet, it waits for ``due_at`` and the pacing)."""
    due_at: float = 0.0
    pending: list[bytes] = field(default_factory=list)
    """Frames waiting for the connection to come up."""


@dataclass
class TcpState(Generic[P]):
    """The agent's ICE-TCP bookkeeping (``IceAgent._tcp``): bases, pair index, connections, retries."""

    bases: dict[Address, Candidate] = field(default_factory=dict)
    """Local TCP candidates' bases (a separate address space from the UDP bases: ports may coincide)."""
    pairs: dict[tuple[Address, Address], P] = field(default_factory=dict)
    """(base, remote) -> TCP pair (the UDP pairs are in ``IceAgent._pairs_by_key``)."""
    conns: dict[int, TcpConn] = field(default_factory=dict)
    pair_conn: dict[P, TcpConn] = field(default_factory=dict)
    """Pair -> the connection its checks and data use (RFC 6544 §7.1: one connection per pair)."""
    attempts: dict[P, int] = field(default_factory=dict)
    """Pair -> connection attempts made for it."""
    next_connect_at: float = 0.0
    pruned: int = 0
    """Pairs not formed because their local candidate is passive (RFC 6544 §6.2): while there are any, the peer
    may still connect to us, so ICE does not fail for want of pairs (as an ICE-lite agent waits for checks); the
    application's own deadline (``Connection.connect``'s timeout) bounds the wait."""
    next_id: int = 1
    out: deque[TcpIntent] = field(default_factory=deque)
    rx: TcpConn | None = None
    """The connection whose frame the agent is handling (answers and triggered checks go back on it)."""
    early: list[tuple[int, Address, Address, int, bool]] = field(default_factory=list)
    """Checks that arrived on a connection before the remote credentials: (conn, local, remote, priority, use)."""
    relay_of: dict[Address, Address] = field(default_factory=dict)
    """An active relayed candidate's base (the relayed IP with port 9) -> its allocation's relayed address."""


def tcp_foundation_transport(tcptype: TcpType) -> str:
    """The transport part of a TCP candidate's foundation: RFC 8445 §5.1.1.3 gives candidates of different
    transports different foundations; the tcptype is part of it too, as an active and a passive candidate on one
    address are different paths (one connects, one accepts)."""
    return f"tcp-{tcptype.value}"


def tcp_candidate(kind: CandidateType, tcptype: TcpType, address: Address, component: int = 1,
                  other_pref: int = 8191, related: Address | None = None, server_ip: str | None = None,
                  config: TcpConfig | None = None) -> Candidate:
    """A local TCP candidate (RFC 6544 §4): its priority (§4.2), foundation and ``tcptype``; an active one is
    signalled with port 9 (§4.5), whatever ``address`` says."""
    port = DISCARD_PORT if tcptype is TcpType.ACTIVE else address[1]
    base_ip = related[0] if related is not None else address[0]
    return Candidate(foundation(kind, base_ip, server_ip, tcp_foundation_transport(tcptype)), component, "tcp",
                     tcp_candidate_priority(kind, tcptype, other_pref, component, config), address[0], port, kind,
                     related=related, tcptype=tcptype.value)
