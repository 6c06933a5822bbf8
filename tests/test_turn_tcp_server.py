"""TCP allocations (RFC 6062) in the sans-IO TURN server, on a virtual clock: one test per MUST of §5."""

from __future__ import annotations

from dataclasses import dataclass, field

from ice.stun import Message, MessageClass, Method, long_term_key, parse
from ice.stun.attributes import (
    Address,
    Attribute,
    ChannelNumber,
    ConnectionId,
    Data,
    DontFragment,
    EvenPort,
    Nonce,
    Realm,
    RequestedTransport,
    ReservationToken,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.transaction import Transmit
from ice.turn.server import TurnServer, TurnServerConfig
from ice.turn.tcp_allocation import (
    TCP,
    CloseConnection,
    ConnectionClosed,
    ConnectPeer,
    PeerAccepted,
    PeerConnected,
    PeerConnectFailed,
    Splice,
    TcpAllocationConfig,
    TcpIntent,
)

LISTEN = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
DATA_CONN = ("198.51.100.7", 40001)
PEER = ("198.51.100.9", 50000)
KEYS = {u: long_term_key(u, "icelab", "secret") for u in ("alice", "bob")}


@dataclass
class Ports:
    """UDP and TCP relay ports (the I/O layer's side of RelayPorts and TcpRelayPorts)."""

    next_port: int = 49152
    released: list[Address] = field(default_factory=list)
    tcp_released: list[Address] = field(default_factory=list)

    def reserve(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release(self, relayed: Address) -> None:
        self.released.append(relayed)

    def reserve_tcp(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release_tcp(self, relayed: Address) -> None:
        self.tcp_released.append(relayed)


@dataclass
class UdpOnlyPorts:
    def reserve(self, family: int) -> Address | None:
        return ("203.0.113.10", 49999)

    def release(self, relayed: Address) -> None:
        pass


def server(ports: object = None, **tcp: object) -> TurnServer:
    cfg = TurnServerConfig(LISTEN, users={"alice": "secret", "bob": "secret"},
                           tcp=TcpAllocationConfig(**tcp))  # type: ignore[arg-type]
    return TurnServer(cfg, ports if ports is not None else Ports(), secret=b"k")  # type: ignore[arg-type]


def drain(srv: TurnServer) -> tuple[list[Transmit], list[TcpIntent]]:
    out: list[Transmit] = []
    while (t := srv.poll_transmit()) is not None:
        out.append(t)
    intents: list[TcpIntent] = []
    while (ev := srv.tcp.next_intent()) is not None:
        intents.append(ev)
    return out, intents


def request(srv: TurnServer, now: float, method: int, *attrs: Attribute, client: Address = CLIENT,
            user: str = "alice", stream: bool = True) -> tuple[Message | None, list[TcpIntent]]:
    """A request after the 401 dance, over a TCP connection from ``client`` (announced) unless ``stream`` is
    False; the parsed response (None: not yet) and the intents."""
    if stream:
        srv.stream_opened(LISTEN, client)
    srv.handle_datagram(now, LISTEN, client, Message(method, MessageClass.REQUEST, attributes=list(attrs)).encode())
    first, _ = drain(srv)
    nonce = parse(first[0].data).get(Nonce).text  # type: ignore[union-attr]
    msg = Message(method, MessageClass.REQUEST, attributes=[*attrs, Username(user), Realm("icelab"), Nonce(nonce)])
    srv.handle_datagram(now, LISTEN, client, msg.encode(KEYS[user], fingerprint=True))
    out, intents = drain(srv)
    assert len(out) <= 1
    if not out:
        return None, intents
    assert out[0].remote == client and out[0].local == LISTEN
    return parse(out[0].data), intents


def code(resp: Message | None) -> int:
    assert resp is not None
    return resp.error.code if resp.error else 0


def tcp_allocation(srv: TurnServer, now: float = 0.0, user: str = "alice", client: Address = CLIENT) -> Address:
    resp, _ = request(srv, now, Method.ALLOCATE, RequestedTransport(TCP), user=user, client=client)
    assert resp is not None and resp.message_class is MessageClass.SUCCESS, resp and resp.error
    relayed = resp.get(XorRelayedAddress)
    assert relayed is not None
    return relayed.address


def permit(srv: TurnServer, now: float = 0.0, peer: Address = PEER) -> None:
    resp, _ = request(srv, now, Method.CREATE_PERMISSION, XorPeerAddress(*peer))
    assert code(resp) == 0


def connected(srv: TurnServer, now: float = 0.0, peer: Address = PEER) -> tuple[Address, int]:
    """A TCP allocation with a permission, a Connect to ``peer`` and the peer's answer: (relayed, CONNECTION-ID)."""
    relayed = tcp_allocation(srv, now)
    permit(srv, now, peer)
    resp, intents = request(srv, now, Method.CONNECT, XorPeerAddress(*peer))
    assert resp is None and intents == [ConnectPeer(relayed, peer)]
    srv.tcp.handle_event(now, PeerConnected(relayed, peer))
    out, intents = drain(srv)
    assert intents == [] and len(out) == 1 and out[0].remote == CLIENT and out[0].local == LISTEN
    ok = parse(out[0].data)
    assert ok.method == Method.CONNECT and ok.message_class is MessageClass.SUCCESS
    assert ok.check_integrity(KEYS["alice"])
    cid = ok.get(ConnectionId)
    assert cid is not None
    return relayed, cid.number


# ------------------------------------------------------------------------------------------- §5.1 Allocate


def test_tcp_allocate_over_tcp_listens_on_a_tcp_relayed_address() -> None:
    ports = Ports()
    srv = server(ports)
    relayed = tcp_allocation(srv)
    assert relayed == ("203.0.113.10", 49153)
    assert relayed in srv.tcp.by_relay and relayed not in srv.by_relay  # not a UDP relay
    assert srv.stats["tcp-allocate"] == 1


def test_tcp_allocate_over_udp_is_400() -> None:
    """RFC 6062 §5.1: the client connection transport must be TCP or TLS."""
    srv = server()
    resp, _ = request(srv, 0.0, Method.ALLOCATE, RequestedTransport(TCP), stream=False)
    assert code(resp) == 400 and srv.stats["tcp-allocate-over-udp"] == 1 and not srv.allocations


def test_tcp_allocate_with_dont_fragment_even_port_or_reservation_token_is_400() -> None:
    """RFC 6062 §5.1: DONT-FRAGMENT, EVEN-PORT or RESERVATION-TOKEN in a TCP Allocate is 400."""
    for i, attr in enumerate([DontFragment(), EvenPort(False), ReservationToken(7)]):
        srv = server()
        resp, _ = request(srv, 0.0, Method.ALLOCATE, RequestedTransport(TCP), attr, client=("198.51.100.7", 41000 + i))
        assert code(resp) == 400 and not srv.allocations, attr


def test_tcp_allocate_without_tcp_relay_ports_is_442_and_other_protocols_too() -> None:
    srv = server(UdpOnlyPorts())
    assert code(request(srv, 0.0, Method.ALLOCATE, RequestedTransport(TCP))[0]) == 442
    assert code(request(server(), 0.0, Method.ALLOCATE, RequestedTransport(132))[0]) == 442


# -------------------------------------------------------------------------------------------- §5.2 Connect


def test_connect_answers_with_a_connection_id_once_the_peer_accepted() -> None:
    srv = server()
    _, cid = connected(srv)
    assert srv.tcp.conns[cid].peer == PEER and srv.stats["tcp-peer-connected"] == 1
    assert srv.next_timeout() == 30.0  # the ConnectionBind timer (§5.2)


def test_connect_without_allocation_is_437_and_on_a_udp_allocation_400() -> None:
    srv = server()
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0]) == 437
    resp, _ = request(srv, 0.0, Method.ALLOCATE, RequestedTransport(17))
    assert code(resp) == 0
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0]) == 400


def test_connect_needs_a_peer_address_a_permission_and_an_allowed_peer() -> None:
    srv = server()
    tcp_allocation(srv)
    assert code(request(srv, 0.0, Method.CONNECT)[0]) == 400
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0]) == 403
    assert srv.stats["tcp-connect-no-permission"] == 1
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress("127.0.0.1", 80))[0]) == 403  # denied range
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress("::1", 80))[0]) == 443
    free = server(connect_needs_permission=False)
    tcp_allocation(free)
    assert request(free, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0] is None  # in progress


def test_connect_to_a_peer_in_progress_or_connected_is_446() -> None:
    """RFC 6062 §5.2: 446 while a Connect to that peer is processed, and while its connection is pending or
    active."""
    srv = server()
    relayed = tcp_allocation(srv)
    permit(srv)
    assert request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0] is None
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0]) == 446
    srv.tcp.handle_event(0.0, PeerConnected(relayed, PEER))
    drain(srv)
    assert code(request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))[0]) == 446
    other = (PEER[0], PEER[1] + 1)  # another port of a permitted IP is another connection
    assert request(srv, 0.0, Method.CONNECT, XorPeerAddress(*other))[0] is None
    assert srv.stats["tcp-connect-exists"] == 2


def test_connect_failure_is_447_and_the_peer_may_be_tried_again() -> None:
    srv = server()
    relayed = tcp_allocation(srv)
    permit(srv)
    request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))
    srv.tcp.handle_event(1.0, PeerConnectFailed(relayed, PEER, "refused"))
    out, intents = drain(srv)
    err = parse(out[0].data)
    assert err.method == Method.CONNECT and err.error is not None and err.error.code == 447
    assert err.error.reason == "Connection Timeout or Failure" and err.check_integrity(KEYS["alice"])
    assert intents == [] and not srv.tcp.conns
    assert request(srv, 2.0, Method.CONNECT, XorPeerAddress(*PEER))[0] is None  # no 446 after a failure


def test_connect_timeout_is_447_after_the_configured_time_and_cancels_the_attempt() -> None:
    """RFC 6062 §5.2: the timeout MUST be at least 30 s (the default); here 45 s from the config."""
    srv = server(connect_timeout=45.0)
    relayed = tcp_allocation(srv)
    permit(srv)
    request(srv, 10.0, Method.CONNECT, XorPeerAddress(*PEER))
    assert srv.next_timeout() == 55.0
    srv.handle_timeout(54.9)
    assert drain(srv) == ([], [])
    srv.handle_timeout(55.0)
    out, intents = drain(srv)
    assert parse(out[0].data).error.code == 447  # type: ignore[union-attr]
    assert intents == [CloseConnection(relayed, PEER, "connect timeout")] and srv.stats["tcp-connect-timeout"] == 1
    srv.tcp.handle_event(56.0, PeerConnected(relayed, PEER))  # too late: the I/O layer is told to close it
    assert drain(srv)[1] == [CloseConnection(relayed, PEER, "no Connect waits for it")]


def test_an_unbound_peer_connection_closes_after_30_seconds() -> None:
    """RFC 6062 §5.2: no ConnectionBind 30 s after the connection was made: it is closed."""
    srv = server()
    relayed, cid = connected(srv, now=5.0)
    srv.handle_timeout(34.9)
    assert drain(srv) == ([], [])
    srv.handle_timeout(35.0)
    assert drain(srv)[1] == [CloseConnection(relayed, PEER, "no ConnectionBind in time")]
    assert cid not in srv.tcp.conns and srv.stats["tcp-bind-timeout"] == 1
    resp, _ = request(srv, 36.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN)
    assert code(resp) == 400


# ---------------------------------------------------------------------------------------- §5.4 ConnectionBind


def test_connection_bind_makes_the_new_connection_a_byte_pipe_to_the_peer() -> None:
    srv = server()
    relayed, cid = connected(srv)
    resp, intents = request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN)
    assert resp is not None and resp.message_class is MessageClass.SUCCESS and resp.check_integrity(KEYS["alice"])
    assert intents == [Splice(LISTEN, DATA_CONN, relayed, PEER)]
    assert srv.next_timeout() != 31.0  # no ConnectionBind timer any more
    srv.handle_timeout(100.0)
    assert drain(srv)[1] == [] and cid in srv.tcp.conns
    # a second bind of the same connection is 400: it is no longer pending
    assert code(request(srv, 2.0, Method.CONNECTION_BIND, ConnectionId(cid), client=("198.51.100.7", 40002))[0]) == 400


def test_connection_bind_refusals() -> None:
    """RFC 6062 §5.4: 400 over UDP, without CONNECTION-ID or with an unknown one; another user's connection is
    441; a control connection cannot become a data connection (400)."""
    srv = server()
    _, cid = connected(srv)
    assert code(request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN, stream=False)[0]) == 400
    assert code(request(srv, 1.0, Method.CONNECTION_BIND, client=DATA_CONN)[0]) == 400
    assert code(request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid ^ 1), client=DATA_CONN)[0]) == 400
    assert code(request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN, user="bob")[0]) == 441
    assert code(request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=CLIENT)[0]) == 400
    assert srv.stats["tcp-bind-over-udp"] == 1 and srv.stats["tcp-bind-unknown"] == 2
    assert srv.stats["tcp-bind-wrong-user"] == 1 and srv.stats["tcp-bind-on-control"] == 1
    resp, intents = request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN)
    assert code(resp) == 0 and len(intents) == 1  # still bindable after the refusals


# ------------------------------------------------------------------------------- §5.3 incoming connections


def test_a_peer_without_permission_is_closed_at_once() -> None:
    srv = server()
    relayed = tcp_allocation(srv)
    srv.tcp.handle_event(0.0, PeerAccepted(relayed, PEER))
    assert drain(srv) == ([], [CloseConnection(relayed, PEER, "no permission")])
    assert srv.stats["tcp-accept-no-permission"] == 1 and not srv.tcp.conns
    srv.tcp.handle_event(0.0, PeerAccepted(("203.0.113.10", 1), PEER))
    assert drain(srv)[1] == [CloseConnection(("203.0.113.10", 1), PEER, "no allocation")]


def test_a_permitted_peer_is_announced_with_connection_attempt_and_bound() -> None:
    srv = server()
    relayed = tcp_allocation(srv)
    permit(srv)
    srv.tcp.handle_event(3.0, PeerAccepted(relayed, PEER))
    out, intents = drain(srv)
    assert intents == [] and len(out) == 1 and out[0].remote == CLIENT and out[0].local == LISTEN
    ind = parse(out[0].data)
    assert ind.method == Method.CONNECTION_ATTEMPT and ind.message_class is MessageClass.INDICATION
    peer, cid = ind.get(XorPeerAddress), ind.get(ConnectionId)
    assert peer is not None and peer.address == PEER and cid is not None
    resp, intents = request(srv, 4.0, Method.CONNECTION_BIND, ConnectionId(cid.number), client=DATA_CONN)
    assert code(resp) == 0 and intents == [Splice(LISTEN, DATA_CONN, relayed, PEER)]


def test_an_announced_connection_not_bound_closes_after_30_seconds() -> None:
    """RFC 6062 §5.3: the same 30 s ConnectionBind timer for connections from peers."""
    srv = server()
    relayed = tcp_allocation(srv)
    permit(srv)
    srv.tcp.handle_event(3.0, PeerAccepted(relayed, PEER))
    drain(srv)
    srv.handle_timeout(33.0)
    assert drain(srv)[1] == [CloseConnection(relayed, PEER, "no ConnectionBind in time")]


# ---------------------------------------------------------------------------------- §5.5 teardown, quotas


def test_either_side_closing_closes_the_other() -> None:
    srv = server()
    relayed, cid = connected(srv)
    request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN)
    srv.tcp.handle_event(2.0, ConnectionClosed(relayed, PEER))
    assert drain(srv)[1] == [CloseConnection(relayed, PEER, "the other side closed")]
    assert not srv.tcp.conns and srv.stats["tcp-connection-closed"] == 1
    srv.tcp.handle_event(2.0, ConnectionClosed(relayed, PEER))  # reported twice: counted, nothing else
    assert drain(srv) == ([], []) and srv.stats["tcp-closed-unknown"] == 1


def test_allocation_expiry_closes_every_connection_and_the_listener() -> None:
    ports = Ports()
    srv = server(ports)
    relayed, cid = connected(srv)
    request(srv, 1.0, Method.CONNECTION_BIND, ConnectionId(cid), client=DATA_CONN)
    srv.tcp.handle_event(2.0, PeerAccepted(relayed, (PEER[0], 50001)))
    drain(srv)
    srv.handle_timeout(600.0)
    _, intents = drain(srv)
    assert sorted(i.peer for i in intents if isinstance(i, CloseConnection)) == [PEER, (PEER[0], 50001)]
    assert ports.tcp_released == [relayed] and ports.released == [] and not srv.tcp.conns and not srv.tcp.by_relay


def test_losing_the_control_connection_closes_the_data_connections() -> None:
    ports = Ports()
    srv = server(ports)
    relayed, _ = connected(srv)
    srv.stream_closed(LISTEN, CLIENT)
    assert drain(srv)[1] == [CloseConnection(relayed, PEER, "allocation deleted")]
    assert ports.tcp_released == [relayed]


def test_a_connect_in_progress_when_the_allocation_goes_gets_no_answer() -> None:
    srv = server()
    relayed = tcp_allocation(srv)
    permit(srv)
    request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))
    srv.stream_closed(LISTEN, CLIENT)
    assert drain(srv) == ([], [CloseConnection(relayed, PEER, "allocation deleted")])
    srv.tcp.handle_event(1.0, PeerConnectFailed(relayed, PEER))
    assert drain(srv) == ([], []) and srv.stats["tcp-connect-failed-unknown"] == 1


def test_connection_quotas_per_allocation_and_per_user() -> None:
    srv = server(max_connections=1)
    relayed, _ = connected(srv)
    resp, _ = request(srv, 1.0, Method.CONNECT, XorPeerAddress(PEER[0], 50001))
    assert code(resp) == 508
    srv.tcp.handle_event(1.0, PeerAccepted(relayed, (PEER[0], 50002)))
    assert drain(srv)[1] == [CloseConnection(relayed, (PEER[0], 50002), "quota")]
    users = server(user_connections=1)
    connected(users)
    assert code(request(users, 1.0, Method.CONNECT, XorPeerAddress(PEER[0], 50001))[0]) == 486
    assert users.stats["tcp-user-quota"] == 1


def test_no_send_or_channels_on_a_tcp_allocation() -> None:
    srv = server()
    tcp_allocation(srv)
    permit(srv)
    assert code(request(srv, 0.0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))[0]) == 400
    ind = Message(Method.SEND, MessageClass.INDICATION, attributes=[XorPeerAddress(*PEER), Data(b"x")])
    srv.handle_datagram(0.0, LISTEN, CLIENT, ind.encode())
    assert drain(srv) == ([], []) and srv.stats["send-tcp-allocation"] == 1


def test_a_control_connections_nonce_serves_its_data_connections_but_not_udp() -> None:
    """RFC 6062 §4.4 (same credentials on data connections): a nonce issued over TCP is accepted on another TCP
    connection from the same IP; nonces stay distinct per source (RFC 8489 §9.2.4) and UDP ones stay bound to
    the port."""
    srv = server()
    _, cid = connected(srv)
    srv.stream_opened(LISTEN, CLIENT)
    srv.handle_datagram(0.0, LISTEN, CLIENT, Message(Method.REFRESH, MessageClass.REQUEST).encode())
    control_nonce = parse(drain(srv)[0][0].data).get(Nonce)
    srv.stream_opened(LISTEN, DATA_CONN)
    srv.handle_datagram(0.0, LISTEN, DATA_CONN, Message(Method.REFRESH, MessageClass.REQUEST).encode())
    data_nonce = parse(drain(srv)[0][0].data).get(Nonce)
    assert control_nonce is not None and data_nonce is not None and control_nonce != data_nonce
    bind = Message(Method.CONNECTION_BIND, MessageClass.REQUEST, attributes=[
        ConnectionId(cid), Username("alice"), Realm("icelab"), control_nonce])
    srv.handle_datagram(1.0, LISTEN, DATA_CONN, bind.encode(KEYS["alice"], fingerprint=True))
    out, intents = drain(srv)
    assert parse(out[0].data).message_class is MessageClass.SUCCESS and len(intents) == 1
    udp_client = ("198.51.100.7", 40005)
    refresh = Message(Method.REFRESH, MessageClass.REQUEST, attributes=[
        Username("alice"), Realm("icelab"), control_nonce])
    srv.handle_datagram(1.0, LISTEN, udp_client, refresh.encode(KEYS["alice"], fingerprint=True))
    assert parse(drain(srv)[0][0].data).error.code == 438  # type: ignore[union-attr]
    forged = Nonce(control_nonce.text[:-4] + f"{DATA_CONN[1]:04x}")  # another port: the HMAC does not match
    srv.stream_opened(LISTEN, ("198.51.100.7", 40009))
    bind2 = Message(Method.CONNECTION_BIND, MessageClass.REQUEST, attributes=[
        ConnectionId(cid), Username("alice"), Realm("icelab"), forged])
    srv.handle_datagram(1.0, LISTEN, ("198.51.100.7", 40009), bind2.encode(KEYS["alice"], fingerprint=True))
    assert parse(drain(srv)[0][0].data).error.code == 438  # type: ignore[union-attr]


def test_any_sequence_of_io_events_never_raises_and_keeps_the_tables_consistent() -> None:
    """Whatever the I/O layer reports, in any order, about any pair: no exception, and the connection tables
    agree (every connection is in ``by_pair`` under its own pair and belongs to a live allocation)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    peers = st.sampled_from([PEER, (PEER[0], 50001), ("198.51.100.10", 7)])
    kinds = st.sampled_from([PeerConnected, PeerConnectFailed, PeerAccepted, ConnectionClosed])

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(kinds, peers, st.booleans(), st.floats(0, 100)), max_size=25))
    def run(steps: list[tuple[type, Address, bool, float]]) -> None:
        srv = server()
        relayed = tcp_allocation(srv)
        permit(srv, 0.0, PEER)
        request(srv, 0.0, Method.CONNECT, XorPeerAddress(*PEER))
        for kind, peer, on_relay, at in sorted(steps, key=lambda s: s[3]):
            srv.tcp.handle_event(at, kind(relayed if on_relay else ("203.0.113.10", 1), peer))
            srv.handle_timeout(at)
            drain(srv)
            for cid, conn in srv.tcp.conns.items():
                assert srv.tcp.by_pair[conn.pair] is conn and conn.cid == cid
                assert conn.alloc in srv.allocations.values()

    run()


def test_any_tcp_allocation_request_is_answered_signed_or_deferred_never_raised() -> None:
    """Allocate, Connect, ConnectionBind, Refresh, CreatePermission and ChannelBind with random attributes
    (CONNECTION-ID too) on a TCP allocation's control connection or a new connection: a signed answer, or none
    for a Connect in progress (then a ConnectPeer intent); never an exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ice.stun.attributes import Lifetime, RequestedAddressFamily, UnknownAttribute

    hosts = st.sampled_from(["198.51.100.9", "127.0.0.1", "::1", "2001::1", "0.0.0.0"])
    attrs = st.one_of(
        st.builds(ConnectionId, st.integers(0, 0xFFFFFFFF)),
        st.builds(XorPeerAddress, hosts, st.integers(0, 0xFFFF)),
        st.builds(RequestedTransport, st.sampled_from([6, 17, 132])),
        st.builds(Lifetime, st.integers(0, 0xFFFFFFFF)),
        st.builds(RequestedAddressFamily, st.integers(0, 3)),
        st.builds(EvenPort, st.booleans()),
        st.builds(DontFragment),
        st.builds(ChannelNumber, st.integers(0x4000, 0x4FFF)),
        st.builds(UnknownAttribute, st.sampled_from([0x002A, 0x0012, 0x0019]), st.binary(max_size=12)),
    )
    methods = st.sampled_from([Method.ALLOCATE, Method.CONNECT, Method.CONNECTION_BIND, Method.REFRESH,
                               Method.CREATE_PERMISSION, Method.CHANNEL_BIND])

    @settings(max_examples=200, deadline=None)
    @given(methods, st.lists(attrs, max_size=5), st.sampled_from([CLIENT, DATA_CONN]), st.booleans())
    def run(method: int, extra: list[Attribute], client: Address, stream: bool) -> None:
        srv = server()
        _, cid = connected(srv)
        resp, intents = request(srv, 1.0, method, *extra, client=client, stream=stream)
        if resp is None:
            assert method == Method.CONNECT and len(intents) == 1 and isinstance(intents[0], ConnectPeer)
        else:
            assert resp.message_class in (MessageClass.SUCCESS, MessageClass.ERROR)
            assert resp.check_integrity(KEYS["alice"])
        srv.handle_timeout(10_000)
        drain(srv)
        assert not srv.tcp.conns and cid not in srv.tcp.conns

    run()
