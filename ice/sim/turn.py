"""An ICE agent with a TURN allocation, for the simulation: the relayed candidate's traffic goes through a
sans-IO :class:`TurnClient` on its own local address (as a real TURN client has its own socket)."""

from __future__ import annotations

from ice.agent import IceAgent
from ice.agent.events import Event
from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.turn.client import Allocated, AllocationFailed, PeerData, TurnClient, TurnClientConfig


class RelayedAgent:
    """Duck-types :class:`IceAgent` for :class:`~ice.sim.network.SimNetwork`; ``agent`` is the real one."""

    def __init__(self, agent: IceAgent, turn: TurnClientConfig, turn_local: Address) -> None:
        self.agent = agent
        self.client = TurnClient(turn)
        self.turn_local = turn_local
        self.relayed: Address | None = None
        self.failed = False
        self._now = 0.0
        """The latest time seen; poll_transmit() follows a handle_*() call at that time."""

    def start(self, now: float) -> None:
        self._now = now
        self.client.allocate(now)

    def add_host_candidate(self, local: Address) -> object:
        return self.agent.add_host_candidate(local)

    def _pump_client(self, now: float) -> None:
        while (ev := self.client.next_event()) is not None:
            if isinstance(ev, Allocated):
                self.relayed = ev.relayed
                self.agent.add_relayed_candidate(ev.relayed, ev.mapped, self.client.server[0])
                self.agent.end_of_local_candidates()
            elif isinstance(ev, AllocationFailed):
                self.failed = True
                self.agent.end_of_local_candidates()
            elif isinstance(ev, PeerData) and self.relayed is not None:
                self.agent.handle_datagram(now, self.relayed, ev.peer, ev.data)

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        self._now = now
        if local == self.turn_local:
            self.client.handle_datagram(now, data)
            self._pump_client(now)
        else:
            self.agent.handle_datagram(now, local, remote, data)

    def handle_timeout(self, now: float) -> None:
        self._now = now
        self.agent.handle_timeout(now)
        at = self.client.next_timeout()
        if at is not None and at <= now:
            self.client.handle_timeout(now)
            self._pump_client(now)

    def next_timeout(self) -> float | None:
        times = [t for t in (self.agent.next_timeout(), self.client.next_timeout()) if t is not None]
        return min(times) if times else None

    def poll_transmit(self) -> Transmit | None:
        while (t := self.agent.poll_transmit()) is not None:
            if self.relayed is not None and t.local == self.relayed:
                self.client.send(self._now, t.remote, t.data)
                continue
            return t
        data = self.client.poll_transmit()
        return Transmit(self.client.server, data, self.turn_local) if data is not None else None

    def next_event(self) -> Event | None:
        return self.agent.next_event()
