"""Two agents across two simulated NATs with a STUN server: the sim back-end of a scenario cell."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ice.agent import AgentConfig, Candidate, CandidateType, IceAgent
from ice.agent.agent import Pair
from ice.agent.candidate import pair_text
from ice.agent.events import CandidateGathered, Event, GatheringComplete
from ice.nat.behaviour import NatBehaviour, NatKind
from ice.sim.network import SimNetwork
from ice.sim.turn import RelayedAgent
from ice.turn.client import TurnClientConfig

STUN = ("203.0.113.10", 3478)
STUN_ALT = ("203.0.113.11", 3479)


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


def _peer(net: SimNetwork, nat: NatBehaviour | None, index: int, agent: IceAgent, turn: TurnClientConfig | None,
          relay_only: bool = False, lan: int | None = None) -> IceAgent | RelayedAgent:
    """Put ``agent`` on the network (behind its NAT, or public for ``none``); with ``turn``, wrap it with a TURN
    client on the next port of the same host. ``nat=None`` puts it on the LAN of an earlier peer (``lan``)."""
    if nat is None:
        host = f"10.0.{lan}.{1 + index}"
    elif nat.kind is NatKind.NONE:
        host = f"203.0.113.{100 + index}"
    else:
        net.add_nat(nat, f"203.0.113.{index}", f"10.0.{index}.")
        host = f"10.0.{index}.2"
    if relay_only:
        net.add_endpoint(agent, (host, 5000))  # a socket, but no host candidate to offer
    else:
        net.add_agent(agent, (host, 5000))
    if turn is None:
        return agent
    relayed = RelayedAgent(agent, turn, (host, 5001))
    net.add_endpoint(relayed, (host, 5000), (host, 5001))
    return relayed


def two_nats(nat_a: NatBehaviour, nat_b: NatBehaviour, config: AgentConfig | None = None, seed: int = 0,
             latency: float = 0.001, loss: float = 0.0, jitter: float = 0.0, timeout: float = 10.0,
             turn: bool = False, same_lan: bool = False, relay_only: bool = False, trickle: bool = True,
             controlling: str = "a", a_loss: float = 0.0, a_delay: float = 0.0) -> SimResult:
    """ICE between A (controlling) and B: credentials at t = 0; with ``trickle`` every candidate is signalled as
    soon as it is gathered (host at once, srflx when the STUN server answers, relayed when the TURN allocation
    succeeds) and end-of-candidates when gathering ends, otherwise all of them at once then. With ``turn``, the
    server on the public segment is a TURN server (which answers Binding too) and both agents allocate on it.
    With ``same_lan``, B sits on A's LAN behind A's NAT (``nat_b`` is ignored). ``controlling`` says who starts
    controlling: "a", "b" or "both" (a role conflict). ``a_loss``/``a_delay`` impair only A's access link, as
    the lab does (``loss``/``latency``/``jitter`` apply to every packet). Results are A's view."""
    a_public = "203.0.113.101" if nat_a.kind is NatKind.NONE else "203.0.113.1"
    net = SimNetwork(latency=latency, loss=loss, jitter=jitter, seed=seed,
                     impaired=frozenset({a_public}) if a_loss or a_delay else frozenset(),
                     impaired_loss=a_loss, impaired_delay=a_delay)
    turn_config = None
    if turn:
        net.add_turn_server(STUN, {"alice": "secret"})
        turn_config = TurnClientConfig(STUN, "alice", "secret")
    else:
        net.add_stun_server(STUN, STUN_ALT)
    cfg = config or AgentConfig()
    a = IceAgent(controlling in ("a", "both"), cfg, rng=random.Random(seed * 2 + 1))
    b = IceAgent(controlling in ("b", "both"), cfg, rng=random.Random(seed * 2 + 2))
    ea = _peer(net, nat_a, 1, a, turn_config, relay_only)
    eb = _peer(net, None if same_lan else nat_b, 2, b, turn_config, relay_only, lan=1)
    peer_of = {id(a): b, id(b): a, id(ea): b, id(eb): a}
    held: dict[int, list[Candidate]] = {id(a): [], id(b): []}

    def signal(endpoint: object, ev: Event) -> None:  # an instant signalling channel
        me = endpoint.agent if isinstance(endpoint, RelayedAgent) else endpoint
        peer = peer_of[id(endpoint)]
        if isinstance(ev, CandidateGathered):
            if trickle:
                peer.add_remote_candidate(net.now, ev.candidate)
            else:
                held[id(me)].append(ev.candidate)
        elif isinstance(ev, GatheringComplete):
            for cand in held[id(me)]:
                peer.add_remote_candidate(net.now, cand)
            peer.add_remote_candidate(net.now, None)

    net.on_event = signal
    for x, y in ((a, b), (b, a)):
        y.set_remote_credentials(net.now, x.ufrag, x.pwd)
    for agent, endpoint in ((a, ea), (b, eb)):
        if not relay_only:
            for base in agent.bases:
                agent.gather_server_reflexive(net.now, base, STUN)
        if isinstance(endpoint, RelayedAgent):
            endpoint.start(net.now)  # end-of-candidates follows the allocation
        else:
            agent.end_of_local_candidates()
    net.run(timeout, stop=lambda: a.selected is not None and b.selected is not None)
    ok = a.selected is not None and b.selected is not None
    sel = (a.selected.local.type, a.selected.remote.type) if a.selected is not None else None
    sel_b = (b.selected.local.type, b.selected.remote.type) if b.selected is not None else None
    return SimResult(ok, net.now, sel, frozenset(valid_pair_types(a)), sel_b, describe_pair(a.selected),
                     describe_pair(b.selected))


def valid_pair_types(agent: IceAgent) -> set[tuple[str, str]]:
    """(local, remote) types of the agent's valid pairs: a checked pair whose check produced another valid pair
    (RFC 8445 §7.2.5.3.1, e.g. srflx for a host base behind a NAT) counts as that one."""
    return {(p.local.type.value, p.remote.type.value) for p in agent.pairs
            if p.valid and (p.valid_pair is None or p.valid_pair is p)}


def describe_pair(pair: Pair | None) -> str | None:
    return pair_text(pair.local, pair.remote) if pair is not None else None
