"""The in-memory network: the nodes, links, NATs, addresses and routes of a :class:`TopologySpec`, a virtual clock,
seeded impairments.

Given a spec, every datagram is forwarded hop by hop as the kernel lab forwards it (:class:`ice.topology.fabric.
Fabric`): a NAT node translates what it forwards from LAN to WAN and what arrives for its own WAN address
(:class:`SimNat`, generated from the node's :class:`NatBehaviour`), hairpins what its LAN sends to its own WAN
address when it hairpins (RFC 4787 §6), and drops the rest; hosts deliver to the endpoint bound at the destination
address; each link's conditions (bandwidth, loss, delay, jitter) apply when the packet crosses it. Bandwidth is the
lab's token bucket filter as a model (:class:`~ice.topology.spec.TokenBucket`, one per direction): a packet waits
until the bucket holds its frame's length and is dropped when that wait means a queue longer than the filter's.
Without a spec every address is directly reachable (the agent tests' flat network).

TCP segments (:mod:`ice.sim.tcp`, abstract: flags, no byte stream) travel the same way through
:meth:`SimNetwork.send_segment`: NATs translate them with their TCP model (RFC 5382) and may answer an unsolicited
SYN with a RST or ICMP error of their own, and each host's :class:`TcpStack` (:meth:`SimNetwork.add_tcp`) takes what
arrives; a host without one answers RST, as a kernel with nothing listening does.

A *stream* (:meth:`SimNetwork.add_stream`) carries an endpoint's datagrams over one of those TCP connections, as
the asyncio driver's streams do (RFC 8489 §6.2.2, RFC 8656 §12.5: STUN and padded ChannelData back to back): a
transmit from the stream's local address to its remote one is written to the connection, and what is read from it
is cut into frames, each delivered to the endpoint at the local address. A TURN server's TCP side
(:mod:`ice.sim.turn_tcp`, :meth:`SimNetwork.add_turn_server` with ``tcp``) writes its answers the same way.

Agents and servers alike are driven through the endpoint contract (:mod:`ice.endpoint`): what arrives is fed with
``handle_datagram``, what they send is drained with ``poll_transmit``, and each timer runs at its
``next_timeout``.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ice.agent.events import Event
from ice.nat.behaviour import NatBehaviour
from ice.sim.nat import SimNat
from ice.sim.tcp import RST, Segment, TcpConfig, TcpConnection, TcpFlag, TcpStack, TcpState
from ice.sim.turn_tcp import SimTcpTurnServer
from ice.stun.attributes import Address
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import Transmit
from ice.topology.fabric import MAX_HOPS, Fabric, Interface
from ice.topology.spec import WIRE_OVERHEAD, LinkConditions, LossMode, NodeKind, TokenBucket, TopologySpec
from ice.turn.framing import frame_length
from ice.turn.server import TurnServer, TurnServerConfig


class Endpoint(Protocol):
    """What the network drives, the endpoint contract (:mod:`ice.endpoint`) with agent events: an IceAgent, anything
    that behaves like one (e.g. a RelayedAgent), or a server (which emits no events)."""

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None: ...

    def handle_timeout(self, now: float) -> None: ...

    def next_timeout(self) -> float | None: ...

    def poll_transmit(self) -> Transmit | None: ...

    def next_event(self) -> Event | None: ...


class _Timed(Protocol):
    def handle_timeout(self, now: float) -> None: ...

    def next_timeout(self) -> float | None: ...


class _Pumped(Protocol):
    def pump(self, now: float) -> None: ...


class _Agent(Protocol):
    def add_host_candidate(self, local: Address) -> object: ...


@dataclass
class _Packet:
    """A datagram on its way: where it is, as whom, and what crossing links did to it."""

    src: Address
    dst: Address
    delay: float = 0.0
    lost: bool = False
    size: int = 0
    """The frame's length on a link (payload, UDP, IPv4 and Ethernet headers): what a shaper counts."""


@dataclass
class _Shaper:
    """One direction of a shaped link: the token bucket's content when the last frame left, and when that was."""

    tokens: float
    at: float = 0.0

    def depart(self, bucket: TokenBucket, arrival: float, size: int) -> float | None:
        """When a frame of ``size`` bytes arriving at ``arrival`` leaves (frames leave in order); None when the
        filter's queue would hold more than its limit ahead of it (tbf drops it)."""
        rate = bucket.rate_bytes_per_s
        start = max(arrival, self.at)
        tokens = min(float(bucket.burst_bytes), self.tokens + (start - self.at) * rate)
        wait = max(0.0, (size - tokens) / rate)
        leaves = start + wait
        if (leaves - arrival) * rate > bucket.limit_bytes:
            return None
        self.tokens, self.at = tokens + wait * rate - size, leaves
        return leaves


@dataclass
class SimStream:
    """A TCP connection that carries an endpoint's datagrams (see the module docstring)."""

    stack: TcpStack
    conn: TcpConnection
    read: bool = True
    """The network reads it and delivers its frames; False: its owner reads it (a server's accepted connection:
    only the transmits are routed onto it)."""
    queued: list[bytes] = field(default_factory=list)
    """Written before the connection was established."""
    buffer: bytearray = field(default_factory=bytearray)
    """Read and not yet a whole frame."""


@dataclass
class SimNetwork:
    spec: TopologySpec | None = None
    """The topology to realise (None: a flat network where every address reaches every other)."""
    latency: float = 0.001
    """One-way delay of every packet, seconds (on top of its links' delays)."""
    jitter: float = 0.0
    loss: float = 0.0
    """Loss of every packet, wherever it goes (on top of its links' loss)."""
    seed: int = 0
    now: float = 0.0
    agents: dict[Address, Endpoint] = field(default_factory=dict)
    servers: dict[Address, StunServer] = field(default_factory=dict)
    turn_servers: dict[Address, TurnServer] = field(default_factory=dict)
    relays: dict[Address, TurnServer] = field(default_factory=dict)
    nats: dict[str, SimNat] = field(default_factory=dict)
    """NAT node name -> its model (built from the spec's behaviours)."""
    delivered: int = 0
    dropped: int = 0
    trace: list[tuple[float, str, Address, Address]] | None = None
    """When a list, every packet's fate is appended: (time, "sent"/"dropped"/"delivered", src, dst)."""
    on_event: Callable[[Endpoint, Event], None] | None = None
    """Called with every agent event as virtual time advances (signalling, trickle ICE)."""
    drop_if: Callable[[Address, Address, bytes], bool] | None = None
    """Extra drop rule (src, dst, data) -> True to drop, applied before routing (e.g. a dead path)."""
    sent: list[tuple[float, Address, Address, bytes]] | None = None
    """When a list, every datagram an agent sends is appended: (time, src, dst, data)."""
    extra_loss: dict[int, float] = field(default_factory=dict)
    """Link index -> loss on top of the link's own conditions (a timeline changes it mid-run)."""
    link_overrides: dict[int, LinkConditions] = field(default_factory=dict)
    """Link index -> conditions that replace the spec's (a timeline's ``link`` step sets them mid-run)."""
    tcp: dict[str, TcpStack] = field(default_factory=dict)
    """Host IP -> its TCP stack (:meth:`add_tcp`)."""
    segment_rule: Callable[[Address, Address, Segment], str | None] | None = None
    """Extra rule for a bare SYN arriving at a host, (src, dst, segment) -> "drop" (silently: a blackhole) or "rst"
    (refused: the host answers RST), None to deliver it."""
    tcp_drivers: list[_Pumped] = field(default_factory=list)
    """What runs the TCP stacks' applications (:mod:`ice.sim.tcp_driver`): pumped before the endpoints drain."""
    streams: dict[tuple[Address, Address], SimStream] = field(default_factory=dict)
    """(local, remote) -> the TCP connection that carries an endpoint's transmits between them (:meth:`add_stream`)."""
    stream_stats: Counter[str] = field(default_factory=Counter)
    """``stream-closed`` (a stream ended and was forgotten), ``stream-garbage`` (neither STUN nor ChannelData was
    read: the stream is closed), ``stream-dropped`` (a transmit to a stream that had closed)."""
    turn_tcp: dict[Address, SimTcpTurnServer] = field(default_factory=dict)
    """A TURN server's listening address -> its TCP side (:meth:`add_turn_server` with ``tcp``)."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, Address, Address, bytes | Segment]] = []
        self._answers: list[tuple[Address, Address, Segment]] = []
        self._seq = 0
        self._nth: dict[tuple[int, str], int] = {}
        self._shapers: dict[tuple[int, str], _Shaper] = {}
        self._relay_port = 49152
        self.fabric = Fabric(self.spec) if self.spec is not None else None
        if self.spec is not None:
            for node in self.spec.nodes:
                if node.kind is NodeKind.NAT and node.nat is not None:
                    self.set_nat(node.name, node.nat)

    # ------------------------------------------------------------------------------------------ building

    def set_nat(self, node: str, behaviour: NatBehaviour) -> SimNat:
        """(Re)build the model of NAT node ``node`` with ``behaviour``: every binding is new afterwards, as after
        the lab reloads that NAT's rules and flushes its conntrack table."""
        assert self.fabric is not None, "a flat network has no NATs"
        nat = SimNat(behaviour, self.fabric.wan_address(node), seed=self._rng.getrandbits(32))
        self.nats[node] = nat
        return nat

    def add_agent(self, agent: _Agent, *addresses: Address) -> None:
        """An agent with a host candidate on each address."""
        for a in addresses:
            self.agents[a] = agent  # type: ignore[assignment]
            agent.add_host_candidate(a)

    def add_endpoint(self, endpoint: Endpoint, *addresses: Address) -> None:
        """Deliver what arrives on these addresses to ``endpoint`` (no candidates are added)."""
        for a in addresses:
            self.agents[a] = endpoint

    def add_turn_server(self, listen: Address, users: dict[str, str], tcp: bool = False) -> TurnServer:
        """A TURN server (which answers Binding too); relayed addresses share its IP. With ``tcp`` it also listens
        on TCP at ``listen`` (RFC 8656 §3.1) on the host's stack, and serves TCP allocations (RFC 6062): its relay
        ports listen on TCP too (:class:`~ice.turn.tcp_allocation.TcpRelayPorts`), and a
        :class:`~ice.sim.turn_tcp.SimTcpTurnServer` in :attr:`tcp_drivers` does the I/O."""
        network = self

        class Ports:
            def reserve(self, family: int) -> Address | None:
                network._relay_port += 1  # across restarts too: a new server does not reuse the old ports
                relayed = (listen[0], network._relay_port)
                network.relays[relayed] = server
                return relayed

            def release(self, relayed: Address) -> None:
                network.relays.pop(relayed, None)

        class TcpPorts(Ports):
            def reserve_tcp(self, family: int) -> Address | None:
                network._relay_port += 1
                relayed = (listen[0], network._relay_port)
                io.open_relayed(relayed)
                return relayed

            def release_tcp(self, relayed: Address) -> None:
                io.close_relayed(relayed)

        server = TurnServer(TurnServerConfig(listen, users=users, software="icelab sim"),
                            TcpPorts() if tcp else Ports())
        self.turn_servers[listen] = server
        if tcp:
            io = SimTcpTurnServer(self, server, self.tcp.get(listen[0]) or self.add_tcp(listen[0]), listen)
            self.turn_tcp[listen] = io
            self.tcp_drivers.append(io)
        return server

    def restart_turn_server(self, listen: Address) -> TurnServer:
        """The TURN server at ``listen`` restarts: a new one, without the old one's allocations, relayed addresses
        or TCP connections."""
        old = self.turn_servers[listen]
        for relayed in [r for r, server in self.relays.items() if server is old]:
            del self.relays[relayed]
        io = self.turn_tcp.pop(listen, None)
        if io is not None:
            io.close()
            self.tcp_drivers.remove(io)
        return self.add_turn_server(listen, dict(old.config.users), tcp=io is not None)

    def add_tcp(self, ip: str, config: TcpConfig | None = None) -> TcpStack:
        """A TCP stack for the host address ``ip`` (segments to that address go to it)."""
        stack = self.tcp[ip] = TcpStack(ip, config or TcpConfig())
        return stack

    def add_stun_server(self, primary: Address, alternate: Address | None = None) -> StunServer:
        server = StunServer(StunServerConfig(primary, alternate, software="icelab sim"))
        for local in server.config.local_addresses:
            self.servers[local] = server
        return server

    # ------------------------------------------------------------------------------------------- streams

    def add_stream(self, local: Address, remote: Address) -> TcpConnection:
        """Carry the transmits of the endpoint at ``local`` (registered with :meth:`add_endpoint`) to ``remote`` on
        a new TCP connection from ``local`` (on the stack of its IP, made if missing): what is written before it
        opens waits; each frame read from it is delivered with ``handle_datagram(now, local, remote, frame)``. It
        is forgotten when it closes (``stream-closed``)."""
        stack = self.tcp.get(local[0]) or self.add_tcp(local[0])
        old = stack.connections.get((local, remote))
        if old is not None and old.state is not TcpState.CLOSED:
            raise ValueError(f"a connection {local} -> {remote} is open already")
        conn = stack.connect(self.now, local, remote, handler=self._stream_event)
        self.streams[(local, remote)] = SimStream(stack, conn)
        return conn

    def attach_stream(self, stack: TcpStack, conn: TcpConnection) -> None:
        """Route the transmits from ``conn.local`` to ``conn.remote`` onto ``conn`` (of ``stack``), which its
        owner reads (a server's accepted connection); :meth:`remove_stream` when it ends."""
        self.streams[(conn.local, conn.remote)] = SimStream(stack, conn, read=False)

    def remove_stream(self, local: Address, remote: Address) -> None:
        """Forget a stream without closing its connection (transmits between them are datagrams again)."""
        self.streams.pop((local, remote), None)

    def transmit(self, t: Transmit) -> None:
        """Send what an endpoint polled: on its stream if ``(t.local, t.remote)`` is one, else as a datagram."""
        assert t.local is not None, "every endpoint in the simulation names its local address"
        stream = self.streams.get((t.local, t.remote)) if self.streams else None
        if stream is None:
            if self.trace is not None:
                self.trace.append((self.now, "sent", t.local, t.remote))
            self.send(t.local, t.remote, t.data)
        elif stream.conn.established:
            stream.stack.send(stream.conn, t.data)
        elif stream.conn.state is TcpState.CLOSED:
            self.stream_stats["stream-dropped"] += 1
            self._forget_stream(stream)
        else:
            stream.queued.append(t.data)

    def _forget_stream(self, stream: SimStream) -> None:
        key = (stream.conn.local, stream.conn.remote)
        if self.streams.get(key) is stream:
            del self.streams[key]
            self.stream_stats["stream-closed"] += 1

    def _stream_event(self, kind: str, conn: TcpConnection, data: bytes) -> None:
        """The handler of the connections :meth:`add_stream` opened."""
        stream = self.streams.get((conn.local, conn.remote))
        if stream is None or stream.conn is not conn:
            return  # forgotten
        if kind == "established":
            for queued in stream.queued:
                stream.stack.send(conn, queued)
            stream.queued.clear()
        elif kind == "data":
            stream.buffer += data
            endpoint = self._endpoint_at(conn.local)
            while True:
                try:
                    n = frame_length(stream.buffer)
                except ValueError:
                    self.stream_stats["stream-garbage"] += 1
                    stream.stack.close(conn)
                    self._forget_stream(stream)
                    return
                if n is None or n > len(stream.buffer):
                    return
                frame = bytes(stream.buffer[:n])
                del stream.buffer[:n]
                if endpoint is not None:
                    endpoint.handle_datagram(self.now, conn.local, conn.remote, frame)
        else:
            self._forget_stream(stream)

    # ------------------------------------------------------------------------------------------- routing

    def send(self, src: Address, dst: Address, data: bytes) -> None:
        """Route one datagram; it arrives after the latency, its links' delays and jitter unless something drops
        it (a NAT, a missing route, loss)."""
        packet = None if self.drop_if is not None and self.drop_if(src, dst, data) else \
            self._route(src, dst, len(data) + WIRE_OVERHEAD)
        self._enqueue(src, dst, data, packet)

    def send_segment(self, src: Address, dst: Address, seg: Segment) -> None:
        """Route one TCP segment as :meth:`send` routes a datagram; a NAT's own answer to it (RST or ICMP for an
        unsolicited SYN, RFC 5382 REQ-4) is sent back from the NAT's public address."""
        self._enqueue(src, dst, seg, self._route(src, dst, WIRE_OVERHEAD + len(seg.data), seg))
        answers, self._answers = self._answers, []
        for frm, to, answer in answers:
            self.send_segment(frm, to, answer)

    def _enqueue(self, src: Address, dst: Address, data: bytes | Segment, packet: _Packet | None) -> None:
        lost = packet is None or packet.lost or (bool(self.loss) and self._rng.random() < self.loss)
        if packet is None or lost:
            self.dropped += 1
            if self.trace is not None:
                self.trace.append((self.now, "dropped", src, dst))
            return
        delay = self.latency + packet.delay + (self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        self._seq += 1
        heapq.heappush(self._queue, (self.now + max(0.0, delay), self._seq, packet.src, packet.dst, data))

    def _cross(self, packet: _Packet, links: tuple[int, ...], into: str) -> None:
        """What the links' conditions do to a packet crossing them towards node ``into``."""
        assert self.spec is not None
        for i in links:
            extra = self.extra_loss.get(i)
            if extra:
                packet.lost = packet.lost or self._rng.random() < extra
            c: LinkConditions | None = self.link_conditions(i)
            if c is None:
                continue
            bucket = c.token_bucket()
            if bucket is not None and not packet.lost:  # the sender's egress shapes it before the wire delays it
                shaper = self._shapers.setdefault((i, into), _Shaper(float(bucket.burst_bytes), self.now))
                arrival = self.now + packet.delay
                leaves = shaper.depart(bucket, arrival, packet.size)
                if leaves is None:
                    packet.lost = True
                else:
                    packet.delay += leaves - arrival
            if c.delay_ms:
                spread = self._rng.uniform(-c.jitter_ms, c.jitter_ms) if c.jitter_ms else 0.0
                packet.delay += (c.delay_ms + spread) / 1000
            if c.loss:
                if c.loss_mode is LossMode.NTH:  # every round(1/loss)-th packet at each end's ingress, as nft does
                    n = self._nth.get((i, into), 0)
                    self._nth[(i, into)] = n + 1
                    packet.lost = packet.lost or n % round(1 / c.loss) == 0
                else:
                    packet.lost = packet.lost or self._rng.random() < c.loss

    def link_conditions(self, i: int) -> LinkConditions | None:
        """Link ``i``'s conditions now: a timeline's override, else the spec's."""
        assert self.spec is not None
        return self.link_overrides.get(i) or self.spec.links[i].conditions

    def _route(self, src: Address, dst: Address, size: int = 0, seg: Segment | None = None
               ) -> _Packet | None:
        """Forward hop by hop from the node that owns ``src`` to the host that owns the (translated) destination:
        the packet as it arrives there, or None if a NAT or a missing route drops it. ``seg``: the packet is that
        TCP segment (NATs use their TCP model; a NAT's answer to it is left in ``_answers``)."""
        fabric = self.fabric
        if fabric is None:
            return _Packet(src, dst) if seg is not None or self._bound(dst) else None
        now = self.now
        packet = _Packet(src, dst, size=size)
        node = fabric.owner(src[0])
        ingress: Interface | None = None
        translated_in = False
        for _ in range(MAX_HOPS):
            if node is None:
                return None
            kind = fabric.node(node).kind
            nat = self.nats.get(node)
            if fabric.owner(packet.dst[0]) == node:
                if kind is NodeKind.HOST:
                    return packet if seg is not None or self._bound(packet.dst) else None
                if nat is None or ingress is None or translated_in:
                    return None
                if seg is not None:  # TCP (RFC 5382): to a tracked connection, a binding's filter, or answered
                    if ingress.role != "wan":
                        return None  # TCP hairpinning is not modelled
                    verdict = nat.tcp_inbound(now, packet.src, packet.dst[1], seg)
                    if verdict.to is None:
                        if verdict.answer is not None:
                            self._answers.append((packet.dst, packet.src, verdict.answer))
                        return None
                    packet.dst = verdict.to
                elif ingress.role == "wan":  # inbound to one of our bindings (RFC 4787 §5 filtering)
                    seen = nat.inbound_seen(now, packet.src, packet.dst[1])
                    if seen is None:
                        return None
                    packet.src, packet.dst = seen
                else:  # hairpin (RFC 4787 §6): to the binding's internal endpoint, from the sender's binding
                    routed = nat.hairpin_route(now, packet.src, packet.dst[1])
                    if routed is None:
                        return None
                    packet.src, packet.dst = routed
                translated_in = True
                continue
            if ingress is not None and kind is NodeKind.HOST:
                return None  # hosts do not forward
            hop = fabric.step(node, packet.dst[0])
            if hop is None:
                return None
            if nat is not None and ingress is not None and not translated_in:
                if ingress.role == "lan" and hop.egress.role == "wan" and seg is not None:
                    ext = nat.tcp_outbound(now, packet.src, packet.dst, seg)
                    if ext is None:
                        return None
                    packet.src = ext
                elif ingress.role == "lan" and hop.egress.role == "wan":
                    routed = nat.outbound_to(now, packet.src, packet.dst)
                    if routed is None:
                        return None
                    packet.src, packet.dst = routed
                    hop = fabric.step(node, packet.dst[0])  # a disguised remote may change where it goes
                    if hop is None:
                        return None
                elif ingress.role == "wan" and hop.egress.role == "lan":
                    return None  # nothing unsolicited crosses a NAT inwards
            self._cross(packet, hop.links, hop.next_node)
            node, ingress, translated_in = hop.next_node, hop.ingress, False
        return None

    def _bound(self, dst: Address) -> bool:
        return self._endpoint_at(dst) is not None

    def _endpoint_at(self, dst: Address) -> Endpoint | None:
        """Whoever receives what arrives at ``dst``: a server (on a listening or relayed address) or an agent."""
        for where in (self.turn_servers, self.relays, self.servers, self.agents):
            endpoint: Endpoint | None = where.get(dst)
            if endpoint is not None:
                return endpoint
        return None

    # --------------------------------------------------------------------------------------------- clock

    def _collect(self) -> None:
        """Drain every endpoint: its events (the agents'), then what it sends."""
        for driver in self.tcp_drivers:
            driver.pump(self.now)
        agents = {id(a) for a in self.agents.values()}
        for endpoint in self._unique_endpoints():
            if self.on_event is not None:
                while (ev := endpoint.next_event()) is not None:
                    self.on_event(endpoint, ev)
            agent = id(endpoint) in agents
            while (t := endpoint.poll_transmit()) is not None:
                assert t.local is not None, "every endpoint in the simulation names its local address"
                if self.sent is not None and agent:
                    self.sent.append((self.now, t.local, t.remote, t.data))
                self.transmit(t)
        for stack in self.tcp.values():
            while (segment := stack.poll_segment()) is not None:
                local, remote, seg = segment
                if self.trace is not None:
                    self.trace.append((self.now, "sent", local, remote))
                self.send_segment(local, remote, seg)

    def _unique_endpoints(self) -> list[Endpoint]:
        """The agents, then the servers (each once, whatever number of addresses it has)."""
        everything: list[Endpoint] = [*self.agents.values(), *self.turn_servers.values(), *self.relays.values(),
                                      *self.servers.values()]
        return list({id(e): e for e in everything}.values())

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Advance virtual time event by event up to ``until`` (or until ``stop()``)."""
        while True:
            self._collect()
            if stop():
                return
            endpoints = self._unique_endpoints()
            timed: list[_Timed] = [*endpoints, *self.tcp.values()]
            times = [t for e in timed if (t := e.next_timeout()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times or min(times) > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, min(times))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._queue)
                self.delivered += 1
                if self.trace is not None:
                    self.trace.append((self.now, "delivered", src, dst))
                if isinstance(data, Segment):
                    self._deliver_segment(src, dst, data)
                    continue
                endpoint = self._endpoint_at(dst)
                if endpoint is not None:
                    endpoint.handle_datagram(self.now, dst, src, data)
            for e in timed:
                t = e.next_timeout()
                if t is not None and t <= self.now:
                    e.handle_timeout(self.now)

    def _deliver_segment(self, src: Address, dst: Address, seg: Segment) -> None:
        rule = self.segment_rule(src, dst, seg) if self.segment_rule is not None and seg.bare_syn else None
        if rule == "drop":
            self.dropped += 1
            return
        if rule == "rst":
            self.send_segment(dst, src, RST)
            return
        stack = self.tcp.get(dst[0])
        if stack is not None:
            stack.handle_segment(self.now, dst, src, seg)
        elif not seg.icmp and TcpFlag.RST not in seg.flags:
            self.send_segment(dst, src, RST)  # the host's kernel: nothing listens there
