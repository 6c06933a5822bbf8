"""Two ICE agents on hosts ``a`` and ``b`` of any topology spec, with its STUN/TURN server: what the sim back-end
of a scenario cell runs."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ice.agent import AgentConfig, Candidate, CandidateType, IceAgent
from ice.agent.agent import Pair
from ice.agent.candidate import pair_text
from ice.agent.events import CandidateGathered, DataReceived, Event, GatheringComplete, NetworkChangeRestart
from ice.agent.network import NetworkChange
from ice.relayed import RelayedAgent
from ice.sim.network import SimNetwork
from ice.topology.spec import TopologySpec
from ice.turn.client import TurnClientConfig


@dataclass(frozen=True)
class SimResult:
    connected: bool
    seconds: float
    """Virtual time from both agents having the remote credentials until both selected a pair."""
    selected: tuple[CandidateType, CandidateType] | None
    """(local type, remote type) of A's selected pair."""
    succeeded: frozenset[tuple[str, str]]
    """Candidate-type pairs (local, remote) of A's valid pairs (RFC 8445 §7.2.5.3.1)."""
    selected_b: tuple[CandidateType, CandidateType] | None = None
    """The same for B."""
    selected_pair: str | None = None
    """A's selected pair with addresses ("srflx 203.0.113.1:5000 -> prflx 203.0.113.2:6000")."""
    selected_pair_b: str | None = None

    @property
    def relayed(self) -> bool:
        """Either side's selected pair has a relayed candidate."""
        return any(s is not None and CandidateType.RELAYED in s for s in (self.selected, self.selected_b))

    @property
    def selected_name(self) -> str | None:
        return f"{self.selected[0].value}-{self.selected[1].value}" if self.selected else None


PEERS = ("a", "b")
"""The hosts of a topology the two ICE agents run on."""


def _peer(net: SimNetwork, host: str, agent: IceAgent, turn: TurnClientConfig | None,
          relay_only: bool) -> IceAgent | RelayedAgent:
    """Put ``agent`` on every address of ``host`` (port 5000); with ``turn``, wrap it with a TURN client on port
    5001 of the host's first address (as a real TURN client has its own socket)."""
    assert net.fabric is not None
    addresses = [(ip, 5000) for ip in net.fabric.addresses(host)]
    if not addresses:
        raise ValueError(f"topology {net.fabric.spec.name}: host {host} has no address")
    if relay_only:
        net.add_endpoint(agent, *addresses)  # sockets, but no host candidates to offer
    else:
        net.add_agent(agent, *addresses)
    if turn is None:
        return agent
    turn_local = (addresses[0][0], 5001)
    relayed = RelayedAgent(agent, turn, turn_local)
    net.add_endpoint(relayed, *addresses, turn_local)
    return relayed


class SimPair:
    """Two agents on hosts ``a`` and ``b`` of a spec's simulated network, with the server and the signalling
    channel between them (see :func:`run_pair`); it stays usable after connecting (timelines drive it on)."""

    def __init__(self, spec: TopologySpec, config: AgentConfig | None = None, seed: int = 0, latency: float = 0.001,
                 loss: float = 0.0, jitter: float = 0.0, turn: bool = False, relay_only: bool = False,
                 trickle: bool = True, controlling: str = "a") -> None:
        self.net = net = SimNetwork(spec, latency=latency, loss=loss, jitter=jitter, seed=seed)
        self.trickle = trickle
        self.relay_only = relay_only
        self.stun = spec.address("stun_primary")
        turn_config = None
        if turn:
            self.server = spec.address("turn" if "turn" in spec.facts else "stun_primary")
            net.add_turn_server(self.server, {"alice": "secret"})
            turn_config = TurnClientConfig(self.server, "alice", "secret")
            self.stun = self.server
        else:
            self.server = self.stun
            net.add_stun_server(self.stun, spec.address("stun_alternate") if "stun_alternate" in spec.facts else None)
        cfg = config or AgentConfig()
        self.a = IceAgent(controlling in ("a", "both"), cfg, rng=random.Random(seed * 2 + 1))
        self.b = IceAgent(controlling in ("b", "both"), cfg, rng=random.Random(seed * 2 + 2))
        self.ea = _peer(net, PEERS[0], self.a, turn_config, relay_only)
        self.eb = _peer(net, PEERS[1], self.b, turn_config, relay_only)
        self._peer_of = {id(self.a): self.b, id(self.b): self.a, id(self.ea): self.b, id(self.eb): self.a}
        self._held: dict[int, list[Candidate]] = {id(self.a): [], id(self.b): []}
        self.on_data: Callable[[str], None] | None = None
        """Called with "a" or "b" when that agent receives application data."""
        self.on_datagram: Callable[[str, bytes], None] | None = None
        """Called with "a" or "b" and the datagram when that agent receives application data (the bulk phase)."""
        net.on_event = self._signal

    def side_of(self, endpoint: object) -> str:
        return "a" if endpoint is self.a or endpoint is self.ea else "b"

    def _signal(self, endpoint: object, ev: Event) -> None:  # an instant signalling channel
        me = endpoint.agent if isinstance(endpoint, RelayedAgent) else endpoint
        peer = self._peer_of[id(endpoint)]
        if isinstance(ev, CandidateGathered):
            if self.trickle:
                peer.add_remote_candidate(self.net.now, ev.candidate)
            else:
                self._held[id(me)].append(ev.candidate)
        elif isinstance(ev, GatheringComplete):
            for cand in self._held[id(me)]:
                peer.add_remote_candidate(self.net.now, cand)
            peer.add_remote_candidate(self.net.now, None)
        elif isinstance(ev, DataReceived):
            if self.on_datagram is not None:
                self.on_datagram(self.side_of(endpoint), ev.data)
            if self.on_data is not None:
                self.on_data(self.side_of(endpoint))
        elif isinstance(ev, NetworkChangeRestart):
            self._answer_restart(self.a if peer is self.b else self.b, peer)

    def connect(self, timeout: float) -> SimResult:
        """Credentials at t = 0, gathering, checks; until both selected a pair or ``timeout``."""
        a, b, net = self.a, self.b, self.net
        for x, y in ((a, b), (b, a)):
            y.set_remote_credentials(net.now, x.ufrag, x.pwd)
        for agent, endpoint in ((a, self.ea), (b, self.eb)):
            if not self.relay_only:
                for base in agent.bases:
                    agent.gather_server_reflexive(net.now, base, self.stun)
            if isinstance(endpoint, RelayedAgent):
                endpoint.start(net.now)  # end-of-candidates follows the allocation
            else:
                agent.end_of_local_candidates()
        net.run(timeout, stop=lambda: a.selected is not None and b.selected is not None)
        ok = a.selected is not None and b.selected is not None
        sel = (a.selected.local.type, a.selected.remote.type) if a.selected is not None else None
        sel_b = (b.selected.local.type, b.selected.remote.type) if b.selected is not None else None
        return SimResult(ok, net.now, sel, frozenset(a.valid_pair_types()), sel_b, describe_pair(a.selected),
                         describe_pair(b.selected))

    def restart(self) -> None:
        """ICE restart on both sides (RFC 8445 §9): new credentials, each side's candidates signalled again."""
        now = self.net.now
        self.a.restart(now)
        self.b.restart(now)
        for x, y in ((self.a, self.b), (self.b, self.a)):
            y.set_remote_credentials(now, x.ufrag, x.pwd)
            for cand in x.local_candidates:
                y.add_remote_candidate(now, cand)
            y.add_remote_candidate(now, None)

    # ---------------------------------------------------------------------------------------- renumbering

    def renumber(self, side: str) -> tuple[str, str]:
        """Host ``side`` moves to another address of its subnet (:meth:`Fabric.spare_address`), as the kernel lab
        does with ``ip addr``: packets to or from the old address vanish from then on. The agent hears of it at once
        (as an application from its OS) and restarts ICE on sockets at the new address, gathering host, srflx and
        relayed candidates again (RFC 8445 §9, :meth:`IceAgent.network_changed`); the peer answers through
        signalling. Returns (old address, new address)."""
        net = self.net
        fabric = net.fabric
        assert fabric is not None
        endpoint = self.ea if side == "a" else self.eb
        old = fabric.addresses(side)[0]
        new = fabric.spare_address(old)
        fabric.move_address(old, new)
        ip = str(new.ip)
        gone = tuple(addr for addr in net.agents if addr[0] == old)
        for addr in gone:
            del net.agents[addr]
        relays = isinstance(endpoint, RelayedAgent) and any(r.local[0] == old for r in endpoint.relays)
        turn = ((1, (ip, 5001)),) if relays else ()
        net.add_endpoint(endpoint, (ip, 5000), *(local for _, local in turn))
        change = NetworkChange(gone, ((1, (ip, 5000)),), turn, () if self.relay_only else (self.stun,),
                               offer_hosts=not self.relay_only)
        endpoint.network_changed(net.now, change)
        return old, ip

    def _answer_restart(self, moved: IceAgent, peer: IceAgent) -> None:
        """What the application does when ``moved``'s new credentials arrive over signalling: a changed ufrag is
        an ICE restart, so ``peer`` restarts too unless it already did (RFC 8839 §4.4.1.1.1), each side takes the
        other's credentials and current candidates (peer-reflexive ones are never signalled, RFC 8445 §7.2.5.3.1),
        and ``peer``'s end-of-candidates goes along; ``moved``'s follows when its gathering ends."""
        now = self.net.now
        if peer.remote_ufrag is not None:
            peer.restart(now)
        peer.set_remote_credentials(now, moved.ufrag, moved.pwd)
        moved.set_remote_credentials(now, peer.ufrag, peer.pwd)
        for x, y in ((moved, peer), (peer, moved)):
            for cand in x.local_candidates:
                if cand.type is not CandidateType.PEER_REFLEXIVE:
                    y.add_remote_candidate(now, cand)
        if peer.gathering_complete:
            moved.add_remote_candidate(now, None)


def run_pair(spec: TopologySpec, config: AgentConfig | None = None, seed: int = 0, latency: float = 0.001,
             loss: float = 0.0, jitter: float = 0.0, timeout: float = 10.0, turn: bool = False,
             relay_only: bool = False, trickle: bool = True, controlling: str = "a") -> SimResult:
    """ICE between the agents on hosts ``a`` and ``b`` of ``spec``, with the spec's NATs, routes and link
    conditions: credentials at t = 0; with ``trickle`` every candidate is signalled as soon as it is gathered (host
    at once, srflx when the STUN server answers, relayed when the TURN allocation succeeds) and
    end-of-candidates when gathering ends, otherwise all of them at once then. The server runs at the spec's
    ``stun_primary``/``stun_alternate`` facts; with ``turn`` it is a TURN server (at ``turn``, answering Binding
    too) and both agents allocate on it. ``controlling`` says who starts controlling: "a", "b", "both" or
    "neither" (a role conflict). ``loss``/``latency``/``jitter`` apply to every packet, on top of the links' own
    conditions. Results are A's view."""
    return SimPair(spec, config, seed, latency, loss, jitter, turn, relay_only, trickle, controlling).connect(timeout)


def describe_pair(pair: Pair | None) -> str | None:
    return pair_text(pair.local, pair.remote) if pair is not None else None
