"""TURN TCP allocations (RFC 6062) on asyncio: the I/O side of :mod:`ice.turn.tcp_allocation` for the server runner.

:class:`TcpRelayIO` does what the sans-IO core decides and tells it what happened:

* a listening TCP socket per TCP allocation on its relayed address (``reserve_tcp``/``release_tcp``, the core's
  :class:`~ice.turn.tcp_allocation.TcpRelayPorts`); each accepted peer is reported (``PeerAccepted``) and held,
  unread beyond ``peer_buffer`` bytes, until it is spliced or closed (RFC 6062 §5.3);
* outgoing connections to peers from the relayed address (``ConnectPeer``; SO_REUSEPORT lets them share the
  listener's port, RFC 6062 §5.2), reported as ``PeerConnected``/``PeerConnectFailed``;
* the server's own TCP listener: every client connection is read as framed STUN/ChannelData (RFC 8656 §12.5, the
  same as the driver's streams) until the core answers a ConnectionBind with ``Splice``; from then on the
  connection and its peer connection are one byte pipe, copied both ways with backpressure (RFC 6062 §5.4);
* teardown: a FIN from either side is passed on to the other (a half-close); once both directions ended, or at
  once on an error, the pair is reported (``ConnectionClosed``) and ``CloseConnection`` closes both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.turn.framing import frame_length
from ice.turn.tcp_allocation import (
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
    from ice.aio.driver import Driver
    from ice.turn.server import TurnServer

_ACCEPT_BATCH = 16


def _addr(sa: object) -> Address:
    host, port = sa[0], sa[1]  # type: ignore[index]
    return str(host), int(port)


def _reuse(sock: socket.socket) -> None:
    """The relayed address is shared by its listener and the connections made from it (RFC 6062 §5.2)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


class TcpServerEndpoint:
    """The server core as the driver's endpoint, with the TCP relay's intents as its events. The methods are the
    core's own bound methods (no extra call on the UDP relay path)."""

    def __init__(self, core: TurnServer) -> None:
        self.core = core
        self.handle_datagram = core.handle_datagram
        self.handle_datagrams = core.handle_datagrams  # a batch as one input (the relay's fast path)
        self.handle_timeout = core.handle_timeout
        self.next_timeout = core.next_timeout
        self.poll_transmit: Callable[[], Transmit | None] = core.poll_transmit
        self.poll_transmits = core.poll_transmits
        self.next_event: Callable[[], TcpIntent | None] = core.tcp.next_intent


@dataclass
class _Link:
    """One peer data connection and, once spliced, its client data connection."""

    relayed: Address
    peer: Address
    sock: socket.socket | None = None
    task: asyncio.Task[None] | None = None
    """Connecting (outgoing) or wrapping the accepted socket in streams (incoming)."""
    ready: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
    client_writer: asyncio.StreamWriter | None = None
    pipes: list[asyncio.Task[bool]] = field(default_factory=list)
    closed: bool = False


class TcpRelayIO:
    """The TCP relay of one :class:`~ice.aio.turn_server.TurnServerRunner`."""

    def __init__(self, relay_ip: Callable[[], str], relay_ports: tuple[int, int] | None,
                 core: Callable[[], TurnServer], driver: Callable[[], Driver[TcpIntent]],
                 make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None) -> None:
        self.make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_STREAM))
        """Where the relayed addresses' listeners and the connections to peers are made (the runner's stream
        sockets: in the lab, inside the server host's namespace)."""
        self._relay_ip = relay_ip
        self.relay_ports = relay_ports
        self._core = core
        self._driver = driver
        self._next_port = relay_ports[0] if relay_ports else 0
        self.listeners: dict[Address, socket.socket] = {}
        self.links: dict[tuple[Address, Address], _Link] = {}
        self._splices: dict[tuple[Address, Address], Splice] = {}
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._driver().loop

    def _report(self, event: TcpEvent) -> None:
        if self.closed:
            return
        driver = self._driver()
        self._core().tcp.handle_event(driver.time(), event)
        driver.pump()

    # ------------------------------------------------------------------------------------ TcpRelayPorts

    def reserve_tcp(self, family: int) -> Address | None:
        """A listening socket on a new relayed address (RFC 6062 §5.1), in ``relay_ports`` when given."""
        ip = self._relay_ip()
        if self.relay_ports is None:
            candidates = [0]
        else:
            lo, hi = self.relay_ports
            candidates = []
            for _ in range(hi - lo + 1):
                candidates.append(self._next_port)
                self._next_port = lo if self._next_port >= hi else self._next_port + 1
        for port in candidates:
            if port and (ip, port) in self.listeners:
                continue
            try:
                sock = self.make_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
            except OSError:
                return None
            try:
                _reuse(sock)
                sock.bind((ip, port))
                sock.listen(64)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            relayed = _addr(sock.getsockname())
            self.listeners[relayed] = sock
            self.loop.add_reader(sock.fileno(), self._accept, sock, relayed)
            return relayed
        return None

    def release_tcp(self, relayed: Address) -> None:
        sock = self.listeners.pop(relayed, None)
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    # ----------------------------------------------------------------------------------------- intents

    def execute(self, intent: TcpIntent) -> None:
        """The driver's ``on_event``: do what the core decided."""
        if isinstance(intent, ConnectPeer):
            link = _Link(intent.relayed, intent.peer)
            self.links[(intent.relayed, intent.peer)] = link
            link.task = asyncio.ensure_future(self._connect(link))
        elif isinstance(intent, Splice):
            self._splices[(intent.local, intent.client)] = intent
        else:
            self._close((intent.relayed, intent.peer))

    async def _connect(self, link: _Link) -> None:
        """RFC 6062 §5.2: from the relayed address to the peer; the core's timer bounds how long this may take."""
        try:
            sock = self.make_socket(socket.AF_INET6 if ":" in link.relayed[0] else socket.AF_INET)
        except OSError as exc:
            self.links.pop((link.relayed, link.peer), None)
            self._report(PeerConnectFailed(link.relayed, link.peer, exc.strerror or str(exc)))
            return
        link.sock = sock
        try:
            _reuse(sock)
            sock.bind(link.relayed)
            sock.setblocking(False)
            await self.loop.sock_connect(sock, link.peer)
            limit = self._core().config.tcp.peer_buffer
            streams = await asyncio.open_connection(sock=sock, limit=limit)
        except OSError as exc:
            sock.close()
            if not link.closed:
                self.links.pop((link.relayed, link.peer), None)
                self._report(PeerConnectFailed(link.relayed, link.peer, exc.strerror or str(exc)))
            return
        link.ready = self.loop.create_future()
        link.ready.set_result(streams)
        if link.closed:
            streams[1].close()
            return
        self._report(PeerConnected(link.relayed, link.peer))

    def _accept(self, listener: socket.socket, relayed: Address) -> None:
        """RFC 6062 §5.3: accept, hold, and let the core decide (a permission, the quotas)."""
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, sa = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._core().stats["tcp-accept-error"] += 1
                return
            conn.setblocking(False)
            peer = _addr(sa)
            link = _Link(relayed, peer, sock=conn)
            link.ready = self.loop.create_future()
            self.links[(relayed, peer)] = link
            link.task = asyncio.ensure_future(self._wrap(link, conn))
            self._report(PeerAccepted(relayed, peer))

    async def _wrap(self, link: _Link, conn: socket.socket) -> None:
        try:
            streams = await asyncio.open_connection(sock=conn, limit=self._core().config.tcp.peer_buffer)
        except OSError:
            conn.close()
            self._report(ConnectionClosed(link.relayed, link.peer))
            return
        if link.closed:
            streams[1].close()
            return
        assert link.ready is not None
        link.ready.set_result(streams)

    def _close(self, pair: tuple[Address, Address]) -> None:
        """Close both sides of a link (RFC 6062 §5.5) and cancel whatever it still waits for."""
        link = self.links.pop(pair, None)
        if link is None:
            return
        link.closed = True
        if link.task is not None and not link.task.done():
            link.task.cancel()
        for pipe in link.pipes:
            if not pipe.done():
                pipe.cancel()
        if link.ready is not None and not link.ready.done():
            link.ready.cancel()  # a splice waiting for the streams gives up
        if link.ready is not None and link.ready.done() and not link.ready.cancelled():
            link.ready.result()[1].close()
        elif link.sock is not None:
            link.sock.close()
        if link.client_writer is not None:
            link.client_writer.close()

    # ----------------------------------------------------------------------------------- client streams

    async def serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: Address,
                           client: Address) -> None:
        """A connection to the server's TCP/TLS listener: framed messages to the core (RFC 8656 §12.5), one at a
        time, until a ConnectionBind succeeds on it; then the rest is a byte pipe (RFC 6062 §5.4)."""
        driver = self._driver()
        driver.add_stream(writer, local, client)
        buffer = bytearray()
        splice: Splice | None = None
        try:
            while splice is None and (chunk := await reader.read(65536)):
                buffer += chunk
                while splice is None:
                    try:
                        n = frame_length(buffer)
                    except ValueError:
                        driver.stats["stream-garbage"] += 1
                        return
                    if n is None or n > len(buffer):
                        break
                    frame = bytes(buffer[:n])
                    del buffer[:n]
                    driver.datagram_received(local, client, frame)
                    splice = self._splices.pop((local, client), None)
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            driver.remove_stream(local, client)
            if splice is None:
                writer.close()
        if splice is not None:
            await self._pipe(splice, reader, writer, bytes(buffer))

    async def _pipe(self, splice: Splice, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    early: bytes) -> None:
        """Copy both ways until one side ends; ``early``: bytes the client sent right after its ConnectionBind."""
        pair = (splice.relayed, splice.peer)
        link = self.links.get(pair)
        if link is None or link.ready is None:
            writer.close()
            self._report(ConnectionClosed(*pair))
            return
        link.client_writer = writer
        try:
            peer_reader, peer_writer = await link.ready
        except (asyncio.CancelledError, OSError):
            writer.close()
            return
        if early:
            peer_writer.write(early)
        limit = self._core().config.tcp.peer_buffer
        link.pipes = [asyncio.ensure_future(_copy(peer_reader, writer, limit)),
                      asyncio.ensure_future(_copy(reader, peer_writer, limit))]
        with contextlib.suppress(asyncio.CancelledError):
            pending = set(link.pipes)
            while pending:  # a FIN is passed on and the other direction goes on; an error ends both at once
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.cancelled() or not t.result() for t in done):
                    break
        if not link.closed:
            self._report(ConnectionClosed(*pair))
            self._close(pair)  # the core said so already; in case it no longer knew the pair

    def close(self) -> None:
        self.closed = True
        for pair in list(self.links):
            self._close(pair)
        for relayed in list(self.listeners):
            self.release_tcp(relayed)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int) -> bool:
    """As is, with backpressure: at most ``limit`` bytes read ahead, and no more read while the other side's
    send buffer is full. At the end of the stream its FIN is passed on (a half-close: the other direction may go
    on). False: an error, or the other side cannot be half-closed (TLS); the caller closes both."""
    try:
        while data := await reader.read(limit):
            writer.write(data)
            await writer.drain()
        if not writer.can_write_eof():
            return False
        writer.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        return False
    return True


__all__ = ["TcpRelayIO", "TcpServerEndpoint"]
