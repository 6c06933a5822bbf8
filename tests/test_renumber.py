"""A peer renumbered mid-session (RFC 8445 §9): the core forgets what lived on the old address and gathers again
on the new one with new credentials, the sim moves the address as the lab does, the peer that did not move
restarts when the new credentials arrive, and a new pair carries the data. Virtual clock throughout (the sim)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import subprocess
from collections.abc import Callable

import pytest
from agent_net import Net, exchange
from conftest import signal_both

from ice.agent import AgentConfig, AgentState, Candidate, CandidateType, IceAgent
from ice.agent.events import CandidateGathered, Event, GatheringComplete, NetworkChangeRestart, SelectedPairChanged
from ice.agent.network import NetworkChange
from ice.aio.connection import Connection, NetworkPolicy
from ice.relayed import RelayedAgent
from ice.sim.scenario import SimPair
from ice.stun.attributes import Address
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


@pytest.mark.parametrize("nats", [("eim-apdf", "eim-apdf"), ("linux-masquerade-rst", "linux-masquerade-rst")])
def test_sim_renumber_of_a_tcp_only_peer_moves_its_tcp_candidates_and_its_tcp_allocation(
        nats: tuple[str, str]) -> None:
    """ICE-TCP on a network change in the sim, as the asyncio Connection does it: the TCP host candidates (and
    their srflx ones, before end-of-candidates) on the new address, the TURN control connection and TCP allocation
    made again from it; through dropping NATs a new so pair, through RST-answering ones a new relayed TCP pair."""
    spec = topology("two_nats", nat_a=nats[0], nat_b=nats[1])
    pair = SimPair(spec, AgentConfig(consent_timeout=6), turn=True, transports="tcp", udp_blocked=True)
    assert pair.connect(10).connected
    old, new = pair.renumber("a")
    pair.net.run(pair.net.now + 10, stop=lambda: pair.a.selected is not None and pair.b.selected is not None
                 and pair.a.selected.base[0] in (new, "203.0.113.10"))
    a = pair.a
    assert a.stats["network-changes"] == 1 and a.selected is not None
    assert a.selected.local.transport == a.selected.remote.transport == "tcp"
    assert {b[0] for b in a.tcp_bases} == {new}
    assert not [c for c in a.local_candidates if c.transport == "udp"]
    ea = pair.ea
    assert isinstance(ea, RelayedAgent) and [(r.local, r.tcp) for r in ea.relays] == [((new, 5001), True)]
    if nats[0] == "eim-apdf":
        assert a.selected.local.tcptype == "so" and a.selected.base[0] == new
    else:
        assert CandidateType.RELAYED in (a.selected.local.type, a.selected.remote.type)
    assert all(c.address[0] != old and (c.related is None or c.related[0] != old) for c in a.local_candidates)


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


# ------------------------------------------------------------------------------------------- Connection


def _signalling(a: Connection, b: Connection) -> None:
    """Trickle each side's candidates to the other, and answer a restart on a network change as the lab does."""
    from ice.scenario.lab import answer_network_restart

    def on_event(me: Connection, peer: Connection) -> Callable[[Event], None]:
        def handle(ev: Event) -> None:
            if isinstance(ev, CandidateGathered):
                peer.add_remote_candidate(ev.candidate)
            elif isinstance(ev, GatheringComplete):
                peer.add_remote_candidate(None)
            elif isinstance(ev, NetworkChangeRestart):
                answer_network_restart(me, peer)

        return handle

    a.on_event = on_event(a, b)
    b.on_event = on_event(b, a)


async def _moved_to(a: Connection, ip: str, timeout: float = 5.0) -> SelectedPairChanged:
    """The first pair ``a`` selects on one of its current sockets at ``ip`` (not a replaced one)."""

    async def wait() -> SelectedPairChanged:
        async for ev in a.events():
            if isinstance(ev, SelectedPairChanged) and ev.base[0] == ip and ev.base in a.driver.addresses:
                return ev
        raise AssertionError("unreachable")

    return await asyncio.wait_for(wait(), timeout)


async def _ping(src: Connection, dst: Connection, data: bytes) -> bytes:
    receiving = asyncio.ensure_future(dst.recv())
    try:
        while True:  # datagrams sent before the peer's pair is selected may be dropped: send until one arrives
            src.send(data)
            done, _ = await asyncio.wait({receiving}, timeout=0.05)
            if done:
                return receiving.result()
    finally:
        receiving.cancel()


def test_connection_network_changed_moves_to_the_new_address_and_both_restart() -> None:
    """The application's own call (its OS said the address changed): new sockets, an ICE restart on both sides
    through signalling, a new pair on the new address; the old socket is closed."""

    async def main() -> None:
        a, b = Connection(True), Connection(False)
        try:
            await signal_both(a, b)
            _signalling(a, b)
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
            ufrags = a.ufrag, b.ufrag
            assert await a.network_changed(["127.0.0.2"])
            assert a.bind == ["127.0.0.2"] and all(ip == "127.0.0.2" for ip, _ in a.driver.addresses)
            sel = await _moved_to(a, "127.0.0.2")
            assert sel.local.host == "127.0.0.2" and (a.ufrag, b.ufrag) != ufrags and b.ufrag != ufrags[1]
            assert await asyncio.wait_for(_ping(b, a, b"to the new address"), 5) == b"to the new address"
            assert await asyncio.wait_for(_ping(a, b, b"from it"), 5) == b"from it"
            assert b.agent.selected is not None and b.agent.selected.remote.host == "127.0.0.2"
            assert not await a.network_changed(["127.0.0.2"])  # nothing changed
            # The same address on another network: every socket replaced, both restart again.
            before, ufrags = set(a.driver.addresses), (a.ufrag, b.ufrag)
            assert await a.network_changed(["127.0.0.2"], regather=True)
            assert not set(a.driver.addresses) & before
            sel = await _moved_to(a, "127.0.0.2")
            assert sel.base in a.driver.addresses and a.ufrag != ufrags[0] and b.ufrag != ufrags[1]
            assert await asyncio.wait_for(_ping(b, a, b"again"), 5) == b"again"
        finally:
            a.close()
            b.close()

    asyncio.run(main())


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
def test_connection_notices_its_address_is_gone_and_follows() -> None:
    """Two namespaces joined by a veth pair. A send to an unroutable candidate fails with ENETUNREACH too, but the
    bind probe finds the address still there: nothing happens. Then A's address is replaced with ``ip addr``: A's
    next send fails (ENETUNREACH on Linux), the probe confirms the address is gone, and the connection follows on
    its own: the new address is the one the OS routes from towards the peer, both sides restart, data flows on the
    new pair."""
    from ice.lab import netns

    procs = [subprocess.Popen(["unshare", "-n", "sh", "-c", "echo ready; exec sleep 60"], stdout=subprocess.PIPE,
                              text=True, preexec_fn=netns.die_with_parent) for _ in "ab"]
    try:
        for p in procs:  # its own namespace exists once it says so
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        pa, pb = (p.pid for p in procs)

        def run(pid: int, cmd: str) -> None:
            subprocess.run([*netns.nsenter(pid), "sh", "-c", cmd], check=True, capture_output=True, timeout=10)

        run(pa, f"ip link add v0 type veth peer name v1 netns {pb} && ip addr add 10.9.0.2/24 dev v0 && "
                "ip link set v0 up && ip link set lo up")
        run(pb, "ip addr add 10.9.0.3/24 dev v1 && ip link set v1 up && ip link set lo up")

        async def main() -> tuple[str, bytes, int]:
            # probe_interval=0: the unroutable candidate's probe must not hold back the renumber's (1 s by default)
            a = Connection(True, bind=["10.9.0.2"], make_socket=lambda f: netns.socket_in(pa, f),
                           network=NetworkPolicy(probe_interval=0))
            b = Connection(False, bind=["10.9.0.3"], make_socket=lambda f: netns.socket_in(pb, f))
            try:
                await signal_both(a, b)
                _signalling(a, b)
                await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
                unroutable: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                follow = a.driver.on_send_error
                assert follow is not None

                def spy(local: Address, remote: Address, exc: OSError) -> None:
                    follow(local, remote, exc)  # the connection's own handler first: it probes
                    if remote[0] == "192.0.2.1" and not unroutable.done():
                        unroutable.set_result(exc.errno or 0)

                a.driver.on_send_error = spy
                a.add_remote_candidate(Candidate("x", 1, "udp", 1, "192.0.2.1", 9, CandidateType.HOST))
                assert await asyncio.wait_for(unroutable, 5) == errno.ENETUNREACH
                assert a.agent.stats["local-address-gone"] == 0 and a.bind == ["10.9.0.2"]
                run(pa, "ip addr del 10.9.0.2/24 dev v0 && ip addr add 10.9.0.20/24 dev v0")
                a.send(b"into the void")  # fails in the kernel: the connection follows the change
                sel = await _moved_to(a, "10.9.0.20")
                got = await asyncio.wait_for(_ping(b, a, b"after"), 5)
                return sel.local.host, got, a.agent.stats["local-address-gone"]
            finally:
                a.close()
                b.close()

        assert asyncio.run(main()) == ("10.9.0.20", b"after", 1)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_tcp_only_connection_moves_its_tcp_candidates_to_the_new_address() -> None:
    """ICE-TCP (RFC 6544) on a network change: the old address's listeners and connections close, TCP host
    candidates of every tcptype are made on the new address, and both sides restart onto a TCP pair there."""

    async def main() -> None:
        a, b = Connection(True, transports="tcp"), Connection(False, transports="tcp")
        try:
            await signal_both(a, b)
            _signalling(a, b)
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
            ufrags = a.ufrag, b.ufrag
            assert await a.network_changed(["127.0.0.2"])
            assert a.bind == ["127.0.0.2"] and {b[0] for b in a.agent.tcp_bases} == {"127.0.0.2"}
            assert sorted(c.tcptype or "" for c in a.local_candidates if c.transport == "tcp") == \
                ["active", "passive", "so"]
            assert not [c for c in a.local_candidates if c.transport == "udp"]  # still TCP only

            async def moved() -> SelectedPairChanged:
                async for ev in a.events():
                    if isinstance(ev, SelectedPairChanged) and ev.base[0] == "127.0.0.2":
                        return ev
                raise AssertionError("unreachable")

            sel = await asyncio.wait_for(moved(), 5)
            assert sel.local.transport == "tcp" and (a.ufrag, b.ufrag) != ufrags
            assert await asyncio.wait_for(_ping(a, b, b"over tcp"), 5) == b"over tcp"
            assert await asyncio.wait_for(_ping(b, a, b"and back"), 5) == b"and back"
        finally:
            a.close()
            b.close()

    asyncio.run(main())
