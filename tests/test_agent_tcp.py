"""ICE-TCP (RFC 6544) in the sans-IO agent: candidates, priorities, SDP, framing, pairing, checks over TCP."""

from __future__ import annotations

import pytest

from ice.agent import Candidate, CandidateType
from ice.agent.sdp import IceDescription
from ice.agent.tcp import (
    DISCARD_PORT,
    Rfc4571Framer,
    TcpConfig,
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
