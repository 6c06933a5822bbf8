"""The simulation tier: two agents across every pair of NAT presets, on a virtual clock (no root, no sleeping)."""

from __future__ import annotations

import pytest

from ice.agent import CandidateType
from ice.lab.nat import PRESETS, NatBehaviour, NatKind
from ice.lab.nat.reach import direct_possible
from ice.scenario.model import candidate_types
from ice.sim.nat import SimNat
from ice.sim.scenario import two_nats

NAMES = list(PRESETS)


def allowed_types(a: NatBehaviour, b: NatBehaviour) -> tuple[set[CandidateType], set[CandidateType]]:
    """The (local, remote) types the controlling agent may select towards peer B: the scenario model's RFC 8445
    §7.2.5.3.1 reasoning (srflx behind an endpoint-independent mapping, peer-reflexive behind one that depends on
    the destination, host without a NAT)."""
    return ({CandidateType(t) for t in candidate_types(a, True, other=b)},
            {CandidateType(t) for t in candidate_types(b, False, other=a)})


@pytest.mark.sim
@pytest.mark.parametrize("a", NAMES)
def test_every_preset_pairing(a: str) -> None:
    """One row of the matrix per test (so xdist spreads it): connects exactly when RFC 4787 reasoning says a
    direct pair can work, and selects the pair types that reasoning predicts."""
    for b in NAMES:
        na, nb = PRESETS[a], PRESETS[b]
        r = two_nats(na, nb, timeout=5)
        assert r.connected is direct_possible(na, nb), (a, b)
        if r.connected:
            assert r.selected is not None
            local, remote = allowed_types(na, nb)
            assert r.selected[0] in local and r.selected[1] in remote, (a, b, r.selected_name)
            assert (r.selected[0].value, r.selected[1].value) in r.succeeded
        else:
            assert r.selected is None and r.succeeded == frozenset()


@pytest.mark.sim
def test_port_restricted_pair_connects_without_retransmission_waits() -> None:
    """Through two port-restricted cones the first srflx check dies in the peer's NAT; the triggered check
    answers the peer's at once, so connecting takes about one Ta, not a 500 ms retransmission."""
    r = two_nats(PRESETS["port-restricted-cone"], PRESETS["port-restricted-cone"], latency=0.005)
    assert r.connected and r.selected_name == "srflx-srflx"
    assert r.seconds < 0.1


@pytest.mark.sim
@pytest.mark.parametrize("loss", [0.1, 0.3])
def test_lossy_paths_still_connect(loss: float) -> None:
    results = [two_nats(PRESETS["port-restricted-cone"], PRESETS["full-cone"], loss=loss, seed=s, timeout=30)
               for s in range(10)]
    assert all(r.connected for r in results)


@pytest.mark.sim
def test_delay_scales_connect_time() -> None:
    fast = two_nats(PRESETS["full-cone"], PRESETS["full-cone"], latency=0.001)
    slow = two_nats(PRESETS["full-cone"], PRESETS["full-cone"], latency=0.05)
    assert fast.connected and slow.connected and slow.seconds > 4 * 0.05 > fast.seconds


def test_sim_nat_follows_rfc4787() -> None:
    """The model itself: mapping per behaviour, filtering per behaviour, expiry, and conntrack-like sessions."""
    s1, s2, s3 = ("198.51.100.1", 3478), ("198.51.100.1", 3479), ("198.51.100.2", 3478)
    inside = ("10.0.0.2", 5000)
    apdm = SimNat(PRESETS["symmetric"], "203.0.113.1")
    m = [apdm.outbound(0, inside, s) for s in (s1, s2, s3)]
    assert m[0] == ("203.0.113.1", 5000) and len(set(m)) == 3  # port preserved first, then one per endpoint
    adm = SimNat(PRESETS["adm-apdf"], "203.0.113.1")
    m = [adm.outbound(0, inside, s) for s in (s1, s2, s3)]
    assert m[0] == m[1] != m[2]
    cone = SimNat(PRESETS["restricted-cone"], "203.0.113.1")
    port = cone.outbound(0, inside, s1)[1]  # type: ignore[index]
    assert cone.inbound(1, s2, port) == inside and cone.inbound(1, s3, port) is None  # address-dependent
    assert cone.inbound(200, s1, port) is None  # expired after the 120 s timeout
    eif = SimNat(PRESETS["apdm-eif"], "203.0.113.1")
    port = eif.outbound(0, inside, s1)[1]  # type: ignore[index]
    assert eif.inbound(1, s3, port) == inside
    assert eif.outbound(2, inside, s3) == ("203.0.113.1", port)  # a reply keeps the inbound flow's binding
    assert SimNat(PRESETS["udp-blocked"], "203.0.113.1").outbound(0, inside, s1) is None


@pytest.mark.sim
@pytest.mark.parametrize("a", NAMES)
def test_every_preset_pairing_with_a_turn_server(a: str) -> None:
    """With a TURN server on the public segment every pairing connects (but the UDP-blocked one: TCP is not
    simulated), through a direct pair exactly when RFC 4787 reasoning allows one and a relayed pair otherwise."""
    for b in NAMES:
        na, nb = PRESETS[a], PRESETS[b]
        r = two_nats(na, nb, turn=True)
        blocked = NatKind.UDP_BLOCKED in (na.kind, nb.kind)
        assert r.connected is not blocked, (a, b)
        if r.connected:
            assert r.selected is not None
            relayed = CandidateType.RELAYED in r.selected
            assert relayed is not direct_possible(na, nb), (a, b, r.selected_name)
