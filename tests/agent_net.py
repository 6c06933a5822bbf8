"""A tiny in-memory network for agent tests: fixed latency, drop rules, virtual time (no sockets, no sleeping)."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from ice.agent import IceAgent
from ice.stun.attributes import Address


@dataclass
class Net:
    latency: float = 0.001
    now: float = 0.0
    agents: dict[Address, IceAgent] = field(default_factory=dict)
    drop: Callable[[Address, Address, bytes], bool] = lambda src, dst, data: False
    sent: list[tuple[float, Address, Address, bytes]] = field(default_factory=list)
    _queue: list[tuple[float, int, Address, Address, bytes]] = field(default_factory=list)
    _seq: int = 0

    def attach(self, agent: IceAgent, *addresses: Address) -> None:
        for a in addresses:
            self.agents[a] = agent
            agent.add_host_candidate(a)

    def _collect(self) -> None:
        for agent in {id(a): a for a in self.agents.values()}.values():
            while (t := agent.poll_transmit()) is not None:
                assert t.local is not None
                self.sent.append((self.now, t.local, t.remote, t.data))
                if t.remote in self.agents and not self.drop(t.local, t.remote, t.data):
                    self._seq += 1
                    heapq.heappush(self._queue, (self.now + self.latency, self._seq, t.local, t.remote, t.data))

    def run(self, until: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Advance virtual time event by event (deliveries and agent timers) up to ``until`` or ``stop()``."""
        agents = list({id(a): a for a in self.agents.values()}.values())
        while True:
            self._collect()
            if stop():
                return
            times = [t for a in agents if (t := a.next_timeout()) is not None]
            if self._queue:
                times.append(self._queue[0][0])
            if not times or min(times) > until:
                self.now = until
                return
            self.now = max(self.now, min(times))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, src, dst, data = heapq.heappop(self._queue)
                self.agents[dst].handle_datagram(self.now, dst, src, data)
            for a in agents:
                t = a.next_timeout()
                if t is not None and t <= self.now:
                    a.handle_timeout(self.now)

    def checks_from(self, src: Address) -> list[float]:
        """Times at which ``src`` sent STUN Binding requests."""
        return [t for t, s, _, d in self.sent if s == src and d[:2] == b"\x00\x01"]


def exchange(net: Net, a: IceAgent, b: IceAgent, trickle_delay: float | None = None) -> None:
    """Signal credentials and candidates both ways at the current virtual time."""
    for x, y in ((a, b), (b, a)):
        y.set_remote_credentials(net.now, x.ufrag, x.pwd, lite=x.config.lite)
        if trickle_delay is None:
            for c in x.local_candidates:
                y.add_remote_candidate(net.now, c)
            y.add_remote_candidate(net.now, None)
