"""Relayed TCP candidates (RFC 6544 §5.3) from TURN TCP allocations (RFC 6062): the ICE-over-TURN composition,
sans-IO against the TURN server core in memory, and the asyncio Connection on loopback."""

from __future__ import annotations

import asyncio

import pytest
from conftest import signal_both

from ice.agent import AgentConfig, CandidateType, IceAgent
from ice.agent.candidate import Candidate
from ice.agent.tcp import (
    DISCARD_PORT,
    TcpClose,
    TcpConfig,
    TcpConnect,
    TcpConnected,
    TcpConnectFailed,
    TcpSend,
    TcpType,
    frame,
    tcp_candidate,
)
from ice.aio.connection import Connection
from ice.aio.turn_server import TurnServerRunner
from ice.relayed import RelayedAgent
from ice.stun.attributes import Address, ConnectionId, Data, ErrorCode, XorPeerAddress
from ice.stun.message import Message, MessageClass, Method, parse
from ice.turn.client import ConnectionAttempt, TurnClientConfig
from ice.turn.client import PeerConnectFailed as ClientConnectFailed
from ice.turn.server import TurnServer, TurnServerConfig
from ice.turn.tcp_allocation import ConnectPeer, PeerAccepted, PeerConnected, PeerConnectFailed, Splice

SERVER: Address = ("192.0.2.1", 3478)
CONTROL: Address = ("10.0.0.2", 40000)
"""The TURN client's control connection (its local end)."""
PEER: Address = ("198.51.100.7", 8998)
CONFIG = AgentConfig(tcp=TcpConfig(enabled=True))


class _Ports:
    def __init__(self) -> None:
        self.next = 50000

    def reserve(self, family: int) -> Address | None:
        self.next += 1
        return (SERVER[0], self.next)

    def release(self, relayed: Address) -> None:
        pass

    def reserve_tcp(self, family: int) -> Address | None:
        return self.reserve(family)

    def release_tcp(self, relayed: Address) -> None:
        pass


class _World:
    """A RelayedAgent with one TCP allocation on the TURN server core; the test plays the driver."""

    def __init__(self, controlling: bool = True) -> None:
        self.server = TurnServer(TurnServerConfig(SERVER, users={"alice": "secret"},
                                                  allowed_peers=("198.51.100.0/24", "10.0.0.0/8")), _Ports())
        self.server.stream_opened(SERVER, CONTROL)
        self.agent = IceAgent(controlling, CONFIG)
        self.relayed = RelayedAgent(self.agent, TurnClientConfig(SERVER, "alice", "secret", transport="tcp"))
        self.relay = self.relayed.add_allocation(CONTROL, tcp=True)
        self.now = 0.0
        self.intents: list[object] = []
        self.relayed.start(self.now)
        self.pump()
        assert self.relay.relayed is not None

    def pump(self) -> None:
        """Carry messages between the TURN client and the server until both are quiet."""
        moved = True
        while moved:
            moved = False
            while (t := self.relayed.poll_transmit()) is not None:
                moved = True
                if t.local == CONTROL:
                    self.server.handle_datagram(self.now, SERVER, CONTROL, t.data)
            while (t := self.server.poll_transmit()) is not None:
                moved = True
                if t.remote == CONTROL:
                    self.relayed.handle_datagram(self.now, CONTROL, SERVER, t.data)
            while (i := self.relayed.poll_tcp()) is not None:
                moved = True
                self.intents.append(i)

    def server_intents(self) -> list[object]:
        out: list[object] = []
        while (i := self.server.tcp.next_intent()) is not None:
            out.append(i)
        return out

    @property
    def address(self) -> Address:
        """The allocation's relayed address."""
        assert self.relay.relayed is not None
        return self.relay.relayed

    def checks_start(self) -> list[object]:
        """A passive remote candidate; the first check is due: the server's intents it caused."""
        self.remote(PEER, TcpType.PASSIVE)
        self.now = 1.0
        self.relayed.handle_timeout(self.now)
        self.pump()
        return self.server_intents()

    def peer_connects(self) -> int:
        """An active remote candidate connects to the relayed address: the data connection opened for it."""
        self.remote(PEER, TcpType.ACTIVE)
        self.pump()
        self.server.tcp.handle_event(self.now, PeerAccepted(self.address, PEER))
        self.pump()
        connects = [i for i in self.intents if isinstance(i, TcpConnect)]
        assert len(connects) == 1 and connects[0].remote == SERVER
        return connects[0].conn

    def remote(self, address: Address, tcptype: TcpType) -> Candidate:
        cand = tcp_candidate(CandidateType.HOST, tcptype, address)
        self.agent.set_remote_credentials(self.now, "ufrag", "passwordpasswordpassword")
        self.agent.add_remote_candidate(self.now, cand)
        return cand

    def bind(self, conn: int, local: Address) -> bytes:
        """The data connection ``conn`` is up: its ConnectionBind reaches the server, whose answer comes back."""
        self.intents.clear()
        self.relayed.handle_tcp_event(self.now, TcpConnected(conn))
        self.pump()
        sends = [i for i in self.intents if isinstance(i, TcpSend) and i.conn == conn]
        assert len(sends) == 1
        request = parse(sends[0].data)
        assert request.method == Method.CONNECTION_BIND and request.get(ConnectionId) is not None
        self.server.stream_opened(SERVER, local)
        self.server.handle_datagram(self.now, SERVER, local, sends[0].data)
        answers = []
        while (t := self.server.poll_transmit()) is not None:
            if t.remote == local:
                answers.append(t.data)
        assert len(answers) == 1
        return answers[0]


def test_a_tcp_allocation_gives_a_passive_and_an_active_relayed_candidate() -> None:
    w = _World()
    assert w.relay.relayed is not None
    relayed = [c for c in w.agent.local_candidates if c.type is CandidateType.RELAYED]
    assert sorted((c.transport, c.tcptype, c.port) for c in relayed) == sorted(
        [("tcp", "passive", w.relay.relayed[1]), ("tcp", "active", DISCARD_PORT)])
    assert all(c.host == SERVER[0] and c.related == CONTROL for c in relayed)
    # RFC 6544 §4.2: type preference 0 for relayed, direction-pref 6 active / 4 passive, other-pref 8191.
    by_type = {c.tcptype: c.priority for c in relayed}
    assert by_type == {"active": (6 << 13 | 8191) << 8 | 255, "passive": (4 << 13 | 8191) << 8 | 255}
    assert w.agent.tcp_bases == []  # the relayed bases are the server's: nothing to listen on or bind
    assert w.relayed.failed is False


def test_an_active_relayed_connection_is_a_connect_then_a_bound_data_connection() -> None:
    w = _World()
    intents = w.checks_start()
    # No socket for the driver yet: the server is asked to connect (a permission for the peer first).
    assert not [i for i in w.intents if isinstance(i, TcpConnect)]
    assert [i for i in intents if isinstance(i, ConnectPeer)] == [ConnectPeer(w.address, PEER)]
    assert PEER[0] in w.relay.client.permissions
    w.server.tcp.handle_event(w.now, PeerConnected(w.address, PEER))
    w.pump()
    connects = [i for i in w.intents if isinstance(i, TcpConnect)]
    assert len(connects) == 1 and connects[0].remote == SERVER and connects[0].local == (CONTROL[0], 0)
    assert connects[0].relayed is None  # for the driver: a plain connection to the server
    conn = connects[0].conn
    answer = w.bind(conn, (CONTROL[0], 40001))
    assert parse(answer).message_class == MessageClass.SUCCESS
    assert any(isinstance(i, Splice) for i in w.server_intents())
    w.intents.clear()
    w.relayed.handle_tcp_data(w.now, conn, answer)  # the pipe is up: the agent's check goes out on it
    w.pump()
    check = [i for i in w.intents if isinstance(i, TcpSend) and i.conn == conn]
    assert len(check) == 1 and parse(check[0].data[2:]).method == Method.BINDING
    assert w.agent.stats["tcp-connected"] == 1 and w.agent.stats["tcp-relay-bound"] == 1


def test_a_refused_connect_fails_the_connection_attempt() -> None:
    w = _World()
    w.checks_start()
    w.server.tcp.handle_event(w.now, PeerConnectFailed(w.address, PEER, "refused"))
    w.pump()
    assert w.agent.stats["tcp-connect-failed"] == 1
    assert w.relay.client.stats["error-447"] == 1
    assert not [i for i in w.intents if isinstance(i, TcpConnect)]


def test_a_peer_connecting_to_the_relayed_address_is_accepted_after_connectionbind() -> None:
    w = _World(controlling=False)
    conn = w.peer_connects()
    assert PEER[0] in w.relay.client.permissions  # RFC 6062 §5.3: needed before the peer may connect
    answer = w.bind(conn, (CONTROL[0], 40002))
    assert w.agent.stats["tcp-accepted"] == 0
    # The peer's first frame came right behind the ConnectionBind response, in the same read.
    check = Message(Method.BINDING, MessageClass.REQUEST).encode(fingerprint=True)
    w.relayed.handle_tcp_data(w.now, conn, answer + frame(check))
    assert w.agent.stats["tcp-accepted"] == 1 and w.agent.stats["tcp-relay-bound"] == 1
    assert w.agent.stats["tcp-frames"] == 1  # the frame reached the agent (unauthenticated: answered 400)


def test_a_refused_connectionbind_closes_the_data_connection() -> None:
    w = _World(controlling=False)
    conn = w.peer_connects()
    w.relayed.handle_tcp_event(w.now, TcpConnected(conn))
    w.intents.clear()
    w.pump()
    request = parse(next(i for i in w.intents if isinstance(i, TcpSend)).data)
    refusal = Message(Method.CONNECTION_BIND, MessageClass.ERROR, request.transaction_id)
    refusal.attributes.append(ErrorCode(400, "Bad Request"))
    w.intents.clear()
    w.relayed.handle_tcp_data(w.now, conn, refusal.encode(fingerprint=True))
    w.pump()
    assert TcpClose(conn) in w.intents
    assert w.agent.stats["tcp-accepted"] == 0 and w.agent.stats["tcp-relay-attempt-not-bound"] == 1


def test_a_data_connection_that_fails_before_its_bind_fails_the_agents_attempt() -> None:
    w = _World()
    w.checks_start()
    w.server.tcp.handle_event(w.now, PeerConnected(w.address, PEER))
    w.pump()
    conn = next(i for i in w.intents if isinstance(i, TcpConnect)).conn
    w.relayed.handle_tcp_event(w.now, TcpConnectFailed(conn, "refused"))
    assert w.agent.stats["tcp-connect-failed"] == 1


def test_the_active_relayed_candidate_is_redundant_beside_a_host_active_one_on_the_servers_ip() -> None:
    agent = IceAgent(True, CONFIG)
    agent.add_tcp_host_candidate(("127.0.0.1", 0), TcpType.ACTIVE)
    made = agent.add_tcp_relayed_candidates(("127.0.0.1", 50001), ("127.0.0.1", 40000), "127.0.0.1")
    assert [(c.type, c.tcptype) for c in made] == [(CandidateType.RELAYED, "passive")]
    assert agent.stats["tcp-relayed-redundant"] == 1  # RFC 8445 §5.1.3: same address, same base


def test_a_connection_from_a_remote_passive_candidates_address_is_peer_reflexive_active() -> None:
    # A TURN server connects to us from its relayed address (RFC 6062 §5.2), which the peer also signalled as
    # a passive relayed candidate: the connection is the peer's active one (RFC 6544 §7.2).
    agent = IceAgent(False, CONFIG)
    listen = ("10.0.0.2", 8998)
    agent.add_tcp_host_candidate(listen, TcpType.PASSIVE)
    relayed = ("192.0.2.1", 50001)
    agent.set_remote_credentials(0.0, "ufrag", "passwordpasswordpassword")
    agent.add_remote_candidate(0.0, tcp_candidate(CandidateType.RELAYED, TcpType.PASSIVE, relayed))
    conn = agent.accept_tcp(0.0, listen, relayed)
    assert conn is not None
    from ice.stun.attributes import IceControlling, Priority, Username
    from ice.stun.integrity import short_term_key
    check = Message(Method.BINDING, MessageClass.REQUEST, attributes=[
        Username(f"{agent.ufrag}:ufrag"), Priority(1234), IceControlling(1)])
    agent.handle_tcp_data(0.0, conn, frame(check.encode(short_term_key(agent.pwd), fingerprint=True)))
    prflx = [c for c in agent.remote_candidates if c.type is CandidateType.PEER_REFLEXIVE]
    assert [(c.address, c.tcptype) for c in prflx] == [(relayed, "active")]
    assert any(p.local.tcptype == "passive" and p.remote is prflx[0] for p in agent.pairs)


@pytest.mark.parametrize(("transports", "stream", "kinds"), [
    ("udp", True, (False,)), ("tcp", True, (True,)), ("both", True, (False, True)), ("tcp", False, (False,)),
])
def test_which_allocations_a_connection_makes(transports: str, stream: bool, kinds: tuple[bool, ...]) -> None:
    turn = TurnClientConfig(SERVER, "alice", "secret", transport="tcp" if stream else "udp")
    assert Connection(True, turn=turn, transports=transports).relay_kinds == kinds


def test_two_passive_only_peers_connect_through_relayed_tcp_candidates_on_loopback() -> None:
    async def main() -> tuple[object, object, bytes, bytes, dict[str, int]]:
        config = TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"}, allowed_peers=("127.0.0.0/8",))
        runner = await TurnServerRunner(config, "127.0.0.1").start()
        turn = TurnClientConfig(runner.address, "alice", "secret", transport="tcp")
        a = Connection(True, transports="tcp", tcp_types=[TcpType.PASSIVE], turn=turn)
        b = Connection(False, transports="tcp", tcp_types=[TcpType.PASSIVE], turn=turn)
        try:
            await signal_both(a, b)
            sel_a, sel_b = await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 10)
            a.send(b"ping")
            got_b = await asyncio.wait_for(b.recv(), 5)
            b.send(b"pong" * 1000)
            got_a = await asyncio.wait_for(a.recv(), 5)
            return sel_a, sel_b, got_b, got_a, dict(runner.core.stats)
        finally:
            a.close()
            b.close()
            runner.close()

    sel_a, sel_b, got_b, got_a, server = asyncio.run(main())
    assert (got_b, got_a) == (b"ping", b"pong" * 1000)
    # Two passive host candidates never pair (RFC 6544 §6.2): the path is a relayed TCP candidate's.
    for sel in (sel_a, sel_b):
        ends = (sel.local, sel.remote)  # type: ignore[attr-defined]
        assert all(c.transport == "tcp" for c in ends)
        assert any(c.type is CandidateType.RELAYED for c in ends) or \
            any(c.type is CandidateType.PEER_REFLEXIVE and c.host == "127.0.0.1" for c in ends)
    assert server["tcp-allocate"] == 2 and server["tcp-bind"] >= 1


def test_an_unanswered_connect_is_reported_and_forgotten() -> None:
    # RFC 6062 §4.3: the Connect's outcome is always reported, a timeout too (408), so the next attempt to that
    # peer sends a new Connect rather than waiting for one that will never be answered.
    w = _World()
    w.checks_start()
    assert list(w.relayed.tcp.connecting) == [(w.address, PEER)]
    while (at := w.relayed.next_timeout()) is not None and at < 60.0:
        w.now = at
        w.relayed.handle_timeout(w.now)
        w.pump()
        w.server.poll_transmit()
    assert w.relay.client.stats["error-408"] == 0  # counted as a timeout, not an error response
    assert not w.relayed.tcp.connecting and not w.relayed.tcp.data


def test_allocating_again_moves_the_active_relayed_candidate_to_the_new_address() -> None:
    agent = IceAgent(True, CONFIG)
    agent.add_tcp_relayed_candidates(("192.0.2.1", 50001), None, "192.0.2.1")
    agent.add_tcp_relayed_candidates(("192.0.2.1", 50002), None, "192.0.2.1")  # after a 437 (RFC 8656 §8)
    assert agent._tcp.relay_of == {("192.0.2.1", DISCARD_PORT): ("192.0.2.1", 50002)}


def test_a_connection_attempt_before_the_allocation_is_up_is_ignored() -> None:
    agent = IceAgent(False, CONFIG)
    relayed = RelayedAgent(agent, TurnClientConfig(SERVER, "alice", "secret", transport="tcp"))
    relay = relayed.add_allocation(CONTROL, tcp=True)
    assert relayed.tcp.turn_event(0.0, relay, ConnectionAttempt(PEER, 7))  # unauthenticated, and no allocation
    assert relayed.poll_tcp() is None and not relayed.tcp.data
    assert agent.stats["tcp-relay-attempt-ignored"] == 1


def test_permissions_follow_the_remote_candidates_across_a_restart() -> None:
    w = _World(controlling=False)
    w.remote(PEER, TcpType.ACTIVE)
    w.pump()
    w.agent.restart(w.now)
    w.agent.add_remote_candidate(w.now, tcp_candidate(CandidateType.HOST, TcpType.ACTIVE, ("198.51.100.99", 0)))
    w.pump()  # as many remote candidates as before, another IP: it needs a permission too (RFC 6062 §5.3)
    assert "198.51.100.99" in w.relay.client.permissions


def test_an_incoming_data_connection_never_bound_is_closed() -> None:
    w = _World(controlling=False)
    conn = w.peer_connects()
    w.relayed.handle_tcp_event(w.now, TcpConnected(conn))  # the ConnectionBind goes; no answer ever comes
    w.intents.clear()
    at = w.relayed.tcp.next_timeout()
    assert at == w.now + CONFIG.tcp.accept_idle
    w.now = at
    w.relayed.handle_timeout(w.now)
    w.pump()
    assert TcpClose(conn) in w.intents and not w.relayed.tcp.data
    assert w.agent.stats["tcp-relay-bind-timeout"] == 1


# Found by fuzzing (fuzz/targets.py, relayed-tcp; docs/robustness.md, "What fuzzing found").


def test_a_close_of_a_connect_the_agent_gave_up_on_first_does_not_reach_the_driver() -> None:
    w = _World()
    w.checks_start()
    conn = next(iter(w.relayed.tcp.data))
    w.agent.handle_timeout(w.now + CONFIG.tcp.connect_timeout)  # the agent gives up: its close is queued
    assert not w.agent.has_tcp_connection(conn)
    w.relayed.tcp.turn_event(w.now, w.relay, ClientConnectFailed(PEER, 408, "the TURN server did not answer"))
    w.intents.clear()
    w.pump()
    assert not [i for i in w.intents if isinstance(i, (TcpConnect, TcpClose)) and i.conn == conn]
    assert w.agent.stats["tcp-connect-failed"] == 0  # the agent closed it itself: no failure to report


def test_the_driver_naming_a_connection_whose_connect_is_unanswered_is_ignored() -> None:
    w = _World()
    w.checks_start()
    conn = next(iter(w.relayed.tcp.data))
    w.relayed.handle_tcp_event(w.now, TcpConnected(conn))
    w.relayed.handle_tcp_data(w.now, conn, b"\x00\x04junk")
    assert w.agent.stats["tcp-relay-event-unexpected"] == 1 and w.agent.stats["tcp-relay-data-unexpected"] == 1
    assert w.agent.stats["tcp-connected"] == 0


def test_a_data_indication_on_a_tcp_allocation_is_dropped() -> None:
    w = _World(controlling=False)
    w.remote(PEER, TcpType.ACTIVE)
    w.pump()
    check = Message(Method.BINDING, MessageClass.REQUEST).encode(fingerprint=True)
    ind = Message(Method.DATA, MessageClass.INDICATION, attributes=[XorPeerAddress(*PEER), Data(check)])
    w.relayed.handle_datagram(w.now, CONTROL, SERVER, ind.encode(fingerprint=True))
    sent = []
    while (t := w.relayed.poll_transmit()) is not None:
        sent.append(t)
    assert all(t.local == CONTROL for t in sent)  # nothing from the relayed address as if it were a UDP socket
    assert w.agent.stats["relay-tcp-peer-data-dropped"] == 1
