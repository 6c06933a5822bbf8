"""Pair and agent states (RFC 8445 §6.1.2.6, §6.1.3), with their allowed transitions as tables."""

from __future__ import annotations

import enum


class PairState(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: the identity hash, not Enum's Python-level one (a hot path)

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


PAIR_TRANSITIONS: dict[PairState, frozenset[PairState]] = {
    PairState.FROZEN: frozenset({PairState.WAITING, PairState.IN_PROGRESS, PairState.FAILED}),
    PairState.WAITING: frozenset({PairState.IN_PROGRESS, PairState.FAILED}),
    PairState.IN_PROGRESS: frozenset({PairState.SUCCEEDED, PairState.FAILED, PairState.WAITING}),
    PairState.SUCCEEDED: frozenset({PairState.IN_PROGRESS, PairState.WAITING, PairState.FAILED}),
    PairState.FAILED: frozenset({PairState.WAITING, PairState.IN_PROGRESS}),
}
"""RFC 8445 §6.1.2.6 and §7.2.5: a triggered check can move any pair back to Waiting or In-Progress."""


class AgentState(enum.Enum):
    __hash__ = object.__hash__  # as PairState's

    NEW = "new"
    CHECKING = "checking"
    CONNECTED = "connected"
    COMPLETED = "completed"
    FAILED = "failed"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"


AGENT_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    AgentState.NEW: frozenset({AgentState.CHECKING, AgentState.CONNECTED, AgentState.FAILED, AgentState.CLOSED}),
    AgentState.CHECKING: frozenset({AgentState.CONNECTED, AgentState.FAILED, AgentState.CLOSED}),
    AgentState.CONNECTED: frozenset({AgentState.COMPLETED, AgentState.DISCONNECTED, AgentState.FAILED,
                                     AgentState.CLOSED, AgentState.CHECKING}),
    AgentState.COMPLETED: frozenset({AgentState.DISCONNECTED, AgentState.FAILED, AgentState.CLOSED,
                                     AgentState.CHECKING}),
    AgentState.DISCONNECTED: frozenset({AgentState.CONNECTED, AgentState.COMPLETED, AgentState.FAILED,
                                        AgentState.CLOSED, AgentState.CHECKING}),
    AgentState.FAILED: frozenset({AgentState.CHECKING, AgentState.CLOSED}),
    AgentState.CLOSED: frozenset(),
}
