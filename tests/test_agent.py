"""The sans-IO ICE agent on a virtual clock: pair selection, RFC timers, roles, nomination, lite, consent, errors."""

from __future__ import annotations

import itertools
import random

import pytest
from agent_net import Net, exchange

from ice.agent import AgentConfig, AgentState, Candidate, CandidateType, IceAgent, Nomination, PairState
from ice.agent.candidate import candidate_priority, pair_priority
from ice.agent.events import ConsentLost, RoleChanged, SelectedPairChanged
from ice.agent.session import IceSession
from ice.stun import Message, MessageClass, Method, parse, short_term_key
from ice.stun.attributes import (
    ErrorCode,
    IceControlling,
    Priority,
    UnknownAttribute,
    UseCandidate,
    Username,
    XorMappedAddress,
)

A1, A2 = ("10.0.0.1", 1000), ("10.0.0.1", 1001)
B1 = ("10.0.0.2", 2000)


def agents(seed: int = 1, cfg_a: AgentConfig | None = None, cfg_b: AgentConfig | None = None,
           controlling_b: bool = False) -> tuple[IceAgent, IceAgent]:
    a = IceAgent(True, cfg_a or AgentConfig(), rng=random.Random(seed))
    b = IceAgent(controlling_b, cfg_b or AgentConfig(), rng=random.Random(seed + 100))
    return a, b


def connected_pair(cfg_a: AgentConfig | None = None, cfg_b: AgentConfig | None = None
                   ) -> tuple[Net, IceAgent, IceAgent]:
    """Two agents on one LAN, connected (host pair), on a fresh virtual network."""
    net = Net()
    a, b = agents(cfg_a=cfg_a, cfg_b=cfg_b)
    net.attach(a, A1)
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(2.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    return net, a, b


def connected(*xs: IceAgent) -> bool:
    return all(x.selected is not None and x.state in (AgentState.CONNECTED, AgentState.COMPLETED) for x in xs)


# ----------------------------------------------------------------------------------------------- candidates


def test_priorities_follow_rfc8445() -> None:
    assert candidate_priority(CandidateType.HOST) == (126 << 24) | (65535 << 8) | 255
    assert candidate_priority(CandidateType.RELAYED, 0, 2) == 254
    g, d = 2130706431, 1694498815
    assert pair_priority(g, d) == (d << 32) + 2 * g + 1
    assert pair_priority(d, g) == (d << 32) + 2 * g


def test_sdp_candidate_lines_round_trip() -> None:
    line = ("candidate:842163049 1 udp 1677729535 203.0.113.5 54400 typ srflx raddr 10.0.0.5 rport 54400 "
            "generation 0 network-cost 999 ufrag abcd")
    c = Candidate.from_sdp("a=" + line)
    assert (c.type, c.address, c.related, c.generation) == (CandidateType.SERVER_REFLEXIVE, ("203.0.113.5", 54400),
                                                            ("10.0.0.5", 54400), 0)
    assert c.extensions == (("network-cost", "999"), ("ufrag", "abcd"))  # unknown extensions preserved in order
    assert "candidate:" + c.to_sdp() == line
    tcp = Candidate.from_sdp("1 1 TCP 2105524479 2001:db8::1 9 typ host tcptype active")
    assert tcp.transport == "tcp" and tcp.tcptype == "active" and tcp.host == "2001:db8::1"
    for bad in ("1 1 udp 1 10.0.0.1 9 type host", "1 1 udp x 10.0.0.1 9 typ host", "1 1 udp 1 10.0.0.1 9 typ nope",
                "1 1 udp 1 not_an_ip 9 typ host", "1 1 udp 1 10.0.0.1 9 typ host raddr"):
        with pytest.raises(ValueError):
            Candidate.from_sdp(bad)


# ------------------------------------------------------------------------------------------ connectivity


def test_host_pair_connects_and_data_flows() -> None:
    net, a, b = connected_pair()
    assert connected(a, b) and net.now <= 0.005  # first check at once, nomination without waiting for a tick
    assert a.selected is not None and a.selected.key == (A1, B1) and a.selected.nominated
    assert a.send(b"hello")
    net.run(net.now + 0.01)
    events = []
    while (e := b.next_event()) is not None:
        events.append(e)
    assert any(getattr(e, "data", None) == b"hello" for e in events)
    assert any(isinstance(e, SelectedPairChanged) and e.local.type is CandidateType.HOST for e in events)


def test_counters_say_what_each_agent_and_pair_did() -> None:
    """stats counts checks, responses, nominations, data both ways (and pair_stats the same per pair), so a
    failed cell's stats.json tells what each side sent and got."""
    net, a, b = connected_pair()
    assert a.send(b"hello") and b.send(b"hi!")
    net.run(net.now + 0.01)
    for x in (a, b):
        assert x.stats["checks-sent"] >= 1 and x.stats["check-responses-success"] >= 1, x.stats
        assert x.stats["pairs-succeeded"] >= 1
    assert a.stats["nominations-sent"] >= 1 and b.stats["triggered-checks"] + b.stats["triggered-deferred"] >= 1
    assert a.stats["data-sent"] == 1 and a.stats["data-bytes-sent"] == 5 and b.stats["data-bytes-received"] == 5
    assert b.stats["data-bytes-sent"] == 3 and a.stats["data-received"] == 1
    key = "host 10.0.0.1:1000 -> host 10.0.0.2:2000"
    assert a.pair_stats[key]["checks-sent"] == a.stats["checks-sent"]  # one pair: the totals are its counts
    assert a.pair_stats[key]["data-bytes-sent"] == 5 and a.pair_stats[key]["data-bytes-received"] == 3


def test_unanswered_checks_count_retransmissions_and_failed_pairs() -> None:
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    net.drop = lambda *_: True
    exchange(net, a, b)
    net.run(60.0)
    assert a.stats["checks-sent"] >= 1 and a.stats["checks-retransmitted"] >= 1, a.stats
    assert a.stats["pairs-failed"] >= 1 and a.stats["check-responses-success"] == 0


def test_ordinary_checks_are_paced_by_ta_and_retransmitted_per_rfc() -> None:
    """Three remote candidates that never answer: checks at 0, Ta, 2Ta; the first one retransmitted at
    RTO = max(500 ms, N x Ta) and doubling (RFC 8445 §14.3, RFC 8489 §6.2.1)."""
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    a.set_remote_credentials(0.0, b.ufrag, b.pwd)
    for port in (3000, 3001, 3002):
        a.add_remote_candidate(0.0, Candidate("9", 1, "udp", candidate_priority(CandidateType.HOST, 100 + port),
                                              "10.0.0.9", port, CandidateType.HOST))
    net.run(1.6)
    sent = [(round(t, 6), dst) for t, _, dst, _ in net.sent]
    firsts: dict[tuple[str, int], float] = {}
    for t, dst in sent:
        firsts.setdefault(dst, t)
    assert sorted(firsts.values()) == [0.0, 0.05, 0.1]
    first = min(firsts, key=lambda k: firsts[k])
    assert [t for t, dst in sent if dst == first] == [0.0, 0.5, 1.5]


def test_triggered_check_answers_at_once_through_nats() -> None:
    """A's first checks die in B's 'NAT' until B has sent to A: B's check then triggers A's check immediately."""
    net = Net(latency=0.005)
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    opened: set[tuple[tuple[str, int], tuple[str, int]]] = set()

    def nat_drop(src: tuple[str, int], dst: tuple[str, int], data: bytes) -> bool:
        opened.add((src, dst))
        return dst == B1 and (B1, src) not in opened  # B filters what it has not sent to (APDF)

    net.drop = nat_drop
    exchange(net, a, b)
    net.run(2.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    assert net.now < 0.05  # no 500 ms retransmission, no Ta wait


def test_role_conflict_both_controlling_resolves() -> None:
    net = Net()
    a, b = agents(controlling_b=True)
    roles: list[tuple[IceAgent, bool]] = []
    net.on_event = lambda agent, ev: roles.append((agent, ev.controlling)) if isinstance(ev, RoleChanged) else None
    net.attach(a, A1)
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(2.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    assert a.controlling != b.controlling  # the larger tie-breaker stays controlling (RFC 8445 §7.3.1.1)
    winner = a if a.tie_breaker > b.tie_breaker else b
    loser = b if winner is a else a
    assert winner.controlling
    assert a.stats["role-switch"] + b.stats["role-switch"] >= 1
    assert roles == [(loser, False)]  # one RoleChanged, from the agent that switched, with its new role


def test_role_conflict_both_controlled_resolves() -> None:
    net = Net()
    a, b = agents()
    a.controlling = False
    net.attach(a, A1)
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.controlling != b.controlling


def test_aggressive_nomination_selects_on_first_success() -> None:
    net = Net()
    a, b = agents(cfg_a=AgentConfig(nomination=Nomination.AGGRESSIVE))
    net.attach(a, A1)
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(1.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    requests = [parse(d) for _, s, _, d in net.sent if s == A1 and d[:2] == b"\x00\x01"]
    assert requests and all(m.has(0x0025) for m in requests)  # USE-CANDIDATE on every check


def test_lite_peer_is_controlled_and_does_not_check() -> None:
    net, a, b = connected_pair(cfg_b=AgentConfig(lite=True))
    assert a.controlling and not b.controlling
    assert net.checks_from(B1) == []  # a lite agent only answers


def test_nomination_does_not_wait_for_a_hopeless_better_pair() -> None:
    """A has two bases; the better one can never reach B. A nominates the working pair once the better pair has
    gone unanswered for nomination_wait, instead of waiting for its checks to time out (libnice: seconds)."""
    net = Net()
    a, b = agents()
    net.attach(a, A1, A2)
    net.attach(b, B1)
    net.drop = lambda src, dst, data: A1 in (src, dst)
    exchange(net, a, b)
    net.run(5.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.selected is not None and a.selected.base == A2
    assert net.now < 0.2


def test_relay_nomination_wait_runs_on_its_own_timer() -> None:
    """A relayed pair succeeds while the better direct pair's check goes unanswered: A nominates the relayed pair
    the moment the direct one has waited ``relay_nomination_wait`` (1 s), not at the next retransmission (1.5 s)."""
    relayed = ("198.51.100.50", 49152)
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    a.add_relayed_candidate(relayed)
    net.agents[relayed] = a
    net.attach(b, B1)
    net.drop = lambda src, dst, data: A1 in (src, dst)
    exchange(net, a, b)
    net.run(5.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.selected is not None and a.selected.base == relayed
    first_direct = min(t for t, src, _, _ in net.sent if src == A1)  # type: ignore[union-attr]
    assert first_direct == 0.0 and 1.0 <= net.now < 1.0 + 0.01


def test_ice_fails_when_every_pair_failed_and_no_candidate_can_come() -> None:
    """RFC 8445 §8.1.2 / RFC 8838 §8: FAILED once both sides ended gathering and every check ran its whole
    schedule (Rc = 7, RTO 500 ms: the last answer could come until 39.5 s)."""
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    net.drop = lambda src, dst, data: True
    a.end_of_local_candidates()
    b.end_of_local_candidates()
    exchange(net, a, b)
    net.run(39.0)
    assert a.state is AgentState.CHECKING
    net.run(41.0, stop=lambda: a.state is AgentState.FAILED)
    assert a.state is AgentState.FAILED and net.now == pytest.approx(39.5)


def test_ice_fails_at_once_with_an_empty_checklist() -> None:
    """Nothing can be paired (an IPv4-only agent, an IPv6-only peer): FAILED as soon as both ends of candidates
    are known, not never."""
    a, b = agents()
    a.add_host_candidate(A1)
    b.add_host_candidate(("2001:db8::2", 2000))
    a.end_of_local_candidates()
    a.set_remote_credentials(0.0, b.ufrag, b.pwd)
    a.add_remote_candidate(0.0, b.local_candidates[0])
    assert a.state is AgentState.NEW and not a.pairs
    a.add_remote_candidate(0.0, None)
    assert a.state is AgentState.FAILED


def test_trickled_candidates_after_credentials() -> None:
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    exchange(net, a, b, trickle_delay=0.1)
    net.run(0.1)
    assert not connected(a, b)
    b.add_remote_candidate(net.now, a.local_candidates[0])  # only B learns A's candidate: prflx does the rest
    net.run(1.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    assert a.selected is not None and a.selected.remote.type is CandidateType.PEER_REFLEXIVE


def test_check_before_remote_credentials_keeps_its_nomination() -> None:
    """Regression: a USE-CANDIDATE check answered before B knew A's credentials must still nominate."""
    net = Net()
    a, b = agents(cfg_a=AgentConfig(nomination=Nomination.AGGRESSIVE))
    net.attach(a, A1)
    net.attach(b, B1)
    a.set_remote_credentials(0.0, b.ufrag, b.pwd)
    a.add_remote_candidate(0.0, b.local_candidates[0])
    net.run(0.01)
    assert b.remote_ufrag is None and a.selected is not None
    b.set_remote_credentials(net.now, a.ufrag, a.pwd)
    net.run(1.0, stop=lambda: connected(a, b))
    assert connected(a, b)


# -------------------------------------------------------------------------------------------- consent


def test_consent_checks_every_4_to_6_s_and_loss_after_30_s() -> None:
    net, a, _b = connected_pair()
    t0 = net.now
    net.run(t0 + 20)
    consent = [t for t in net.checks_from(A1) if t > t0 + 0.01]
    gaps = [y - x for x, y in itertools.pairwise(consent)]
    assert len(consent) >= 3 and all(4.0 <= g <= 6.0 for g in gaps)  # RFC 7675 §5.1, randomised
    net.drop = lambda src, dst, data: True  # the path dies
    died = net.now
    net.run(died + 40)
    events = []
    while (e := a.next_event()) is not None:
        events.append(e)
    lost = [e for e in events if isinstance(e, ConsentLost)]
    assert lost and a.state is AgentState.FAILED and not a.send(b"x")
    assert died + 30 - 6 <= net.now  # lost no earlier than the 30 s timeout allows


# ---------------------------------------------------------------------------------------- bad input


def _request(agent: IceAgent, username: str, key: bytes, *extra: object) -> bytes:
    attrs = [Username(username), Priority(1), IceControlling(1), *extra]
    return Message(Method.BINDING, MessageClass.REQUEST, attributes=attrs).encode(  # type: ignore[arg-type]
        short_term_key(key.decode()), fingerprint=True)


@pytest.mark.parametrize(
    ("make", "code", "counter"),
    [
        (lambda ag: _request(ag, f"{ag.ufrag}:x", b"wrong-password"), 401, "check-bad-integrity"),
        (lambda ag: _request(ag, "someone-else:x", ag.pwd.encode()), 401, "check-wrong-username"),
        (lambda ag: _request(ag, f"{ag.ufrag}:x", ag.pwd.encode(), UnknownAttribute(0x7777, b"?")), 420, None),
        (lambda ag: Message(Method.BINDING, MessageClass.REQUEST).encode(), 400, "check-unauthenticated"),
        (lambda ag: Message(Method.BINDING, MessageClass.REQUEST, attributes=[
            Username(f"{ag.ufrag}:x"), IceControlling(1)]).encode(short_term_key(ag.pwd), fingerprint=True),
         400, "check-without-priority"),
    ],
)
def test_bad_checks_get_error_responses(make: object, code: int, counter: str | None) -> None:
    a, _ = agents()
    a.add_host_candidate(A1)
    a.handle_datagram(0.0, A1, ("10.9.9.9", 9), make(a))  # type: ignore[operator]
    out = a.poll_transmit()
    assert out is not None and out.remote == ("10.9.9.9", 9)
    resp = parse(out.data)
    assert resp.message_class is MessageClass.ERROR and resp.get(ErrorCode).code == code  # type: ignore[union-attr]
    if counter:
        assert a.stats[counter] == 1
    # An unauthenticated request gets an unsigned answer (RFC 8489 §9.1.3); an authenticated one a signed answer.
    assert resp.has_integrity is (counter in (None, "check-without-priority"))


def test_garbage_never_raises() -> None:
    a, _ = agents()
    a.add_host_candidate(A1)
    for junk in (b"", b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06\x00\x40", b"\x01" * 50,
                 bytes(20)):
        a.handle_datagram(0.0, A1, B1, junk)
    assert a.state is AgentState.NEW and a.poll_transmit() is None
    assert sum(a.stats.values()) >= 3


def test_pair_states_reach_succeeded_and_failed() -> None:
    net = Net()
    a, b = agents(cfg_a=AgentConfig(check_max_sends=2, check_rto=0.05))
    net.attach(a, A1, A2)
    net.attach(b, B1)
    net.drop = lambda src, dst, data: A1 in (src, dst)
    exchange(net, a, b)
    net.run(5.0)
    states = {p.base: p.state for p in a.pairs if p.remote.address == B1}
    assert states == {A1: PairState.FAILED, A2: PairState.SUCCEEDED}


def test_sdp_ice_attributes_round_trip() -> None:
    from ice.agent.sdp import IceDescription

    sdp = ("v=0\r\na=ice-lite\r\na=ice-ufrag:8hhY\r\na=ice-pwd:asd88fgpdd777uzjYhagZg\r\na=ice-options:trickle ice2\r\n"
           "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host\r\n"
           "a=end-of-candidates\r\n")
    d = IceDescription.from_lines(sdp)
    assert (d.ufrag, d.pwd, d.options, d.lite, d.end_of_candidates) == (
        "8hhY", "asd88fgpdd777uzjYhagZg", ("trickle", "ice2"), True, True)
    assert d.candidates[0].address == ("10.0.1.1", 8998)
    d.validate()
    assert IceDescription.from_lines(d.to_lines()) == d
    with pytest.raises(ValueError, match="ice-pwd"):
        IceDescription(ufrag="abcd", pwd="short").validate()


def test_ice_restart_keeps_data_flowing_until_the_new_pair_is_selected() -> None:
    net, a, b = connected_pair()
    old_ufrag, old_pair = a.ufrag, a.selected
    a.restart(net.now)
    b.restart(net.now)
    assert a.ufrag != old_ufrag and a.state is AgentState.CHECKING
    assert a.send(b"during-restart")  # the old pair still carries data
    net.run(net.now + 0.01)
    got = []
    while (e := b.next_event()) is not None:
        got.append(getattr(e, "data", None))
    assert b"during-restart" in got
    exchange(net, a, b)
    net.run(net.now + 1.0, stop=lambda: connected(a, b) and a.selected is not old_pair)
    assert connected(a, b) and a.selected is not old_pair
    checks = [parse(d) for _, s, _, d in net.sent if s == A1 and d[:2] == b"\x00\x01"]
    assert checks[-1].get(Username) == Username(f"{b.ufrag}:{a.ufrag}")  # new credentials on the wire


def test_two_components_each_get_a_pair_and_carry_their_own_data() -> None:
    """RTP/RTCP style: component 2 has its own sockets, pairs, nomination and selected pair (RFC 8445 §6.1.2)."""
    net = Net()
    a, b = agents()
    for agent, ip in ((a, "10.0.0.1"), (b, "10.0.0.2")):
        net.add_agent(agent, (ip, 5000))
        agent.add_host_candidate((ip, 5001), component=2)
        net.agents[(ip, 5001)] = agent
    exchange(net, a, b)
    net.run(1.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    assert {c: p.base[1] for c, p in a.selected_pairs.items()} == {1: 5000, 2: 5001}
    assert all(p.local.component == p.remote.component for p in a.pairs)  # never paired across components
    assert a.send(b"rtcp", component=2) and a.send(b"rtp")
    net.run(net.now + 0.01)
    got = []
    while (e := b.next_event()) is not None:
        if getattr(e, "data", None):
            got.append((e.component, e.data))  # type: ignore[union-attr]
    assert sorted(got) == [(1, b"rtp"), (2, b"rtcp")]
    # PRIORITY in a check is the prflx priority of the sending candidate, with its component (RFC 8445 §7.1.1).
    by_src = {s[1]: parse(d).get(Priority).number for _, s, _, d in net.sent  # type: ignore[union-attr]
              if s[0] == "10.0.0.1" and d[:2] == b"\x00\x01"}
    assert {port: prio & 0xFF for port, prio in by_src.items()} == {5000: 255, 5001: 254}


def _wire_sessions(net: Net, sa: IceSession, sb: IceSession) -> None:
    """Two-stream sessions on 10.0.0.1/10.0.0.2 ports 5000-5001, credentials and candidates exchanged."""
    for session, ip in ((sa, "10.0.0.1"), (sb, "10.0.0.2")):
        for i in range(2):
            session.stream(i).add_host_candidate((ip, 5000 + i))
            net.agents[(ip, 5000 + i)] = session  # type: ignore[assignment]  # the session routes by socket
    for x, y in ((sa, sb), (sb, sa)):
        y.set_remote_credentials(0.0, x.ufrag, x.pwd)
        for i in range(2):
            for c in x.stream(i).local_candidates:
                y.stream(i).add_remote_candidate(0.0, c)


def test_session_with_two_streams_shares_ta_and_roles() -> None:
    """RFC 8445 §6.1.2: two data streams, one checklist each; ordinary checks of both streams share one Ta."""
    net = Net()
    sa, sb = IceSession(True, streams=2, rng=random.Random(3)), IceSession(False, streams=2, rng=random.Random(4))
    _wire_sessions(net, sa, sb)
    net.run(1.0, stop=lambda: sa.connected and sb.connected)
    assert sa.connected and sb.connected
    assert [sa.stream(i).selected.base for i in range(2)] == [("10.0.0.1", 5000), ("10.0.0.1", 5001)]  # type: ignore[union-attr]
    assert sa.stream(0).ufrag == sa.stream(1).ufrag and sa.stream(0).pacer is sa.stream(1).pacer

    # Pacing and freezing across streams (RFC 8445 §6.1.2.6): with nothing answering, stream 0's checks go Ta
    # apart, and stream 1's pairs, whose foundations stream 0 is already checking, stay frozen.
    quiet = Net()
    q = IceSession(True, streams=2, rng=random.Random(5))
    for i in range(2):
        q.stream(i).add_host_candidate(("10.0.0.1", 6000 + i))
        quiet.agents[("10.0.0.1", 6000 + i)] = q  # type: ignore[assignment]
    q.set_remote_credentials(0.0, "abcd", "x" * 22)
    for i in range(2):
        for port in (7000, 7001):
            q.stream(i).add_remote_candidate(0.0, Candidate(str(port), 1, "udp", port, "10.0.0.9", port + 10 * i,
                                                            CandidateType.HOST))
    quiet.run(0.3)
    firsts: dict[tuple[str, int], float] = {}
    for t, _, dst, _ in quiet.sent:  # type: ignore[union-attr]
        firsts.setdefault(dst, round(t, 6))
    assert firsts == {("10.0.0.9", 7000): 0.0, ("10.0.0.9", 7001): 0.05}
    assert {p.state for p in q.stream(1).pairs} == {PairState.FROZEN}
    # With the same foundations in a second session whose stream 0 is answered, stream 1 unfreezes on the success
    # (§7.2.5.3.3) and both connect: the first part of this test.


def test_a_success_in_one_stream_unfreezes_its_foundation_in_the_others() -> None:
    """RFC 8445 §6.1.2.6 / §7.2.5.3.3: stream 1's pairs share stream 0's foundations, so they wait frozen; the first
    success in stream 0 unfreezes them, and only then does stream 1 send its first ordinary check."""
    net = Net()
    sa, sb = IceSession(True, streams=2, rng=random.Random(3)), IceSession(False, streams=2, rng=random.Random(4))
    _wire_sessions(net, sa, sb)
    net.drop = lambda s, d, data: net.now < 0.2 and 5000 in (s[1], d[1])  # stream 0's first check is lost
    net.run(2.0, stop=lambda: sa.connected and sb.connected)
    assert sa.connected and sb.connected

    def first(src: tuple[str, int], kind: bytes) -> float:
        return min(t for t, s, _, d in net.sent if s == src and d[:2] == kind)  # type: ignore[union-attr]

    stream0_success = first(("10.0.0.2", 5000), b"\x01\x01")  # B answers A's stream-0 check
    assert first(("10.0.0.1", 5001), b"\x00\x01") >= stream0_success
    assert first(("10.0.0.1", 5000), b"\x00\x01") == 0.0


def test_session_role_conflict_switches_every_stream() -> None:
    net = Net()
    sa, sb = IceSession(True, streams=2, rng=random.Random(6)), IceSession(True, streams=2, rng=random.Random(7))
    _wire_sessions(net, sa, sb)
    net.run(2.0, stop=lambda: sa.connected and sb.connected)
    assert sa.connected and sb.connected
    assert sa.controlling != sb.controlling
    assert all(a.controlling == sa.controlling for a in sa.agents) and all(
        b.controlling == sb.controlling for b in sb.agents)


def test_states_completed_then_disconnected_and_back() -> None:
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(1.0, stop=lambda: a.state is AgentState.COMPLETED and b.state is AgentState.COMPLETED)
    assert (a.state, b.state) == (AgentState.COMPLETED, AgentState.COMPLETED)
    net.drop = lambda src, dst, data: True
    net.run(net.now + 17)  # the first consent tick after 11 s without a success falls within 17 s
    assert a.state is AgentState.DISCONNECTED  # consent late: at least two missed rounds
    net.drop = lambda src, dst, data: False
    net.run(net.now + 7)
    assert a.state in (AgentState.CONNECTED, AgentState.COMPLETED)


def test_relayed_candidate_hook_carries_checks_and_data() -> None:
    """A relayed candidate is its own base: its transmits name the relayed address as ``local`` (the TURN client
    sends them through the allocation) and what the relay delivers comes back addressed to it."""
    relayed = ("198.51.100.50", 49152)
    net = Net()
    a, b = agents()
    cand = a.add_relayed_candidate(relayed, mapped=("203.0.113.7", 5000), server_ip="198.51.100.1")
    net.agents[relayed] = a  # stands in for the TURN server relaying both ways
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(1.0, stop=lambda: connected(a, b))
    assert connected(a, b)
    assert cand.type is CandidateType.RELAYED and cand.related == ("203.0.113.7", 5000)
    assert a.selected is not None and a.selected.local.type is CandidateType.RELAYED and a.selected.base == relayed
    assert b.selected is not None and b.selected.remote.type is CandidateType.RELAYED
    assert all(src == relayed for _, src, _, _ in net.sent if src[0] != B1[0])  # type: ignore[union-attr]


def test_a_local_candidate_gathered_after_the_remote_ones_starts_checks_at_once() -> None:
    """Trickle ICE (RFC 8838 §10): with the peer's candidates already known, a relayed (or host) candidate that
    arrives later is paired and checked without waiting for anything else to happen (a relay-only agent has no
    other candidate; found by the lab matrix, where such an agent never checked)."""
    relayed = ("198.51.100.50", 49152)
    net = Net()
    a, b = agents()
    net.attach(b, B1)
    a.set_remote_credentials(net.now, b.ufrag, b.pwd)
    b.set_remote_credentials(net.now, a.ufrag, a.pwd)
    a.add_remote_candidate(net.now, b.local_candidates[0])
    net.agents[relayed] = a
    net.run(0.5)
    assert a.state is AgentState.NEW and not net.checks_from(relayed)
    t = net.now
    cand = a.add_relayed_candidate(relayed)
    assert a.next_timeout() is not None and a.next_timeout() <= t  # type: ignore[operator]
    b.add_remote_candidate(net.now, cand)
    net.run(t + 1.0, stop=lambda: connected(a, b))
    assert net.checks_from(relayed)[0] == t
    assert connected(a, b) and a.selected is not None and a.selected.local.type is CandidateType.RELAYED


def _outage(net: Net, seconds: float) -> None:
    net.drop_if = lambda s, d, x: True
    net.run(net.now + seconds)
    net.drop_if = None


def test_restart_from_disconnected_checks_again_and_never_spins() -> None:
    net, a, b = connected_pair()
    _outage(net, 20.0)
    assert a.state is AgentState.DISCONNECTED
    a.restart(net.now)
    b.restart(net.now)
    assert a.state is AgentState.CHECKING and b.state is AgentState.CHECKING
    exchange(net, a, b)
    deadline = a.next_timeout()
    assert deadline is not None and deadline > net.now - 1e-9
    net.run(net.now + 2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.send(b"back")


def test_consent_lost_then_restart_recovers_and_no_data_on_the_dead_pair() -> None:
    net, a, b = connected_pair()
    _outage(net, 40.0)
    assert a.state is AgentState.FAILED and not a.send(b"dead")
    a.restart(net.now)
    b.restart(net.now)
    assert not a.send(b"still-dead")  # consent expired on the old pair: nothing may go out on it
    exchange(net, a, b)
    net.run(net.now + 2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.send(b"alive") and b.send(b"alive")


def test_after_consent_loss_a_late_candidate_does_not_revive_the_controlling_agent_a_restart_does() -> None:
    """The controlling agent nominated a pair and lost consent on it; the peer then trickles a new candidate (its
    TURN allocation made again). Nominating another pair needs an ICE restart (RFC 8445 §8.1.1), so the agent stays
    FAILED, which is what tells the application to restart, rather than checking pairs it can never nominate."""
    net, a, b = connected_pair()
    _outage(net, 40.0)
    assert a.state is AgentState.FAILED and b.state is AgentState.FAILED
    B2 = ("10.0.0.2", 2001)
    net.attach(b, B2)
    late = b.add_host_candidate(B2)
    a.add_remote_candidate(net.now, late)
    net.run(net.now + 5.0)
    assert a.state is AgentState.FAILED and a.stats["late-pair-after-nomination"] >= 1
    assert not any(p.state is PairState.IN_PROGRESS for p in a.pairs)
    a.restart(net.now)
    b.restart(net.now)
    exchange(net, a, b)
    net.run(net.now + 2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.send(b"alive")


def test_mdns_remote_candidates_are_ignored_not_paired() -> None:
    a, _ = agents()
    a.add_host_candidate(A1)
    a.set_remote_credentials(0.0, "ufrag", "p" * 22)
    name = Candidate("1", 1, "udp", 2130706431, "1f2e3d4c-aaaa-bbbb-cccc-0123456789ab.local", 5000, CandidateType.HOST)
    a.add_remote_candidate(0.0, name)
    assert a.remote_candidates == [] and a.pairs == [] and a.stats["remote-candidate-not-an-ip"] == 1
    a.add_remote_candidate(0.0, Candidate("1", 1, "udp", 2130706431, B1[0], B1[1], CandidateType.HOST))
    assert [p.remote.address for p in a.pairs] == [B1]


# ------------------------------------------------------------------------------------ review regressions


def _responses(agent: IceAgent) -> list[Message]:
    out = []
    while (t := agent.poll_transmit()) is not None:
        msg = parse(t.data)
        if msg.message_class is not MessageClass.REQUEST:
            out.append(msg)
    return out


def test_a_lite_agent_never_takes_the_controlling_role() -> None:
    """RFC 8445 §6.1.1: a lite agent is always controlled; a conflict it would win by tie-breaker still gets 487,
    so the full peer takes the controlling role."""
    from ice.stun.attributes import IceControlled

    lite = IceAgent(False, AgentConfig(lite=True), rng=random.Random(1))
    lite.tie_breaker = 2**64 - 1  # it would win any tie-breaker
    lite.add_host_candidate(A1)
    lite.set_remote_credentials(0.0, "peer", "peer-password-peer-password")
    req = Message(Method.BINDING, MessageClass.REQUEST, attributes=[
        Username(f"{lite.ufrag}:peer"), Priority(1), IceControlled(5)]).encode(short_term_key(lite.pwd),
                                                                            fingerprint=True)
    lite.handle_datagram(0.0, A1, B1, req)
    (resp,) = _responses(lite)
    err = resp.get(ErrorCode)
    assert resp.message_class is MessageClass.ERROR and err is not None and err.code == 487
    assert not lite.controlling


def test_paced_nomination_still_carries_use_candidate() -> None:
    """With pace_triggered (the RFC's letter), the nominating check waits for its Ta slot but keeps USE-CANDIDATE;
    without it the controlled side would never select."""
    net, _, _ = connected_pair(cfg_a=AgentConfig(pace_triggered=True))
    assert any(parse(d).get(UseCandidate) is not None for _, s, _, d in net.sent  # type: ignore[union-attr]
               if s == A1 and d[:2] == b"\x00\x01")


def test_an_unanswered_nomination_fails_its_pair_and_nominates_the_next() -> None:
    """The best pair's check succeeded but its nomination is never answered (the path broke): after the full
    schedule the pair fails and the next valid pair is nominated, so retries end."""
    net = Net()
    a, b = agents()
    net.attach(a, A1, A2)
    net.attach(b, B1)
    net.drop = lambda src, dst, data: src == A1 and data[:2] == b"\x00\x01" and parse(data).get(
        UseCandidate) is not None
    exchange(net, a, b)
    net.run(60.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.selected is not None and a.selected.base == A2
    assert net.now == pytest.approx(39.5, abs=0.1)
    assert not any(p.valid for p in a.pairs if p.base == A1)


def test_the_controlled_side_keeps_the_highest_priority_nominated_pair() -> None:
    """RFC 8445 §8.1.1: with several nominations (aggressive), a lower-priority one never replaces the selection."""
    net = Net()
    a, b = agents(cfg_a=AgentConfig(nomination=Nomination.AGGRESSIVE))
    net.attach(a, A1, A2)
    net.attach(b, B1)
    exchange(net, a, b)
    net.run(2.0)
    assert connected(a, b) and b.selected is not None
    best = max((p for p in b.pairs if p.remote_nominated), key=lambda p: p.priority)
    assert b.selected.priority == best.priority and b.selected.remote.address == best.remote.address


def test_max_pairs_keeps_the_best_pairs() -> None:
    """RFC 8445 §6.1.2.5: over the limit, a better pair displaces the worst unchecked one."""
    a, _ = agents(cfg_a=AgentConfig(max_pairs=2))
    a.add_host_candidate(A1)
    for port, pref in ((3000, 1), (3001, 3), (3002, 2)):
        a.add_remote_candidate(0.0, Candidate(str(port), 1, "udp", candidate_priority(CandidateType.HOST, pref),
                                              "10.0.0.9", port, CandidateType.HOST))
    assert sorted(p.remote.port for p in a.pairs) == [3001, 3002]
    assert a.stats["pairs-over-limit"] == 1


def test_early_checks_are_kept_once_per_path() -> None:
    """Checks arriving before the remote credentials are remembered once per path (retransmissions do not pile up)
    and a nomination among them sticks."""
    _, b = agents()
    b.add_host_candidate(B1)
    for use in (False, True, False):
        b.handle_datagram(0.0, B1, A1, _request(b, f"{b.ufrag}:x", b.pwd.encode(),
                                                *([UseCandidate()] if use else [])))
    assert len(b._early_checks) == 1 and b._early_checks[0][3] is True


def _spin_guard(agent: IceAgent, limit: int = 5000) -> None:
    """Fail (instead of hanging) if the agent is asked to handle timeouts without time moving on."""
    original = agent.handle_timeout
    calls = 0

    def counted(now: float) -> None:
        nonlocal calls
        calls += 1
        if calls > limit:
            raise AssertionError(f"busy-spin at {now!r}: next_timeout() = {agent.next_timeout()!r}")
        original(now)

    agent.handle_timeout = counted  # type: ignore[method-assign]


@pytest.mark.parametrize("t0", [0.0, 0.037, 0.12, 1.0, 1.7])
def test_the_nomination_deadline_fires_whatever_the_float_rounding(t0: float) -> None:
    """The deadline (first check + wait) and the test in _may_still_win are one expression: 1.0 + 0.2 - 1.0 is
    0.19999999999999996, and a deadline that did not count as reached would be returned forever."""
    net = Net()
    cfg = AgentConfig(nomination_wait=0.2)
    a, b = agents(cfg_a=cfg, cfg_b=cfg)
    net.attach(a, A1)
    net.attach(b, ("2.0.0.1", 2000), ("2.0.0.2", 2000))
    net.drop = lambda s, d, data: ("2.0.0.1", 2000) in (s, d)
    net.run(t0)
    exchange(net, a, b)
    _spin_guard(a)
    net.run(t0 + 2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.selected is not None and a.selected.remote.port == 2000


def test_a_closed_agent_has_no_deadlines() -> None:
    _, a, _ = connected_pair()
    a.close()
    assert a.next_timeout() is None
    a.add_host_candidate(A2)  # a late candidate after close wakes nothing up
    assert a.next_timeout() is None


def only_b_knows_a(cfg_a: AgentConfig | None = None) -> tuple[Net, IceAgent, IceAgent]:
    """A controlled, B controlling, both with the other's credentials, but only B has A's candidates: A learns B
    from B's checks (peer-reflexive), as when B's candidates were mDNS names A cannot resolve."""
    net = Net()
    a, b = agents(cfg_a=cfg_a)
    a.controlling, b.controlling = False, True
    net.attach(a, A1)
    net.attach(b, B1)
    a.set_remote_credentials(0, b.ufrag, b.pwd)
    b.set_remote_credentials(0, a.ufrag, a.pwd)
    for c in a.local_candidates:
        b.add_remote_candidate(0, c)
    return net, a, b


def test_failed_is_not_a_dead_end_for_peer_reflexive_pairs() -> None:
    """The peer's only candidates were mDNS names A cannot resolve: A's checklist is empty and ICE fails at once,
    but the peer's checks then make peer-reflexive pairs (RFC 8445 §7.3.1.3) and A connects after all."""
    net, a, b = only_b_knows_a()
    b.add_remote_candidate(0, None)
    a.end_of_local_candidates()
    b.end_of_local_candidates()
    a.add_remote_candidate(0, None)
    assert a.state is AgentState.FAILED
    net.run(5.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.send(b"after all")


def test_the_controlled_side_follows_a_renomination_after_its_pair_broke() -> None:
    """B accepted A1-B1, then B -> A1 broke: A's nomination goes unanswered, A fails that pair and nominates
    A2-B1 (RFC 8445 §8.1.1 allows one nomination at a time); B, whose consent on A1-B1 has stopped succeeding,
    follows instead of clinging to the higher-priority pair, so both end on the same one."""
    net = Net()
    a, b = agents()
    net.attach(a, A1, A2)
    net.attach(b, B1)
    net.drop = lambda s, d, data: s == B1 and d == A1 and b.selected is not None
    exchange(net, a, b)
    net.run(60.0)
    assert connected(a, b) and a.selected is not None and b.selected is not None
    assert a.selected.base == A2 and b.selected.remote.address == A2


def test_a_restart_whose_nominations_all_go_unanswered_fails_instead_of_stalling() -> None:
    net, a, b = connected_pair()
    a.end_of_local_candidates()
    b.end_of_local_candidates()
    a.restart(net.now)
    b.restart(net.now)
    net.drop = lambda s, d, data: data[:2] == b"\x00\x01" and parse(data).get(UseCandidate) is not None
    exchange(net, a, b)
    net.run(200.0, stop=lambda: a.state is AgentState.FAILED)
    assert a.state is AgentState.FAILED and a.next_timeout() is None


def test_pruning_never_drops_a_pair_a_check_or_the_triggered_queue_still_holds() -> None:
    """max_pairs = 1 and a triggered check queued (pace_triggered): a better remote candidate arriving then must not
    orphan the queued pair (it would be checked outside the checklist)."""
    net, a, b = only_b_knows_a(AgentConfig(pace_triggered=True, max_pairs=1))
    net.run(0.0011)  # B's first check reached A: a prflx pair waits in A's triggered queue
    queued = list(a._triggered)
    assert queued
    a.add_remote_candidate(net.now, Candidate("x", 1, "udp", 2**31 - 1, "3.0.0.9", 9, CandidateType.HOST))
    assert all(p in a.pairs for p in queued) and a.stats["pairs-over-limit"] == 1
    net.run(3.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.selected in a.pairs


def test_a_check_from_a_relayed_candidate_keeps_the_relayed_pair_whatever_the_mapped_address() -> None:
    """A peer's NAT may give our relay's packets a new source port (a Linux conntrack clash); the response then
    maps us to an address that is not the relayed one. The valid pair is still the relayed pair, and no prflx
    candidate is invented for an address that belongs to the relay."""
    relayed = ("198.51.100.50", 49152)
    a, b = agents()
    a.add_relayed_candidate(relayed)
    a.set_remote_credentials(0.0, b.ufrag, b.pwd)
    a.add_remote_candidate(0.0, Candidate("1", 1, "udp", candidate_priority(CandidateType.HOST), B1[0], B1[1],
                                          CandidateType.HOST))
    a.handle_timeout(0.0)
    t = a.poll_transmit()
    assert t is not None and t.local == relayed
    req = parse(t.data)
    resp = Message(Method.BINDING, MessageClass.SUCCESS, req.transaction_id,
                   [XorMappedAddress("198.51.100.50", 61000)]).encode(short_term_key(b.pwd), fingerprint=True)
    a.handle_datagram(0.01, relayed, B1, resp)
    (pair,) = [p for p in a.pairs if p.valid]
    assert pair.local.type is CandidateType.RELAYED and pair.base == relayed
    assert not any(c.type is CandidateType.PEER_REFLEXIVE for c in a.local_candidates)


def test_ice_does_not_fail_while_local_gathering_may_still_add_candidates() -> None:
    """Every pair failed, but a TURN allocation (or STUN answer) may still come: no FAILED before gathering ends."""
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    net.drop = lambda src, dst, data: True
    b.end_of_local_candidates()
    exchange(net, a, b)
    net.run(45.0)
    assert a.state is AgentState.CHECKING and all(p.state is PairState.FAILED for p in a.pairs)
    a.end_of_local_candidates()
    assert a.state is AgentState.FAILED


def test_early_checks_are_bounded() -> None:
    _, b = agents(cfg_b=AgentConfig(max_pairs=2))
    b.add_host_candidate(B1)
    for port in range(5):
        b.handle_datagram(0.0, B1, ("10.0.0.1", 7000 + port), _request(b, f"{b.ufrag}:x", b.pwd.encode()))
    assert len(b._early_checks) == 2 and b.stats["early-checks-over-limit"] == 3


def test_consent_goes_on_with_the_old_credentials_during_a_restart() -> None:
    """RFC 8445 §9 / RFC 7675 §5.1: while a restart waits for the peer's new candidates, the old pair still carries
    data, so its consent checks go on, with the old generation's credentials, and both sides answer them."""
    net, a, b = connected_pair()
    old = (a.ufrag, b.ufrag)
    a.restart(net.now)
    b.restart(net.now)
    t = net.now
    net.run(t + 40.0)  # no new signalling yet: longer than the 30 s consent timeout
    consent = [parse(d) for ts, s, _, d in net.sent if s == A1 and d[:2] == b"\x00\x01" and ts > t]
    assert consent and all(m.get(Username) == Username(f"{old[1]}:{old[0]}") for m in consent)
    assert a.state is AgentState.CHECKING and not a._consent_lost and a.send(b"still flowing")
    assert b.stats["check-previous-generation"] >= 6
    exchange(net, a, b)
    net.run(net.now + 1.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a._previous is None


def test_consent_lost_during_a_restart_stops_the_old_pair() -> None:
    net, a, b = connected_pair()
    a.restart(net.now)
    b.restart(net.now)
    events: list[object] = []
    net.on_event = lambda agent, ev: events.append(ev) if agent is a else None
    _outage(net, 40.0)  # consent checks run every 4-6 s: the one after the 30 s mark finds consent lost
    assert any(isinstance(e, ConsentLost) for e in events) and a.state is AgentState.FAILED
    assert not a.send(b"no consent, no data")  # RFC 7675 §5.2


@pytest.mark.parametrize("flag", [True, False])
def test_consent_to_a_lite_peer_carries_use_candidate(flag: bool) -> None:
    """Some ICE-lite servers ignore consent checks without USE-CANDIDATE (ex_ice#110): facing a lite peer, the
    controlling agent's consent checks re-nominate the selected pair, unless configured not to."""
    net, a, b = connected_pair(cfg_a=AgentConfig(lite_consent_use_candidate=flag), cfg_b=AgentConfig(lite=True))
    t = net.now
    net.run(t + 7.0)  # one consent round (4-6 s)
    consent = [parse(d) for ts, s, _, d in net.sent if s == A1 and d[:2] == b"\x00\x01" and ts > t]
    assert consent and all((m.get(UseCandidate) is not None) is flag for m in consent)
    assert connected(a, b) and not a._consent_lost


# ----------------------------------------------------------------------------------- errors that say why, fast


def _wrong_password(cfg_a: AgentConfig | None = None, cfg_b: AgentConfig | None = None
                    ) -> tuple[Net, IceAgent, IceAgent, list[object]]:
    """a (controlling) was given b's password with a typo; b has a's right."""
    net = Net()
    events: list[object] = []
    net.on_event = lambda endpoint, ev: events.append((endpoint, net.now, ev))
    a, b = agents(cfg_a=cfg_a, cfg_b=cfg_b)
    net.attach(a, A1)
    net.attach(b, B1)
    a.set_remote_credentials(net.now, b.ufrag, b.pwd + "x")
    b.set_remote_credentials(net.now, a.ufrag, a.pwd)
    for x, y in ((a, b), (b, a)):
        for c in x.local_candidates:
            y.add_remote_candidate(net.now, c)
        y.add_remote_candidate(net.now, None)
    for x in (a, b):
        x.end_of_local_candidates()
    return net, a, b, events


def _failed_at(events: list[object], agent: IceAgent) -> float | None:
    from ice.agent.events import StateChanged
    return next((t for e, t, ev in events if e is agent and isinstance(ev, StateChanged)  # type: ignore[misc]
                 and ev.state is AgentState.FAILED), None)


def test_a_check_answered_401_fails_its_pair_at_once_and_the_reason_names_the_password() -> None:
    """RFC 8445 §7.2.5.2.4: a 401 is unrecoverable. The controlling side fails within a round trip, not after the
    39.5 s check schedule; the controlled side, holding a valid pair, fails when no nomination comes."""
    net, a, b, events = _wrong_password()
    net.run(100.0, stop=lambda: a.state is AgentState.FAILED and b.state is AgentState.FAILED)
    ta, tb = _failed_at(events, a), _failed_at(events, b)
    assert ta is not None and ta < 0.1
    assert a.failure_reason is not None and "401" in a.failure_reason and "password" in a.failure_reason
    assert a.stats["check-401"] >= 1
    # b had a valid pair (its own checks were fine) and waited nomination_timeout after a's last check.
    assert tb is not None and 40.0 <= tb < 40.2
    assert b.failure_reason is not None and "nomination" in b.failure_reason
    assert b.stats["nomination-timeout"] == 1


def test_the_nomination_deadline_is_configurable_and_can_be_disabled() -> None:
    net, a, b, events = _wrong_password(cfg_b=AgentConfig(nomination_timeout=5.0))
    net.run(100.0, stop=lambda: b.state is AgentState.FAILED)
    tb = _failed_at(events, b)
    assert tb is not None and 5.0 <= tb < 5.2
    net, a, b, events = _wrong_password(cfg_b=AgentConfig(nomination_timeout=None))
    net.run(300.0)
    assert a.state is AgentState.FAILED and b.state is AgentState.CHECKING


def test_the_rfc8489_reading_of_an_unsigned_401_waits_for_the_schedule_but_keeps_the_reason() -> None:
    net, a, _b, events = _wrong_password(cfg_a=AgentConfig(unsigned_401_fails_pair=False))
    net.run(100.0, stop=lambda: a.state is AgentState.FAILED)
    ta = _failed_at(events, a)
    assert ta is not None and ta > 39.0
    assert a.failure_reason is not None and "password" in a.failure_reason


def test_a_silent_stun_server_holds_up_end_of_candidates_for_gather_timeout_only() -> None:
    from ice.agent.events import GatheringComplete, StunServerUnreachable
    net = Net()
    events: list[tuple[float, object]] = []
    net.on_event = lambda endpoint, ev: events.append((net.now, ev))
    a = IceAgent(True, AgentConfig(gather_timeout=2.0), rng=random.Random(1))
    net.attach(a, A1)
    a.gather_server_reflexive(net.now, A1, ("10.9.9.9", 3478))  # nothing there: never answers
    a.end_of_local_candidates()
    net.run(60.0)
    done = [t for t, ev in events if isinstance(ev, GatheringComplete)]
    lost = [(t, ev) for t, ev in events if isinstance(ev, StunServerUnreachable)]
    assert done == [2.0]
    assert len(lost) == 1 and lost[0][0] == 2.0 and lost[0][1].server == ("10.9.9.9", 3478)
    assert "no response within 2 s" in lost[0][1].reason
    assert not a._checks  # abandoned: no srflx candidate may trickle after end-of-candidates


def test_without_gather_timeout_a_silent_server_is_bounded_by_the_transaction_schedule() -> None:
    from ice.agent.events import GatheringComplete, StunServerUnreachable
    net = Net()
    events: list[tuple[float, object]] = []
    net.on_event = lambda endpoint, ev: events.append((net.now, ev))
    a = IceAgent(True, AgentConfig(gather_timeout=None), rng=random.Random(1))
    net.attach(a, A1)
    a.gather_server_reflexive(net.now, A1, ("10.9.9.9", 3478))
    a.end_of_local_candidates()
    net.run(100.0)
    assert [t for t, ev in events if isinstance(ev, GatheringComplete)] == [32.5]  # RFC 8489 §6.2.1 with Rm 2
    assert any(isinstance(ev, StunServerUnreachable) and "7 requests" in ev.reason for _, ev in events)


def test_an_unreachable_stun_server_ends_its_gathering_at_once() -> None:
    from ice.agent.events import GatheringComplete, StunServerUnreachable
    a = IceAgent(True, AgentConfig(), rng=random.Random(1))
    a.add_host_candidate(A1)
    a.gather_server_reflexive(0.0, A1, ("10.9.9.9", 3478))
    a.end_of_local_candidates()
    assert not a.stun_server_unreachable(0.01, A1, ("10.9.9.9", 3479), "wrong port: not ours")
    assert a.stun_server_unreachable(0.01, A1, ("10.9.9.9", 3478), "ICMP port unreachable")
    evs = []
    while (e := a.next_event()) is not None:
        evs.append(e)
    assert StunServerUnreachable(("10.9.9.9", 3478), A1, "ICMP port unreachable") in evs
    assert isinstance(evs[-1], GatheringComplete) and a.next_timeout() is None


def test_a_peer_reflexive_candidate_signalled_later_takes_its_real_type() -> None:
    """A learns B1 from B's check before signalling brings B's host candidate B1 (RFC 8445 §7.3.1.3); when it does,
    it is the same candidate: the pair keeps its state and the selected pair is reported again as host."""
    net, a, b = only_b_knows_a()
    a.end_of_local_candidates()
    b.end_of_local_candidates()
    net.run(5.0, stop=lambda: connected(a, b))
    assert connected(a, b) and a.selected is not None and a.selected.remote.type is CandidateType.PEER_REFLEXIVE
    state, valid = a.selected.state, a.selected.valid
    while a.next_event() is not None:
        pass
    host = next(c for c in b.local_candidates if c.address == B1)
    a.add_remote_candidate(net.now, host)
    assert a.selected.remote is host and (a.selected.state, a.selected.valid) == (state, valid)
    assert [c.type for c in a.remote_candidates] == [CandidateType.HOST] and a.stats["remote-prflx-signalled"] == 1
    ev = a.next_event()
    assert isinstance(ev, SelectedPairChanged) and ev.remote is host
    a.add_remote_candidate(net.now, host)  # the same candidate again changes nothing
    assert a.next_event() is None and a.stats["remote-prflx-signalled"] == 1


def test_crossing_checks_wait_briefly_for_their_answers_instead_of_triggering_twice() -> None:
    """Both sides check the one pair at once (RFC 8445 §7.3.1.4 would cancel each in-flight check and trigger
    another): with ``triggered_grace`` each waits for its own check's answer, so connecting takes six datagrams."""
    net = Net()
    a, b = agents()
    net.attach(a, A1)
    net.attach(b, B1)
    net.sent = []
    exchange(net, a, b)
    net.run(2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and len(net.sent) == 6
    assert a.stats["triggered-checks"] == b.stats["triggered-checks"] == 0
    assert b.stats["triggered-deferred"] == 1


def test_a_check_the_peer_dropped_is_triggered_again_after_the_grace() -> None:
    """A's first check is lost (the peer's NAT had no hole yet); B's check arrives: A's triggered check goes once
    ``triggered_grace`` after its lost check, not at the 500 ms retransmission."""
    net = Net()
    a, b = agents(cfg_a=AgentConfig(triggered_grace=0.01))
    net.attach(a, A1)
    net.attach(b, B1)
    dropped: list[float] = []

    def drop_first_from_a(src: object, dst: object, data: bytes) -> bool:
        if src == A1 and not dropped and data[:2] == b"\x00\x01":
            dropped.append(net.now)
            return True
        return False

    net.drop = drop_first_from_a
    exchange(net, a, b)
    net.run(2.0, stop=lambda: connected(a, b))
    assert connected(a, b) and dropped == [0.0]
    assert a.stats["triggered-deferred"] == 1 and a.stats["triggered-checks"] == 1
    assert 0.01 <= net.now < 0.05  # the grace, a round trip or two; not the 0.5 s retransmission
