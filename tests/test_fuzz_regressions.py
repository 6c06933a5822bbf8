"""Inputs the fuzzer (icelab fuzz, docs/robustness.md) found breaking the stack, each replayed on the fixed code
through the machine's own API: bad input from the network becomes an error response or a counted drop."""

from __future__ import annotations

import random

import pytest

from ice.agent.agent import IceAgent
from ice.agent.candidate import Candidate, CandidateType, candidate_priority
from ice.agent.config import AgentConfig
from ice.agent.states import AgentState
from ice.agent.tcp import TcpClosed, TcpConfig, TcpConnect, TcpConnected, TcpSend, TcpType
from ice.stun.attributes import (
    Data,
    ErrorCode,
    Lifetime,
    Nonce,
    Padding,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    UnknownAttribute,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.integrity import long_term_key
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.server import StunServer, StunServerConfig
from ice.turn.client import AllocationFailed, TurnClient, TurnClientConfig, TurnState
from ice.turn.server import Allocation, TurnServer, TurnServerConfig
from ice.turn.tcp_client import BindState, ConnectionBinder

SERVER = ("192.0.2.1", 3478)
LOCAL = ("198.51.100.1", 40000)


@pytest.mark.parametrize("realm", ["", "ice\x00lab", "\x1a"])
def test_turn_client_survives_a_401_whose_realm_has_no_key(realm: str) -> None:
    """RFC 8489 §9.2.2: the long-term key needs OpaqueString(realm), which an empty REALM or one with control
    characters does not have; the 401 then stands as the Allocate's answer instead of raising ValueError out of
    handle_datagram."""
    client = TurnClient(TurnClientConfig(SERVER, "user", "pass"), LOCAL)
    client.allocate(0.0)
    request = client.poll_transmit()
    assert request is not None
    tid = parse(request.data).transaction_id
    answer = Message(0x003, MessageClass.ERROR, tid, [ErrorCode(401, "Unauthorized"), Realm(realm), Nonce("n")])
    client.handle_datagram(0.1, LOCAL, SERVER, answer.encode(fingerprint=True))
    assert client.poll_transmit() is None  # nothing signed with a key it could not derive
    assert client.state is TurnState.FAILED
    assert client.next_event() == AllocationFailed(401, "Unauthorized")
    assert client.stats["unusable-realm"] == 1


@pytest.mark.parametrize("line", [
    "candidate:1 1 udp 2130706431 192.0.2.1 99999 typ host",  # a port past 65535: sendto() raises OverflowError
    "candidate:1 1 udp 99999999999 192.0.2.1 9 typ host",  # RFC 8839: priority is 32 bits
    "candidate:1 1 udp 1 192.0.2.1 9 typ srflx raddr 192.0.2.2 rport 999999",
    "candidate:1 1 udp 1 192.0.2.1 \u0661\u0662 typ host",  # Unicode digits are not RFC 5234 DIGIT
    "candidate:candidate:1 1 udp 1 192.0.2.1 9 typ host",  # a foundation of non-ice-chars: no round trip
    "candidate:f=1 1 udp 1 192.0.2.1 9 typ host",
    "candidate:" + "f" * 33 + " 1 udp 1 192.0.2.1 9 typ host",
])
def test_candidate_outside_rfc_8839_is_refused(line: str) -> None:
    """RFC 8839 §5.1: a port (and rport) fits 16 bits, a priority 32, a foundation is 1-32 ice-chars. A candidate
    past that used to be accepted and the agent then sent checks its driver's sendto() refused with OverflowError
    (not an OSError: out of the event loop)."""
    with pytest.raises(ValueError):
        Candidate.from_sdp(line)


def test_candidate_limits_are_inclusive() -> None:
    c = Candidate.from_sdp("candidate:a+/Z 256 udp 4294967295 192.0.2.1 65535 typ srflx raddr 0.0.0.0 rport 65535")
    assert (c.component, c.priority, c.port, c.related) == (256, 2**32 - 1, 65535, ("0.0.0.0", 65535))
    assert Candidate.from_sdp(c.to_sdp()) == c


@pytest.mark.parametrize("size", [65436, 65440, 65480])
def test_stun_server_refuses_padding_that_cannot_be_echoed(size: int) -> None:
    """RFC 5780 §7.6: PADDING may not push a datagram past 64 KiB. A request (65,504 bytes fit one IPv4 UDP
    datagram) whose PADDING the response cannot echo within STUN's 16-bit length used to raise struct.error out of
    the server; now it gets 400 Bad Request, and one that fits is still echoed."""
    server = StunServer(StunServerConfig(("192.0.2.1", 3478), ("192.0.2.2", 3479)))
    request = Message(0x001, MessageClass.REQUEST, b"p" * 12, [Padding(bytes(size))]).encode()
    out = server.handle(("192.0.2.1", 3478), ("2001:db8::1", 5000), request)
    assert out is not None
    response = parse(out.data)
    if size <= 65436:
        assert response.message_class is MessageClass.SUCCESS
        assert response.get(Padding) == Padding(bytes(size))
    else:
        assert response.message_class is MessageClass.ERROR and response.error is not None
        assert response.error.code == 400
        assert server.stats["padding-too-long"] == 1


@pytest.mark.parametrize(("peer", "size", "relayed"), [
    (("2001:db8::9", 7000), 65496, True),
    (("2001:db8::9", 7000), 65497, False),
    (("2001:db8::9", 7000), 65527, False),  # the largest IPv6 UDP payload
    (("203.0.113.5", 5000), 65507, True),  # the largest IPv4 UDP payload fits
])
def test_turn_server_drops_peer_data_too_large_for_a_data_indication(peer: tuple[str, int], size: int,
                                                                     relayed: bool) -> None:
    """RFC 8656 §11.3: a peer's datagram goes to the client in a Data indication, whose XOR-PEER-ADDRESS, DATA and
    FINGERPRINT must fit STUN's 16-bit length. A larger one (possible from an IPv6 peer) used to raise struct.error
    out of handle_datagram; now it is a counted drop (it could only go on a channel)."""
    server, alloc = _turn_server_with_allocation(peer)
    server.handle_datagram(T0, alloc.relayed, peer, bytes(size))
    out = server.poll_transmit()
    if relayed:
        assert out is not None and out.remote == alloc.client
        assert parse(out.data).get(Data) == Data(bytes(size))
    else:
        assert out is None and server.stats["peer-data-too-large"] == 1


T0 = 1000.0


class _Ports:
    """Relay addresses as the I/O layer hands them out, with those still bound in ``live``."""

    def __init__(self) -> None:
        self.next = 50000
        self.live: set[tuple[str, int]] = set()

    def reserve(self, family: int) -> tuple[str, int]:
        self.next += 1
        self.live.add(("2001:db8::1" if family == 6 else "192.0.2.1", self.next))
        return ("2001:db8::1" if family == 6 else "192.0.2.1", self.next)

    def release(self, relayed: tuple[str, int]) -> None:
        self.live.remove(relayed)


def _turn_server_with_allocation(peer: tuple[str, int]) -> tuple[TurnServer, Allocation]:
    """A TURN server with one allocation and a permission for ``peer``, made through the sans-IO entry point."""
    listen, client = ("192.0.2.1", 3478), ("198.51.100.1", 40000)
    if ":" in peer[0]:
        client = ("2001:db8::10", 40000)
    server = TurnServer(TurnServerConfig(listen, users={"user": "pass"}), _Ports(), secret=b"regressions")
    key = long_term_key("user", "icelab", "pass")
    family = [RequestedAddressFamily(2)] if ":" in peer[0] else []  # an IPv6 relay for an IPv6 peer (RFC 8656 §7.2)
    for method, attrs in ((0x003, [RequestedTransport(17), *family]), (0x008, [XorPeerAddress(*peer)])):
        request = Message(method, MessageClass.REQUEST, None,
                          [*attrs, Username("user"), Realm("icelab"), Nonce(server._nonce(T0, client))])
        server.handle_datagram(T0, listen, client, request.encode(key, fingerprint=True))
        answer = server.poll_transmit()
        assert answer is not None and parse(answer.data).message_class is MessageClass.SUCCESS
    return server, server.allocations[(client, listen)]


def test_agent_timer_survives_a_failed_restart_ending_consent_checks_in_the_same_pass() -> None:
    """RFC 8445 §9, RFC 7675: after an ICE restart the old pair's consent checks go on with the old credentials;
    when every new pair fails, the restart ends and takes them with it. If a consent check that had also timed out
    came after the failing check in the same ``handle_timeout`` (a timer firing late), the agent deleted it twice:
    KeyError out of handle_timeout. Now the pass skips what an earlier step of it ended."""
    base, remote = ("192.0.2.10", 5000), ("198.51.100.20", 7000)
    agent = IceAgent(controlling=True, ufrag="LOCL", pwd="localpassword0123456789", rng=random.Random(7))
    agent.add_host_candidate(base)
    agent.end_of_local_candidates()

    def signal(ufrag: str, pwd: str) -> None:
        agent.set_remote_credentials(0.0, ufrag, pwd)
        agent.add_remote_candidate(0.0, Candidate("1", 1, "udp", candidate_priority(CandidateType.HOST), *remote,
                                                  CandidateType.HOST))
        agent.add_remote_candidate(0.0, None)

    signal("RMTE", "remotepassword012345678")
    while (t := agent.poll_transmit()) is not None:  # the nominating check succeeds: connected
        ok = Message(0x001, MessageClass.SUCCESS, parse(t.data).transaction_id, [XorMappedAddress(*base)])
        agent.handle_datagram(0.01, base, remote, ok.encode(b"remotepassword012345678", fingerprint=True))
    assert agent.state is AgentState.COMPLETED
    agent.restart(1.0)
    signal("RMT2", "secondremotepassword0123")
    consent = False
    while not consent:  # until the old pair's consent check (old credentials) is on its way
        now = agent.next_timeout()
        assert now is not None
        agent.handle_timeout(now)
        while (t := agent.poll_transmit()) is not None:
            user = parse(t.data).get(Username)
            consent = consent or (user is not None and user.text == "RMTE:LOCL")
    agent.handle_timeout(now + 60.0)  # late: the new pair's check and the consent check are both over
    assert agent.state is AgentState.FAILED
    at = agent.next_timeout()
    assert at is None or at > now + 60.0


def test_turn_server_allocate_with_a_malformed_lifetime_holds_no_relay_address() -> None:
    """RFC 8656 §7.2: an Allocate whose LIFETIME is malformed is a 400. The server used to bind the relayed
    address first and decode LIFETIME after, so the 400 left that socket bound for good: an authenticated client
    could use up the relay range. The lifetime is now read before anything is held."""
    listen, client = ("192.0.2.1", 3478), ("198.51.100.1", 40000)
    ports = _Ports()
    server = TurnServer(TurnServerConfig(listen, users={"user": "pass"}), ports, secret=b"regressions")
    key = long_term_key("user", "icelab", "pass")
    for _ in range(3):
        request = Message(0x003, MessageClass.REQUEST, None,
                          [RequestedTransport(17), UnknownAttribute(0x000D, bytes(10)), Username("user"),
                           Realm("icelab"), Nonce(server._nonce(T0, client))])
        server.handle_datagram(T0, listen, client, request.encode(key, fingerprint=True))
        answer = server.poll_transmit()
        assert answer is not None
        error = parse(answer.data).error
        assert error is not None and error.code == 400
    assert ports.live == set() and server.allocations == {}


@pytest.mark.parametrize("realm", ["", "ice\x00lab", "\x07"])
def test_connection_bind_fails_on_a_401_whose_realm_has_no_key(realm: str) -> None:
    """RFC 6062 §4.4, RFC 8489 §9.2.2: a ConnectionBind answered with 401 (or 438) and a REALM that has no
    OpaqueString cannot be sent again; the bind fails with the error instead of ``request()`` raising ValueError
    (the asyncio client's ``_bind`` let it out as ValueError, not TurnError)."""
    binder = ConnectionBinder("user", "pass", 0x1234, "icelab", "n0nce")
    request = parse(binder.request())
    answer = Message(Method.CONNECTION_BIND, MessageClass.ERROR, request.transaction_id,
                     [ErrorCode(401, "Unauthorized"), Realm(realm), Nonce("n1")])
    assert binder.receive(answer.encode(fingerprint=True)) is BindState.FAILED
    assert binder.state is BindState.FAILED and binder.error == (401, "Unauthorized (unusable REALM)")
    assert (binder.realm, binder.nonce) == ("icelab", "n0nce")  # the usable credentials are kept


def test_connect_on_a_udp_allocation_sends_nothing() -> None:
    """RFC 6062 §4.3: Connect is for TCP allocations; on a UDP one the client sent a request the server can only
    refuse (400). Now ``connect`` says False and sends nothing."""
    client = TurnClient(TurnClientConfig(SERVER, "user", "pass"), LOCAL)
    client.allocate(0.0)
    first = client.poll_transmit()
    assert first is not None
    challenge = Message(Method.ALLOCATE, MessageClass.ERROR, parse(first.data).transaction_id,
                        [ErrorCode(401, "Unauthorized"), Realm("icelab"), Nonce("n")])
    client.handle_datagram(0.1, LOCAL, SERVER, challenge.encode(fingerprint=True))
    second = client.poll_transmit()
    assert second is not None
    ok = Message(Method.ALLOCATE, MessageClass.SUCCESS, parse(second.data).transaction_id,
                 [XorRelayedAddress("192.0.2.1", 50000), XorMappedAddress(*LOCAL), Lifetime(600)])
    client.handle_datagram(0.2, LOCAL, SERVER, ok.encode(long_term_key("user", "icelab", "pass"), fingerprint=True))
    assert client.state is TurnState.ALLOCATED
    assert client.connect(0.3, ("203.0.113.5", 5000)) is False
    assert client.poll_transmit() is None


def test_ice_tcp_connection_shared_across_a_restart_is_reconnected_for_both_generations() -> None:
    """RFC 6544 §7.1, RFC 8445 §9: after an ICE restart the new generation's pair between the same ends uses the
    TCP connection still up; when it closed, only the old generation's pair was detached from it, so the new pair
    kept queueing its checks on a closed connection and never reconnected. Now every pair the connection served is
    detached, and the new pair connects again."""
    ice = IceAgent(controlling=True, ufrag="LOCL", pwd="localpassword0123456789", tie_breaker=5,
                   rng=random.Random(1), config=AgentConfig(tcp=TcpConfig(enabled=True)))
    ice.add_tcp_host_candidate(("192.0.2.10", 5101), TcpType.SO)
    ice.set_remote_credentials(0.0, "RMTE", "remotepassword012345678")
    remote = Candidate("t", 1, "tcp", 2114006271, "198.51.100.21", 7101, CandidateType.HOST, tcptype="so")
    ice.add_remote_candidate(0.0, remote)
    ice.handle_timeout(0.05)
    first = ice.poll_tcp()
    assert isinstance(first, TcpConnect)
    ice.handle_tcp_event(0.06, TcpConnected(first.conn))
    ice.restart(0.1)
    ice.set_remote_credentials(0.1, "RMT2", "secondremotepassword0123")
    ice.add_remote_candidate(0.1, remote)  # the peer's candidate again: a new pair between the same ends
    for now in (0.1, 0.2, 0.3):
        ice.handle_timeout(now)
    sent = []
    while (intent := ice.poll_tcp()) is not None:
        sent.append(intent)
    assert any(isinstance(i, TcpSend) and i.conn == first.conn for i in sent)  # the new check on the old connection
    ice.handle_tcp_event(0.4, TcpClosed(first.conn))
    assert all(c.id != first.conn for c in ice._tcp.pair_conn.values())
    again = []
    for now in (0.5, 1.0, 2.0):
        ice.handle_timeout(now)
        while (intent := ice.poll_tcp()) is not None:
            again.append(intent)
    assert any(isinstance(i, TcpConnect) and i.remote == ("198.51.100.21", 7101) for i in again)
