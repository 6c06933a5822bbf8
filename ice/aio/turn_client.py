"""asyncio adapter for the sans-IO TURN client: its socket (or TCP/TLS stream) to the server and one timer, the
:class:`Driver`'s."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from ice.aio.driver import Driver
from ice.errors import TurnError
from ice.stun.attributes import Address
from ice.turn.client import (
    Allocated,
    AllocationFailed,
    ChannelBound,
    PeerData,
    TurnClient,
    TurnClientConfig,
    TurnEvent,
    TurnState,
)


class TurnEndpoint:
    """``await TurnEndpoint(config).open()`` -> allocated; ``send(peer, data)``; ``on_data(peer, data)`` callback.

    The sans-IO :class:`TurnClient` on one :class:`Driver` (its socket or stream, its one timer)."""

    def __init__(self, config: TurnClientConfig, bind: Address | None = None,
                 make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 make_stream_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        self.client = TurnClient(config)
        self.ssl_context = ssl_context
        """For transport "tls": the client context (default: the system's trust store, hostname checked)."""
        self.server_hostname = server_hostname
        self._make_stream_socket = make_stream_socket or (lambda fam: socket.socket(fam, socket.SOCK_STREAM))
        self._reader_task: asyncio.Task[None] | None = None
        self.bind = bind or (("::", 0) if ":" in config.server[0] else ("0.0.0.0", 0))
        self._make_socket = make_socket or (lambda fam: socket.socket(fam, socket.SOCK_DGRAM))
        self._driver: Driver[TurnEvent] | None = None
        self._allocated: asyncio.Future[Allocated] | None = None
        self.on_data: Callable[[Address, bytes], None] | None = None
        self._bound: dict[Address, asyncio.Future[int]] = {}

    @property
    def relayed(self) -> Address | None:
        return self.client.relayed

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    @property
    def driver(self) -> Driver[TurnEvent]:
        if self._driver is None:
            self._driver = Driver(self.client, self._on_event, stats=self.client.stats)
        return self._driver

    async def open(self, timeout: float = 10.0) -> Allocated:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.bind[0] else socket.AF_INET
        if self.client.config.stream:  # TURN over TCP (RFC 8656 §3.1): framed messages on one connection
            reader, writer, local = await open_turn_stream(self.client.config, self.bind, self._make_stream_socket,
                                                           timeout, self.ssl_context, self.server_hostname)
            self.client.local = local
            self._reader_task = self.driver.start_stream(reader, writer, local, self.client.server)
        else:
            sock = self._make_socket(family)
            sock.bind(self.bind)
            self.client.local = self.driver.add_socket(sock)
        self._allocated = loop.create_future()
        self.client.allocate(self._now())
        self.driver.pump()
        try:
            return await asyncio.wait_for(self._allocated, timeout)
        except TimeoutError:
            raise TurnError(f"no allocation from {self.client.server[0]}:{self.client.server[1]}") from None

    def send(self, peer: Address, data: bytes) -> bool:
        ok = self.client.send(self._now(), peer, data)
        self.driver.pump()
        return ok

    async def bind_channel(self, peer: Address, timeout: float = 10.0) -> int:
        """Bind a channel to ``peer`` and wait for the server's confirmation; returns the channel number."""
        fut = self._bound.setdefault(peer, asyncio.get_running_loop().create_future())
        self.client.bind_channel(self._now(), peer)
        self.driver.pump()
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    def _on_event(self, ev: TurnEvent) -> None:
        if isinstance(ev, Allocated) and self._allocated is not None and not self._allocated.done():
            self._allocated.set_result(ev)
        elif isinstance(ev, AllocationFailed) and self._allocated is not None and not self._allocated.done():
            self._allocated.set_exception(TurnError(f"allocation refused: {ev.code} {ev.reason}".strip()))
        elif isinstance(ev, PeerData) and self.on_data is not None:
            self.on_data(ev.peer, ev.data)
        elif isinstance(ev, ChannelBound):
            fut = self._bound.get(ev.peer)
            if fut is not None and not fut.done():
                fut.set_result(ev.number)

    def close(self) -> None:
        if self.client.state is TurnState.ALLOCATED:
            self.client.close(self._now())  # the deallocation goes out with the driver's last pump
        if self._driver is not None:
            self._driver.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


async def open_turn_stream(config: TurnClientConfig, bind: Address,
                           make_stream_socket: Callable[[socket.AddressFamily], socket.socket],
                           timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None,
                           server_hostname: str | None = None
                           ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Address]:
    """Connect to the TURN server over TCP, or TLS for transport "tls" (RFC 8656 §3.1); returns the stream and
    its local address. Raises :class:`TurnError`."""
    loop = asyncio.get_running_loop()
    sock = make_stream_socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET)
    sock.bind(bind)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, config.server), timeout)
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise TurnError(f"cannot connect to TURN server over TCP: {exc}") from None
    sa = sock.getsockname()
    local = (str(sa[0]), int(sa[1]))
    tls = None
    hostname = None
    if config.transport == "tls":
        tls = ssl_context or ssl.create_default_context()
        hostname = server_hostname or config.server[0]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=tls, server_hostname=hostname), timeout)
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        sock.close()
        raise TurnError(f"cannot open TLS to the TURN server: {exc}") from None
    return reader, writer, local
