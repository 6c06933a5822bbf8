"""The in-memory network: hosts behind :class:`SimNat`s and on a public segment, a virtual clock, seeded impairments.

Routing mirrors the kernel lab's topologies: hosts on one LAN reach each other directly; a private address on
another LAN is unreachable; everything else leaves through the LAN's NAT (or is dropped by it) and enters a
destination NAT only where its filtering allows. Hairpinning follows the NAT's behaviour.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ice.agent import IceAgent
from ice.agent.events import Event
from ice.nat.behaviour import NatBehaviour
from ice.sim.nat import SimNat
from ice.stun.attributes import Address
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import Transmit
from ice.turn.server import TurnServer, TurnServerConfig


class Endpoint(Protocol):
    """What the network drives: an IceAgent, or anything that behaves like one (e.g. a RelayedAgent)."""

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None: ...

    def handle_timeout(self, now: float) -> None: ...

    def next_timeout(self) -> float | None: ...

    def poll_transmit(self) -> Transmit | None: ...

    def next_event(self) -> Event | None: ...


@dataclass
class _Lan:
    prefix: str
    nat: SimNat


@dataclass
class SimNetwork:
    latency: float = 0.001
    """One-way delay of every packet, seconds."""
    jitter: float = 0.0
    loss: float = 0.0
    seed: int = 0
    now: float = 0.0
    lans: list[_Lan] = field(default_factory=list)
    agents: dict[Address, Endpoint] = field(default_factory=dict)
    servers: dict[Address, StunServer] = field(default_factory=dict)
    turn_servers: dict[Address, TurnServer] = field(default_factory=dict)
    relays: dict[Address, TurnServer] = field(default_factory=dict)
    delivered: int = 0
    dropped: int = 0
    trace: list[tuple[float, str, Address, Address]] | None = None
    """When a list, every packet's fate is appended: (time, "sent"/"dropped"/"delivered", src, dst)."""
    on_event: Callable[[Endpoint, Event], None] | None = None
    """Called with every agent event as virtual time advances (signalling, trickle ICE)."""
    drop_if: Callable[[Address, Address, bytes], bool] | None = None
    """Extra drop rule (src, dst, data) -> True to drop, applied before routing (e.g. a dead path)."""
    sent: list[tuple[float, Address, Address, bytes]] | None = None
    """When a list, every datagram an agent sends is appended: (time, src, dst, data)."""
    impaired: frozenset[str] = frozenset()
    """Public IPs whose access link is impaired (as the lab impairs one NAT's WAN link): packets to or from them
    on the public side also suffer ``impaired_loss`` and ``impaired_delay``."""
    impaired_loss: float = 0.0
    impaired_delay: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = 0

    # ------------------------------------------------------------------------------------------ building

    def add_nat(self, behaviour: NatBehaviour, public_ip: str, lan_prefix: str) -> SimNat:
        """A NAT with public address ``public_ip`` in front of the LAN whose addresses start with ``lan_prefix``."""
        nat = SimNat(behaviour, public_ip, seed=self._rng.getrandbits(32))
        self.lans.append(_Lan(lan_prefix, nat))
        return nat

    def add_agent(self, agent: IceAgent, *addresses: Address) -> None:
        """An agent with a host candidate on each address."""
        for a in addresses:
            self.agents[a] = agent
            agent.add_host_candidate(a)

    def add_endpoint(self, endpoint: Endpoint, *addresses: Address) -> None:
        """Deliver what arrives on these addresses to ``endpoint`` (no candidates are added)."""
        for a in addresses:
            self.agents[a] = endpoint

    def add_turn_server(self, listen: Address, users: dict[str, str]) -> TurnServer:
        """A TURN server (which answers Binding too) on the public segment; relayed addresses share its IP."""
        network = self

        class Ports:
            next_port = 49152

            def reserve(self, family: int) -> Address | None:
                Ports.next_port += 1
                relayed = (listen[0], Ports.next_port)
                network.relays[relayed] = server
                return relayed

            def release(self, relayed: Address) -> None:
                network.relays.pop(relayed, None)

        server = TurnServer(TurnServerConfig(listen, users=users, software="icelab sim"), Ports())
        self.turn_servers[listen] = server
        return server

    def add_stun_server(self, primary: Address, alternate: Address | None = None) -> StunServer:
        server = StunServer(StunServerConfig(primary, alternate, software="icelab sim"))
        for local in server.config.local_addresses:
            self.servers[local] = server
        return server

    # ------------------------------------------------------------------------------------------- routing

    def _lan(self, ip: str) -> _Lan | None:
        return next((lan for lan in self.lans if ip.startswith(lan.prefix)), None)

    def _nat_by_public(self, ip: str) -> SimNat | None:
        return next((lan.nat for lan in self.lans if lan.nat.public_ip == ip), None)

    def send(self, src: Address, dst: Address, data: bytes) -> None:
        """Route one datagram; it arrives after the latency (and jitter) unless something drops it."""
        route = None if self.drop_if is not None and self.drop_if(src, dst, data) else self._route(src, dst)
        crosses = route is not None and bool(self.impaired) and (route[0][0] in self.impaired
                                                                 or dst[0] in self.impaired)
        lost = bool(self.loss) and self._rng.random() < self.loss
        lost = lost or (crosses and bool(self.impaired_loss) and self._rng.random() < self.impaired_loss)
        if route is None or lost:
            self.dropped += 1
            if self.trace is not None:
                self.trace.append((self.now, "dropped", src, dst))
            return
        seen_src, final_dst = route
        delay = self.latency + (self._rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
        if crosses:
            delay += self.impaired_delay
        self._seq += 1
        heapq.heappush(self._queue, (self.now + max(0.0, delay), self._seq, seen_src, final_dst, data))

    def _route(self, src: Address, dst: Address) -> tuple[Address, Address] | None:
        now = self.now
        src_lan = self._lan(src[0])
        dst_lan = self._lan(dst[0])
        if src_lan is not None:
            if dst_lan is src_lan:
                return src, dst  # same LAN: no NAT involved
            if dst_lan is not None:
                return None  # another private network: no route
            if dst[0] == src_lan.nat.public_ip:  # hairpin (RFC 4787 §6)
                target = src_lan.nat.hairpin(now, dst[1])
                ext = src_lan.nat.outbound(now, src, dst) if target is not None else None
                if ext is None or target is None:
                    return None
                return ext, target
            routed = src_lan.nat.outbound_to(now, src, dst)
            if routed is None:
                return None
            src, dst = routed
        elif dst_lan is not None:
            return None  # the public side has no route to private space
        nat = self._nat_by_public(dst[0])
        if nat is not None:
            return nat.inbound_seen(now, src, dst[1])
        if dst in self.agents or dst in self.servers or dst in self.turn_servers or dst in self.relays:
            return src, dst
        return None

    # --------------------------------------------------------------------------------------------- clock

    def _collect(self) -> None:
        for agent in self._unique_agents():
            if self.on_event is not None:
                while (ev := agent.next_event()) is not None:
                    self.on_event(agent, ev)
            while (t := agent.poll_transmit()) is not None:
                assert t.local is not None
                if self.trace is not None:
                    self.trace.append((self.now, "sent", t.local, t.remote))
                if self.sent is not None:
                    self.sent.append((self.now, t.local, t.remote, t.data))
                self.send(t.local, t.remote, t.data)

    def _unique_agents(self) -> list[Endpoint]:
        return list({id(a): a for a in self.agents.values()}.values())

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Advance virtual time event by event up to ``until`` (or until ``stop()``)."""
        agents = self._unique_agents()
        while True:
            self._collect()
            if stop():
                return
            times = [t for a in agents if (t := a.next_timeout()) is not None]
            times += [t for srv in self.turn_servers.values() if (t := srv.next_timeout()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times or min(times) > until:
                self.now = max(self.now, until)
                return
            self.now = max(self.now, min(times))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._queue)
                self.delivered += 1
                if self.trace is not None:
                    self.trace.append((self.now, "delivered", src, dst))
                if dst in self.turn_servers:
                    for out in self.turn_servers[dst].handle_client(self.now, dst, src, data):
                        self.send(out.local or dst, out.remote, out.data)
                elif dst in self.relays:
                    for out in self.relays[dst].handle_peer(self.now, dst, src, data):
                        self.send(out.local or dst, out.remote, out.data)
                elif dst in self.servers:
                    answer = self.servers[dst].handle(dst, src, data)
                    if answer is not None:
                        self.send(answer.local or dst, answer.remote, answer.data)
                elif dst in self.agents:
                    self.agents[dst].handle_datagram(self.now, dst, src, data)
            for a in agents:
                t = a.next_timeout()
                if t is not None and t <= self.now:
                    a.handle_timeout(self.now)
            for srv in self.turn_servers.values():  # allocation, permission and channel lifetimes (RFC 8656)
                t = srv.next_timeout()
                if t is not None and t <= self.now:
                    srv.handle_timeout(self.now)
