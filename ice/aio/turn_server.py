"""The embedded TURN server on asyncio: the sans-IO :class:`TurnServer` on the one :class:`Driver`.

The relay path is the hot one: a readable socket is drained (up to ``BATCH`` datagrams) in one callback, each
datagram goes straight through the sans-IO core and its answers are sent when the batch is done, with no protocol
objects in between. The runner itself only opens sockets: the listening ones and, as the core's
:class:`~ice.turn.server.RelayPorts`, one per relayed address. TCP allocations (RFC 6062) are served by
:class:`~ice.aio.turn_tcp.TcpRelayIO` on the same TCP/TLS listeners.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from ice.aio.driver import Driver, DriverConfig
from ice.aio.turn_tcp import TcpRelayIO, TcpServerEndpoint
from ice.stun.attributes import Address
from ice.turn.server import TurnServer, TurnServerConfig
from ice.turn.tcp_allocation import TcpIntent


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class TurnServerRunner:
    def __init__(self, config: TurnServerConfig, relay_ip: str, relay_ports: tuple[int, int] | None = None,
                 log: Callable[[dict[str, object]], None] | None = None,
                 make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 make_stream_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 driver: DriverConfig | None = None) -> None:
        self.make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_DGRAM))
        self.make_stream_socket = make_stream_socket or (lambda family: socket.socket(family, socket.SOCK_STREAM))
        self.config = config
        self.driver_config = driver or DriverConfig.server()
        """How the sockets are read and written (batches, buffers): see :class:`~ice.aio.driver.DriverConfig`."""
        self.relay_ip = relay_ip
        self.relay_ports = relay_ports
        self.log = log
        self.core = TurnServer(config, self)
        self._driver: Driver[TcpIntent] | None = None
        self._tcp_server: asyncio.AbstractServer | None = None
        self._tls_server: asyncio.AbstractServer | None = None
        self.tls_address: Address | None = None
        self._listen: Address | None = None
        self._next_port = relay_ports[0] if relay_ports else 0
        # -- RFC 6062: listening sockets for TCP relayed addresses, peer connections, client data connections
        self.tcp = TcpRelayIO(lambda: self.relay_ip, relay_ports, lambda: self.core, lambda: self.driver,
                              self.make_stream_socket)

    @property
    def driver(self) -> Driver[TcpIntent]:
        if self._driver is None:
            self._driver = Driver(TcpServerEndpoint(self.core), self.tcp.execute, stats=self.core.stats,
                                  config=self.driver_config)
        return self._driver

    @property
    def address(self) -> Address:
        assert self._listen is not None
        return self._listen

    def _open(self, addr: Address) -> Address:
        sock = self.make_socket(_family(addr[0]))
        try:
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        return self.driver.add_socket(sock)

    async def start(self, tcp: bool = True, tls: ssl.SSLContext | None = None, tls_listen: Address | None = None
                    ) -> TurnServerRunner:
        """Listen on UDP and, with ``tcp``, on TCP at the same address (RFC 8656 §3.1: TURN over TCP); with
        ``tls`` (a server context) also on ``tls_listen`` over TLS (RFC 8656 §3.1, port 5349 by convention)."""
        try:
            self._listen = self._open(self.config.listen)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.config.listen[0]}:{self.config.listen[1]}: {exc.strerror}") from None
        if self.config.listen[1] == 0:  # an ephemeral port: the core must know the real one
            self.config = TurnServerConfig(**{**self.config.__dict__, "listen": self._listen})
            self.core = TurnServer(self.config, self)
            self.driver.endpoint = TcpServerEndpoint(self.core)
            self.driver.stats = self.core.stats
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
        self.core.stream_opened(local, client)
        try:
            await self.tcp.serve_stream(reader, writer, local, client)  # framed; a byte pipe after ConnectionBind
        finally:
            self.core.stream_closed(local, client)
            self.driver.pump()

    # -- RelayPorts ------------------------------------------------------------------------------------------

    def reserve(self, family: int) -> Address | None:
        if self.relay_ports is None:
            try:
                return self._open((self.relay_ip, 0))
            except OSError:
                return None
        lo, hi = self.relay_ports
        taken = self.driver.addresses
        for _ in range(hi - lo + 1):
            port = self._next_port
            self._next_port = lo if port >= hi else port + 1
            if (self.relay_ip, port) in taken:
                continue
            try:
                return self._open((self.relay_ip, port))
            except OSError:
                continue
        return None

    def reserve_at(self, relayed: Address) -> Address | None:
        """Exactly that relayed address (the port an EVEN-PORT reservation holds, RFC 8656 §7.2), or None."""
        if relayed[0] != self.relay_ip or relayed in self.driver.addresses:
            return None
        if self.relay_ports is not None and not self.relay_ports[0] <= relayed[1] <= self.relay_ports[1]:
            return None
        try:
            return self._open(relayed)
        except OSError:
            return None

    def release(self, relayed: Address) -> None:
        self.driver.remove_socket(relayed)

    # -- TcpRelayPorts (RFC 6062 §5.1) ----------------------------------------------------------------------

    def reserve_tcp(self, family: int) -> Address | None:
        return self.tcp.reserve_tcp(family)

    def release_tcp(self, relayed: Address) -> None:
        self.tcp.release_tcp(relayed)

    def close(self) -> None:
        for server in (self._tcp_server, self._tls_server):
            if server is not None:
                server.close()
        self.tcp.close()
        self.driver.close()
