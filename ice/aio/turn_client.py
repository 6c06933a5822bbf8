"""asyncio adapter for the sans-IO TURN client: one UDP socket to the server, one re-armed timer."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from ice.errors import IcelabError
from ice.stun.attributes import Address
from ice.turn.client import (
    Allocated,
    AllocationFailed,
    ChannelBound,
    PeerData,
    TurnClient,
    TurnClientConfig,
    TurnState,
)
from ice.turn.framing import split_frames


class TurnError(IcelabError):
    """The TURN server refused or did not answer."""


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: TurnEndpoint) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        self.owner._received(data)


class TurnEndpoint:
    """``await TurnEndpoint(config).open()`` -> allocated; ``send(peer, data)``; ``on_data(peer, data)`` callback."""

    def __init__(self, config: TurnClientConfig, bind: Address | None = None,
                 make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 make_stream_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        self.client = TurnClient(config)
        self.ssl_context = ssl_context
        """For transport "tls": the client context (default: the system's trust store, hostname checked)."""
        self.server_hostname = server_hostname
        self._make_stream_socket = make_stream_socket or (lambda fam: socket.socket(fam, socket.SOCK_STREAM))
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.bind = bind or (("::", 0) if ":" in config.server[0] else ("0.0.0.0", 0))
        self._make_socket = make_socket or (lambda fam: socket.socket(fam, socket.SOCK_DGRAM))
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._allocated: asyncio.Future[Allocated] | None = None
        self.on_data: Callable[[Address, bytes], None] | None = None
        self._bound: dict[Address, asyncio.Future[int]] = {}

    @property
    def relayed(self) -> Address | None:
        return self.client.relayed

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def open(self, timeout: float = 10.0) -> Allocated:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.bind[0] else socket.AF_INET
        if self.client.config.stream:  # TURN over TCP (RFC 8656 §3.1): framed messages on one connection
            sock = self._make_stream_socket(family)
            sock.bind(self.bind)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, self.client.server), timeout)
            except (OSError, TimeoutError) as exc:
                sock.close()
                raise TurnError(f"cannot connect to TURN server over TCP: {exc}") from None
            tls = None
            hostname = None
            if self.client.config.transport == "tls":
                tls = self.ssl_context or ssl.create_default_context()
                hostname = self.server_hostname or self.client.server[0]
            try:
                connecting = asyncio.open_connection(sock=sock, ssl=tls, server_hostname=hostname)
                reader, self._writer = await asyncio.wait_for(connecting, timeout)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                sock.close()
                raise TurnError(f"cannot open TLS to the TURN server: {exc}") from None
            self._reader_task = asyncio.ensure_future(self._read_stream(reader))
        else:
            sock = self._make_socket(family)
            sock.bind(self.bind)
            self._transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        self._allocated = loop.create_future()
        self.client.allocate(self._now())
        self._flush()
        try:
            return await asyncio.wait_for(self._allocated, timeout)
        except TimeoutError:
            raise TurnError(f"no allocation from {self.client.server[0]}:{self.client.server[1]}") from None

    def send(self, peer: Address, data: bytes) -> bool:
        ok = self.client.send(self._now(), peer, data)
        self._flush()
        return ok

    async def bind_channel(self, peer: Address, timeout: float = 10.0) -> int:
        """Bind a channel to ``peer`` and wait for the server's confirmation; returns the channel number."""
        fut = self._bound.setdefault(peer, asyncio.get_running_loop().create_future())
        self.client.bind_channel(self._now(), peer)
        self._flush()
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        while chunk := await reader.read(65536):
            buffer += chunk
            try:
                frames = split_frames(buffer)
            except ValueError:
                self.client.stats["stream-garbage"] += 1
                return
            for frame in frames:
                self._received(frame)

    def _received(self, data: bytes) -> None:
        self.client.handle_datagram(self._now(), data)
        self._flush()

    def _on_timer(self) -> None:
        at = self._timer_at or 0.0
        self._timer = self._timer_at = None
        self.client.handle_timeout(max(at, self._now()))
        self._flush()

    def _flush(self) -> None:
        client = self.client
        while (data := client.poll_transmit()) is not None:
            if self._writer is not None:
                self._writer.write(data)
            elif self._transport is not None:
                self._transport.sendto(data, client.server)
        while (ev := client.next_event()) is not None:
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
        at = client.next_timeout()
        if at != self._timer_at:
            if self._timer:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(at, self._on_timer) if at is not None else None
            self._timer_at = at

    def close(self) -> None:
        if self.client.state is TurnState.ALLOCATED:
            self.client.close(self._now())
            while (data := self.client.poll_transmit()) is not None:
                if self._writer is not None:
                    self._writer.write(data)
                elif self._transport is not None:
                    self._transport.sendto(data, self.client.server)
        if self._timer:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
