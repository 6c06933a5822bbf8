"""TURN over TCP (RFC 8656 §3.1) and TCP allocations (RFC 6062) on the simulated network, on the virtual clock: the
sans-IO client (:class:`TurnClient` on a network stream, :class:`ConnectionBinder` on a data connection) against
the sim's TURN server (:class:`ice.sim.turn_tcp.SimTcpTurnServer`), with peers on their own host stacks."""

from __future__ import annotations

from collections.abc import Callable

from ice.agent.events import Event
from ice.sim.network import SimNetwork
from ice.sim.tcp import TcpConnection, TcpStack, TcpState
from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.topology.registry import topology
from ice.turn.client import (
    Allocated,
    ChannelBound,
    ConnectionAttempt,
    PeerConnectFailed,
    PeerConnectionReady,
    PeerData,
    TurnClient,
    TurnClientConfig,
)
from ice.turn.framing import frame_length
from ice.turn.tcp_client import BindState, ConnectionBinder

SERVER = ("203.0.113.10", 3478)
CLIENT_IP, PEER_IP = "198.51.100.1", "198.51.100.2"
USERS = {"alice": "secret"}


class UdpPeer:
    """A peer on UDP that records what arrives and sends what it is told."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self.received: list[tuple[Address, bytes]] = []
        self.out: list[Transmit] = []

    def send(self, to: Address, data: bytes) -> None:
        self.out.append(Transmit(to, data, self.address))

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        self.received.append((remote, data))

    def handle_timeout(self, now: float) -> None:
        pass

    def next_timeout(self) -> float | None:
        return None

    def poll_transmit(self) -> Transmit | None:
        return self.out.pop(0) if self.out else None

    def next_event(self) -> Event | None:
        return None


class DataConnection:
    """A client data connection (RFC 6062 §4.4) on the client host's stack: a new connection to the server, its
    ConnectionBind (:class:`ConnectionBinder`, with the allocation's credentials), then the peer's bytes."""

    def __init__(self, net: SimNetwork, local: Address, client: TurnClient, connection_id: int) -> None:
        config = client.config
        self.binder = ConnectionBinder(config.username, config.password, connection_id,
                                       *(client.bind_credentials() or (None, None)))
        self.stack: TcpStack = net.tcp[local[0]]
        self.buffer = bytearray()
        self.received = bytearray()
        self.closed = False
        self.conn = self.stack.connect(net.now, local, client.server, handler=self._on)

    @property
    def bound(self) -> bool:
        return self.binder.state is BindState.BOUND

    def send(self, data: bytes) -> None:
        self.stack.send(self.conn, data)

    def _on(self, kind: str, conn: TcpConnection, data: bytes) -> None:
        if kind == "established":
            self.stack.send(conn, self.binder.request())
        elif kind == "closed":
            self.closed = True
        elif self.bound:
            self.received += data
        else:
            self.buffer += data
            while not self.bound and (n := frame_length(self.buffer)) is not None and n <= len(self.buffer):
                frame = bytes(self.buffer[:n])
                del self.buffer[:n]
                state = self.binder.receive(frame)
                if state is BindState.SENT:
                    self.stack.send(conn, self.binder.request())
                elif state is BindState.FAILED:
                    self.stack.close(conn)
                    return
            if self.bound:  # the peer's bytes right behind the response
                self.received += self.buffer
                self.buffer.clear()


class Setup:
    """A network with a TURN server listening on UDP and TCP at ``server``, a client host and a peer host with TCP
    stacks, and a :class:`TurnClient` on a TCP control connection (a network stream) from the client host."""

    def __init__(self, relay_transport: str = "udp", net: SimNetwork | None = None, server: Address = SERVER,
                 client_ip: str = CLIENT_IP, peer_ip: str = PEER_IP) -> None:
        self.net = net or SimNetwork(latency=0.005)
        self.core = self.net.add_turn_server(server, dict(USERS), tcp=True)
        self.io = self.net.turn_tcp[server]
        self.client_stack = self.net.add_tcp(client_ip)
        self.peer_stack = self.net.add_tcp(peer_ip)
        self.client_ip, self.peer_ip = client_ip, peer_ip
        self.local = (client_ip, 50000)
        config = TurnClientConfig(server, "alice", "secret", transport="tcp", relay_transport=relay_transport)
        self.client = TurnClient(config, self.local)
        self.events: list[object] = []
        self.net.on_event = lambda endpoint, ev: self.events.append(ev)
        self.net.add_endpoint(self.client, self.local)  # type: ignore[arg-type]  # its events are not an agent's
        self.control = self.net.add_stream(self.local, server)
        self.client.allocate(self.net.now)
        allocated = self.wait(lambda: any(isinstance(e, Allocated) for e in self.events))
        assert isinstance(allocated, Allocated)
        self.relayed = allocated.relayed

    def run(self, stop: Callable[[], bool], seconds: float = 5.0) -> None:
        self.net.run(self.net.now + seconds, stop)

    def wait(self, found: Callable[[], bool], seconds: float = 5.0) -> object:
        self.run(found, seconds)
        assert found(), self.events
        return next(e for e in reversed(self.events) if found())

    def event(self, kind: type) -> object:
        self.run(lambda: any(isinstance(e, kind) for e in self.events))
        return next(e for e in self.events if isinstance(e, kind))

    def bind(self, connection_id: int, port: int = 50001) -> DataConnection:
        data = DataConnection(self.net, (self.client_ip, port), self.client, connection_id)
        self.run(lambda: data.bound or data.closed)
        assert data.bound, data.binder.error
        return data


def test_udp_allocation_over_a_tcp_control_connection_relays_a_datagram() -> None:
    """RFC 8656 §3.1: Allocate, CreatePermission and Send over one sim TCP connection; the relay to the peer is
    UDP, and the peer's answer comes back as a Data indication on the connection."""
    s = Setup()
    assert s.relayed[0] == SERVER[0] and s.relayed != SERVER
    assert s.control.established and s.net.streams[(s.local, SERVER)].conn is s.control
    assert (SERVER, s.local) in s.io.clients and s.core.allocations[(s.local, SERVER)].stream
    peer = UdpPeer((PEER_IP, 6000))
    s.net.add_endpoint(peer, peer.address)
    s.client.create_permission(s.net.now, peer.address)
    s.client.send(s.net.now, peer.address, b"ping")
    s.run(lambda: bool(peer.received))
    assert peer.received == [(s.relayed, b"ping")]
    peer.send(s.relayed, b"pong")
    data = s.event(PeerData)
    assert data == PeerData(peer.address, b"pong")
    s.client.bind_channel(s.net.now, peer.address)  # ChannelData, padded on the stream (RFC 8656 §12.5)
    s.event(ChannelBound)
    s.client.send(s.net.now, peer.address, b"abc")
    peer.send(s.relayed, b"xy")
    s.run(lambda: len(peer.received) == 2 and PeerData(peer.address, b"xy") in s.events)
    assert peer.received[1] == (s.relayed, b"abc") and PeerData(peer.address, b"xy") in s.events
    assert s.core.stats["relayed-to-client"] == 2 and not s.net.stream_stats


def test_a_closed_control_connection_ends_the_allocation() -> None:
    """RFC 8656 §3.1, §6: the allocation lives as long as its TCP connection."""
    s = Setup()
    s.client_stack.close(s.control)
    s.run(lambda: not s.core.allocations)
    assert not s.core.allocations and not s.io.clients and s.relayed not in s.net.relays


def test_a_restarted_server_closes_its_connections_and_listens_again() -> None:
    """The client's stream is closed by the old server and forgotten; the new server listens on TCP again."""
    s = Setup()
    s.net.restart_turn_server(SERVER)
    s.run(lambda: not s.net.streams)
    assert s.control.state is TcpState.CLOSED and s.net.stream_stats["stream-closed"] == 1
    local = (CLIENT_IP, 50002)
    other = TurnClient(TurnClientConfig(SERVER, "alice", "secret", transport="tcp"), local)
    s.net.add_endpoint(other, local)  # type: ignore[arg-type]
    s.net.add_stream(local, SERVER)
    other.allocate(s.net.now)
    s.run(lambda: other.relayed is not None)
    assert other.relayed is not None and s.net.turn_servers[SERVER].allocations


def test_garbage_on_the_stream_closes_it() -> None:
    """Neither STUN nor ChannelData on a connection to the server: it is closed (as the asyncio server does)."""
    s = Setup()
    conn = s.client_stack.connect(s.net.now, (CLIENT_IP, 50003), SERVER)
    s.run(lambda: conn.established)
    s.client_stack.send(conn, b"\xff" * 8)
    s.run(lambda: conn.state is TcpState.CLOSED)
    assert conn.error == "fin" and s.core.stats["stream-garbage"] == 1 and len(s.io.clients) == 1


def test_connect_to_a_listening_peer_then_bind_a_data_connection() -> None:
    """RFC 6062 §4.3, §4.4, §5.2: Connect -> the server's connection from the relayed address to the peer ->
    PeerConnectionReady -> a data connection's ConnectionBind -> bytes both ways, the peer's early ones first."""
    s = Setup("tcp")
    peer = (PEER_IP, 7000)
    s.peer_stack.listen(peer)
    assert s.client.connect(s.net.now, peer)
    ready = s.event(PeerConnectionReady)
    assert isinstance(ready, PeerConnectionReady) and ready.peer == peer
    [accepted] = s.peer_stack.accepted()
    assert accepted.established and accepted.remote == s.relayed  # RFC 6062 §5.2: from the relayed address
    s.peer_stack.send(accepted, b"early")  # before the bind: the server holds it
    s.run(lambda: False, 0.1)
    data = s.bind(ready.connection_id)
    s.run(lambda: bool(data.received))
    assert data.received == b"early"
    data.send(b"hello peer")
    s.run(lambda: bytes(accepted.received) == b"hello peer")
    assert accepted.received == b"hello peer"
    s.peer_stack.send(accepted, b"hello client")
    s.run(lambda: data.received == b"earlyhello client")
    assert data.received == b"earlyhello client"
    assert s.core.stats["tcp-connect"] == 1 and s.core.stats["tcp-bind"] == 1
    s.peer_stack.close(accepted)  # RFC 6062 §5.5: one side closing closes the other
    s.run(lambda: data.closed)
    assert data.closed and not s.io.links and not s.core.tcp.conns and s.control.established


def test_connect_to_a_host_that_refuses_is_447() -> None:
    """RFC 6062 §5.2: the server's connection is refused (RST: nothing listens) -> 447."""
    s = Setup("tcp")
    s.client.connect(s.net.now, (PEER_IP, 7999))
    failed = s.event(PeerConnectFailed)
    assert failed == PeerConnectFailed((PEER_IP, 7999), 447, "Connection Timeout or Failure")
    assert not s.io.links


def test_a_permitted_peer_connecting_to_the_relayed_address_is_announced_and_bound() -> None:
    """RFC 6062 §4.4, §5.3: a peer with a permission connects -> ConnectionAttempt -> ConnectionBind on a data
    connection -> what the peer sent before is delivered first, then bytes both ways."""
    s = Setup("tcp")
    s.client.create_permission(s.net.now, (PEER_IP, 0))
    s.run(lambda: False, 0.1)
    peer = (PEER_IP, 7001)
    conn = s.peer_stack.connect(s.net.now, peer, s.relayed)
    attempt = s.event(ConnectionAttempt)
    assert isinstance(attempt, ConnectionAttempt) and attempt.peer == peer and conn.established
    s.peer_stack.send(conn, b"early")
    s.run(lambda: False, 0.1)
    data = s.bind(attempt.connection_id)
    data.send(b"to peer")
    s.run(lambda: data.received == b"early" and conn.received == b"to peer")
    assert data.received == b"early" and conn.received == b"to peer"
    data.stack.close(data.conn)  # RFC 6062 §5.5: the client's side closing closes the peer's
    s.run(lambda: conn.state is TcpState.CLOSED)
    assert conn.state is TcpState.CLOSED and conn.error == "fin" and not s.io.links


def test_a_peer_without_permission_is_refused() -> None:
    """RFC 6062 §5.3: the server accepts the connection, finds no permission for the peer's IP and closes it; the
    client hears nothing."""
    s = Setup("tcp")
    conn = s.peer_stack.connect(s.net.now, (PEER_IP, 7002), s.relayed)
    s.run(lambda: conn.state is TcpState.CLOSED)
    assert conn.opened and conn.state is TcpState.CLOSED and conn.error == "fin"
    assert not any(isinstance(e, ConnectionAttempt) for e in s.events)
    assert s.core.stats["tcp-accept-no-permission"] == 1 and not s.io.links and not s.core.tcp.conns


def test_tcp_allocation_through_nats() -> None:
    """two_nats: the client behind NAT A, the peer behind NAT B. The peer's connection to the relayed address
    crosses its NAT and is announced from NAT B's public address; the data connection crosses NAT A; a Connect
    to the peer's public address is dropped by NAT B (port-restricted: an unsolicited SYN) and times out, 447."""
    spec = topology("two_nats", nat_a="port-restricted-cone", nat_b="port-restricted-cone")
    server_ip, port = spec.facts["turn"].rsplit(":", 1)
    net = SimNetwork(spec, latency=0.005)
    s = Setup("tcp", net, (server_ip, int(port)), spec.facts["a"], spec.facts["b"])
    public_b = spec.facts["nat-b_public"]
    s.client.create_permission(s.net.now, (public_b, 0))
    s.run(lambda: False, 0.1)
    conn = s.peer_stack.connect(s.net.now, (s.peer_ip, 7001), s.relayed)
    attempt = s.event(ConnectionAttempt)
    assert isinstance(attempt, ConnectionAttempt) and attempt.peer[0] == public_b and conn.established
    data = s.bind(attempt.connection_id)
    s.peer_stack.send(conn, b"from b")
    data.send(b"from a")
    s.run(lambda: data.received == b"from b" and conn.received == b"from a")
    assert data.received == b"from b" and conn.received == b"from a"
    assert [c.conn.remote[0] for c in s.io.clients.values()] == [spec.facts["nat-a_public"]] * 2  # control, data
    s.client.connect(s.net.now, (public_b, 7003))
    s.run(lambda: any(isinstance(e, PeerConnectFailed) for e in s.events), 40)
    failed = s.event(PeerConnectFailed)
    assert isinstance(failed, PeerConnectFailed) and failed.code == 447
    assert s.core.stats["tcp-connect-timeout"] == 1 and len(s.io.links) == 1
