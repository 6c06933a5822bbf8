"""The sans-IO ICE agent (RFC 8445): never imports asyncio or socket, never reads a clock."""

from ice.agent.agent import IceAgent
from ice.agent.candidate import Candidate, CandidateType, candidate_priority, foundation, pair_priority
from ice.agent.config import AgentConfig, Nomination
from ice.agent.states import AgentState, PairState
from ice.agent.tcp import TcpConfig, TcpType

__all__ = [
    "AgentConfig",
    "AgentState",
    "Candidate",
    "CandidateType",
    "IceAgent",
    "Nomination",
    "PairState",
    "TcpConfig",
    "TcpType",
    "candidate_priority",
    "foundation",
    "pair_priority",
]
