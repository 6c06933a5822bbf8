"""A peer renumbered mid-session (RFC 8445 §9): the core forgets what lived on the old address and gathers again
on the new one with new credentials, the sim moves the address as the lab does, the peer that did not move
restarts when the new credentials arrive, and a new pair carries the data. Virtual clock throughout (the sim)."""

from __future__ import annotations

import ipaddress

import pytest
from agent_net import Net, exchange

from ice.agent import AgentConfig, AgentState, CandidateType, IceAgent
from ice.agent.events import CandidateGathered, GatheringComplete, NetworkChangeRestart
from ice.agent.network import NetworkChange
from ice.relayed import RelayedAgent
from ice.sim.scenario import SimPair
from ice.topology.fabric import Fabric
from ice.topology.registry import topology

A1, A2, B1 = ("198.51.100.1", 5000), ("198.51.100.7", 5000), ("198.51.100.2", 5000)
STUN = ("198.51.100.10", 3478)


def _events(agent: IceAgent) -> list[object]:
    out = []
    while (ev := agent.next_event()) is not None:
        out.append(ev)
    return out


def _connected(net: Net, a: IceAgent, b: IceAgent) -> None:
    exchange(net, a, b)
    a.end_of_local_candidates()
    b.end_of_local_candidates()
    net.run(net.now + 2.0, stop=lambda: a.selected is not None and b.selected is not None)
    assert a.selected is not None and b.selected is not None


def test_network_changed_forgets_the_old_address_and_gathers_on_the_new_one() -> None:
    net = Net()
    server = net.add_stun_server(STUN)
    assert server is not None
    a, b = IceAgent(True, AgentConfig()), IceAgent(False, AgentConfig())
    net.attach(a, A1)
    net.attach(b, B1)
    _connected(net, a, b)
    ufrag = a.ufrag
    _events(a)
    del net.agents[A1]
    net.add_endpoint(a, A2)
    a.network_changed(net.now, NetworkChange(gone=(A1,), hosts=((1, A2),), stun_servers=(STUN,)))
    # The restart comes first (the application signals it), then the new host candidate; the srflx request is
    # pending, so gathering is not complete yet.
    events = _events(a)
    kinds = [type(e) for e in events]
    assert kinds.index(NetworkChangeRestart) < kinds.index(CandidateGathered)
    restart = events[kinds.index(NetworkChangeRestart)]
    assert isinstance(restart, NetworkChangeRestart) and restart.ufrag == a.ufrag != ufrag
    assert restart.gone == (A1,) and restart.added == (A2,)
    assert [e.candidate.address for e in events if isinstance(e, CandidateGathered)] == [A2]
    assert not a.gathering_complete and not any(isinstance(e, GatheringComplete) for e in events)
    assert a.bases == [A2] and all(c.address != A1 and c.related != A1 for c in a.local_candidates)
    assert a.selected is None and not a.send(b"nowhere to send from")  # the old pair's base is gone
    assert a.stats["network-changes"] == 1 and a.state is AgentState.CHECKING
    net.run(net.now + 0.1, stop=lambda: a.gathering_complete)
    assert a.gathering_complete  # the STUN server answered the new base (same address: no srflx candidate)
    b.restart(net.now)
    exchange(net, a, b)
    net.run(net.now + 2.0, stop=lambda: a.selected is not None and b.selected is not None)
    assert a.selected is not None and a.selected.base == A2
    assert b.selected is not None and b.selected.remote.address == A2


def test_a_pending_server_reflexive_request_on_a_gone_address_ends_quietly() -> None:
    net = Net()
    a = IceAgent(True, AgentConfig())
    net.attach(a, A1)
    a.gather_server_reflexive(net.now, A1, STUN)  # no server: it would retransmit for seconds
    a.end_of_local_candidates()
    assert not a.gathering_complete
    del net.agents[A1]
    net.add_endpoint(a, A2)
    a.network_changed(net.now, NetworkChange(gone=(A1,), hosts=((1, A2),)))
    assert a.gathering_complete and isinstance(_events(a)[-1], GatheringComplete)
    assert a.next_timeout() is None  # nothing left to retransmit from the dead address


def test_relay_only_moves_its_allocation_to_the_new_socket() -> None:
    spec = topology("two_nats", nat_a="apdm-apdf", nat_b="apdm-apdf")
    pair = SimPair(spec, AgentConfig(consent_timeout=6), turn=True, relay_only=True)
    assert pair.connect(10).connected
    ea = pair.ea
    assert isinstance(ea, RelayedAgent)
    old_relayed = ea.relays[0].relayed
    old, new = pair.renumber("a")
    assert (old, new) == ("10.0.1.2", "10.0.1.254")
    assert [r.local for r in ea.relays] == [(new, 5001)]
    pair.net.run(pair.net.now + 5, stop=lambda: pair.a.selected is not None and pair.b.selected is not None)
    assert ea.relays[0].relayed not in (None, old_relayed)
    assert {c.type for c in pair.a.local_candidates} == {CandidateType.RELAYED}
    assert pair.a.selected is not None and pair.a.selected.local.type is CandidateType.RELAYED
    assert pair.a.selected.base == ea.relays[0].relayed


@pytest.mark.parametrize(("nat_a", "moved"), [("eim-apdf", "a"), ("none", "a"), ("eim-apdf", "b")])
def test_sim_renumber_finds_a_new_direct_pair_after_both_restart(nat_a: str, moved: str) -> None:
    spec = topology("two_nats", nat_a=nat_a, nat_b="eim-apdf")
    pair = SimPair(spec, AgentConfig(consent_timeout=6), turn=True)
    assert pair.connect(10).connected
    ufrags = (pair.a.ufrag, pair.b.ufrag)
    old, new = pair.renumber(moved)
    assert new == ("203.0.113.254" if nat_a == "none" and moved == "a" else f"10.0.{1 if moved == 'a' else 2}.254")
    assert pair.net.fabric is not None and pair.net.fabric.owner(new) == moved and pair.net.fabric.owner(old) is None
    agent = pair.a if moved == "a" else pair.b
    pair.net.run(pair.net.now + 5, stop=lambda: pair.a.selected is not None and pair.b.selected is not None
                 and agent.selected is not None and agent.selected.base[0] == new)
    assert pair.a.ufrag != ufrags[0] and pair.b.ufrag != ufrags[1]  # both restarted, once each
    assert agent.stats["network-changes"] == 1
    assert agent.selected is not None and agent.selected.base == (new, 5000)
    assert CandidateType.RELAYED not in (agent.selected.local.type, agent.selected.remote.type)
    assert all(c.address[0] != old and (c.related is None or c.related[0] != old) for c in agent.local_candidates)


def test_fabric_spare_address_and_move() -> None:
    fabric = Fabric(topology("two_nats", nat_a="eim-apdf", nat_b="eim-apdf"))
    spare = fabric.spare_address("10.0.1.2")
    assert spare == ipaddress.IPv4Interface("10.0.1.254/24")
    fabric.move_address("10.0.1.2", spare)
    assert fabric.owner("10.0.1.254") == "a" and fabric.owner("10.0.1.2") is None
    assert fabric.addresses("a") == ["10.0.1.254"]
    hop = fabric.step("nat-a", "10.0.1.254")
    assert hop is not None and hop.next_node == "a"  # the switch is a segment, not a hop
    assert fabric.step("a", "203.0.113.10") is not None  # its default route still works
    assert fabric.spare_address("10.0.1.254") == ipaddress.IPv4Interface("10.0.1.253/24")
