"""The embedded TURN server on asyncio: non-blocking sockets read in batches by ``add_reader``, one re-armed timer.

The relay path is the hot one: a readable socket is drained (up to ``BATCH`` datagrams) in one callback, and
each datagram goes straight through the sans-IO core to ``sendto`` with no protocol objects in between.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.turn.framing import split_frames
from ice.turn.server import TurnServer, TurnServerConfig

BATCH = 64


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class TurnServerRunner:
    def __init__(self, config: TurnServerConfig, relay_ip: str, relay_ports: tuple[int, int] | None = None,
                 log: Callable[[dict[str, object]], None] | None = None,
                 make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 make_stream_socket: Callable[[socket.AddressFamily], socket.socket] | None = None) -> None:
        self.make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_DGRAM))
        self.make_stream_socket = make_stream_socket or (lambda family: socket.socket(family, socket.SOCK_STREAM))
        self.config = config
        self.relay_ip = relay_ip
        self.relay_ports = relay_ports
        self.log = log
        self.core = TurnServer(config, self)
        self._socks: dict[Address, socket.socket] = {}
        self._streams: dict[tuple[Address, Address], asyncio.StreamWriter] = {}
        """(local, client) -> the connection of a TCP or TLS client."""
        self._tcp_server: asyncio.AbstractServer | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self.tls_address: Address | None = None
        self._listen: Address | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._next_port = relay_ports[0] if relay_ports else 0

    @property
    def address(self) -> Address:
        assert self._listen is not None
        return self._listen

    def _open(self, addr: Address, on_readable: Callable[[socket.socket, Address], None]) -> tuple[socket.socket,
                                                                                                   Address]:
        sock = self.make_socket(_family(addr[0]))
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        sa = sock.getsockname()
        bound = (str(sa[0]), int(sa[1]))
        asyncio.get_running_loop().add_reader(sock.fileno(), on_readable, sock, bound)
        self._socks[bound] = sock
        return sock, bound

    async def start(self, tcp: bool = True, tls: ssl.SSLContext | None = None, tls_listen: Address | None = None
                    ) -> TurnServerRunner:
        """Listen on UDP and, with ``tcp``, on TCP at the same address (RFC 8656 §3.1: TURN over TCP); with
        ``tls`` (a server context) also on ``tls_listen`` over TLS (RFC 8656 §3.1, port 5349 by convention)."""
        try:
            _, self._listen = self._open(self.config.listen, self._on_client)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.config.listen[0]}:{self.config.listen[1]}: {exc.strerror}") from None
        if self.config.listen[1] == 0:  # an ephemeral port: the core must know the real one
            self.config = TurnServerConfig(**{**self.config.__dict__, "listen": self._listen})
            self.core = TurnServer(self.config, self)
        if tcp:
            sock = self.make_stream_socket(_family(self._listen[0]))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(self._listen)
            except OSError as exc:
                sock.close()
                raise OSError(f"cannot listen on TCP {self._listen[0]}:{self._listen[1]}: {exc.strerror}") from None
            self._tcp_server = await asyncio.start_server(
                lambda r, w: self._on_stream(r, w, self.address), sock=sock)
        if tls is not None:
            where = tls_listen or (self.address[0], 0)
            sock = self.make_stream_socket(_family(where[0]))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(where)
            except OSError as exc:
                sock.close()
                raise OSError(f"cannot listen on TLS {where[0]}:{where[1]}: {exc.strerror}") from None
            sa = sock.getsockname()
            self.tls_address = (str(sa[0]), int(sa[1]))
            tls_local = self.tls_address
            self._tls_server = await asyncio.start_server(
                lambda r, w: self._on_stream(r, w, tls_local), sock=sock, ssl=tls)
        return self

    async def _on_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: Address) -> None:
        """One TURN client over TCP or TLS: framed STUN and ChannelData (RFC 8656 §12.5); its allocation ends
        with the connection."""
        peer = writer.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1]))
        self._streams[(local, client)] = writer
        buffer = bytearray()
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                try:
                    frames = split_frames(buffer)
                except ValueError:
                    self.core.stats["stream-garbage"] += 1
                    break
                for frame in frames:
                    self._send(self.core.handle_client(loop.time(), local, client, frame, stream=True))
                self._rearm()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._streams.pop((local, client), None)
            key = (client, local)
            if key in self.core.allocations:
                self.core._delete(key)  # RFC 8656 §6: a TCP allocation ends with its connection
            writer.close()

    # -- RelayPorts ------------------------------------------------------------------------------------------

    def reserve(self, family: int) -> Address | None:
        if self.relay_ports is None:
            try:
                return self._open((self.relay_ip, 0), self._on_peer)[1]
            except OSError:
                return None
        lo, hi = self.relay_ports
        for _ in range(hi - lo + 1):
            port = self._next_port
            self._next_port = lo if port >= hi else port + 1
            if (self.relay_ip, port) in self._socks:
                continue
            try:
                return self._open((self.relay_ip, port), self._on_peer)[1]
            except OSError:
                continue
        return None

    def release(self, relayed: Address) -> None:
        sock = self._socks.pop(relayed, None)
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    # -- I/O -------------------------------------------------------------------------------------------------

    def _send(self, outs: list[Transmit]) -> None:
        socks = self._socks
        streams = self._streams
        for t in outs:
            if streams and t.local is not None:
                writer = streams.get((t.local, t.remote))
                if writer is not None:
                    writer.write(t.data)
                    continue
            sock = socks.get(t.local) if t.local is not None else None
            if sock is None:
                continue
            try:
                sock.sendto(t.data, t.remote)
            except (BlockingIOError, OSError):
                self.core.stats["send-failed"] += 1

    def _on_client(self, sock: socket.socket, local: Address) -> None:
        self._drain(sock, local, self.core.handle_client)
        self._rearm()

    def _on_peer(self, sock: socket.socket, relayed: Address) -> None:
        self._drain(sock, relayed, self.core.handle_peer)

    def _drain(self, sock: socket.socket, local: Address,
               handle: Callable[[float, Address, Address, bytes], list[Transmit]]) -> None:
        """Up to BATCH datagrams per readiness callback, all stamped with one loop time."""
        now = asyncio.get_running_loop().time()
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.core.stats["recv-error"] += 1
                break
            self._send(handle(now, local, (addr[0], addr[1]), data))

    def _rearm(self) -> None:
        at = self.core.next_timeout()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(at, self._on_timer) if at is not None else None
        self._timer_at = at

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self.core.handle_timeout(asyncio.get_running_loop().time())
        self._rearm()

    def close(self) -> None:
        for server in (self._tcp_server, self._tls_server):
            if server is not None:
                server.close()
        for writer in self._streams.values():
            writer.close()
        loop = asyncio.get_running_loop()
        for sock in self._socks.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        if self._timer is not None:
            self._timer.cancel()
