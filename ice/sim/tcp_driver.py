"""ICE-TCP (RFC 6544) on the simulated network: an agent's TCP intents carried out on its host's
:class:`~ice.sim.tcp.TcpStack`, and a STUN server answering Binding over TCP, on the virtual clock.

:class:`SimTcpDriver` is the simulation's counterpart of :mod:`ice.aio.tcp`: :class:`TcpConnect` becomes a
connect() on the host's stack (from any port for an active candidate, from the candidate's own port for an so
one, which also listens), :class:`TcpSend` a write, :class:`TcpClose` a close; what the stack reports (open,
refused, closed, bytes read, an accepted connection) goes back to the agent as :class:`TcpConnected`,
:class:`TcpConnectFailed`, :class:`TcpClosed`, :meth:`IceAgent.handle_tcp_data` and :meth:`IceAgent.accept_tcp`.
Its server-reflexive TCP candidates come from a STUN Binding sent over a connection from the candidate's own port,
as :func:`ice.aio.tcp.tcp_stun_binding` does, answered by :class:`SimTcpStunServer`. Segments travel through the
topology's NATs with their TCP model (RFC 5382), so whether a connection opens is the NATs' doing.

Not modelled: ``TcpConnect.syn_ttl`` (the sim's links have no hop count), the byte stream's segmentation (a write
arrives as one read).
"""

from __future__ import annotations

import itertools
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ice.agent import IceAgent
from ice.agent.tcp import (
    TcpClose,
    TcpClosed,
    TcpConnect,
    TcpConnected,
    TcpConnectFailed,
    TcpDriven,
    TcpSend,
    TcpType,
)
from ice.sim.tcp import TcpConnection, TcpStack, TcpState
from ice.stun.attributes import Address, XorMappedAddress
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.server import StunServer, StunServerConfig
from ice.turn.framing import split_frames

EPHEMERAL_PORTS = 40000
"""Where an active candidate's connections get their source ports (counting up, per driver)."""


@dataclass
class _Binding:
    """A STUN Binding over TCP in progress: from ``base`` to ``server``."""

    base: Address
    server: Address
    tid: bytes
    buffer: bytearray = field(default_factory=bytearray)


class SimTcpDriver:
    """One agent's TCP on the simulated network (see the module docstring). Register it with
    ``SimNetwork.tcp_drivers`` so that it runs whenever the network has delivered something or
    run a timer."""

    def __init__(self, agent: IceAgent, stacks: dict[str, TcpStack], chunk: int = 0,
                 connects: list[tuple[float, TcpConnect]] | None = None, driven: TcpDriven | None = None) -> None:
        self.agent = agent
        self.driven: TcpDriven = driven or agent
        """Whose intents are carried out and who hears of the connections: the agent, or the ICE-over-TURN
        composition around it (its TURN TCP allocations' data connections too)."""
        self.chunk = chunk
        """Cut every write into pieces of this many bytes, each its own segment and read (0: whole): RFC 4571
        framing across reads."""
        self.connects = connects
        """When a list, every :class:`TcpConnect` is appended with its time."""
        self.stacks = stacks
        """The host's stacks by IP (each with its ``events`` recorded)."""
        for stack in stacks.values():
            if stack.events is None:
                stack.events = deque()
        self.conns: dict[int, TcpConnection] = {}
        """Agent connection id -> the stack's connection."""
        self._ids: dict[int, int] = {}
        """id(stack connection) -> agent connection id."""
        self._bindings: dict[int, _Binding] = {}
        """id(stack connection) -> the Binding it carries."""
        self._ports = itertools.count(EPHEMERAL_PORTS)
        self.stats: Counter[str] = agent.stats
        """The agent's counters: the driver adds ``tcp-srflx-failed`` and ``tcp-send-no-connection`` as the asyncio
        layer does."""
        self.on_gathered: Callable[[], None] | None = None
        """Called once when the last TCP Binding has ended (answered or failed)."""
        self._now = 0.0
        self._gathering = False

    # ------------------------------------------------------------------------------------------ candidates

    def add_candidates(self, ip: str, tcptypes: tuple[TcpType, ...], first_port: int) -> None:
        """A TCP host candidate of each type on ``ip``: passive and so ones listen on ports from ``first_port``."""
        for local, tcptype in self.open(ip, tcptypes, first_port):
            self.agent.add_tcp_host_candidate(local, tcptype)

    def open(self, ip: str, tcptypes: tuple[TcpType, ...], first_port: int) -> list[tuple[Address, TcpType]]:
        """The sockets of TCP host candidates of each type on ``ip`` (passive and so ones listen on ports from
        ``first_port``; an active one is the IP with port 0), not yet told to the agent (a network change tells
        it, :class:`~ice.agent.network.NetworkChange`'s ``tcp_hosts``)."""
        out: list[tuple[Address, TcpType]] = []
        port = first_port
        for tcptype in tcptypes:
            if tcptype is TcpType.ACTIVE:
                out.append(((ip, 0), tcptype))
                continue
            self.stacks[ip].listen((ip, port))
            out.append(((ip, port), tcptype))
            port += 1
        return out

    def listen_candidates(self) -> None:
        """Listen on every passive and so host candidate's address the agent has on one of the stacks (candidates
        added to the agent directly rather than by :meth:`add_candidates`)."""
        for c in self.agent.local_candidates:
            if c.transport == "tcp" and c.related is None and c.tcptype in ("passive", "so") \
                    and c.host in self.stacks:
                self.stacks[c.host].listen(c.address)

    def gather_server_reflexive(self, now: float, server: Address) -> None:
        """A STUN Binding over TCP from every passive and so base to ``server`` (RFC 6544 §4.1): each answer is a
        server-reflexive candidate of the base's tcptype. :attr:`on_gathered` runs when all have ended."""
        self._now = now
        self._gathering = True
        for base in self.agent.tcp_bases:
            if base[1] == 9 or base[0] not in self.stacks or (":" in base[0]) != (":" in server[0]):
                continue
            conn = self.stacks[base[0]].connect(now, base, server)
            self._bindings[id(conn)] = _Binding(base, server, secrets.token_bytes(12))
        self._check_gathered()

    def _check_gathered(self) -> None:
        if self._gathering and not self._bindings:
            self._gathering = False
            if self.on_gathered is not None:
                self.on_gathered()

    # ------------------------------------------------------------------------------------------------ pump

    def pump(self, now: float) -> None:
        """Feed the agent what its stacks did and carry out what it asked for, until neither has anything left."""
        self._now = now
        busy = True
        while busy:
            busy = False
            for stack in self.stacks.values():
                assert stack.events is not None
                while stack.events:
                    busy = True
                    kind, conn, data = stack.events.popleft()
                    self._stack_event(now, stack, kind, conn, data)
            while (intent := self.driven.poll_tcp()) is not None:
                busy = True
                self._intent(now, intent)

    def _stack_event(self, now: float, stack: TcpStack, kind: str, conn: TcpConnection, data: bytes) -> None:
        binding = self._bindings.get(id(conn))
        if binding is not None:
            self._binding_event(stack, kind, conn, data, binding)
            return
        cid = self._ids.get(id(conn))
        if kind == "established":
            if cid is not None:
                self.driven.handle_tcp_event(now, TcpConnected(cid))
            elif conn.passive:
                accepted = self.driven.accept_tcp(now, conn.local, conn.remote)
                if accepted is None:
                    stack.close(conn)
                else:
                    self.conns[accepted] = conn
                    self._ids[id(conn)] = accepted
        elif kind == "closed" and cid is not None:
            del self._ids[id(conn)]
            self.conns.pop(cid, None)
            event = TcpClosed(cid) if conn.opened else TcpConnectFailed(cid, conn.error or "closed")
            self.driven.handle_tcp_event(now, event)
        elif kind == "data" and cid is not None:
            self.driven.handle_tcp_data(now, cid, data)

    def _binding_event(self, stack: TcpStack, kind: str, conn: TcpConnection, data: bytes,
                       binding: _Binding) -> None:
        if kind == "established":
            request = Message(Method.BINDING, MessageClass.REQUEST, binding.tid)
            stack.send(conn, request.encode(fingerprint=True))
            return
        if kind == "data":
            binding.buffer += data
            for frame in split_frames(binding.buffer):
                try:
                    msg = parse(frame)
                except Exception:  # a malformed answer: the binding fails when the connection ends
                    continue
                xma = msg.get(XorMappedAddress)
                if msg.transaction_id == binding.tid and msg.message_class is MessageClass.SUCCESS \
                        and xma is not None:
                    self.agent.add_tcp_server_reflexive(binding.base, xma.address, binding.server[0])
                    del self._bindings[id(conn)]
                    stack.close(conn)
                    self._check_gathered()
                    return
            return
        self.stats["tcp-srflx-failed"] += 1  # closed (refused, timed out) before an answer
        del self._bindings[id(conn)]
        self._check_gathered()

    def _intent(self, now: float, intent: TcpConnect | TcpSend | TcpClose) -> None:
        if isinstance(intent, TcpSend):
            conn = self.conns.get(intent.conn)
            if conn is None or not conn.established:
                self.stats["tcp-send-no-connection"] += 1
            else:
                data, step = intent.data, self.chunk or len(intent.data) or 1
                for k in range(0, len(data), step):
                    self.stacks[conn.local[0]].send(conn, data[k:k + step])
        elif isinstance(intent, TcpClose):
            conn = self.conns.pop(intent.conn, None)
            if conn is not None:
                self._ids.pop(id(conn), None)
                self.stacks[conn.local[0]].close(conn)
        else:
            self._connect(now, intent)

    def _connect(self, now: float, intent: TcpConnect) -> None:
        if self.connects is not None:
            self.connects.append((now, intent))
        stack = self.stacks.get(intent.local[0])
        if stack is None:
            self.driven.handle_tcp_event(now, TcpConnectFailed(intent.conn, "no such local address"))
            return
        local = intent.local if intent.local[1] else (intent.local[0], next(self._ports))
        old = stack.connections.get((local, intent.remote))
        if old is not None and old.state is not TcpState.CLOSED:  # the kernel: this four-tuple is taken
            self.driven.handle_tcp_event(now, TcpConnectFailed(intent.conn, "address in use"))
            return
        conn = stack.connect(now, local, intent.remote)
        self.conns[intent.conn] = conn
        self._ids[id(conn)] = intent.conn


class SimTcpStunServer:
    """A STUN server's TCP side on the simulated network (RFC 8489 §6.2.2): it listens on ``listen`` and answers
    each Binding request on the connection it came on, with the connection's source as XOR-MAPPED-ADDRESS."""

    def __init__(self, stack: TcpStack, listen: Address) -> None:
        self.stack = stack
        if stack.events is None:
            stack.events = deque()
        stack.listen(listen)
        self.server = StunServer(StunServerConfig(listen, None, software="icelab sim"))
        self._buffers: dict[int, bytearray] = {}

    def pump(self, now: float) -> None:
        events = self.stack.events
        assert events is not None
        while events:
            kind, conn, data = events.popleft()
            if kind == "closed":
                self._buffers.pop(id(conn), None)
            if kind != "data":
                continue
            buffer = self._buffers.setdefault(id(conn), bytearray())
            buffer += data
            for frame in split_frames(buffer):
                self.server.handle_datagram(now, conn.local, conn.remote, frame)
                while (t := self.server.poll_transmit()) is not None:
                    if conn.established:
                        self.stack.send(conn, t.data)
