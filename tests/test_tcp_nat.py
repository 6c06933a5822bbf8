"""TCP in the NAT model (RFC 5382): the behaviour's TCP section, its validation, the reasoning about direct TCP
connections, the nft rules that realise it and the simulation's TCP-aware NAT."""

from __future__ import annotations

import itertools
from typing import cast

import pytest
from golden_nat import IFACES

from ice.lab.nat import PRESETS, Filtering, Mapping, NatKind, compile_ruleset
from ice.nat.behaviour import NatBehaviour, SynAnswer, TcpBehaviour
from ice.nat.reach import tcp_direct_possible, tcp_reachable, tcp_simultaneous_open_possible
from ice.sim.nat import SimNat, TcpVerdict
from ice.sim.network import SimNetwork
from ice.sim.scenario import TcpPairConfig, run_tcp_active_passive, run_tcp_pair
from ice.sim.tcp import ACK, ICMP_UNREACHABLE, RST, SYN, SYN_ACK, TcpState
from ice.topology.registry import topology
from ice.topology.spec import TopologySpec

EIM, APDM = Mapping.ENDPOINT_INDEPENDENT, Mapping.ADDRESS_AND_PORT_DEPENDENT
EIF, ADF, APDF = Filtering.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT


def test_tcp_section_defaults_to_the_udp_behaviour() -> None:
    """RFC 5382 behaviours not stated follow the RFC 4787 ones; stated ones win."""
    cone = PRESETS["restricted-cone"]
    assert (cone.tcp_mapping, cone.tcp_filtering, cone.tcp_port_preservation) == (EIM, ADF, True)
    odd = cone.with_tcp(mapping=APDM, filtering=APDF, port_preservation=False)
    assert (odd.tcp_mapping, odd.tcp_filtering, odd.tcp_port_preservation) == (APDM, APDF, False)
    assert (odd.mapping, odd.filtering, odd.port_preservation) == (EIM, ADF, True)  # UDP untouched
    blocked = PRESETS["udp-blocked"]
    assert (blocked.mapping, blocked.tcp_mapping, blocked.tcp_filtering) == (None, EIM, APDF)
    assert PRESETS["none"].tcp_mapping is None and PRESETS["none"].tcp_filtering is None


def test_every_preset_states_its_tcp_behaviour() -> None:
    """What each box does to TCP, as `icelab nat list --json` reports it."""
    said = {name: cast("dict[str, object]", b.as_json()["tcp"]) for name, b in PRESETS.items()}
    for name, tcp in said.items():
        assert isinstance(tcp, dict) and set(tcp) == {"mapping", "filtering", "port_preservation",
                                                        "unsolicited_syn", "simultaneous_open",
                                                        "established_timeout"}, name
    assert said["linux-masquerade"] == {
        "mapping": "endpoint-independent", "filtering": "address-and-port-dependent", "port_preservation": True,
        "unsolicited_syn": "drop", "simultaneous_open": True, "established_timeout": 432000}
    assert said["linux-masquerade-rst"]["unsolicited_syn"] == "rst"
    assert said["full-cone"]["filtering"] == "endpoint-independent"
    assert said["symmetric"]["mapping"] == "address-and-port-dependent"
    assert {tcp["unsolicited_syn"] for name, tcp in said.items() if name != "linux-masquerade-rst"} == {"drop"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PRESETS["linux-masquerade"].with_tcp(filtering=EIF),
         "TCP through plain MASQUERADE with port preservation is eim-apdf; declare that"),
        (lambda: PRESETS["linux-masquerade"].with_tcp(port_preservation=False),
         "TCP through plain MASQUERADE without port preservation is apdm-apdf"),
        (lambda: PRESETS["none"].with_tcp(unsolicited_syn=SynAnswer.RST),
         "a 'none' box does no NAT, so it has no TCP behaviour to declare"),
        (lambda: TcpBehaviour(established_timeout=0), "the TCP established_timeout must be at least 1 second"),
    ],
)
def test_impossible_tcp_declarations_are_refused_in_one_sentence(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_a_masquerade_box_may_randomise_tcp_ports_alone() -> None:
    b = PRESETS["linux-masquerade"].with_tcp(port_preservation=False, mapping=APDM)
    assert (b.mapping, b.port_preservation, b.tcp_mapping, b.tcp_port_preservation) == (EIM, True, APDM, False)


# --------------------------------------------------------------------------------------------- the reasoning

PAIRS = [
    # (a, b, simultaneous open, direct at all)
    ("port-restricted-cone", "port-restricted-cone", True, True),  # both drop: measured 10/10 in the lab
    ("linux-masquerade", "linux-masquerade", True, True),
    ("linux-masquerade", "linux-masquerade-rst", True, True),  # one answers RST: the refused side's retry gets in
    ("linux-masquerade-rst", "linux-masquerade-rst", False, False),  # both answer: only crossing SYNs connect
    ("symmetric", "symmetric", False, False),
    ("symmetric", "port-restricted-cone", False, False),
    ("symmetric", "linux-masquerade", False, False),
    ("symmetric", "full-cone", False, True),  # active symmetric -> passive full cone
    ("symmetric", "none", False, True),
    ("restricted-cone", "restricted-cone", True, True),
    ("full-cone", "full-cone", False, True),  # each admits the other's early SYN, whose host then answers RST
    ("full-cone", "linux-masquerade-rst", False, True),
    ("apdm-eif", "symmetric", False, True),  # an EIF mapping takes SYNs from anyone, whatever the mapping
    ("adm-adf", "port-restricted-cone", False, False),
    ("udp-blocked", "none", False, False),  # TCP leaves only to TURN ports
    ("none", "none", False, True),
]


@pytest.mark.parametrize(("a", "b", "so", "direct"), PAIRS)
def test_direct_tcp_per_preset_pair(a: str, b: str, so: bool, direct: bool) -> None:
    na, nb = PRESETS[a], PRESETS[b]
    assert tcp_simultaneous_open_possible(na, nb) is so
    assert tcp_simultaneous_open_possible(nb, na) is so
    assert tcp_direct_possible(na, nb) is direct and tcp_direct_possible(nb, na) is direct


def test_tcp_reasoning_over_every_preset() -> None:
    """Symmetric in its arguments; a destination-dependent TCP mapping never opens simultaneously; when neither
    NAT lets a crossing SYN in, only a reachable side helps; only EIF or no NAT is reachable."""
    for a in PRESETS.values():
        assert tcp_reachable(a) is (a.kind is NatKind.NONE or a.tcp_filtering is EIF)
        for b in PRESETS.values():
            assert tcp_direct_possible(a, b) is tcp_direct_possible(b, a)
            if a.tcp_mapping is not None and a.tcp_mapping is not EIM:
                assert not tcp_simultaneous_open_possible(a, b)
            if NatKind.NONE in (a.kind, b.kind) or NatKind.UDP_BLOCKED in (a.kind, b.kind):
                continue
            ra, rb = a.with_tcp(simultaneous_open=False), b.with_tcp(simultaneous_open=False)
            assert not tcp_simultaneous_open_possible(ra, rb)
            assert tcp_direct_possible(ra, rb) is (tcp_reachable(a) or tcp_reachable(b))


# --------------------------------------------------------------------------------------------- the nft rules


def _rules(b: NatBehaviour) -> str:
    return compile_ruleset(b, IFACES)


def test_nft_rules_follow_the_tcp_section() -> None:
    cone = _rules(PRESETS["full-cone"])
    assert 'iifname "nat-wan" ip daddr 203.0.113.1 dnat ip to tcp dport map @tcp_in_eif' in cone  # EIF for TCP
    assert "snat ip to ip saddr . tcp sport map @tcp_bind_eim" in cone
    assert "meta l4proto tcp accept" not in cone and "reject" not in cone and "chain simopen" not in cone
    odd = _rules(PRESETS["full-cone"].with_tcp(filtering=APDF, mapping=APDM, port_preservation=False))
    assert "dnat ip to udp dport map @in_eif" in odd and "@tcp_in_eif" in odd.split("# hairpin")[-2]  # hairpin only
    assert 'iifname "nat-wan" ip daddr 203.0.113.1 dnat ip to tcp dport' not in odd
    assert "meta l4proto tcp snat ip to 203.0.113.1 random" in odd and "@tcp_bind_eim" not in odd.split("learn")[1]
    rst = _rules(PRESETS["linux-masquerade-rst"])
    assert '    iifname "nat-wan" meta l4proto tcp accept' in rst  # the box's own stack answers RST
    assert rst.index("meta l4proto tcp accept") < rst.index('iifname "nat-wan" drop')
    icmp = _rules(PRESETS["eim-apdf"].with_tcp(unsolicited_syn=SynAnswer.ICMP, simultaneous_open=False))
    assert 'meta l4proto tcp reject with icmp type port-unreachable' in icmp
    assert 'iifname "nat-wan" ct direction reply tcp flags & (syn | ack) == syn drop' in icmp
    assert "nf_conntrack_tcp_timeout_established=432000" in _rules(PRESETS["linux-masquerade"])
    assert "nf_conntrack_tcp_timeout_established=7440" in cone


# ---------------------------------------------------------------------------------------------- the simulation

INSIDE, S1, S2 = ("10.0.0.2", 40000), ("198.51.100.1", 3478), ("198.51.100.2", 3478)


def test_sim_nat_tracks_tcp_as_rfc5382_says() -> None:
    """The model itself: a SYN makes a binding by the TCP mapping; the answer comes back on the flow; a stranger's
    SYN meets the filter, then the unsolicited-SYN answer; a crossing SYN is let in or not; a RST ends the flow."""
    nat = SimNat(PRESETS["linux-masquerade"], "203.0.113.1")
    assert nat.tcp_outbound(0, INSIDE, S1, ACK) is None  # nothing to translate a mid-stream segment by
    assert nat.tcp_outbound(0, INSIDE, S1, SYN) == ("203.0.113.1", 40000)  # port preserved
    assert nat.tcp_outbound(0, INSIDE, S2, SYN) == ("203.0.113.1", 40000)  # endpoint-independent
    assert nat.tcp_inbound(1, S1, 40000, SYN_ACK) == TcpVerdict(INSIDE)
    assert nat.tcp_inbound(1, ("198.51.100.1", 9), 40000, SYN) == TcpVerdict(None)  # APDF, dropped silently
    assert nat.tcp_inbound(1, S2, 40000, SYN) == TcpVerdict(INSIDE)  # the crossing SYN (REQ-2a)
    assert nat.tcp_inbound(2, S2, 40000, RST) == TcpVerdict(INSIDE)
    assert nat.tcp_inbound(3, S2, 40000, SYN) == TcpVerdict(None)  # the flow is gone with the RST
    rst = SimNat(PRESETS["linux-masquerade-rst"], "203.0.113.1")
    assert rst.tcp_inbound(0, S1, 5555, SYN) == TcpVerdict(None, RST)
    assert rst.tcp_inbound(0, S1, 5555, ACK) == TcpVerdict(None)  # only SYNs are answered
    icmp = SimNat(PRESETS["eim-apdf"].with_tcp(unsolicited_syn=SynAnswer.ICMP, simultaneous_open=False), "203.0.113.1")
    assert icmp.tcp_inbound(0, S1, 5555, SYN) == TcpVerdict(None, ICMP_UNREACHABLE)
    icmp.tcp_outbound(0, INSIDE, S1, SYN)
    assert icmp.tcp_inbound(1, S1, 40000, SYN) == TcpVerdict(None)  # a crossing SYN refused: silence, not ICMP
    assert icmp.tcp_inbound(1, S1, 40000, SYN_ACK) == TcpVerdict(INSIDE)
    cone = SimNat(PRESETS["restricted-cone"], "203.0.113.1")
    cone.tcp_outbound(0, INSIDE, S1, SYN)
    assert cone.tcp_inbound(1, ("198.51.100.1", 9), 40000, SYN) == TcpVerdict(INSIDE)  # ADF: a known address
    assert cone.tcp_inbound(1, S2, 40000, SYN) == TcpVerdict(None)
    sym = SimNat(PRESETS["symmetric"].with_tcp(established_timeout=60), "203.0.113.1")
    ports = {sym.tcp_outbound(0, INSIDE, s, SYN) for s in (S1, S2)}
    assert len(ports) == 2 and ("203.0.113.1", 40000) in ports
    assert sym.tcp_inbound(100, S1, 40000, SYN_ACK) == TcpVerdict(None)  # an unanswered SYN's flow has timed out
    assert SimNat(PRESETS["udp-blocked"], "203.0.113.1").tcp_outbound(0, INSIDE, S1, SYN) is not None  # 3478
    assert SimNat(PRESETS["udp-blocked"], "203.0.113.1").tcp_outbound(0, INSIDE, ("198.51.100.1", 80), SYN) is None


def two(a: NatBehaviour | str, b: NatBehaviour | str) -> TopologySpec:
    """The two_nats topology: host a behind NAT a, host b behind NAT b, the STUN host on the public segment."""
    return topology("two_nats", nat_a=a, nat_b=b)


@pytest.mark.sim
def test_simultaneous_open_through_two_port_restricted_nats_that_drop() -> None:
    """A's first SYN is dropped by B's NAT (B has not sent yet); B's SYN gets in on A's flow: one connection, no
    refusal, in about the 50 ms B started later; data flows."""
    r = run_tcp_pair(two("port-restricted-cone", "port-restricted-cone"))
    assert r.connected and r.refusals == () and r.seconds < 0.06
    assert r.srflx == (("203.0.113.1", 40000), ("203.0.113.2", 40000))  # port preserved
    net = SimNetwork(two("linux-masquerade", "linux-masquerade"))
    a, b = net.add_tcp("10.0.1.2"), net.add_tcp("10.0.2.2")
    ca = a.connect(0, ("10.0.1.2", 40000), ("203.0.113.2", 40000))
    cb = b.connect(0, ("10.0.2.2", 40000), ("203.0.113.1", 40000))  # both at once: the SYNs cross
    net.run(1, stop=lambda: ca.established and cb.established)
    assert ca.established and cb.established and not ca.passive and not cb.passive
    a.send(ca, b"hello")
    net.run(2, stop=lambda: bool(cb.received))
    assert cb.received == b"hello"


@pytest.mark.sim
def test_rst_answering_nats_refuse_the_simultaneous_open() -> None:
    """Two Linux boxes whose own stack answers RST: every SYN that arrives before the other side's has left is
    reset, retry after retry (the simulation's NATs act when a packet is sent, so SYNs never cross in flight, as
    on the lab's zero-delay links). One dropping side is enough to fix it."""
    r = run_tcp_pair(two("linux-masquerade-rst", "linux-masquerade-rst"), TcpPairConfig(attempts=5))
    assert not r.connected and r.refusals == ("rst",) * 10
    mixed = run_tcp_pair(two("linux-masquerade", "linux-masquerade-rst"))
    assert mixed.connected and mixed.refusals == ("rst",)  # A's first SYN reset, its paced retry got in


@pytest.mark.sim
@pytest.mark.parametrize("other", list(PRESETS))
def test_a_symmetric_nat_never_opens_simultaneously(other: str) -> None:
    for a, b in (("symmetric", other), (other, "symmetric")):
        assert not run_tcp_pair(two(a, b), TcpPairConfig(attempts=3)).connected


@pytest.mark.sim
def test_sim_agrees_with_the_reasoning_on_every_preset_pair() -> None:
    """Simultaneous open (either host first) and active -> passive (either way round), for every pairing of
    presets: the simulation connects exactly when ice.nat.reach says it can."""
    for a, b in itertools.combinations_with_replacement(PRESETS, 2):
        na, nb = PRESETS[a], PRESETS[b]
        so = run_tcp_pair(two(a, b)).connected and run_tcp_pair(two(b, a)).connected
        assert so is tcp_simultaneous_open_possible(na, nb), (a, b)
        to_b = run_tcp_active_passive(two(a, b), "b").connected
        to_a = run_tcp_active_passive(two(a, b), "a").connected
        assert to_b is (tcp_reachable(nb) and NatKind.UDP_BLOCKED not in (na.kind, nb.kind)), (a, b)
        assert to_a is (tcp_reachable(na) and NatKind.UDP_BLOCKED not in (na.kind, nb.kind)), (a, b)
        assert (so or to_a or to_b) is tcp_direct_possible(na, nb), (a, b)


SPACE = {
    f"{f.short}-{answer.value}-{'so' if so else 'noso'}": NatBehaviour(
        EIM, f, tcp=TcpBehaviour(unsolicited_syn=answer, simultaneous_open=so))
    for f, answer, so in itertools.product(Filtering, SynAnswer, (True, False))
} | {"none": PRESETS["none"]}


@pytest.mark.sim
@pytest.mark.parametrize("config", [TcpPairConfig(), TcpPairConfig(start_b=0.3, latency=0.005, retry=0.25)],
                         ids=["b-50ms-later", "b-300ms-later-5ms-links"])
def test_sim_agrees_with_the_reasoning_over_every_tcp_behaviour(config: TcpPairConfig) -> None:
    """Every pairing of TCP filtering x unsolicited-SYN answer x crossing-SYN admission (endpoint-independent
    mappings; 190 pairs, each host first in turn): the simultaneous open connects exactly when the reasoning
    says, whoever starts first."""
    for a, b in itertools.combinations_with_replacement(SPACE, 2):
        got = [run_tcp_pair(two(x, y), config).connected
               for x, y in ((SPACE[a], SPACE[b]), (SPACE[b], SPACE[a]))]
        assert all(got) is tcp_simultaneous_open_possible(SPACE[a], SPACE[b]), (a, b, got)


def test_tcp_stack_refuses_and_retransmits() -> None:
    """The host model: SYN retransmission doubles its wait and gives up; ICMP fails a connect; a SYN to nothing
    is reset."""
    behind = SimNetwork(two("linux-masquerade", "linux-masquerade"))
    a = behind.add_tcp("10.0.1.2")
    conn = a.connect(0, ("10.0.1.2", 5000), ("203.0.113.2", 80))  # B's NAT drops it: silence
    behind.run(200)
    assert conn.state is TcpState.CLOSED and conn.error == "timeout" and conn.retries == a.config.syn_retries
    net = SimNetwork()
    stack = net.add_tcp("198.51.100.1")
    other = net.add_tcp("198.51.100.2")
    c2 = stack.connect(net.now, ("198.51.100.1", 5001), ("198.51.100.2", 80))  # a host with nothing listening
    net.run(net.now + 1)
    assert c2.error == "rst"
    other.listen(("198.51.100.2", 80))
    c3 = stack.connect(net.now, ("198.51.100.1", 5002), ("198.51.100.2", 80))
    net.run(net.now + 1)
    assert c3.established and [c.passive for c in other.accepted()] == [True]
    c4 = stack.connect(net.now, ("198.51.100.1", 5003), ("198.51.100.2", 81))
    stack.handle_segment(net.now, ("198.51.100.1", 5003), ("198.51.100.2", 81), ICMP_UNREACHABLE)
    assert c4.error == "icmp"


def test_a_scenario_cell_changes_the_tcp_section_by_name() -> None:
    """``nats = { nat_a = { preset = "linux-masquerade", tcp = { unsolicited_syn = "rst" } } }``: the fields named
    change, the others keep the preset's; mistakes are one sentence each."""
    from ice.scenario.cell import NatChoice

    choice = NatChoice.parse({"preset": "linux-masquerade", "tcp": {"unsolicited_syn": "rst"}})
    b = choice.behaviour()
    assert b.tcp.unsolicited_syn is SynAnswer.RST and b.tcp.established_timeout == 432000
    assert choice.slug == "linux-masquerade+tcp=unsolicited_syn.rst"
    assert choice.as_json() == {"preset": "linux-masquerade", "tcp": {"unsolicited_syn": "rst"}}
    for table, message in [
        ({"syn": "rst"}, "syn is not a TCP field; valid fields: mapping, filtering, port_preservation"),
        ({"unsolicited_syn": "reset"}, "tcp unsolicited_syn is 'reset', not one of drop, rst, icmp"),
        ({"simultaneous_open": "no"}, "tcp simultaneous_open is true or false, not 'no'"),
        ({"filtering": "eif"}, "TCP through plain MASQUERADE with port preservation is eim-apdf"),
        ("rst", "tcp is a table such as"),
    ]:
        with pytest.raises(ValueError, match=message):
            NatChoice.parse({"preset": "linux-masquerade", "tcp": table})
