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
  refused or unanswered Allocate still ends gathering;
* a TCP allocation (RFC 6062, ``add_allocation(..., tcp=True)``, over a TCP or TLS connection to the server) gives
  relayed TCP candidates instead (RFC 6544 §5.3): :class:`~ice.relayed_tcp.TcpRelaying` turns the agent's
  connections through it into Connect requests and the server's ConnectionAttempts into accepted connections,
  over data connections the driver opens like any other; so the composition is the driver's TCP side too
  (:meth:`poll_tcp`, :meth:`handle_tcp_event`, :meth:`handle_tcp_data`, :meth:`accept_tcp`).

The simulation and the asyncio :class:`~ice.aio.connection.Connection` run this same composition.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from ice.agent import IceAgent
from ice.agent.events import ConsentLost, Event, SelectedPairChanged
from ice.agent.network import NetworkChange
from ice.agent.tcp import DISCARD_PORT, TcpEvent, TcpIntent
from ice.relayed_tcp import TcpRelaying
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
    def tcp(self) -> bool:
        """A TCP allocation (RFC 6062): relayed TCP candidates."""
        return self.client.config.relay_transport == "tcp"

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
        self._by_tcp_relayed: dict[Address, Relay] = {}
        self.tcp = TcpRelaying(agent, self._by_tcp_relayed.get)
        """The TCP allocations' connections (RFC 6062)."""
        self._events: deque[Event] = deque()
        self._ended = False
        self._held = False
        """End-of-candidates waits for the caller too (:meth:`end_of_local_candidates`)."""
        self._now = 0.0
        """The latest time seen; poll_transmit() and next_event() follow a call at that time."""
        if turn_local is not None:
            self.add_allocation(turn_local)

    # --------------------------------------------------------------------------------------------- setup

    def add_allocation(self, local: Address, component: int = 1, tcp: bool = False) -> Relay:
        """A TURN client for ``component`` on the local address ``local`` (a socket or stream the driver owns);
        ``tcp``: a TCP allocation (RFC 6062), whose control connection must be a TCP or TLS stream."""
        if tcp and not self.turn.stream:
            raise ValueError("a TURN TCP allocation needs a TCP or TLS connection to the server (RFC 6062 §4.1)")
        config = self.turn if self.turn.relay_transport == ("tcp" if tcp else "udp") \
            else replace(self.turn, relay_transport="tcp" if tcp else "udp")
        relay = Relay(component, TurnClient(config, local))
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

    def network_changed(self, now: float, change: NetworkChange, final: bool = True) -> None:
        """The network changed (:meth:`IceAgent.network_changed`, RFC 8445 §9): an allocation made from a socket in
        ``change.gone`` is dropped with its relayed candidate (the server's allocation cannot be reached from a
        dead address; it expires there, RFC 8656 §7), a new one is made from each socket of ``change.turn``
        (RFC 8656 §7.1; a TCP allocation from each connection of ``change.turn_tcp``), and end-of-candidates follows
        them as at first. ``final=False``: more candidates follow (the caller's Bindings over TCP); the caller calls
        :meth:`end_of_local_candidates` when they have, and end-of-candidates waits for that too."""
        self._now = now
        dropped: list[Address] = []
        for local in change.gone:
            relay = self._by_local.pop(local, None)
            if relay is None:
                continue
            self.relays.remove(relay)
            if relay.relayed is not None:
                self._by_relayed.pop(relay.relayed, None)
                self._by_tcp_relayed.pop(relay.relayed, None)
                dropped.append(relay.relayed)
                if relay.tcp:
                    self.tcp.dropped(relay)
                    dropped.append((relay.relayed[0], DISCARD_PORT))
        self.agent.network_changed(now, replace(change, gone=(*change.gone, *dropped)), final=False)
        for component, local in change.turn:
            self.add_allocation(local, component)
        for component, local in change.turn_tcp:
            self.add_allocation(local, component, tcp=True)
        self._ended = False
        self._held = not final
        self.start(now)

    def end_of_local_candidates(self) -> None:
        """The caller's own candidates after a ``network_changed(..., final=False)`` are in: end-of-candidates
        follows once the allocations are done too."""
        self._held = False
        self._maybe_end()

    def _maybe_end(self) -> None:
        if not self._ended and not self._held and all(r.done for r in self.relays):
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
        if self.tcp.data:
            self.tcp.handle_timeout(now)
        for relay in self.relays:
            at = relay.client.next_timeout()
            if at is not None and at <= now:
                relay.client.handle_timeout(now)
                self._pump_relay(now, relay)
        self._pull(now)

    def next_timeout(self) -> float | None:
        times = [t for t in (self.agent.next_timeout(), self.tcp.next_timeout() if self.tcp.data else None,
                             *(r.client.next_timeout() for r in self.relays)) if t is not None]
        return min(times) if times else None

    def poll_transmit(self) -> Transmit | None:
        while (t := self.agent.poll_transmit()) is not None:
            relay = self._by_relayed.get(t.local) if t.local is not None else None
            if relay is None:
                return t
            if not relay.client.send(self._now, t.remote, t.data):  # RFC 8656 §11.2: Send, or ChannelData
                self.agent.stats["relay-not-allocated"] += 1
        if self._by_tcp_relayed:
            self.tcp.permit(self._now, self._by_tcp_relayed.values())
        for relay in self.relays:
            out = relay.client.poll_transmit()
            if out is not None:
                return out
        return None

    def next_event(self) -> Event | None:
        self._pull(self._now)
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------------------- the driver's TCP side

    def poll_tcp(self) -> TcpIntent | None:
        """The next TCP intent for the driver (:meth:`IceAgent.poll_tcp`, plus the TCP allocations' data
        connections)."""
        return self.tcp.poll_tcp(self._now)

    def handle_tcp_event(self, now: float, event: TcpEvent) -> None:
        self._now = now
        if not self.tcp.handle_tcp_event(now, event):
            self.agent.handle_tcp_event(now, event)
        self._pull(now)

    def handle_tcp_data(self, now: float, conn_id: int, data: bytes) -> None:
        self._now = now
        if not self.tcp.handle_tcp_data(now, conn_id, data):
            self.agent.handle_tcp_data(now, conn_id, data)
        self._pull(now)

    def accept_tcp(self, now: float, local: Address, remote: Address) -> int | None:
        self._now = now
        return self.agent.accept_tcp(now, local, remote)

    # ------------------------------------------------------------------------------------------ plumbing

    def _pump_relay(self, now: float, relay: Relay) -> None:
        while (ev := relay.client.next_event()) is not None:
            if isinstance(ev, Allocated):
                by_relayed = self._by_tcp_relayed if relay.tcp else self._by_relayed
                if relay.relayed is not None:
                    by_relayed.pop(relay.relayed, None)  # a new allocation after 437 (RFC 8656 §8)
                    if relay.tcp:
                        self.tcp.dropped(relay)
                relay.relayed = ev.relayed
                relay.failed = False
                by_relayed[ev.relayed] = relay
                if relay.tcp:
                    self.tcp.allocated(relay)
                else:
                    self.agent.add_relayed_candidate(ev.relayed, ev.mapped, relay.client.server[0], relay.component)
                self._maybe_end()
            elif isinstance(ev, AllocationFailed):
                relay.failed = True
                self._maybe_end()
            elif isinstance(ev, PeerData) and relay.tcp:  # RFC 6062 §5.1: a TCP allocation has no Data indications
                self.agent.stats["relay-tcp-peer-data-dropped"] += 1
            elif isinstance(ev, PeerData) and relay.relayed is not None:
                self.agent.handle_datagram(now, relay.relayed, ev.peer, ev.data)
            else:
                self.tcp.turn_event(now, relay, ev)

    def _pull(self, now: float) -> None:
        """Take the agent's events as they happen: a selected relayed pair gets a channel at that time."""
        while (ev := self.agent.next_event()) is not None:
            if isinstance(ev, ConsentLost):
                relay = self._by_relayed.get(ev.local) or self._by_tcp_relayed.get(ev.local)
                if relay is not None:
                    relay.client.refresh(now)  # is the allocation still there? (a 437 allocates again)
            if isinstance(ev, SelectedPairChanged) and self.bind_channels:
                relay = self._by_relayed.get(ev.base)
                if relay is not None and relay.client.state is TurnState.ALLOCATED \
                        and ev.remote.address not in relay.client.channels:
                    relay.client.bind_channel(now, ev.remote.address)
            self._events.append(ev)


__all__ = ["Relay", "RelayedAgent"]
