"""Helpers for agent tests on the simulation tier's network (public addresses only, virtual time)."""

from __future__ import annotations

from collections.abc import Callable

from ice.agent import IceAgent
from ice.sim.network import SimNetwork
from ice.stun.attributes import Address


class Net(SimNetwork):
    """A :class:`SimNetwork` that records what is sent, with the names the agent tests use."""

    def __init__(self, latency: float = 0.001) -> None:
        super().__init__(latency=latency)
        self.sent = []

    def attach(self, agent: IceAgent, *addresses: Address) -> None:
        self.add_agent(agent, *addresses)

    @property
    def drop(self) -> Callable[[Address, Address, bytes], bool] | None:
        return self.drop_if

    @drop.setter
    def drop(self, rule: Callable[[Address, Address, bytes], bool]) -> None:
        self.drop_if = rule

    def checks_from(self, src: Address) -> list[float]:
        """Times at which ``src`` sent STUN Binding requests."""
        assert self.sent is not None
        return [t for t, s, _, d in self.sent if s == src and d[:2] == b"\x00\x01"]


def exchange(net: Net, a: IceAgent, b: IceAgent, trickle_delay: float | None = None) -> None:
    """Signal credentials and candidates both ways at the current virtual time."""
    for x, y in ((a, b), (b, a)):
        y.set_remote_credentials(net.now, x.ufrag, x.pwd, lite=x.config.lite)
        if trickle_delay is None:
            for c in x.local_candidates:
                y.add_remote_candidate(net.now, c)
            y.add_remote_candidate(net.now, None)
