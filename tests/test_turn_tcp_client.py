"""The sans-IO TURN client's TCP allocations (RFC 6062 §4) against the sans-IO server, in memory on a virtual clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from ice.stun.attributes import Address, ConnectionId, ErrorCode, Nonce, Realm, XorPeerAddress
from ice.stun.message import Message, MessageClass, Method, parse
from ice.turn.client import (
    Allocated,
    ConnectionAttempt,
    PeerConnectFailed,
    PeerConnectionReady,
    TurnClient,
    TurnClientConfig,
)
from ice.turn.server import TurnServer, TurnServerConfig
from ice.turn.tcp_allocation import ConnectPeer, PeerAccepted, PeerConnected, Splice
from ice.turn.tcp_allocation import PeerConnectFailed as Failed
from ice.turn.tcp_client import BindState, ConnectionBinder

SERVER = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
DATA = ("198.51.100.7", 40001)
PEER = ("198.51.100.9", 50000)


@dataclass
class Ports:
    next_port: int = 49152
    tcp_released: list[Address] = field(default_factory=list)

    def reserve(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release(self, relayed: Address) -> None:
        pass

    def reserve_tcp(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release_tcp(self, relayed: Address) -> None:
        self.tcp_released.append(relayed)


@dataclass
class World:
    server: TurnServer
    client: TurnClient
    now: float = 0.0
    events: list[object] = field(default_factory=list)
    intents: list[object] = field(default_factory=list)

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            while (sent := self.client.poll_transmit()) is not None:
                moved = True
                self.server.handle_datagram(self.now, SERVER, CLIENT, sent.data)
                self.deliver()
            while (ev := self.client.next_event()) is not None:
                self.events.append(ev)

    def deliver(self) -> None:
        while (t := self.server.poll_transmit()) is not None:
            assert t.remote == CLIENT
            self.client.handle_datagram(self.now, CLIENT, SERVER, t.data)
        while (i := self.server.tcp.next_intent()) is not None:
            self.intents.append(i)

    def bind(self, binder: ConnectionBinder) -> tuple[BindState, list[object]]:
        """A data connection from DATA: the binder's requests until it is bound or failed."""
        self.server.stream_opened(SERVER, DATA)
        state = BindState.SENT
        while state is BindState.SENT:
            self.server.handle_datagram(self.now, SERVER, DATA, binder.request())
            t = self.server.poll_transmit()
            assert t is not None and t.remote == DATA
            state = binder.receive(t.data)
        intents = []
        while (i := self.server.tcp.next_intent()) is not None:
            intents.append(i)
        return state, intents


def world() -> World:
    srv = TurnServer(TurnServerConfig(SERVER, users={"alice": "secret"}), Ports(), secret=b"k")
    srv.stream_opened(SERVER, CLIENT)
    client = TurnClient(TurnClientConfig(SERVER, "alice", "secret", transport="tcp", relay_transport="tcp"), CLIENT)
    w = World(srv, client)
    client.allocate(0.0)
    w.pump()
    assert isinstance(w.events[-1], Allocated)
    return w


def test_allocate_asks_for_tcp() -> None:
    """RFC 6062 §4.1: REQUESTED-TRANSPORT 6 over the control connection."""
    w = world()
    (alloc,) = w.server.allocations.values()
    assert alloc.tcp and alloc.relayed in w.server.tcp.by_relay


def test_connect_then_bind_a_data_connection() -> None:
    """RFC 6062 §4.3, §4.4: Connect (after a permission), the CONNECTION-ID, ConnectionBind with the allocation's
    credentials on a new connection (the control connection's nonce serves)."""
    w = world()
    relayed = w.client.relayed
    assert relayed is not None
    assert w.client.connect(w.now, PEER)
    w.pump()
    assert w.intents == [ConnectPeer(relayed, PEER)]
    w.server.tcp.handle_event(w.now, PeerConnected(relayed, PEER))
    w.deliver()
    w.pump()
    ready = w.events[-1]
    assert isinstance(ready, PeerConnectionReady) and ready.peer == PEER
    creds = w.client.bind_credentials()
    assert creds is not None
    binder = ConnectionBinder("alice", "secret", ready.connection_id, *creds)
    state, intents = w.bind(binder)
    assert state is BindState.BOUND and binder.attempts == 2  # no second try: the nonce was accepted
    assert intents == [Splice(SERVER, DATA, relayed, PEER)]


def test_a_binder_without_credentials_answers_the_challenge() -> None:
    w = world()
    relayed = w.client.relayed
    assert relayed is not None
    w.client.connect(w.now, PEER)
    w.pump()
    w.server.tcp.handle_event(w.now, PeerConnected(relayed, PEER))
    w.deliver()
    w.pump()
    ready = w.events[-1]
    assert isinstance(ready, PeerConnectionReady)
    binder = ConnectionBinder("alice", "secret", ready.connection_id)
    state, _ = w.bind(binder)
    assert state is BindState.BOUND and binder.attempts == 1  # 401, then bound


def test_connect_errors_are_events() -> None:
    w = world()
    relayed = w.client.relayed
    assert relayed is not None
    w.client.connect(w.now, PEER)
    w.pump()
    w.client.connect(w.now, PEER)  # in progress: 446
    w.pump()
    assert w.events[-1] == PeerConnectFailed(PEER, 446, "Connection Already Exists")
    w.server.tcp.handle_event(w.now, Failed(relayed, PEER, "refused"))
    w.deliver()
    w.pump()
    assert w.events[-1] == PeerConnectFailed(PEER, 447, "Connection Timeout or Failure")


def test_connection_attempt_is_an_event_and_a_wrong_cid_fails_the_bind() -> None:
    w = world()
    relayed = w.client.relayed
    assert relayed is not None
    w.client.create_permission(w.now, PEER)
    w.pump()
    w.server.tcp.handle_event(w.now, PeerAccepted(relayed, PEER))
    w.deliver()
    w.pump()
    attempt = w.events[-1]
    assert isinstance(attempt, ConnectionAttempt) and attempt.peer == PEER
    creds = w.client.bind_credentials()
    assert creds is not None
    bad = ConnectionBinder("alice", "secret", attempt.connection_id ^ 1, *creds)
    state, intents = w.bind(bad)
    assert state is BindState.FAILED and bad.error is not None and bad.error[0] == 400 and intents == []


def test_binder_never_raises_on_garbage() -> None:
    binder = ConnectionBinder("alice", "secret", 7, "icelab", "n")
    binder.request()
    assert binder.receive(b"\x00\x01garbage") is BindState.FAILED
    other = ConnectionBinder("alice", "secret", 7, "icelab", "n")
    other.request()
    resp = Message(Method.CONNECTION_BIND, MessageClass.ERROR, attributes=[ErrorCode(438, "Stale Nonce"),
                                                                           Realm("icelab"), Nonce("m")])
    assert other.receive(resp.encode()) is BindState.FAILED  # not the answer to our transaction


def test_malformed_connection_attempt_is_counted() -> None:
    w = world()
    ind = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, attributes=[XorPeerAddress(*PEER)])
    w.client.handle_datagram(w.now, CLIENT, SERVER, ind.encode())
    assert w.client.stats["connection-attempt-malformed"] == 1 and w.client.next_event() is None
    ok = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION,
                 attributes=[XorPeerAddress(*PEER), ConnectionId(5)])
    w.client.handle_datagram(w.now, CLIENT, SERVER, ok.encode())
    assert w.client.next_event() == ConnectionAttempt(PEER, 5)
    assert parse(ok.encode()).get(ConnectionId) == ConnectionId(5)
