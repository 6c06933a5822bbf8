"""Events the agent emits (``IceAgent.next_event()``): frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

from ice.agent.candidate import Candidate
from ice.agent.states import AgentState, PairState
from ice.stun.attributes import Address


@dataclass(frozen=True)
class CandidateGathered:
    """A local candidate to signal to the peer (trickle ICE, RFC 8838)."""

    candidate: Candidate


@dataclass(frozen=True)
class GatheringComplete:
    """No more local candidates: signal end-of-candidates (RFC 8838 §8.2)."""


@dataclass(frozen=True)
class PairStateChanged:
    local: Candidate
    remote: Candidate
    state: PairState


@dataclass(frozen=True)
class SelectedPairChanged:
    """The pair data now flows on (RFC 8445 §8.1.2): ``local`` and ``remote`` carry the candidate types."""

    local: Candidate
    remote: Candidate
    base: Address
    component: int = 1


@dataclass(frozen=True)
class StateChanged:
    state: AgentState
    reason: str | None = None
    """With ``FAILED``: one sentence on the likely cause (e.g. the peer rejected our credentials)."""


@dataclass(frozen=True)
class StunServerUnreachable:
    """Server-reflexive gathering from ``local`` via ``server`` failed (ICMP unreachable, or no answer within
    ``AgentConfig.gather_timeout`` / the transaction schedule): no srflx candidate from it."""

    server: Address
    local: Address
    reason: str


@dataclass(frozen=True)
class DataReceived:
    data: bytes
    local: Address
    remote: Address
    component: int = 1


@dataclass(frozen=True)
class ConsentLost:
    """RFC 7675 §5.1: no consent check on the selected pair succeeded for the consent timeout; sending stopped."""

    local: Address
    remote: Address


@dataclass(frozen=True)
class RoleChanged:
    """The agent took the other role: resolving a role conflict (RFC 8445 §7.3.1.1: a 487 answer, or a check from
    a peer in the same role whose tie-breaker loses to ours), or facing an ICE-lite peer (§6.1.1)."""

    controlling: bool


@dataclass(frozen=True)
class NetworkChangeRestart:
    """The agent restarted ICE because the network changed (RFC 8445 §9; ``IceAgent.network_changed``): its local
    credentials are new (``ufrag``, and the agent's ``pwd``). Signal them to the peer, which restarts too when a
    changed ufrag arrives (RFC 8839 §4.4.1.1.1), with the agent's current candidates; the new ones follow as
    :class:`CandidateGathered`, then :class:`GatheringComplete`. A restart the application asks for itself
    (``restart()``) emits nothing: the application signals it."""

    ufrag: str
    gone: tuple[Address, ...]
    """The local addresses that left (their candidates and pairs are gone)."""
    added: tuple[Address, ...]
    """The new local sockets' addresses (host candidates unless relay-only)."""


Event = (CandidateGathered | GatheringComplete | PairStateChanged | SelectedPairChanged | StateChanged
         | DataReceived | ConsentLost | StunServerUnreachable | NetworkChangeRestart | RoleChanged)
