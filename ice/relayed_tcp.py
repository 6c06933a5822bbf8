"""Relayed TCP candidates for the ICE-over-TURN composition: ICE-TCP (RFC 6544 §5.3) through TURN TCP allocations
(RFC 6062), sans-IO.

A TCP allocation's relayed transport address gives the agent two candidates
(:meth:`~ice.agent.IceAgent.add_tcp_relayed_candidates`):

* a **passive** one: a peer connects to the relayed address, the server announces it with a ConnectionAttempt
  (RFC 6062 §4.4); :class:`TcpRelaying` opens a *data connection* to the server (a :class:`TcpConnect` the driver
  carries out like any other), binds it with ConnectionBind and hands it to the agent as accepted on the relayed
  address (:meth:`~ice.agent.IceAgent.accept_tcp`);
* an **active** one: the agent's :class:`TcpConnect` with ``relayed`` set becomes a Connect (RFC 6062 §4.3, the
  TURN client asks for a permission for the peer's IP first); once the server has connected to the peer, a data
  connection is opened and bound under the agent's own connection id, and the agent hears :class:`TcpConnected`
  only when the pipe to the peer is up.

After its ConnectionBind response a data connection is the peer's byte stream (RFC 6062 §4.5): the agent's
RFC 4571 frames pass through untouched both ways, and the driver's events and reads on it go to the agent. The
server accepts connections only from peers with a permission (RFC 6062 §5.3), so every remote candidate's IP gets
one on each TCP allocation.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ice.agent import IceAgent
from ice.agent.tcp import TcpClose, TcpConnect, TcpConnected, TcpConnectFailed, TcpEvent, TcpIntent, TcpSend
from ice.stun.attributes import Address
from ice.turn.client import ConnectionAttempt, PeerConnectFailed, PeerConnectionReady, TurnEvent, TurnState
from ice.turn.tcp_client import BindState, ConnectionBinder

if TYPE_CHECKING:
    from ice.relayed import Relay

STUN_HEADER = 20
"""RFC 8489 §5: the fixed header, whose bytes 2-3 give the length of what follows."""


@dataclass(eq=False)
class DataConnection:
    """One data connection to the TURN server (RFC 6062 §4.4), under the agent's connection id ``conn``."""

    conn: int
    relay: Relay
    peer: Address
    incoming: bool
    """Announced by a ConnectionAttempt (the peer connected to the relayed address); else the agent's Connect."""
    binder: ConnectionBinder | None = None
    """None while the Connect is unanswered (nothing asked of the driver yet)."""
    buffer: bytearray = field(default_factory=bytearray)
    bound: bool = False
    deadline: float | None = None
    """An incoming one not bound by then is closed (the agent's own connect timeout bounds an outgoing one)."""


class TcpRelaying:
    """The TCP allocations' side of :class:`~ice.relayed.RelayedAgent` (see the module docstring).
    ``relay_at(relayed)`` finds the TCP allocation with that relayed address."""

    def __init__(self, agent: IceAgent, relay_at: Callable[[Address], Relay | None]) -> None:
        self.agent = agent
        self.relay_at = relay_at
        self.out: deque[TcpIntent] = deque()
        """What the driver must do for the data connections, before the agent's own intents."""
        self.data: dict[int, DataConnection] = {}
        self.connecting: dict[tuple[Address, Address], list[int]] = {}
        """(relayed, peer) -> the agent's connection ids waiting for that Connect's answer (a reconnect while one
        is pending waits for it rather than sending another, which the server would refuse with 446)."""
        self.unopened: set[int] = set()
        """The agent's connections whose Connect ended with their allocation before the driver heard of them: the
        agent's close of one is not passed on."""
        self._seen: tuple[int, str, str | None] | None = None
        """(count, local ufrag, remote ufrag) when :meth:`permit` last went through the remote candidates: it runs
        on every poll and does nothing until they change. Within an ICE generation the list only grows (a
        peer-reflexive candidate replaced by its signalled self keeps its address); a restart starts another."""

    # -------------------------------------------------------------------------------- the TURN client's side

    def allocated(self, relay: Relay) -> None:
        assert relay.relayed is not None
        self.agent.add_tcp_relayed_candidates(relay.relayed, relay.client.mapped, relay.client.server[0],
                                              relay.component)
        self._seen = None  # the new allocation needs permissions for the remote candidates so far

    def dropped(self, relay: Relay) -> None:
        """``relay``'s allocation is gone (its socket's address left, or it was made again): its Connects and its
        data connections not yet handed to the agent end with it."""
        self.connecting = {k: v for k, v in self.connecting.items() if k[0] != relay.relayed}
        for d in [d for d in self.data.values() if d.relay is relay and not d.bound]:
            del self.data[d.conn]
            if d.binder is not None:
                self.out.append(TcpClose(d.conn))
            elif not d.incoming:
                self.unopened.add(d.conn)  # the agent will close it; the driver never heard of it

    def turn_event(self, now: float, relay: Relay, ev: TurnEvent) -> bool:
        """An RFC 6062 event of ``relay``'s TURN client; False when it is none of them."""
        if isinstance(ev, PeerConnectionReady | PeerConnectFailed) and relay.relayed is None:
            self.agent.stats["tcp-relay-connect-unused"] += 1  # no allocation (any more): nothing waits for it
        elif isinstance(ev, PeerConnectionReady):
            assert relay.relayed is not None
            waiting = [c for c in self.connecting.pop((relay.relayed, ev.peer), []) if c in self.data]
            if not waiting:
                self.agent.stats["tcp-relay-connect-unused"] += 1  # the agent gave up meanwhile
                return True
            for older in waiting[:-1]:
                self._end(now, self.data.pop(older), "superseded")
            self._open(now, self.data[waiting[-1]], ev.connection_id)
        elif isinstance(ev, PeerConnectFailed):
            assert relay.relayed is not None
            for conn in self.connecting.pop((relay.relayed, ev.peer), []):
                refused = self.data.pop(conn, None)
                if refused is not None:
                    self._end(now, refused, f"TURN Connect refused: {ev.code} {ev.reason}".strip())
        elif isinstance(ev, ConnectionAttempt):
            # Unauthenticated (an indication): only on a TCP allocation that is up, and no more unbound ones than
            # the agent takes accepted connections (AgentConfig.max_pairs).
            unbound = sum(1 for d in self.data.values() if d.incoming and not d.bound)
            if not relay.tcp or relay.relayed is None or relay.client.state is not TurnState.ALLOCATED:
                self.agent.stats["tcp-relay-attempt-ignored"] += 1
            elif unbound >= self.agent.config.max_pairs:
                self.agent.stats["tcp-relay-attempt-over-limit"] += 1
            else:
                d = DataConnection(self.agent.new_tcp_connection_id(), relay, ev.peer, incoming=True,
                                   deadline=now + self.agent.config.tcp.accept_idle)
                self.data[d.conn] = d
                self._open(now, d, ev.connection_id)
        else:
            return False
        return True

    def permit(self, now: float, relays: Iterable[Relay]) -> None:
        """A permission for every remote candidate's IP on each allocated TCP relay (RFC 6062 §5.3: the server
        closes connections from peers without one; RFC 8656 §9 for the peers the agent connects to)."""
        remotes = self.agent.remote_candidates
        seen = (len(remotes), self.agent.ufrag, self.agent.remote_ufrag)
        if seen == self._seen:
            return
        self._seen = seen
        ips = {c.host for c in remotes}
        for relay in relays:
            if relay.relayed is None or relay.client.state is not TurnState.ALLOCATED:
                continue
            v6 = ":" in relay.relayed[0]
            for ip in ips.difference(relay.client.permissions):
                if (":" in ip) == v6 and _is_ip(ip):
                    relay.client.create_permission(now, (ip, 0))

    def next_timeout(self) -> float | None:
        times = [d.deadline for d in self.data.values() if d.deadline is not None and not d.bound]
        return min(times) if times else None

    def handle_timeout(self, now: float) -> None:
        """Incoming data connections the server has not bound in time are closed (their peer may try again)."""
        for d in [d for d in self.data.values() if not d.bound and d.deadline is not None and d.deadline <= now]:
            del self.data[d.conn]
            self.out.append(TcpClose(d.conn))
            self.agent.stats["tcp-relay-bind-timeout"] += 1

    # ----------------------------------------------------------------------------------- the driver's side

    def poll_tcp(self, now: float) -> TcpIntent | None:
        """The next intent for the driver: the data connections' own, then the agent's, with the agent's
        connections through an allocation turned into Connect requests."""
        while True:
            if self.out:
                return self.out.popleft()
            intent = self.agent.poll_tcp()
            if isinstance(intent, TcpConnect) and intent.relayed is not None:
                self._connect(now, intent)
                continue
            if isinstance(intent, TcpClose) and intent.conn in self.unopened:
                self.unopened.discard(intent.conn)
                continue
            if isinstance(intent, TcpClose) and intent.conn in self.data:
                d = self.data.pop(intent.conn)
                if d.binder is None:
                    continue  # the Connect is unanswered: nothing was asked of the driver
            return intent

    def handle_tcp_event(self, now: float, ev: TcpEvent) -> bool:
        """An event on a data connection before it is bound; False: the agent's (a bound one's included)."""
        d = self.data.get(ev.conn)
        if d is None or d.bound:
            if d is not None and not isinstance(ev, TcpConnected):
                del self.data[ev.conn]
            return False
        if d.binder is None:  # its Connect is unanswered: the driver was never asked for it
            self.agent.stats["tcp-relay-event-unexpected"] += 1
            return True
        if isinstance(ev, TcpConnected):
            self.out.append(TcpSend(d.conn, d.binder.request()))  # RFC 6062 §4.4: the first and only STUN message
            return True
        del self.data[d.conn]
        reason = ev.reason if isinstance(ev, TcpConnectFailed) else "closed before ConnectionBind"
        self._fail(now, d, f"data connection to the TURN server: {reason}")
        return True

    def handle_tcp_data(self, now: float, conn: int, data: bytes) -> bool:
        """Bytes read on a data connection before it is bound (the ConnectionBind response, perhaps the peer's
        first bytes after it); False: the agent's."""
        d = self.data.get(conn)
        if d is None or d.bound:
            return False
        if d.binder is None:  # its Connect is unanswered: nothing can have been read on it
            self.agent.stats["tcp-relay-data-unexpected"] += 1
            return True
        d.buffer += data
        if len(d.buffer) < STUN_HEADER:
            return True
        size = STUN_HEADER + int.from_bytes(d.buffer[2:4], "big")
        if len(d.buffer) < size:
            return True
        response, rest = bytes(d.buffer[:size]), bytes(d.buffer[size:])
        d.buffer.clear()
        state = d.binder.receive(response)
        if state is BindState.SENT:  # a new NONCE (RFC 8489 §9.2.5): once more
            self.out.append(TcpSend(conn, d.binder.request()))
        elif state is BindState.FAILED:
            del self.data[conn]
            self.out.append(TcpClose(conn))
            code, reason = d.binder.error or (500, "")
            self._fail(now, d, f"ConnectionBind refused: {code} {reason}".strip())
        else:
            d.bound = True
            self.agent.stats["tcp-relay-bound"] += 1
            if d.incoming:
                relayed = d.relay.relayed
                if relayed is None or self.agent.accept_tcp(now, relayed, d.peer, conn_id=conn) is None:
                    del self.data[conn]
                    self.out.append(TcpClose(conn))
                    return True
            else:
                self.agent.handle_tcp_event(now, TcpConnected(conn))
            if rest:
                self.agent.handle_tcp_data(now, conn, rest)
        return True

    # ------------------------------------------------------------------------------------------ plumbing

    def _connect(self, now: float, intent: TcpConnect) -> None:
        assert intent.relayed is not None
        relay = self.relay_at(intent.relayed)
        if relay is None or relay.relayed is None or relay.client.state is not TurnState.ALLOCATED:
            self.agent.handle_tcp_event(now, TcpConnectFailed(intent.conn, "no TCP allocation"))
            return
        key = (relay.relayed, intent.remote)
        self.data[intent.conn] = DataConnection(intent.conn, relay, intent.remote, incoming=False)
        waiting = self.connecting.get(key)
        if waiting is not None:
            waiting.append(intent.conn)
            return
        if not relay.client.connect(now, intent.remote):  # RFC 6062 §4.3
            del self.data[intent.conn]
            self.agent.handle_tcp_event(now, TcpConnectFailed(intent.conn, "no TCP allocation"))
            return
        self.connecting[key] = [intent.conn]

    def _open(self, now: float, d: DataConnection, connection_id: int) -> None:
        """A data connection to the server for CONNECTION-ID ``connection_id`` (RFC 6062 §4.4), from the control
        connection's IP; its ConnectionBind goes once it is up."""
        client = d.relay.client
        credentials = client.bind_credentials()
        d.binder = ConnectionBinder(client.config.username, client.config.password, connection_id,
                                    *(credentials or (None, None)))
        self.out.append(TcpConnect(d.conn, (d.relay.local[0], 0), client.server))

    def _end(self, now: float, d: DataConnection, reason: str) -> None:
        """A Connect that never reached the driver ended: the agent hears of it, unless it gave up on the
        connection already (its close, queued, must then not reach the driver, which never heard of it)."""
        if self.agent.has_tcp_connection(d.conn):
            self._fail(now, d, reason)
        else:
            self.unopened.add(d.conn)

    def _fail(self, now: float, d: DataConnection, reason: str) -> None:
        if d.incoming:
            self.agent.stats["tcp-relay-attempt-not-bound"] += 1
        else:
            self.agent.handle_tcp_event(now, TcpConnectFailed(d.conn, reason))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


__all__ = ["DataConnection", "TcpRelaying"]
