"""Several data streams in one ICE session (RFC 8445 §6.1.2: one checklist per data stream, a checklist set).

Each stream is an :class:`IceAgent` (its own sockets, components, pairs and selected pairs). The session gives
them one set of credentials and one tie-breaker, one Ta for all ordinary checks (a shared :class:`Pacer`), a single
role (a role switch in one stream switches them all, RFC 8445 §7.3.1.1) and routes datagrams by local address.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field

from ice.agent.agent import IceAgent, Pacer
from ice.agent.config import AgentConfig
from ice.agent.events import Event
from ice.stun.attributes import Address
from ice.stun.transaction import Transmit


@dataclass
class IceSession:
    controlling: bool
    streams: int = 1
    config: AgentConfig = field(default_factory=AgentConfig)
    rng: random.Random = field(default_factory=lambda: random.Random(secrets.randbits(64)))

    def __post_init__(self) -> None:
        if self.streams < 1:
            raise ValueError("a session has at least one data stream")
        pacer = Pacer()
        first = IceAgent(self.controlling, self.config, pacer, rng=self.rng)
        self.agents = [first] + [
            IceAgent(self.controlling, self.config, pacer, ufrag=first.ufrag, pwd=first.pwd,
                     tie_breaker=first.tie_breaker, rng=self.rng)
            for _ in range(self.streams - 1)
        ]
        pacer.checklists.extend(self.agents)  # the checklist set: foundations freeze across streams (§6.1.2.6)
        self._next_poll = 0

    @property
    def ufrag(self) -> str:
        return self.agents[0].ufrag

    @property
    def pwd(self) -> str:
        return self.agents[0].pwd

    def stream(self, index: int) -> IceAgent:
        return self.agents[index]

    def set_remote_credentials(self, now: float, ufrag: str, pwd: str, lite: bool = False) -> None:
        for agent in self.agents:
            agent.set_remote_credentials(now, ufrag, pwd, lite)
        self._sync_roles()

    def _owner(self, local: Address) -> IceAgent | None:
        return next((a for a in self.agents if local in a._bases), None)

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        agent = self._owner(local)
        if agent is None:
            self.agents[0].stats["datagram-on-unknown-socket"] += 1
            return
        agent.handle_datagram(now, local, remote, data)
        self._sync_roles()

    def handle_timeout(self, now: float) -> None:
        for agent in self.agents:  # stream order: the first stream gets the Ta slot first
            agent.handle_timeout(now)
        self._sync_roles()

    def next_timeout(self) -> float | None:
        times = [t for a in self.agents if (t := a.next_timeout()) is not None]
        return min(times) if times else None

    def poll_transmit(self) -> Transmit | None:
        for i in range(len(self.agents)):
            agent = self.agents[(self._next_poll + i) % len(self.agents)]
            t = agent.poll_transmit()
            if t is not None:
                self._next_poll = (self._next_poll + i + 1) % len(self.agents)
                return t
        return None

    def next_event(self) -> tuple[int, Event] | None:
        """(stream index, event), streams in order."""
        for i, agent in enumerate(self.agents):
            ev = agent.next_event()
            if ev is not None:
                return i, ev
        return None

    @property
    def connected(self) -> bool:
        return all(a.selected_pairs and a.selected is not None for a in self.agents)

    def _sync_roles(self) -> None:
        roles = {a.controlling for a in self.agents}
        if len(roles) == 1:
            self.controlling = roles.pop()
            return
        new = not self.controlling  # one stream switched (487 or a conflicting request): all follow
        for agent in self.agents:
            if agent.controlling != new:
                agent._switch_role(new)
        self.controlling = new
