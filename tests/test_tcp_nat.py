"""TCP in the NAT model (RFC 5382): the behaviour's TCP section, its validation, the reasoning about direct TCP
connections, the nft rules that realise it and the simulation's TCP-aware NAT."""

from __future__ import annotations

import pytest
from golden_nat import IFACES

from ice.lab.nat import PRESETS, Filtering, Mapping, NatKind, compile_ruleset
from ice.nat.behaviour import NatBehaviour, SynAnswer, TcpBehaviour
from ice.nat.reach import tcp_direct_possible, tcp_reachable, tcp_simultaneous_open_possible

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
    said = {name: b.as_json()["tcp"] for name, b in PRESETS.items()}
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
    """Symmetric in its arguments; a destination-dependent TCP mapping never opens simultaneously; a NAT that
    refuses simultaneous open needs the other side reachable; only EIF or no NAT is reachable."""
    for a in PRESETS.values():
        assert tcp_reachable(a) is (a.kind is NatKind.NONE or a.tcp_filtering is EIF)
        for b in PRESETS.values():
            assert tcp_direct_possible(a, b) is tcp_direct_possible(b, a)
            if a.tcp_mapping is not None and a.tcp_mapping is not EIM:
                assert not tcp_simultaneous_open_possible(a, b)
            refusing = a.with_tcp(simultaneous_open=False) if a.kind is not NatKind.NONE else a
            if refusing is not a and NatKind.UDP_BLOCKED not in (a.kind, b.kind):
                assert tcp_direct_possible(refusing, b) is (tcp_reachable(a) or tcp_reachable(b))


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
