"""icelab: a sans-IO ICE/STUN/TURN stack (RFC 8445, 8489, 8656) and the lab that proves it works.

The public API is what this module exports (``__all__``); everything else may change between minor versions.
The asyncio layer::

    from ice import Connection
    a = Connection(controlling=True)
    candidates = await a.gather()
    a.set_remote_credentials(ufrag, pwd); a.add_remote_candidate(c); a.add_remote_candidate(None)
    await a.connect()          # IceFailed (with a reason) or ConnectTimeout; default deadline 60 s
    a.send(b"hello"); data = await a.recv()

The sans-IO core (:class:`IceAgent`, no sockets, no clocks) sits under it, for callers that own their I/O.
Versions follow semantic versioning; CHANGELOG.md lists the changes.
"""

from ice import native  # noqa: F401  (first: its guard keeps a stale compiled build from loading, ice/native.py)
from ice.agent import AgentConfig, AgentState, Candidate, CandidateType, IceAgent, Nomination, PairState
from ice.agent.events import (
    CandidateGathered,
    ConsentLost,
    DataReceived,
    Event,
    GatheringComplete,
    NetworkChangeRestart,
    PairStateChanged,
    RoleChanged,
    SelectedPairChanged,
    StateChanged,
    StunServerUnreachable,
)
from ice.agent.network import NetworkChange
from ice.aio.connection import CONNECT_TIMEOUT, Connection, NetworkPolicy, describe_pair
from ice.aio.stun import BindingResult, stun_binding
from ice.aio.turn_client import TurnEndpoint
from ice.aio.turn_tcp_client import TurnTcpClient
from ice.errors import (
    ConnectTimeout,
    GatheringFailed,
    IceError,
    IceFailed,
    NotConnected,
    StunErrorResponse,
    StunParseError,
    StunTimeout,
    StunUnreachable,
    TurnError,
    UserError,
)
from ice.stun.attributes import Address
from ice.stun.transaction import RetransmissionConfig
from ice.turn.client import TurnClientConfig

__version__ = "0.2.0"

__all__ = [
    "CONNECT_TIMEOUT",
    "Address",
    "AgentConfig",
    "AgentState",
    "BindingResult",
    "Candidate",
    "CandidateGathered",
    "CandidateType",
    "ConnectTimeout",
    "Connection",
    "ConsentLost",
    "DataReceived",
    "Event",
    "GatheringComplete",
    "GatheringFailed",
    "IceAgent",
    "IceError",
    "IceFailed",
    "NetworkChange",
    "NetworkChangeRestart",
    "NetworkPolicy",
    "Nomination",
    "NotConnected",
    "PairState",
    "PairStateChanged",
    "RetransmissionConfig",
    "RoleChanged",
    "SelectedPairChanged",
    "StateChanged",
    "StunErrorResponse",
    "StunParseError",
    "StunServerUnreachable",
    "StunTimeout",
    "StunUnreachable",
    "TurnClientConfig",
    "TurnEndpoint",
    "TurnError",
    "TurnTcpClient",
    "UserError",
    "__version__",
    "describe_pair",
    "stun_binding",
]
