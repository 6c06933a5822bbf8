"""ICE over TURN, sans-IO: an :class:`IceAgent` whose relayed candidates come from TURN allocations.

RFC 8445 §5.1.1.2: a relayed candidate is the relayed transport address of a TURN allocation (RFC 8656), obtained
from a socket of its own. :class:`RelayedAgent` composes the agent with one :class:`TurnClient` per component, each
on its own local address, and meets the endpoint contract (:mod:`ice.endpoint`) for the whole:

* what arrives on a TURN client's local address is the server's (responses, Data indications, ChannelData); peer
  data the allocation delivers (RFC 8656 §11.3, §12.5) is fed to the agent as received on the relayed address;
  everything else goes to the agent;
* the agent's transmits from a relayed address are relayed by that allocation (a Send indication, or ChannelData
  once a channel is bound, RFC 8656 §11.2, §12.4); the TURN clients' own transmits go from their local address
  to the server;
* when a pair on a relayed candidate is selected, a channel is bound to its remote (data will flow: ChannelData
  saves 32 bytes per packet, RFC 8656 §12), unless ``bind_channels`` is off;
* end-of-candidates (RFC 8838 §8.2) is signalled to the agent once every allocation has succeeded or failed, so a
  refused or unanswered Allocate still ends gathering.

The simulation and the asyncio :class:`~ice.aio.connection.Connection` run this same composition.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ice.agent import IceAgent
from ice.agent.events import ConsentLost, Event, SelectedPairChanged
from ice.agent.network import NetworkChange
from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.turn.client import (
    Allocated,
    AllocationFailed,
    PeerData,
    TurnClient,
    TurnClientConfig,
    TurnState,
)


@dataclass(eq=False)
class Relay:
    """One component's TURN allocation, on its own local address."""

    component: int
    client: TurnClient
    relayed: Address | None = None
    failed: bool = False
    started: bool = False

    @property
    def local(self) -> Address:
        assert self.client.local is not None
        return self.client.local

    @property
    def done(self) -> bool:
        """The allocation succeeded or failed (its gathering is over)."""
        return self.relayed is not None or self.failed


class RelayedAgent:
    """An :class:`IceAgent` (``agent``) with TURN allocations: ``RelayedAgent(agent, turn, turn_local)`` allocates
    for component 1 from ``turn_local``; :meth:`add_allocation` adds one per further component (or all of them
    when ``turn_local`` is None). :meth:`start` sends the Allocate requests."""

    def __init__(self, agent: IceAgent, turn: TurnClientConfig, turn_local: Address | None = None,
                 bind_channels: bool = True) -> None:
        self.agent = agent
        self.turn = turn
        self.bind_channels = bind_channels
        self.relays: list[Relay] = []
        self._by_local: dict[Address, Relay] = {}
        self._by_relayed: dict[Address, Relay] = {}
        self._events: deque[Event] = deque()
        self._ended = False
        self._now = 0.0
        """The latest time seen; poll_transmit() and next_event() follow a call at that time."""
        if turn_local is not None:
            self.add_allocation(turn_local)

    # --------------------------------------------------------------------------------------------- setup

    def add_allocation(self, local: Address, component: int = 1) -> Relay:
        """A TURN client for ``component`` on the local address ``local`` (a socket the driver owns)."""
        relay = Relay(component, TurnClient(self.turn, local))
        self.relays.append(relay)
        self._by_local[local] = relay
        return relay

    def start(self, now: float) -> None:
        """Allocate (RFC 8656 §7.1) on every relay not yet started; end-of-candidates follows the allocations."""
        self._now = now
        for relay in self.relays:
            if not relay.started:
                relay.started = True
                relay.client.allocate(now)
        self._maybe_end()

    def add_host_candidate(self, local: Address) -> object:
        return self.agent.add_host_candidate(local)

    @property
    def relayed(self) -> Address | None:
        """The first allocation's relayed address (None until it succeeds)."""
        return self.relays[0].relayed if self.relays else None

    @property
    def failed(self) -> bool:
        """An allocation failed (refused, unanswered, or lost when a Refresh failed)."""
        return any(r.failed for r in self.relays)

    @property
    def client(self) -> TurnClient:
        """The first allocation's TURN client."""
        return self.relays[0].client

    @property
    def turn_local(self) -> Address:
        return self.relays[0].local

    def relay_for(self, relayed: Address) -> Relay | None:
        return self._by_relayed.get(relayed)

    def close(self, now: float) -> None:
        """Deallocate (RFC 8656 §8) and close the agent; the Refresh requests are still to be polled."""
        self._now = now
        for relay in self.relays:
            relay.client.close(now)
        self.agent.close()

    def network_changed(self, now: float, change: NetworkChange) -> None:
        """The network changed (:meth:`IceAgent.network_changed`, RFC 8445 §9): an allocation made from a socket in
        ``change.gone`` is dropped with its relayed candidate (the server's allocation cannot be reached from a
        dead address; it expires there, RFC 8656 §7), a new one is made from each socket of ``change.turn``
        (RFC 8656 §7.1), and end-of-candidates follows them as at first."""
        self._now = now
        dropped: list[Address] = []
        for local in change.gone:
            relay = self._by_local.pop(local, None)
            if relay is None:
                continue
            self.relays.remove(relay)
            if relay.relayed is not None:
                self._by_relayed.pop(relay.relayed, None)
                dropped.append(relay.relayed)
        self.agent.network_changed(now, NetworkChange((*change.gone, *dropped), change.hosts, change.turn,
                                                      change.stun_servers, change.offer_hosts), final=False)
        for component, local in change.turn:
            self.add_allocation(local, component)
        self._ended = False
        self.start(now)

    def _maybe_end(self) -> None:
        if not self._ended and all(r.done for r in self.relays):
            self._ended = True
            self.agent.end_of_local_candidates()

    # ---------------------------------------------------------------------------------- endpoint contract

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        self._now = now
        relay = self._by_local.get(local)
        if relay is not None:
            relay.client.handle_datagram(now, local, remote, data)
            self._pump_relay(now, relay)
        else:
            self.agent.handle_datagram(now, local, remote, data)
        self._pull(now)

    def handle_timeout(self, now: float) -> None:
        self._now = now
        self.agent.handle_timeout(now)
        for relay in self.relays:
            at = relay.client.next_timeout()
            if at is not None and at <= now:
                relay.client.handle_timeout(now)
                self._pump_relay(now, relay)
        self._pull(now)

    def next_timeout(self) -> float | None:
        times = [t for t in (self.agent.next_timeout(), *(r.client.next_timeout() for r in self.relays))
                 if t is not None]
        return min(times) if times else None

    def poll_transmit(self) -> Transmit | None:
        while (t := self.agent.poll_transmit()) is not None:
            relay = self._by_relayed.get(t.local) if t.local is not None else None
            if relay is None:
                return t
            if not relay.client.send(self._now, t.remote, t.data):  # RFC 8656 §11.2: Send, or ChannelData
                self.agent.stats["relay-not-allocated"] += 1
        for relay in self.relays:
            out = relay.client.poll_transmit()
            if out is not None:
                return out
        return None

    def next_event(self) -> Event | None:
        self._pull(self._now)
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------------------------------ plumbing

    def _pump_relay(self, now: float, relay: Relay) -> None:
        while (ev := relay.client.next_event()) is not None:
            if isinstance(ev, Allocated):
                if relay.relayed is not None:
                    self._by_relayed.pop(relay.relayed, None)  # a new allocation after 437 (RFC 8656 §8)
                relay.relayed = ev.relayed
                relay.failed = False
                self._by_relayed[ev.relayed] = relay
                self.agent.add_relayed_candidate(ev.relayed, ev.mapped, relay.client.server[0], relay.component)
                self._maybe_end()
            elif isinstance(ev, AllocationFailed):
                relay.failed = True
                self._maybe_end()
            elif isinstance(ev, PeerData) and relay.relayed is not None:
                self.agent.handle_datagram(now, relay.relayed, ev.peer, ev.data)

    def _pull(self, now: float) -> None:
        """Take the agent's events as they happen: a selected relayed pair gets a channel at that time."""
        while (ev := self.agent.next_event()) is not None:
            if isinstance(ev, ConsentLost):
                relay = self._by_relayed.get(ev.local)
                if relay is not None:
                    relay.client.refresh(now)  # is the allocation still there? (a 437 allocates again)
            if isinstance(ev, SelectedPairChanged) and self.bind_channels:
                relay = self._by_relayed.get(ev.base)
                if relay is not None and relay.client.state is TurnState.ALLOCATED \
                        and ev.remote.address not in relay.client.channels:
                    relay.client.bind_channel(now, ev.remote.address)
            self._events.append(ev)


__all__ = ["Relay", "RelayedAgent"]
