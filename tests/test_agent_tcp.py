"""ICE-TCP (RFC 6544) in the sans-IO agent: candidates, priorities, SDP, framing, pairing, checks over TCP."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_net import TcpNet

from ice.agent import AgentConfig, AgentState, Candidate, CandidateType, IceAgent
from ice.agent.events import DataReceived, SelectedPairChanged
from ice.agent.sdp import IceDescription
from ice.agent.tcp import (
    DISCARD_PORT,
    Rfc4571Framer,
    TcpClose,
    TcpClosed,
    TcpConfig,
    TcpConnect,
    TcpConnected,
    TcpSend,
    TcpType,
    frame,
    tcp_candidate,
    tcp_candidate_priority,
    tcp_local_preference,
    tcp_pairable,
)

HOST = CandidateType.HOST
SRFLX = CandidateType.SERVER_REFLEXIVE

# ================================================================================= candidates (RFC 6544 §4)


def test_rfc6544_example_priorities() -> None:
    """RFC 6544's SDP example: active 2128609279, passive 2124414975, so 2120220671 (host, other-pref 8191)."""
    assert tcp_candidate_priority(HOST, TcpType.ACTIVE) == 2128609279
    assert tcp_candidate_priority(HOST, TcpType.PASSIVE) == 2124414975
    assert tcp_candidate_priority(HOST, TcpType.SO) == 2120220671


def test_local_preference_formula() -> None:
    assert tcp_local_preference(6, 8191) == 6 * 8192 + 8191 == 57343
    assert tcp_local_preference(0, 0) == 0
    assert tcp_local_preference(7, 8191) == 65535
    with pytest.raises(ValueError):
        tcp_local_preference(8, 0)
    with pytest.raises(ValueError):
        tcp_local_preference(1, 8192)


def test_nat_direction_prefers_simultaneous_open() -> None:
    """RFC 6544 §4.2: reflexive candidates rank so > active > passive, host ones active > passive > so."""
    so, act, pas = (tcp_candidate_priority(SRFLX, t) for t in (TcpType.SO, TcpType.ACTIVE, TcpType.PASSIVE))
    assert so > act > pas
    assert (so >> 8) & 0xFFFF == 6 * 8192 + 8191
    so_h, act_h, pas_h = (tcp_candidate_priority(HOST, t) for t in (TcpType.SO, TcpType.ACTIVE, TcpType.PASSIVE))
    assert act_h > pas_h > so_h


def test_udp_beats_tcp_of_the_same_type() -> None:
    from ice.agent.candidate import candidate_priority
    udp = candidate_priority(HOST, 65535)
    assert all(udp > tcp_candidate_priority(HOST, t) for t in TcpType)
    assert candidate_priority(SRFLX, 65535) > tcp_candidate_priority(SRFLX, TcpType.SO)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        TcpConfig(direction_host=(8, 4, 2))
    with pytest.raises(ValueError):
        TcpConfig(reconnect_interval=0)
    with pytest.raises(ValueError):
        TcpConfig(max_frame=70000)
    assert TcpConfig().backoff(1) == 0.1 and TcpConfig().backoff(2) == 0.2 and TcpConfig().backoff(30) == 1.6


def test_candidate_active_port_9_and_foundations() -> None:
    act = tcp_candidate(HOST, TcpType.ACTIVE, ("10.0.1.1", 43210))
    pas = tcp_candidate(HOST, TcpType.PASSIVE, ("10.0.1.1", 8998))
    so = tcp_candidate(HOST, TcpType.SO, ("10.0.1.1", 8999))
    assert act.port == DISCARD_PORT and pas.port == 8998 and so.port == 8999
    assert act.transport == pas.transport == "tcp"
    assert len({act.foundation, pas.foundation, so.foundation}) == 3
    from ice.agent.candidate import foundation
    assert foundation(HOST, "10.0.1.1") not in {act.foundation, pas.foundation, so.foundation}  # UDP's differs
    srflx = tcp_candidate(SRFLX, TcpType.SO, ("192.0.2.1", 40000), related=("10.0.1.1", 8999),
                          server_ip="192.0.2.100")
    assert srflx.related == ("10.0.1.1", 8999) and srflx.tcptype == "so"


# ======================================================================================== SDP (RFC 6544 §4.5)

RFC_LINES = [
    "a=candidate:1 1 TCP 2128609279 10.0.1.1 9 typ host tcptype active",
    "a=candidate:2 1 TCP 2124414975 10.0.1.1 8998 typ host tcptype passive",
    "a=candidate:3 1 TCP 2120220671 10.0.1.1 8999 typ host tcptype so",
]


def test_sdp_parse_rfc_example() -> None:
    cands = [Candidate.from_sdp(line) for line in RFC_LINES]
    assert [c.tcptype for c in cands] == ["active", "passive", "so"]
    assert [TcpType.of(c) for c in cands] == [TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO]
    assert all(c.transport == "tcp" for c in cands)
    assert [c.priority for c in cands] == [2128609279, 2124414975, 2120220671]
    assert cands[0].port == 9


def test_sdp_emit_round_trip() -> None:
    so = tcp_candidate(SRFLX, TcpType.SO, ("192.0.2.1", 40000), related=("10.0.1.1", 8999))
    line = so.to_sdp()
    assert line.endswith("typ srflx raddr 10.0.1.1 rport 8999 tcptype so")
    assert " tcp " in line
    assert Candidate.from_sdp(line) == so
    act = tcp_candidate(HOST, TcpType.ACTIVE, ("10.0.1.1", 0))
    assert act.to_sdp().split()[5] == "9"
    d = IceDescription("abcd", "x" * 22, candidates=[act, so])
    assert IceDescription.from_lines(d.to_lines()).candidates == [act, so]


def test_unknown_tcptype_pairs_with_nothing() -> None:
    odd = Candidate.from_sdp("1 1 tcp 1 10.0.1.1 5000 typ host tcptype sideways")
    assert TcpType.of(odd) is None
    pas = tcp_candidate(HOST, TcpType.PASSIVE, ("10.0.1.2", 5000))
    assert not tcp_pairable(pas, odd) and not tcp_pairable(odd, pas)


# ========================================================================================= RFC 4571 framing


def test_framer_partial_reads() -> None:
    stream = frame(b"hello") + frame(b"x" * 300) + frame(b"!")
    f = Rfc4571Framer()
    out: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time: prefixes straddle reads
        out += f.feed(stream[i:i + 1])
    assert out == [b"hello", b"x" * 300, b"!"]
    assert f.buffered == 0 and f.stats["tcp-frames"] == 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.lists(st.integers(0, 3000), max_size=12))
def test_framer_any_split_gives_the_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    f = Rfc4571Framer()
    out: list[bytes] = []
    for lo, hi in itertools.pairwise(points):
        out += f.feed(stream[lo:hi])
    assert out == payloads and f.buffered == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 700))
def test_framer_never_raises_nor_hoards(data: bytes, max_frame: int) -> None:
    f = Rfc4571Framer(max_frame=max_frame)
    for k in range(0, len(data), 97):
        for piece in f.feed(data[k:k + 97]):
            assert 0 < len(piece) <= max_frame
        assert f.buffered <= 2 + max_frame


def test_framer_garbage_is_counted_not_raised() -> None:
    f = Rfc4571Framer(max_frame=100)
    assert f.feed(b"\x00\x00" + b"\x00\xc8" + b"z" * 50) == []  # empty frame; 200 > max_frame: skipped
    assert f.feed(b"z" * 150 + frame(b"ok")) == [b"ok"]
    assert f.stats["tcp-frame-empty"] == 1 and f.stats["tcp-frame-too-long"] == 1
    assert f.buffered == 0


def test_frame_limit() -> None:
    assert frame(b"") == b"\x00\x00"
    assert len(frame(b"a" * 65535)) == 65537
    with pytest.raises(ValueError):
        frame(b"a" * 65536)


# ================================================================================== pairing (RFC 6544 §6.2)


def test_pairing_rules() -> None:
    a = {t: tcp_candidate(HOST, t, ("10.0.0.1", 5000)) for t in TcpType}
    b = {t: tcp_candidate(HOST, t, ("10.0.0.2", 6000)) for t in TcpType}
    ok = {(TcpType.ACTIVE, TcpType.PASSIVE), (TcpType.PASSIVE, TcpType.ACTIVE), (TcpType.SO, TcpType.SO)}
    for mine in TcpType:
        for theirs in TcpType:
            assert tcp_pairable(a[mine], b[theirs]) == ((mine, theirs) in ok)
    udp = Candidate.from_sdp("1 1 udp 2130706431 10.0.0.2 6000 typ host")
    assert not any(tcp_pairable(c, udp) or tcp_pairable(udp, c) for c in a.values())


# ============================================================= checks over TCP (RFC 6544 §7), virtual clock


TCP_ON = AgentConfig(tcp=TcpConfig(enabled=True))
IP_A, IP_B = "10.0.0.1", "10.0.0.2"


def tcp_agents(cfg: AgentConfig = TCP_ON) -> tuple[IceAgent, IceAgent]:
    return IceAgent(True, cfg, rng=random.Random(1)), IceAgent(False, cfg, rng=random.Random(2))


def signal(net: TcpNet, a: IceAgent, b: IceAgent) -> None:
    a.end_of_local_candidates()
    b.end_of_local_candidates()
    for x, y in ((a, b), (b, a)):
        y.set_remote_credentials(net.now, x.ufrag, x.pwd)
        for c in x.local_candidates:
            y.add_remote_candidate(net.now, c)
        y.add_remote_candidate(net.now, None)


def up(*xs: IceAgent) -> bool:
    return all(x.selected is not None and x.state in (AgentState.CONNECTED, AgentState.COMPLETED) for x in xs)


def events(agent: IceAgent) -> list[object]:
    out = []
    while (e := agent.next_event()) is not None:
        out.append(e)
    return out


def test_active_to_passive_connects_and_carries_data() -> None:
    net = TcpNet(chunk=7)  # every frame split across several reads
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    assert up(a, b)
    assert a.selected is not None and b.selected is not None
    assert (a.selected.local.tcptype, a.selected.remote.address) == ("active", (IP_B, 5000))
    # The passive side learnt the active end as a peer-reflexive candidate with the connection's real port.
    assert b.selected.remote.type is CandidateType.PEER_REFLEXIVE and b.selected.remote.tcptype == "active"
    assert b.selected.remote.address == (IP_A, 40000) and b.stats["tcp-prflx-remote"] == 1
    assert len(net.connects) == 1 and net.connects[0][1].local == (IP_A, 0) and not net.connects[0][1].simultaneous
    assert a.stats["tcp-retransmit-suppressed"] == 0 and a.stats["tcp-connected"] == 1
    events(a), events(b)
    assert a.send(b"ping") and b.send(b"pong" * 100)
    net.run(net.now + 0.1)
    got_b = [e for e in events(b) if isinstance(e, DataReceived)]
    got_a = [e for e in events(a) if isinstance(e, DataReceived)]
    assert [e.data for e in got_b] == [b"ping"] and [e.data for e in got_a] == [b"pong" * 100]
    assert got_a[0].remote == (IP_B, 5000)


def test_simultaneous_open_so_to_so() -> None:
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 7000), TcpType.SO)
    b.add_tcp_host_candidate((IP_B, 7001), TcpType.SO)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    assert up(a, b)
    assert a.selected is not None and b.selected is not None
    assert a.selected.remote.address == (IP_B, 7001) and b.selected.remote.address == (IP_A, 7000)
    assert b.selected.remote.type is CandidateType.HOST  # the so pair itself, no prflx: the address is known
    so_connects = [c for _, c in net.connects if c.simultaneous]
    assert so_connects and all(c.local in ((IP_A, 7000), (IP_B, 7001)) for c in so_connects)
    a.send(b"x")
    net.run(net.now + 0.1)
    assert [e.data for e in events(b) if isinstance(e, DataReceived)] == [b"x"]


def test_udp_wins_when_both_succeed() -> None:
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a, (IP_A, 1000))
    net.attach(b, (IP_B, 2000))
    for x, ip in ((a, IP_A), (b, IP_B)):
        x.add_tcp_host_candidate((ip, 0), TcpType.ACTIVE)
        x.add_tcp_host_candidate((ip, 6000), TcpType.PASSIVE)
        x.add_tcp_host_candidate((ip, 6001), TcpType.SO)
    signal(net, a, b)
    net.run(5.0, stop=lambda: up(a, b) and a.state is AgentState.COMPLETED)
    assert up(a, b)
    assert a.selected is not None and a.selected.local.transport == "udp" and a.selected.remote.transport == "udp"
    assert b.selected is not None and b.selected.local.transport == "udp"
    tcp_pairs = [p for p in a.pairs if p.local.transport == "tcp"]
    assert tcp_pairs and all(p.remote.transport == "tcp" for p in tcp_pairs)
    assert max(p.priority for p in a.pairs if p.local.transport == "udp") > max(p.priority for p in tcp_pairs)
    # Pairing per RFC 6544 §6.2: active-passive and so-so only; none from the local passive candidate.
    kinds = {(p.local.tcptype, p.remote.tcptype) for p in tcp_pairs if p.remote.type is CandidateType.HOST}
    assert kinds == {("active", "passive"), ("so", "so")}


def test_tcp_is_off_by_default() -> None:
    a = IceAgent(True, rng=random.Random(1))
    a.add_host_candidate((IP_A, 1000))
    a.set_remote_credentials(0.0, "abcd", "x" * 22)
    a.add_remote_candidate(0.0, Candidate.from_sdp(RFC_LINES[1]))
    assert not a.pairs and a.stats["remote-candidate-ignored"] == 1
    b = IceAgent(True, TCP_ON, rng=random.Random(1))
    b.add_host_candidate((IP_A, 1000))
    b.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.set_remote_credentials(0.0, "abcd", "x" * 22)
    b.add_remote_candidate(0.0, Candidate.from_sdp("1 1 tcp 1 10.0.0.2 5000 typ host tcptype sideways"))
    assert b.stats["remote-candidate-bad-tcptype"] == 1 and not b.pairs
    b.add_remote_candidate(0.0, Candidate.from_sdp("1 1 udp 1 10.0.0.2 5000 typ host"))
    assert [(p.local.transport, p.remote.transport) for p in b.pairs] == [("udp", "udp")]


def test_reconnects_are_paced_then_the_pair_fails() -> None:
    cfg = AgentConfig(tcp=TcpConfig(enabled=True, reconnect_interval=0.1, reconnect_max_interval=0.4,
                                    max_connect_attempts=4))
    net = TcpNet(refuse=lambda src, dst: True)  # every SYN answered with RST
    a, b = tcp_agents(cfg)
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    signal(net, a, b)
    net.run(10.0, stop=lambda: a.state is AgentState.FAILED)
    times = [t for t, _ in net.connects]
    assert len(times) == 4 and a.stats["tcp-gave-up"] == 1
    gaps = [round(t1 - t0, 3) for t0, t1 in itertools.pairwise(times)]
    # Each retry waits the backoff after the RST (which takes one round trip, 2 x 5 ms): 0.1, 0.2, 0.4 s.
    assert gaps == [0.11, 0.21, 0.41]
    assert a.state is AgentState.FAILED and all(p.state.value == "failed" for p in a.pairs)


def test_connect_timeout_abandons_the_attempt() -> None:
    cfg = AgentConfig(tcp=TcpConfig(enabled=True, connect_timeout=0.5, max_connect_attempts=2))
    net = TcpNet(blackhole=lambda src, dst: True)
    a, b = tcp_agents(cfg)
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    signal(net, a, b)
    closes: list[float] = []
    a_poll = a.poll_tcp

    def spy() -> object:
        i = a_poll()
        if isinstance(i, TcpClose):
            closes.append(net.now)
        return i

    a.poll_tcp = spy  # type: ignore[method-assign]
    net.run(5.0, stop=lambda: a.state is AgentState.FAILED)
    assert [round(t, 3) for t, _ in net.connects] == [0.0, 0.6]  # timeout 0.5 s, then the 0.1 s backoff
    assert [round(t, 3) for t in closes] == [0.5, 1.1]
    assert a.stats["tcp-connect-timeout"] == 2 and a.state is AgentState.FAILED


def test_connect_pace_spaces_attempts_across_pairs() -> None:
    cfg = AgentConfig(ta=0.0, tcp=TcpConfig(enabled=True, connect_pace=0.05))
    a = IceAgent(True, cfg, rng=random.Random(1))
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    a.set_remote_credentials(0.0, "abcd", "x" * 22)
    for port in (5000, 5001, 5002):
        a.add_remote_candidate(0.0, Candidate.from_sdp(f"{port} 1 tcp 2124414975 {IP_B} {port} typ host "
                                                       f"tcptype passive"))
    now = 0.0
    seen: list[float] = []
    while now < 1.0:
        a.handle_timeout(now)
        while (i := a.poll_tcp()) is not None:
            if isinstance(i, TcpConnect):
                seen.append(now)
        t = a.next_timeout()
        assert t is not None
        now = max(t, now + 1e-6)
    assert [round(t, 3) for t in seen[:3]] == [0.0, 0.05, 0.1]


def test_garbage_on_a_connection_is_counted() -> None:
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    b.set_remote_credentials(0.0, a.ufrag, a.pwd)
    conn = b.accept_tcp(0.0, (IP_B, 5000), (IP_A, 41000))
    assert conn is not None
    bad_stun = b"\x00\x01\x00\x08\x21\x12\xa4\x42" + b"t" * 12 + b"\x00\x06\x00\xff" + b"xxxx"
    junk = frame(b"not stun, and before any check") + b"\x00\x00" + frame(bad_stun)
    b.handle_tcp_data(0.0, conn, junk)
    b.handle_tcp_data(0.0, 999, b"\x00\x05hello")
    assert b.stats["tcp-data-before-check"] == 1 and b.stats["tcp-frame-empty"] == 1
    assert b.stats["malformed"] == 1 and b.stats["tcp-data-unknown-connection"] == 1
    assert b.accept_tcp(0.0, (IP_B, 5999), (IP_A, 41001)) is None and b.stats["tcp-accept-refused"] == 1
    assert b.accept_tcp(0.0, (IP_A, 9), (IP_A, 41001)) is None


def test_answer_to_a_tcp_check_as_a_datagram_fails_the_pair() -> None:
    """RFC 8445 §7.2.5.2.1 with RFC 6544 §7.1: a TCP check's answer counts only over TCP."""
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    signal(net, a, b)
    connect = a.poll_tcp()
    assert isinstance(connect, TcpConnect)
    a.handle_tcp_event(0.01, TcpConnected(connect.conn))
    send = a.poll_tcp()
    assert isinstance(send, TcpSend)
    # The peer's answer to this check, delivered as if it came as a UDP datagram: not the same path.
    bc = b.accept_tcp(0.01, (IP_B, 5000), (IP_A, 40000))
    assert bc is not None
    b.handle_tcp_data(0.02, bc, send.data)
    answer = next(i for i in iter(b.poll_tcp, None) if isinstance(i, TcpSend))
    a.handle_datagram(0.03, (IP_A, 9), (IP_B, 5000), answer.data[2:])
    assert a.stats["response-asymmetric"] == 1
    events(a)
    assert not any(p.valid for p in a.pairs)


def test_selected_pair_event_names_tcp_candidates() -> None:
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    sel = [e for e in events(a) if isinstance(e, SelectedPairChanged)]
    assert len(sel) == 1 and sel[0].local.tcptype == "active" and sel[0].base == (IP_A, 9)


def test_random_bytes_never_raise() -> None:
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    conn = next(iter(b._tcp.conns))
    rng = random.Random(7)
    for _ in range(300):
        n = rng.choice((1, 2, 3, 20, 100, 700))
        b.handle_tcp_data(net.now, conn, bytes(rng.getrandbits(8) for _ in range(n)))
    assert b.state in (AgentState.CONNECTED, AgentState.COMPLETED)
    assert b._tcp.conns[conn].framer.buffered <= 65537


def test_crossing_connections_settle_on_the_controlling_agents() -> None:
    """Both so ends connect at once and each attempt reaches the other's listener as its own connection (what NATs
    that give each attempt its own port make of crossing SYNs): both agents keep the controlling agent's connection,
    the controlled one closes its own, data flows. Driven by hand, 5 ms per hop: one four-tuple cannot carry two
    connections in the simulation's TCP."""
    a, b = tcp_agents()
    a.add_tcp_host_candidate((IP_A, 7000), TcpType.SO)
    b.add_tcp_host_candidate((IP_B, 7001), TcpType.SO)
    b.set_remote_credentials(0.0, a.ufrag, a.pwd)
    a.set_remote_credentials(0.0, b.ufrag, b.pwd)
    b.add_remote_candidate(0.0, a.local_candidates[0])  # both check at t = 0: the SYNs cross
    a.add_remote_candidate(0.0, b.local_candidates[0])
    other = {id(a): b, id(b): a}
    links: dict[tuple[int, int], tuple[IceAgent, int]] = {}
    queue: list[tuple[float, int, Callable[[float], None]]] = []
    order = itertools.count()
    connects: list[TcpConnect] = []

    def later(fn: Callable[[float], None], now: float) -> None:
        heapq.heappush(queue, (now + 0.005, next(order), fn))

    def accept(x: IceAgent, c: TcpConnect, now: float) -> None:
        y = other[id(x)]
        conn = y.accept_tcp(now, c.remote, c.local)
        assert conn is not None
        links[(id(x), c.conn)], links[(id(y), conn)] = (y, conn), (x, c.conn)
        later(lambda t: x.handle_tcp_event(t, TcpConnected(c.conn)), now)

    def drain(x: IceAgent, now: float) -> None:
        while (i := x.poll_tcp()) is not None:
            if isinstance(i, TcpConnect):
                connects.append(i)
                later(lambda t, x=x, i=i: accept(x, i, t), now)
            elif isinstance(i, TcpSend) and (x_id := (id(x), i.conn)) in links:
                y, conn = links[x_id]
                later(lambda t, y=y, conn=conn, d=i.data: y.handle_tcp_data(t, conn, d), now)
            elif isinstance(i, TcpClose) and (peer := links.pop((id(x), i.conn), None)) is not None:
                links.pop((id(peer[0]), peer[1]), None)
                later(lambda t, p=peer: p[0].handle_tcp_event(t, TcpClosed(p[1])), now)

    def run(until: float, stop: Callable[[], bool] = lambda: False) -> float:
        now = 0.0 if not queue else queue[0][0]
        while now <= until and not stop():
            for x in (a, b):
                drain(x, now)
            times = [t for x in (a, b) if (t := x.next_timeout()) is not None] + [q[0] for q in queue[:1]]
            if not times:
                break
            now = max(now, min(times))
            while queue and queue[0][0] <= now:
                heapq.heappop(queue)[2](now)
            for x in (a, b):
                t = x.next_timeout()
                if t is not None and t <= now:
                    x.handle_timeout(now)
        return now

    now = run(2.0, stop=lambda: up(a, b))
    assert up(a, b)
    assert len(connects) == 2 and b.stats["tcp-duplicate-connection"] == 1
    assert a.selected is not None and b.selected is not None
    a_conn, b_conn = a._tcp.pair_conn[a.selected], b._tcp.pair_conn[b.selected]
    assert a_conn.outgoing and not b_conn.outgoing  # the controlling agent's connection, on both ends
    events(a), events(b)
    a.send(b"1")
    b.send(b"2")
    run(now + 0.1)
    assert [e.data for e in events(b) if isinstance(e, DataReceived)] == [b"1"]
    assert [e.data for e in events(a) if isinstance(e, DataReceived)] == [b"2"]


def test_selected_so_pair_reconnects_after_the_connection_drops() -> None:
    cfg = AgentConfig(tcp=TcpConfig(enabled=True, reconnect_interval=0.05))
    net = TcpNet()
    a, b = tcp_agents(cfg)
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 7000), TcpType.SO)
    b.add_tcp_host_candidate((IP_B, 7001), TcpType.SO)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    assert a.selected is not None and b.selected is not None
    net.reset_connections()  # the connection dies under both ends (a middlebox reset it)
    net.run(net.now + 1.0, stop=lambda: a.selected is not None and a.selected in a._tcp.pair_conn
            and a._tcp.pair_conn[a.selected].state.value == "up"
            and b.selected is not None and b.selected in b._tcp.pair_conn)
    events(a), events(b)
    assert a.send(b"again")
    net.run(net.now + 0.1)
    assert [e.data for e in events(b) if isinstance(e, DataReceived)] == [b"again"]
    assert a.stats["tcp-closed"] == 1 and a.stats["tcp-connects"] + b.stats["tcp-connects"] >= 3


def test_check_on_a_connection_before_the_remote_credentials() -> None:
    """RFC 8838 §11 over TCP: answered at once, learnt (prflx, pair, triggered check) when the credentials come."""
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 0), TcpType.ACTIVE)
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    a.set_remote_credentials(0.0, b.ufrag, b.pwd)
    a.add_remote_candidate(0.0, b.local_candidates[0])
    net.run(0.2)
    assert any(p.valid for p in a.pairs) and not b.pairs and len(b._tcp.early) == 1
    b.set_remote_credentials(net.now, a.ufrag, a.pwd)
    assert b.pairs and b.pairs[0].remote.tcptype == "active" and not b._tcp.early
    net.run(2.0, stop=lambda: up(a, b))
    assert up(a, b)


def test_ice_restart_keeps_using_the_so_connection() -> None:
    """After an ICE restart the new generation's so pair takes the connection already up between its ends (a second
    connect from the so port would clash on the four-tuple)."""
    net = TcpNet()
    a, b = tcp_agents()
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 7000), TcpType.SO)
    b.add_tcp_host_candidate((IP_B, 7001), TcpType.SO)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    connects = len(net.connects)
    a.restart(net.now)
    b.restart(net.now)
    signal(net, a, b)
    net.run(net.now + 2.0, stop=lambda: up(a, b) and a.state is AgentState.COMPLETED)
    assert up(a, b) and len(net.connects) == connects
    events(a), events(b)
    a.send(b"after restart")
    net.run(net.now + 0.1)
    assert [e.data for e in events(b) if isinstance(e, DataReceived)] == [b"after restart"]


def test_so_syn_ttl_is_the_controlled_agents() -> None:
    cfg = AgentConfig(tcp=TcpConfig(enabled=True, so_syn_ttl=3))
    net = TcpNet()
    a, b = tcp_agents(cfg)
    net.attach(a)
    net.attach(b)
    a.add_tcp_host_candidate((IP_A, 7000), TcpType.SO)
    b.add_tcp_host_candidate((IP_B, 7001), TcpType.SO)
    signal(net, a, b)
    net.run(2.0, stop=lambda: up(a, b))
    assert up(a, b)
    by_local = {c.local: c.syn_ttl for _, c in net.connects}
    assert by_local[(IP_B, 7001)] == 3 and by_local[(IP_A, 7000)] is None


def test_idle_accepted_connections_are_closed() -> None:
    """A connection nobody checks on (not the peer, or a scanner) gives its accept slot back after accept_idle."""
    cfg = AgentConfig(max_pairs=2, tcp=TcpConfig(enabled=True, accept_idle=5.0))
    b = IceAgent(False, cfg, rng=random.Random(2))
    b.add_tcp_host_candidate((IP_B, 5000), TcpType.PASSIVE)
    first = b.accept_tcp(0.0, (IP_B, 5000), ("192.0.2.9", 1))
    assert first is not None and b.accept_tcp(1.0, (IP_B, 5000), ("192.0.2.9", 2)) is not None
    assert b.accept_tcp(2.0, (IP_B, 5000), ("192.0.2.9", 3)) is None and b.stats["tcp-accept-over-limit"] == 1
    assert b.next_timeout() == 5.0
    b.handle_timeout(5.0)
    assert list(iter(b.poll_tcp, None)) == [TcpClose(first)] and b.stats["tcp-accepted-idle-closed"] == 1
    assert b.accept_tcp(5.5, (IP_B, 5000), ("192.0.2.9", 4)) is not None
