"""The simulation tier: two agents across every pair of NAT presets, on a virtual clock (no root, no sleeping)."""

from __future__ import annotations

import pytest

from ice.agent import CandidateType
from ice.lab.nat import PRESETS, NatBehaviour, NatKind
from ice.nat.reach import direct_possible
from ice.scenario.expect import candidate_types
from ice.sim.nat import SimNat
from ice.sim.scenario import SimResult, run_pair
from ice.topology.registry import topology


def two_nats(nat_a: NatBehaviour, nat_b: NatBehaviour, **options: object) -> SimResult:
    """The two_nats topology with these NATs, run in the simulation."""
    return run_pair(topology("two_nats", nat_a=nat_a, nat_b=nat_b), **options)  # type: ignore[arg-type]

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
    """With a TURN server on the public segment every pairing connects (a peer behind the UDP-blocking firewall
    reaches TURN over TCP and relays), through a direct pair exactly when RFC 4787 reasoning allows one and a
    relayed pair otherwise."""
    for b in NAMES:
        na, nb = PRESETS[a], PRESETS[b]
        r = two_nats(na, nb, turn=True)
        assert r.connected and r.selected is not None, (a, b)
        # either side's selected pair may show the relay (a peer's relay can reach A disguised as prflx)
        assert r.relayed is not direct_possible(na, nb), (a, b, r.selected_name)
        if NatKind.UDP_BLOCKED in (na.kind, nb.kind):
            assert r.relayed, (a, b, r.selected_name)


def test_sim_nat_forgets_expired_bindings_and_reuses_their_ports() -> None:
    """RFC 4787 §4.3: a binding past its timeout is gone: its flows are forgotten and its port can be given out
    again (port preservation picks it), so a long simulation does not grow without bound."""
    nat = SimNat(PRESETS["symmetric"].with_(mapping_timeout=30), "203.0.113.1")
    inside, server = ("10.0.0.2", 5000), ("198.51.100.1", 3478)
    for port in range(3000, 3050):
        nat.outbound(0, inside, ("198.51.100.9", port))
    assert len(nat.bindings) == 50 and len(nat.sessions) == 50
    assert nat.outbound(31, inside, server) == ("203.0.113.1", 5000)  # the first binding's port, free again
    assert len(nat.bindings) == 1 and len(nat.sessions) == 1
    assert nat.hairpin(31, 5000) == inside and nat.hairpin(62, 5000) is None  # hairpin only to live bindings


@pytest.mark.sim
def test_a_relayed_session_outlives_every_turn_lifetime() -> None:
    """The sim drives the TURN server's timers too: two symmetric NATs connected through the relay stay connected
    for 15 virtual minutes (allocation 10 min, permissions 5 min: the clients refresh them) while the allocation
    of a client that went silent expires (RFC 8656 §6.2)."""
    from ice.agent import AgentState, IceAgent
    from ice.relayed import RelayedAgent
    from ice.sim.network import SimNetwork
    from ice.turn.client import TurnClientConfig

    net = SimNetwork(topology("two_nats", nat_a="symmetric", nat_b="symmetric"))
    server = net.add_turn_server(("203.0.113.10", 3478), {"alice": "secret"})
    turn = TurnClientConfig(("203.0.113.10", 3478), "alice", "secret")
    agents = []
    for i in (1, 2):
        agent = IceAgent(i == 1)
        net.add_agent(agent, (f"10.0.{i}.2", 5000))
        relayed = RelayedAgent(agent, turn, (f"10.0.{i}.2", 5001))
        net.add_endpoint(relayed, (f"10.0.{i}.2", 5000), (f"10.0.{i}.2", 5001))
        agents.append((agent, relayed))
    (a, ra), (b, rb) = agents

    def signal(endpoint: object, ev: object) -> None:
        from ice.agent.events import CandidateGathered

        if isinstance(ev, CandidateGathered):
            (b if endpoint in (a, ra) else a).add_remote_candidate(net.now, ev.candidate)

    net.on_event = signal
    a.set_remote_credentials(0, b.ufrag, b.pwd)
    b.set_remote_credentials(0, a.ufrag, a.pwd)
    ra.start(0)
    rb.start(0)
    gone = RelayedAgent(IceAgent(False), turn, ("10.0.1.2", 5002))  # allocates, then leaves without a word
    net.add_endpoint(gone, ("10.0.1.2", 5002))
    gone.start(0)
    net.run(5)
    assert gone.relayed is not None and len(server.allocations) == 3
    del net.agents[("10.0.1.2", 5002)]
    net.run(900)
    assert a.selected is not None and a.state in (AgentState.CONNECTED, AgentState.COMPLETED)
    assert CandidateType.RELAYED in (a.selected.local.type, a.selected.remote.type)
    assert server.stats["allocation-expired"] == 1 and len(server.allocations) == 2  # only the silent one
    assert net.now == 900


def test_sim_nat_rewrites_the_remote_port_on_a_conntrack_clash() -> None:
    """Linux NAT behaviour the lab showed: the host has a flow to R through a destination-dependent binding, then
    R's packet arrives on another binding (the host's srflx port). Its reply tuple would clash with the first
    flow, so the NAT gives R's packets a new source port; the host's replies to that port go back to R."""
    nat = SimNat(PRESETS["apdm-adf"], "203.0.113.1")
    # R shares the STUN server's IP, as a peer's TURN relay does: address-dependent filtering on the srflx binding
    # then admits it
    inside, stun, r = ("10.0.0.2", 5000), ("203.0.113.10", 3478), ("203.0.113.10", 6000)
    srflx = nat.outbound(0, inside, stun)
    assert srflx is not None
    to_r = nat.outbound(1, inside, r)
    assert to_r is not None and to_r != srflx  # APDM: another binding for R
    seen = nat.inbound_seen(2, r, srflx[1])  # R's check to the host's srflx
    assert seen is not None and seen[1] == inside and seen[0][0] == r[0] and seen[0] != r
    assert nat.inbound_seen(3, r, srflx[1]) == seen  # the same flow keeps its disguise
    assert nat.outbound_to(4, inside, seen[0]) == (srflx, r)  # the reply leaves by the binding it came in on
    assert nat.inbound_seen(5, r, to_r[1]) == (r, inside)  # on the flow's own binding nothing is rewritten


@pytest.mark.sim
def test_a_relay_disguised_as_peer_reflexive_does_not_beat_a_direct_pair() -> None:
    """apdm-adf x eim-adf with TURN: B's relay reaches A through a rewritten port and looks peer-reflexive, with a
    higher priority than B's srflx. A direct pair is possible (its check succeeds on a retransmission); the
    controlling agent treats the disguised relay as the relay it is and nominates the direct pair."""
    r = two_nats(PRESETS["apdm-adf"], PRESETS["eim-adf"], turn=True)
    assert r.connected and not r.relayed, (r.selected_pair, r.selected_pair_b)
    assert r.selected is not None and CandidateType.RELAYED not in r.selected


def test_valid_pair_types_count_a_check_as_the_pair_it_produced() -> None:
    """``IceAgent.valid_pair_types()``: a host pair whose check came back with a NAT's mapping produced a srflx
    valid pair (RFC 8445 §7.2.5.3.1), so it counts as srflx, not host; pairs that are not valid do not count. The
    sim and the lab both report a cell's succeeded pairs this way."""
    import random

    from ice.agent import Candidate, IceAgent
    from ice.agent.agent import Pair

    def cand(kind: CandidateType, host: str) -> Candidate:
        return Candidate("1", 1, "udp", 1, host, 5000, kind)

    host, srflx = cand(CandidateType.HOST, "10.0.1.2"), cand(CandidateType.SERVER_REFLEXIVE, "203.0.113.1")
    remote, relay = cand(CandidateType.SERVER_REFLEXIVE, "203.0.113.2"), cand(CandidateType.RELAYED, "203.0.113.10")
    agent = IceAgent(True, rng=random.Random(1))
    produced = Pair(srflx, host.address, remote, 2, valid=True)
    checked = Pair(host, host.address, remote, 1, valid=True, valid_pair=produced)
    failed = Pair(host, host.address, relay, 1)
    agent.pairs = [checked, produced, failed]
    assert agent.valid_pair_types() == {("srflx", "srflx")}
    assert two_nats(PRESETS["eim-eif"], PRESETS["eim-eif"]).succeeded == frozenset({("srflx", "srflx")})
