"""TCP for the in-memory network, abstractly: segments with flags instead of byte streams, and a host stack that
does RFC 793 connection setup (three-way handshake and simultaneous open, §3.4), refusal by RST or ICMP, SYN
retransmission and data delivery. No sequence numbers, windows or loss recovery beyond the SYN: enough to decide
which TCP connections NATs let open (RFC 5382), which is what ICE-TCP (RFC 6544) needs of the simulation.

Several consumers may share one host's stack: a connection with a handler (given to :meth:`TcpStack.connect`, or
inherited from the listener that accepted it, :meth:`TcpStack.listen`) reports to it; the others to the stack's
``events``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ice.stun.attributes import Address


class TcpFlag(enum.Flag):
    """The TCP header flags the model uses (RFC 793 §3.1)."""

    NONE = 0
    SYN = enum.auto()
    ACK = enum.auto()
    RST = enum.auto()
    FIN = enum.auto()


@dataclass(frozen=True)
class Segment:
    """One TCP segment, or an ICMP error about one."""

    flags: TcpFlag
    data: bytes = b""
    isn: int = 0
    """The connection attempt it belongs to, as its initial sequence number names it: a new connect() is a new
    sequence space (conntrack judges a SYN by it), a retransmitted SYN is the same."""
    icmp: bool = False
    """An ICMP Destination Unreachable, Port Unreachable (RFC 5382 REQ-4) about a SYN sent to this segment's source,
    not a TCP segment (its flags are NONE)."""

    @property
    def bare_syn(self) -> bool:
        """A SYN without ACK: a connection's first segment (or a simultaneous open's)."""
        return not self.icmp and TcpFlag.SYN in self.flags and TcpFlag.ACK not in self.flags


SYN = Segment(TcpFlag.SYN)
SYN_ACK = Segment(TcpFlag.SYN | TcpFlag.ACK)
ACK = Segment(TcpFlag.ACK)
RST = Segment(TcpFlag.RST)
ICMP_UNREACHABLE = Segment(TcpFlag.NONE, icmp=True)


class TcpState(enum.Enum):
    """RFC 793 §3.2 states the model uses."""

    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(frozen=True)
class TcpConfig:
    """A host stack's SYN retransmission (Linux: 1 s, doubling, 6 retries)."""

    syn_rto: float = 1.0
    syn_retries: int = 6


TcpHandler = Callable[[str, "TcpConnection", bytes], None]
"""What one consumer of a stack is told about a connection, as the stack's ``events`` would record it: (kind,
connection, data) with kind ``established``, ``closed`` or ``data``. It runs at once, inside the stack's handling
of a segment or timer; it may send, connect and close."""


@dataclass
class TcpConnection:
    local: Address
    remote: Address
    state: TcpState
    passive: bool
    """Accepted by a listener (the remote opened it)."""
    isn: int = 0
    """Our initial sequence number (abstractly: which attempt this is)."""
    error: str | None = None
    """Why it closed before or after opening: ``rst``, ``icmp`` or ``timeout``."""
    received: bytearray = field(default_factory=bytearray)
    opened: bool = False
    """It reached ESTABLISHED at some point (a later close is a close, not a failed connect)."""
    retries: int = 0
    retransmit_at: float | None = None
    handler: TcpHandler | None = field(default=None, repr=False, compare=False)
    """Told what happens to this connection instead of the stack's ``events`` (its owner may replace it)."""

    @property
    def established(self) -> bool:
        return self.state is TcpState.ESTABLISHED


@dataclass
class TcpStack:
    """One host's TCP. Segments it sends queue in :meth:`poll_segment`; the network feeds what arrives to
    :meth:`handle_segment` and runs :meth:`handle_timeout` at :meth:`next_timeout`.

    A segment goes to the connection with its exact (local, remote) pair, else a bare SYN to a listener on its
    local address opens a passive connection, else the stack answers RST (RFC 793 §3.4, "Reset Generation")."""

    ip: str
    config: TcpConfig = TcpConfig()
    listeners: set[Address] = field(default_factory=set)
    connections: dict[tuple[Address, Address], TcpConnection] = field(default_factory=dict)
    outbox: deque[tuple[Address, Address, Segment]] = field(default_factory=deque)
    events: deque[tuple[str, TcpConnection, bytes]] | None = None
    """When a deque, what happens to connections without a handler is appended for a driver
    (:mod:`ice.sim.tcp_driver`): ("established", conn, b""), ("closed", conn, b"") and ("data", conn, bytes)."""
    accept_handlers: dict[Address, TcpHandler] = field(default_factory=dict)
    """Listening address -> the handler of every connection accepted there (set on it when its SYN arrives), so
    that several consumers can share one stack; listeners without one report through ``events``."""
    _isn: int = 0

    def listen(self, local: Address, on_accept: TcpHandler | None = None) -> None:
        """Accept connections on ``local``; with ``on_accept``, what happens to them goes to it."""
        self.listeners.add(local)
        if on_accept is not None:
            self.accept_handlers[local] = on_accept

    def unlisten(self, local: Address) -> None:
        """Stop accepting on ``local`` (the connections accepted there stay)."""
        self.listeners.discard(local)
        self.accept_handlers.pop(local, None)

    def connect(self, now: float, local: Address, remote: Address, handler: TcpHandler | None = None
                ) -> TcpConnection:
        """Open a connection from ``local`` (reusing the port, like SO_REUSEADDR) to ``remote``: send a SYN. A
        connection still open on that very pair is returned as it is (the kernel refuses a second one; its
        handler is left as it was). ``handler``: see :attr:`TcpConnection.handler`."""
        old = self.connections.get((local, remote))
        if old is not None and old.state is not TcpState.CLOSED:
            return old
        conn = TcpConnection(local, remote, TcpState.SYN_SENT, passive=False, isn=self._next_isn(),
                             retransmit_at=now + self.config.syn_rto, handler=handler)
        self.connections[(local, remote)] = conn
        self._emit(conn, TcpFlag.SYN)
        return conn

    def _next_isn(self) -> int:
        self._isn += 1
        return self._isn

    def _emit(self, conn: TcpConnection, flags: TcpFlag, data: bytes = b"") -> None:
        self.outbox.append((conn.local, conn.remote, Segment(flags, data, conn.isn)))

    def send(self, conn: TcpConnection, data: bytes) -> None:
        if not conn.established:
            raise ValueError(f"the connection {conn.local} -> {conn.remote} is {conn.state.value}, not established")
        self._emit(conn, TcpFlag.ACK, data)

    def close(self, conn: TcpConnection) -> None:
        """The application closes ``conn``: a FIN if it was open or opening from the peer's side (the model keeps no
        half-closed state: both ends are closed at once), nothing if it was still connecting (its SYN is forgotten)."""
        if conn.state in (TcpState.ESTABLISHED, TcpState.SYN_RECEIVED):
            self._emit(conn, TcpFlag.FIN | TcpFlag.ACK)
        conn.state, conn.retransmit_at = TcpState.CLOSED, None

    def abort(self, conn: TcpConnection, error: str = "rst") -> None:
        """``conn`` ends under the host, as when a middlebox resets it: closed with ``error``, nothing sent."""
        if conn.state is not TcpState.CLOSED:
            self._close(conn, error)

    def _note(self, kind: str, conn: TcpConnection, data: bytes = b"") -> None:
        if conn.handler is not None:
            conn.handler(kind, conn, data)
        elif self.events is not None:
            self.events.append((kind, conn, data))

    def _open(self, conn: TcpConnection) -> None:
        conn.state, conn.retransmit_at, conn.opened = TcpState.ESTABLISHED, None, True
        self._note("established", conn)

    def _data(self, conn: TcpConnection, data: bytes) -> None:
        if data:
            conn.received += data
            self._note("data", conn, data)

    def accepted(self) -> list[TcpConnection]:
        return [c for c in self.connections.values() if c.passive]

    def poll_segment(self) -> tuple[Address, Address, Segment] | None:
        return self.outbox.popleft() if self.outbox else None

    def _close(self, conn: TcpConnection, error: str | None) -> None:
        conn.state, conn.error, conn.retransmit_at = TcpState.CLOSED, error, None
        self._note("closed", conn)

    def handle_segment(self, now: float, local: Address, remote: Address, seg: Segment) -> None:
        conn = self.connections.get((local, remote))
        if conn is not None and conn.state is TcpState.CLOSED:
            conn = None
        if seg.icmp:  # a hard error while connecting (Linux: ECONNREFUSED); ignored once open
            if conn is not None and conn.state is TcpState.SYN_SENT:
                self._close(conn, "icmp")
            return
        if conn is None:
            if TcpFlag.RST in seg.flags:
                return
            if seg.bare_syn and local in self.listeners:
                conn = TcpConnection(local, remote, TcpState.SYN_RECEIVED, passive=True, isn=self._next_isn(),
                                     handler=self.accept_handlers.get(local))
                self.connections[(local, remote)] = conn
                self._emit(conn, TcpFlag.SYN | TcpFlag.ACK)
                return
            self.outbox.append((local, remote, RST))
            return
        if TcpFlag.RST in seg.flags:
            self._close(conn, "rst")
            return
        if TcpFlag.FIN in seg.flags and conn.state is not TcpState.SYN_SENT:
            self._data(conn, seg.data)
            self._close(conn, "fin")
            return
        if conn.state is TcpState.SYN_SENT:
            if TcpFlag.SYN in seg.flags and TcpFlag.ACK in seg.flags:
                self._open(conn)
                self._emit(conn, TcpFlag.ACK)
            elif seg.bare_syn:  # simultaneous open (RFC 793 §3.4, figure 8)
                conn.state = TcpState.SYN_RECEIVED
                self._emit(conn, TcpFlag.SYN | TcpFlag.ACK)
            return
        if conn.state is TcpState.SYN_RECEIVED:
            if TcpFlag.ACK in seg.flags:
                self._open(conn)
                if TcpFlag.SYN in seg.flags:
                    self._emit(conn, TcpFlag.ACK)
                self._data(conn, seg.data)
            return
        if TcpFlag.SYN in seg.flags:  # a retransmitted SYN-ACK: our ACK was lost
            self._emit(conn, TcpFlag.ACK)
        self._data(conn, seg.data)

    def next_timeout(self) -> float | None:
        times = [c.retransmit_at for c in self.connections.values() if c.retransmit_at is not None]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> None:
        """Retransmit a SYN whose time has come (doubling the wait), or give up after the configured retries."""
        for conn in list(self.connections.values()):  # a handler told of a timeout may connect
            if conn.retransmit_at is None or conn.retransmit_at > now:
                continue
            if conn.state is not TcpState.SYN_SENT:  # a simultaneous open's SYN-ACK is not retransmitted here
                conn.retransmit_at = None
                continue
            if conn.retries >= self.config.syn_retries:
                self._close(conn, "timeout")
                continue
            conn.retries += 1
            conn.retransmit_at = now + self.config.syn_rto * 2 ** conn.retries
            self._emit(conn, TcpFlag.SYN)
