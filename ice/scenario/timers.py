"""Every timer of a matrix run (both back-ends), in one place."""

from __future__ import annotations

from dataclasses import dataclass

from ice.agent.config import AgentConfig, Nomination


@dataclass(frozen=True)
class MatrixTimers:
    """Every timer of a matrix run (both back-ends), in one place."""

    connect: float = 8.0
    """How long a cell may take to select a pair on both sides before it counts as not connected."""
    connect_lossy: float = 20.0
    """The same on lossy links (a check may need several retransmissions: 0.5 + 1 + 2 + 4 + 8 s)."""
    data: float = 3.0
    """After selection, how long one datagram each way may take to arrive (resent every ``data_resend``)."""
    data_lossy: float = 10.0
    data_resend: float = 0.1
    capture_flush: float = 0.05
    """Before slicing a failed cell's pcaps: tcpdump --immediate-mode -U writes within milliseconds."""
    cell_deadline: float = 120.0
    """A lab worker that returns nothing for this long is killed; its cell fails and the run goes on."""
    worker_stop: float = 15.0
    """How long a lab worker may take to tear its labs down after its last cell."""
    sim_latency: float = 0.001
    """One-way latency of every simulated packet (the lab's veth links are about that fast)."""

    def connect_for(self, lossy: bool) -> float:
        return self.connect_lossy if lossy else self.connect

    def data_for(self, lossy: bool) -> float:
        return self.data_lossy if lossy else self.data


TIMERS = MatrixTimers()


def agent_config(nomination: str, consent_timeout: float = 0.0, keepalive: bool = True) -> AgentConfig:
    """icelab's agent config for a cell: its nomination, its consent timeout when it shortens RFC 7675's, and no
    consent checks at all without ``keepalive``."""
    config = AgentConfig(nomination=Nomination(nomination), keepalive=keepalive)
    return config.with_consent_timeout(consent_timeout) if consent_timeout else config
