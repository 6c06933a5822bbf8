"""The endpoint contract (ice/endpoint.py), the core's ICE-over-TURN composition (ice/relayed.py) and the one asyncio
driver (ice/aio/driver.py): every machine driven only through the Protocol, on a virtual clock, no sockets."""

from __future__ import annotations

import ast
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ice.agent import AgentConfig, AgentState, IceAgent
from ice.agent.candidate import CandidateType
from ice.agent.events import CandidateGathered, GatheringComplete, SelectedPairChanged
from ice.agent.session import IceSession
from ice.aio.driver import Driver
from ice.endpoint import Endpoint
from ice.relayed import RelayedAgent
from ice.stun.attributes import Address, XorMappedAddress
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import StunClient, TransactionSucceeded, Transmit
from ice.turn.client import Allocated, ChannelBound, TurnClient, TurnClientConfig
from ice.turn.server import TurnServer, TurnServerConfig

ROOT = Path(__file__).resolve().parents[1]
TURN = ("203.0.113.10", 3478)


class Net:
    """Endpoints by address, a 1 ms link, a virtual clock; drives them only through the endpoint contract."""

    def __init__(self, latency: float = 0.001) -> None:
        self.latency = latency
        self.now = 0.0
        self.at: dict[Address, Endpoint[Any]] = {}
        self.events: list[tuple[Endpoint[Any], object]] = []
        self.on_event: Callable[[Endpoint[Any], object], None] | None = None
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = 0

    def attach(self, endpoint: Endpoint[Any], *addresses: Address) -> None:
        for a in addresses:
            self.at[a] = endpoint

    def turn_server(self, users: dict[str, str]) -> TurnServer:
        net = self

        class Ports:
            port = 49152

            def reserve(self, family: int) -> Address | None:
                Ports.port += 1
                relayed = (TURN[0], Ports.port)
                net.at[relayed] = server
                return relayed

            def release(self, relayed: Address) -> None:
                net.at.pop(relayed, None)

        server = TurnServer(TurnServerConfig(TURN, users=users, allowed_peers=("10.0.0.0/8",)), Ports())
        self.attach(server, TURN)
        return server

    def _unique(self) -> list[Endpoint[Any]]:
        return list({id(e): e for e in self.at.values()}.values())

    def _collect(self) -> None:
        for e in self._unique():
            while (ev := e.next_event()) is not None:
                self.events.append((e, ev))
                if self.on_event is not None:
                    self.on_event(e, ev)
            while (t := e.poll_transmit()) is not None:
                assert t.local is not None, "every endpoint here names its local address"
                self._seq += 1
                heapq.heappush(self._queue, (self.now + self.latency, self._seq, t.local, t.remote, t.data))

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        while True:
            self._collect()
            if stop():
                return
            times = [t for e in self._unique() if (t := e.next_timeout()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times or min(times) > until:
                self.now = until
                return
            self.now = max(self.now, min(times))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._queue)
                if dst in self.at:
                    self.at[dst].handle_datagram(self.now, dst, src, data)
            for e in self._unique():
                t = e.next_timeout()
                if t is not None and t <= self.now:
                    e.handle_timeout(self.now)


def _signal(net: Net, pairs: dict[int, IceAgent]) -> None:
    """Trickle every gathered candidate (and end-of-candidates) to the other agent at once."""

    def on_event(endpoint: Endpoint[Any], ev: object) -> None:
        if isinstance(ev, tuple):  # IceSession: (stream, event)
            ev = ev[1]
        peer = pairs.get(id(endpoint))
        if peer is None:
            return
        if isinstance(ev, CandidateGathered):
            peer.add_remote_candidate(net.now, ev.candidate)
        elif isinstance(ev, GatheringComplete):
            peer.add_remote_candidate(net.now, None)

    net.on_event = on_event


# ------------------------------------------------------------------------------------ each machine, one contract


def test_the_stun_server_answers_through_the_contract() -> None:
    server: Endpoint[None] = StunServer(StunServerConfig(("192.0.2.1", 3478)))
    req = Message(Method.BINDING, MessageClass.REQUEST)
    server.handle_datagram(0.0, ("192.0.2.1", 3478), ("198.51.100.1", 5000), req.encode(fingerprint=True))
    t = server.poll_transmit()
    assert t is not None and t.remote == ("198.51.100.1", 5000) and t.local == ("192.0.2.1", 3478)
    mapped = parse(t.data).get(XorMappedAddress)
    assert mapped is not None and mapped.address == ("198.51.100.1", 5000)
    assert server.poll_transmit() is None and server.next_event() is None and server.next_timeout() is None


def test_the_stun_client_and_server_meet_over_the_contract() -> None:
    net = Net()
    client = StunClient()
    net.attach(StunServer(StunServerConfig(("192.0.2.1", 3478))), ("192.0.2.1", 3478))

    class OnItsSocket:  # the StunClient sends from the driver's default socket (local None): name it here
        def __init__(self, inner: StunClient) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def poll_transmit(self) -> Transmit | None:
            t = self.inner.poll_transmit()
            return t._replace(local=("10.0.0.1", 4000)) if t is not None else None

    net.attach(OnItsSocket(client), ("10.0.0.1", 4000))
    client.request(0.0, Message(Method.BINDING, MessageClass.REQUEST), ("192.0.2.1", 3478))
    net.run(1.0)
    done = [ev for _, ev in net.events if isinstance(ev, TransactionSucceeded)]
    assert len(done) == 1 and done[0].rtt == 0.002 and done[0].sends == 1


def test_the_turn_client_allocates_through_the_contract() -> None:
    net = Net()
    server = net.turn_server({"alice": "secret"})
    client = TurnClient(TurnClientConfig(TURN, "alice", "secret"), ("10.0.0.1", 4000))
    net.attach(client, ("10.0.0.1", 4000))
    client.allocate(0.0)
    net.run(1.0)
    allocated = [ev for _, ev in net.events if isinstance(ev, Allocated)]
    assert len(allocated) == 1 and allocated[0].mapped == ("10.0.0.1", 4000)  # after the 401 round trip
    assert allocated[0].relayed in server.by_relay and server.stats["allocate"] == 1


def test_the_turn_client_without_a_local_address_sends_from_the_default_socket() -> None:
    client: Endpoint[object] = TurnClient(TurnClientConfig(TURN, "alice", "secret"))
    assert isinstance(client, TurnClient)
    client.allocate(0.0)
    t = client.poll_transmit()
    assert t is not None and (t.local, t.remote) == (None, TURN) and client.poll_transmit() is None


def test_two_agents_and_two_sessions_connect_through_the_contract() -> None:
    net = Net()
    a, b = IceAgent(True, rng=random.Random(1)), IceAgent(False, rng=random.Random(2))
    sa, sb = IceSession(True, rng=random.Random(3)), IceSession(False, rng=random.Random(4))
    for ep, agent, addr in ((a, a, ("10.0.0.1", 1)), (b, b, ("10.0.0.2", 1)),
                            (sa, sa.stream(0), ("10.0.1.1", 1)), (sb, sb.stream(0), ("10.0.1.2", 1))):
        net.attach(ep, addr)
        agent.add_host_candidate(addr)
    _signal(net, {id(a): b, id(b): a, id(sa): sb.stream(0), id(sb): sa.stream(0)})
    for x, y in ((a, b), (b, a), (sa.stream(0), sb.stream(0)), (sb.stream(0), sa.stream(0))):
        y.set_remote_credentials(0.0, x.ufrag, x.pwd)
        x.end_of_local_candidates()
    net.run(5.0, stop=lambda: all(g.state is AgentState.COMPLETED for g in (a, b, sa.stream(0), sb.stream(0))))
    assert a.selected is not None and a.selected.remote.address == ("10.0.0.2", 1)
    assert sa.connected and sb.connected


# -------------------------------------------------------------------------------- ICE over TURN, in the core


def _relayed_pair(components: int, password: str = "secret", relay_only: bool = True
                  ) -> tuple[Net, TurnServer, RelayedAgent, RelayedAgent]:
    """A and B, each with one TURN allocation per component (on its own local address), relay-only: only relayed
    candidates, the host sockets stay unsignalled."""
    net = Net()
    server = net.turn_server({"alice": "secret"})
    cfg = AgentConfig()
    out = []
    for i, controlling in ((1, True), (2, False)):
        agent = IceAgent(controlling, cfg, rng=random.Random(i))
        relayed = RelayedAgent(agent, TurnClientConfig(TURN, "alice", password))
        for c in range(1, components + 1):
            host = (f"10.0.{i}.1", 5000 + c)
            turn_local = (f"10.0.{i}.1", 6000 + c)
            if not relay_only:
                agent.add_host_candidate(host, component=c)
            relayed.add_allocation(turn_local, c)
            net.attach(relayed, host, turn_local)
        out.append(relayed)
    ra, rb = out
    _signal(net, {id(ra): rb.agent, id(rb): ra.agent})
    for x, y in ((ra.agent, rb.agent), (rb.agent, ra.agent)):
        y.set_remote_credentials(0.0, x.ufrag, x.pwd)
    ra.start(0.0)
    rb.start(0.0)
    return net, server, ra, rb


def test_the_core_relays_ice_checks_through_turn_for_every_component_and_binds_channels() -> None:
    """RFC 8445 §5.1.1.2, RFC 8656: two components, one allocation each; the selected pairs are relay-relay and
    each side binds a channel to its selected pair's remote (RFC 8656 §12), so data then goes as ChannelData."""
    net, server, ra, rb = _relayed_pair(components=2)
    net.run(10.0, stop=lambda: all(r.agent.state is AgentState.COMPLETED for r in (ra, rb))
            and server.stats["channel-bind"] == 4)
    for r in (ra, rb):
        assert set(r.agent.selected_pairs) == {1, 2}
        for comp, pair in r.agent.selected_pairs.items():
            assert (pair.local.type, pair.remote.type) == (CandidateType.RELAYED, CandidateType.RELAYED)
            relay = r.relay_for(pair.base)
            assert relay is not None and relay.component == comp
            assert pair.remote.address in relay.client.channels  # bound on selection
        assert len([e for e in r.relays if e.relayed is not None]) == 2
    assert server.stats["allocate"] == 4 and server.stats["channel-bind"] == 4
    bound = [ev for _, ev in net.events if isinstance(ev, SelectedPairChanged)]
    assert len(bound) >= 4
    # data over the channel: ChannelData both ways, delivered to the other agent on its relayed base
    assert ra.agent.send(b"over the relay", 2)
    net.run(net.now + 0.1)
    got = [ev for e, ev in net.events if e is rb and type(ev).__name__ == "DataReceived"]
    assert [(ev.data, ev.component) for ev in got] == [(b"over the relay", 2)]  # type: ignore[attr-defined]
    channel_before = server.stats["relayed-to-client"]
    assert channel_before > 0 and not any(isinstance(ev, ChannelBound) for _, ev in net.events)


def test_a_refused_allocation_still_ends_gathering() -> None:
    """A 401 with wrong credentials is AllocationFailed: end-of-candidates follows all the same (RFC 8838 §8.2)."""
    net, server, ra, rb = _relayed_pair(components=1, password="wrong", relay_only=False)
    net.run(5.0, stop=lambda: ra.agent.state is AgentState.COMPLETED and ra.failed and rb.failed)
    assert ra.failed and rb.failed and ra.relayed is None
    assert any(isinstance(ev, GatheringComplete) for e, ev in net.events if e is ra)
    assert ra.agent.selected is not None and ra.agent.selected.local.type is CandidateType.HOST
    assert server.stats["allocate"] == 0


def test_the_sim_constructor_shape_still_works() -> None:
    """``RelayedAgent(agent, turn, turn_local)`` with ``.agent``, ``.start``, ``.relayed``, ``.failed``."""
    net = Net()
    net.turn_server({"alice": "secret"})
    r = RelayedAgent(IceAgent(False), TurnClientConfig(TURN, "alice", "secret"), ("10.0.0.1", 5001))
    net.attach(r, ("10.0.0.1", 5001))
    r.start(0.0)
    net.run(1.0)
    assert r.relayed is not None and not r.failed and r.turn_local == ("10.0.0.1", 5001)
    assert [c.type for c in r.agent.local_candidates] == [CandidateType.RELAYED]


# ------------------------------------------------------------------------------------------------- the driver


@dataclass
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeLoop:
    """A virtual clock with the two loop methods the driver's timer uses."""

    now: float = 100.0
    armed: list[_Timer] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        self.armed.append(timer)
        return timer

    def fire(self, at: float) -> None:
        """Run the live timer at ``at`` (a loop may run a callback up to its clock resolution early)."""
        self.now = at
        live = [t for t in self.armed if not t.cancelled]
        assert len(live) <= 1, "one timer per endpoint"
        if live:
            live[0].cancelled = True
            live[0].callback()


@dataclass
class Scripted:
    """An endpoint whose deadline, transmits and events the test sets; it records every call."""

    deadline: float | None = None
    out: list[Transmit] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    log: list[tuple[str, object]] = field(default_factory=list)

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        self.log.append(("datagram", data))

    def handle_timeout(self, now: float) -> None:
        self.log.append(("timeout", now))
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None

    def next_timeout(self) -> float | None:
        return self.deadline

    def poll_transmit(self) -> Transmit | None:
        return self.out.pop(0) if self.out else None

    def next_event(self) -> str | None:
        return self.events.pop(0) if self.events else None


def test_the_driver_timer_never_fires_early_and_is_rearmed_once_per_deadline_change() -> None:
    loop = FakeLoop()
    ep = Scripted(deadline=101.0)
    driver: Driver[str] = Driver(ep, loop=loop)  # type: ignore[arg-type]
    driver.pump()
    driver.pump()  # same deadline: no new timer
    assert [t.when for t in loop.armed] == [101.0]
    ep.deadline = 102.0
    driver.pump()
    driver.pump()
    assert [t.when for t in loop.armed] == [101.0, 102.0] and loop.armed[0].cancelled
    loop.fire(101.999)  # the loop ran the callback early: the endpoint still sees its deadline
    assert ep.log == [("timeout", 102.0)]
    assert driver.timer_at is None and len(loop.armed) == 2  # the deadline passed: nothing re-armed
    ep.deadline = 103.0
    driver.pump()
    loop.fire(103.5)  # late is fine: the real time
    assert ep.log[-1] == ("timeout", 103.5) and len(loop.armed) == 3


def test_a_datagram_delivered_during_a_pump_is_handled_after_it_in_order() -> None:
    """An event callback that feeds datagrams and pumps (as a relayed datagram once re-entered Connection's flush):
    the pump is not re-entered; the datagrams are handled after the callback, in arrival order, and what they
    queue is still sent by the running pump."""
    loop = FakeLoop()
    ep = Scripted(events=["first", "second"])
    sent: list[bytes] = []
    driver: Driver[str] = Driver(ep, loop=loop)  # type: ignore[arg-type]
    driver.send = lambda t: sent.append(t.data)  # type: ignore[method-assign]

    def on_event(ev: str) -> None:
        ep.log.append(("event", ev))
        if ev == "first":
            driver.datagram_received(("10.0.0.1", 1), ("10.0.0.2", 2), b"one")
            driver.datagram_received(("10.0.0.1", 1), ("10.0.0.2", 2), b"two")
            ep.out.append(Transmit(("10.0.0.2", 2), b"reply", ("10.0.0.1", 1)))
            driver.pump()  # nested: returns at once
            ep.log.append(("event-end", ev))

    driver.on_event = on_event
    driver.pump()
    assert ep.log == [("event", "first"), ("event-end", "first"), ("event", "second"),
                      ("datagram", b"one"), ("datagram", b"two")]
    assert sent == [b"reply"]


def test_calls_inside_held_pump_once_when_the_block_ends() -> None:
    """``Driver.held``: what the endpoint queues inside the block is sent when it ends, in one pump (one re-arm);
    a datagram delivered inside waits in the inbox and is handled by that pump; nested, it changes nothing."""
    loop = FakeLoop()
    ep = Scripted(deadline=5.0)
    sent: list[bytes] = []
    driver: Driver[str] = Driver(ep, loop=loop)  # type: ignore[arg-type]
    driver.send = lambda t: sent.append(t.data)  # type: ignore[method-assign]
    with driver.held():
        ep.out.append(Transmit(("10.0.0.2", 2), b"check", ("10.0.0.1", 1)))
        driver.pump()
        driver.datagram_received(("10.0.0.1", 1), ("10.0.0.2", 2), b"early")
        with driver.held():
            ep.out.append(Transmit(("10.0.0.2", 2), b"second", ("10.0.0.1", 1)))
        assert sent == [] and ep.log == [] and loop.armed == []
    assert sent == [b"check", b"second"] and ep.log == [("datagram", b"early")]
    assert [t.when for t in loop.armed] == [5.0]


# ------------------------------------------------------------------------------------------------- layering


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_the_core_composition_and_the_machines_do_no_io() -> None:
    """Layering: the codec and the sans-IO machines (and the composition) import no I/O layer and no event loop
    (``socket`` appears only for address packing)."""
    core = [ROOT / "ice" / "endpoint.py", ROOT / "ice" / "relayed.py",
            *(ROOT / "ice" / "agent").glob("*.py"), *(ROOT / "ice" / "stun").glob("*.py"),
            *(ROOT / "ice" / "turn").glob("*.py")]
    for path in core:
        bad = {m for m in _imports(path) if m.split(".")[:2] in (["ice", "aio"], ["ice", "sim"], ["ice", "lab"],
                                                                   ["ice", "scenario"]) or m == "asyncio"}
        assert not bad, (path.name, bad)


def test_ice_aio_has_exactly_one_rearmed_timer() -> None:
    hits = [(p.name, line) for p in (ROOT / "ice" / "aio").glob("*.py")
            for line in p.read_text().splitlines() if "call_at(" in line or "_timer_at =" in line]
    assert {name for name, _ in hits} == {"driver.py"}
    assert sum("call_at(" in line for _, line in hits) == 1
