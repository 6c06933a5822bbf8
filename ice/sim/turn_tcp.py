"""A TURN server's TCP side on the simulated network: TURN over TCP (RFC 8656 §3.1) and TCP allocations (RFC 6062),
on the virtual clock. The simulation's counterpart of :mod:`ice.aio.turn_tcp` and the TCP listener of
:mod:`ice.aio.turn_server`, for the same sans-IO core (:class:`~ice.turn.server.TurnServer` and its
:class:`~ice.turn.tcp_allocation.TcpRelay`).

:class:`SimTcpTurnServer` runs on the server host's :class:`~ice.sim.tcp.TcpStack`:

* the server's TCP listener: each connection is a stream client of the core (``stream_opened``/``stream_closed``,
  RFC 8656 §3.1: an allocation made on it ends with it); what it reads is framed STUN and ChannelData (RFC 8656
  §12.5), fed to the core one frame at a time, and the core's transmits to it are written on it (the network's
  stream routing, :meth:`~ice.sim.network.SimNetwork.attach_stream`), until the core splices it (a ConnectionBind,
  RFC 6062 §5.4); from then on it is a raw byte pipe to its peer data connection;
* a listener on each TCP relayed address (the core's :class:`~ice.turn.tcp_allocation.TcpRelayPorts`, through
  :meth:`~ice.sim.network.SimNetwork.add_turn_server` with ``tcp``): each connection accepted is reported
  (``PeerAccepted``) and its bytes held until it is spliced or closed (RFC 6062 §5.3);
* ``ConnectPeer``: a connection from the relayed address (the stack reuses the port, like SO_REUSEADDR, RFC 6062
  §5.2) to the peer, reported as ``PeerConnected`` or ``PeerConnectFailed``; it crosses the topology's NATs as
  any segment does (RFC 5382);
* ``Splice``: the bytes held from the peer go to the client, the bytes read after the ConnectionBind to the peer,
  then everything both ways (RFC 6062 §5.5);
* teardown: either side of a pair closing is reported (``ConnectionClosed``) and closes the other;
  ``CloseConnection`` closes both (RFC 6062 §5.5).

What the stack reports runs at once (its handlers), the core's answers are sent and its intents carried out before
the next frame is read, so a ConnectionBind's success response goes out before the pipe starts. The core's intents
from its timers are carried out when the network pumps its TCP drivers.

Not modelled: TCP's windows (a peer's bytes held before the splice are all kept, whatever ``peer_buffer`` says),
half-closes (the stack has none: a FIN closes both directions), TLS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ice.sim.tcp import TcpConnection, TcpStack, TcpState
from ice.stun.attributes import Address
from ice.turn.framing import frame_length
from ice.turn.server import TurnServer
from ice.turn.tcp_allocation import (
    CloseConnection,
    ConnectionClosed,
    ConnectPeer,
    PeerAccepted,
    PeerConnected,
    PeerConnectFailed,
    Splice,
    TcpEvent,
    TcpIntent,
)

if TYPE_CHECKING:
    from ice.sim.network import SimNetwork

Pair = tuple[Address, Address]


@dataclass
class _Client:
    """A connection accepted on the server's listener: a control connection, or a client data connection (RFC
    6062 §5.4) once ``link`` is set."""

    conn: TcpConnection
    buffer: bytearray = field(default_factory=bytearray)
    """Read and not yet a whole frame (after the splice: nothing, everything goes to the peer)."""
    link: _Link | None = None

    @property
    def key(self) -> Pair:
        return self.conn.local, self.conn.remote


@dataclass
class _Link:
    """A peer data connection (RFC 6062 §3), and the client data connection spliced to it."""

    conn: TcpConnection
    held: bytearray = field(default_factory=bytearray)
    """What the peer sent before the splice (RFC 6062 §5.2, §5.3: the server buffers it)."""
    client: _Client | None = None

    @property
    def pair(self) -> Pair:
        return self.conn.local, self.conn.remote


class SimTcpTurnServer:
    """The TCP side of the TURN server ``core`` listening on ``listen`` on ``stack`` (see the module docstring).
    :meth:`~ice.sim.network.SimNetwork.add_turn_server` with ``tcp`` makes one and registers it in the network's
    ``tcp_drivers``; the core's relay ports call :meth:`open_relayed` and :meth:`close_relayed`."""

    def __init__(self, net: SimNetwork, core: TurnServer, stack: TcpStack, listen: Address) -> None:
        self.net = net
        self.core = core
        self.stack = stack
        self.listen = listen
        self.stats = core.stats
        """The core's counters; this adds ``stream-garbage`` (a client sent neither STUN nor ChannelData)."""
        self.clients: dict[Pair, _Client] = {}
        """(listening address, client) -> a connection to the server's listener."""
        self.links: dict[Pair, _Link] = {}
        """(relayed address, peer) -> a peer data connection."""
        self.relayed: set[Address] = set()
        """The TCP relayed addresses listening (RFC 6062 §5.1)."""
        stack.listen(listen, self._on_client)

    # -------------------------------------------------------------------------------- TcpRelayPorts (I/O)

    def open_relayed(self, relayed: Address) -> None:
        """Listen on a new TCP relayed address (RFC 6062 §5.1: the server accepts peers' connections there)."""
        self.relayed.add(relayed)
        self.stack.listen(relayed, self._on_accepted)

    def close_relayed(self, relayed: Address) -> None:
        """The TCP allocation is gone: stop listening (its connections were closed before, RFC 6062 §5.5)."""
        self.relayed.discard(relayed)
        self.stack.unlisten(relayed)

    # --------------------------------------------------------------------------------------------- running

    def pump(self, now: float) -> None:
        """Send the core's transmits and carry out its intents (those of its timers: connect and bind timeouts)."""
        self._flush(now)

    def _flush(self, now: float) -> None:
        """The core's transmits, then its intents, in the order it queued them, until neither is left."""
        busy = True
        while busy:
            busy = False
            while (t := self.core.poll_transmit()) is not None:
                busy = True
                self.net.transmit(t)
            while (intent := self.core.tcp.next_intent()) is not None:
                busy = True
                self._execute(now, intent)

    def _report(self, event: TcpEvent) -> None:
        now = self.net.now
        self.core.tcp.handle_event(now, event)
        self._flush(now)

    def close(self) -> None:
        """The server goes away (a restart): every connection closes and nothing listens any more."""
        for link in list(self.links.values()):
            self.stack.close(link.conn)
        for client in list(self.clients.values()):
            self.stack.close(client.conn)
            self.net.remove_stream(*client.key)
        self.links.clear()
        self.clients.clear()
        for relayed in list(self.relayed):
            self.close_relayed(relayed)
        self.stack.unlisten(self.listen)

    # ------------------------------------------------------------------------------- the server's listener

    def _on_client(self, kind: str, conn: TcpConnection, data: bytes) -> None:
        """A connection to the listener (RFC 8656 §3.1): a stream client of the core while it is framed."""
        key = (conn.local, conn.remote)
        if kind == "established":
            self.clients[key] = _Client(conn)
            self.core.stream_opened(*key)
            self.net.attach_stream(self.stack, conn)
            return
        client = self.clients.get(key)
        if client is None or client.conn is not conn:
            return
        if kind == "closed":
            self._client_gone(client)
        elif client.link is not None:  # spliced: as is, to the peer (RFC 6062 §5.5)
            self._write(client.link.conn, data)
        else:
            client.buffer += data
            self._frames(client)

    def _frames(self, client: _Client) -> None:
        """One frame at a time to the core (RFC 8656 §12.5), its answers and intents carried out after each, until
        a Splice makes the rest of the stream the peer's (RFC 6062 §5.4)."""
        now = self.net.now
        local, remote = client.key
        while client.link is None and self.clients.get(client.key) is client:
            try:
                n = frame_length(client.buffer)
            except ValueError:
                self.stats["stream-garbage"] += 1
                self._drop_client(client)
                self._flush(now)
                return
            if n is None or n > len(client.buffer):
                return
            frame = bytes(client.buffer[:n])
            del client.buffer[:n]
            self.core.handle_datagram(now, local, remote, frame)
            self._flush(now)

    def _client_gone(self, client: _Client) -> None:
        """The client closed (or reset) its connection: an allocation made on it ends (RFC 8656 §6), its peer data
        connection if it was spliced closes (RFC 6062 §5.5)."""
        del self.clients[client.key]
        self.net.remove_stream(*client.key)
        self.core.stream_closed(*client.key)
        link = client.link
        if link is not None:
            pair = link.pair
            self._report(ConnectionClosed(*pair))
            self._close_link(pair)  # the core said so already; in case it no longer knew the pair
        self._flush(self.net.now)

    def _drop_client(self, client: _Client) -> None:
        """Close a client's connection from the server's side (idempotent)."""
        if self.clients.get(client.key) is not client:
            return
        del self.clients[client.key]
        self.stack.close(client.conn)
        self.net.remove_stream(*client.key)
        self.core.stream_closed(*client.key)

    # ----------------------------------------------------------------------------- peer data connections

    def _on_accepted(self, kind: str, conn: TcpConnection, data: bytes) -> None:
        """A peer connected to a relayed address (RFC 6062 §5.3): held, and the core decides."""
        if kind != "established":
            return  # reset before it opened: nothing to tell
        link = _Link(conn)
        self.links[link.pair] = link
        conn.handler = self._on_peer
        self._report(PeerAccepted(*link.pair))

    def _on_peer(self, kind: str, conn: TcpConnection, data: bytes) -> None:
        """What happens to a peer data connection, accepted or made for a Connect."""
        link = self.links.get((conn.local, conn.remote))
        if link is None or link.conn is not conn:
            return  # closed by the server already
        if kind == "established":
            self._report(PeerConnected(*link.pair))
        elif kind == "data":
            if link.client is not None:
                self._write(link.client.conn, data)
            else:
                link.held += data
        else:
            del self.links[link.pair]
            if not conn.opened:  # RFC 6062 §5.2: refused, unreachable, timed out
                self._report(PeerConnectFailed(*link.pair, conn.error or "closed"))
                return
            if link.client is not None:
                self._drop_client(link.client)
            self._report(ConnectionClosed(*link.pair))

    # -------------------------------------------------------------------------------------------- intents

    def _execute(self, now: float, intent: TcpIntent) -> None:
        if isinstance(intent, ConnectPeer):
            self._connect(now, intent)
        elif isinstance(intent, Splice):
            self._splice(intent)
        elif isinstance(intent, CloseConnection):
            self._close_link((intent.relayed, intent.peer))

    def _connect(self, now: float, intent: ConnectPeer) -> None:
        """RFC 6062 §5.2: from the relayed address to the peer; the core's timer bounds how long it may take."""
        pair = (intent.relayed, intent.peer)
        old = self.stack.connections.get(pair)
        if pair in self.links or (old is not None and old.state is not TcpState.CLOSED):
            self._report(PeerConnectFailed(*pair, "address in use"))
            return
        self.links[pair] = _Link(self.stack.connect(now, intent.relayed, intent.peer, handler=self._on_peer))

    def _splice(self, intent: Splice) -> None:
        """RFC 6062 §5.4, §5.5: the client data connection and the peer data connection become one byte pipe;
        what each side sent before goes first."""
        pair = (intent.relayed, intent.peer)
        client = self.clients.get((intent.local, intent.client))
        link = self.links.get(pair)
        if client is None or link is None or not link.conn.established:
            if client is not None:
                self._drop_client(client)
            self._report(ConnectionClosed(*pair))
            self._close_link(pair)
            return
        client.link, link.client = link, client
        self.net.remove_stream(*client.key)  # its bytes are the peer's now, not the core's transmits
        if link.held:
            self._write(client.conn, bytes(link.held))
            link.held.clear()
        if client.buffer:
            self._write(link.conn, bytes(client.buffer))
            client.buffer.clear()

    def _close_link(self, pair: Pair) -> None:
        """Close a peer data connection (or cancel its connect) and the client data connection spliced to it."""
        link = self.links.pop(pair, None)
        if link is None:
            return
        self.stack.close(link.conn)
        if link.client is not None:
            self._drop_client(link.client)

    def _write(self, conn: TcpConnection, data: bytes) -> None:
        if data and conn.established:
            self.stack.send(conn, data)


__all__ = ["SimTcpTurnServer"]
