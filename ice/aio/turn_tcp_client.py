"""TURN TCP allocations (RFC 6062) from the client, on asyncio: streams to peers through the relay.

``client = await TurnTcpClient(config).open()`` allocates a TCP relayed address over a TCP or TLS control
connection (``config.transport`` "tcp"/"tls"; ``relay_transport`` is set to "tcp"). Then:

* ``reader, writer = await client.connect(peer)``: Connect (RFC 6062 §4.3; a permission for the peer first), a
  new data connection to the server, ConnectionBind (§4.4), and the peer's bytes as a stream;
* ``peer, reader, writer = await client.accept()``: the next peer that connected to the relayed address (a
  permission for its IP must exist: :meth:`TurnTcpClient.permit`), already bound;
* ``client.close()`` deallocates, which closes every data connection at the server too (§5.5).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Callable

from ice.aio.turn_client import TurnEndpoint, open_turn_stream
from ice.errors import TurnError
from ice.stun.attributes import Address
from ice.turn.client import (
    ConnectionAttempt,
    PeerConnectFailed,
    PeerConnectionReady,
    TurnClientConfig,
    TurnEvent,
)
from ice.turn.tcp_client import BindState, ConnectionBinder

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class TurnTcpClient(TurnEndpoint):
    """A TCP allocation and its data connections (RFC 6062 §4)."""

    def __init__(self, config: TurnClientConfig, bind: Address | None = None,
                 make_stream_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 bind_timeout: float = 30.0) -> None:
        if not config.stream:
            raise TurnError("a TCP allocation needs a TCP or TLS connection to the server (RFC 6062 §4.1)")
        super().__init__(dataclasses.replace(config, relay_transport="tcp"), bind=bind,
                         make_stream_socket=make_stream_socket, ssl_context=ssl_context,
                         server_hostname=server_hostname)
        self.bind_timeout = bind_timeout
        """How long a data connection may take to be bound (the server waits 30 s, RFC 6062 §5.2, §5.3)."""
        self._connects: dict[Address, asyncio.Future[int]] = {}
        self._accepted: asyncio.Queue[tuple[Address, asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._data: list[asyncio.StreamWriter] = []

    def permit(self, peer: Address) -> None:
        """Install (and keep refreshed) a permission for ``peer``'s IP, so its connections are accepted (RFC 6062
        §5.3: the server closes connections from peers without one)."""
        self.client.create_permission(self._now(), peer)
        self.driver.pump()

    async def connect(self, peer: Address, timeout: float = 40.0) -> Stream:
        """A byte stream to ``peer`` through the relay (RFC 6062 §4.3, §4.4). Raises :class:`TurnError` (with the
        server's code: 446 a connection to that peer exists, 447 the server could not connect, 403 forbidden)."""
        if peer in self._connects:
            raise TurnError(f"a Connect to {peer[0]}:{peer[1]} is already in progress")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._connects[peer] = fut
        try:
            if not self.client.connect(self._now(), peer):
                raise TurnError("no TCP allocation")
            self.driver.pump()
            cid = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise TurnError(f"no answer to Connect {peer[0]}:{peer[1]}") from None
        finally:
            self._connects.pop(peer, None)
        return await self._bind(cid)

    async def accept(self) -> tuple[Address, asyncio.StreamReader, asyncio.StreamWriter]:
        """The next peer that connected to the relayed address, as (peer, reader, writer)."""
        return await self._accepted.get()

    async def _bind(self, cid: int) -> Stream:
        """A new connection to the server and its ConnectionBind (RFC 6062 §4.4)."""
        config = self.client.config
        creds = self.client.bind_credentials()
        binder = ConnectionBinder(config.username, config.password, cid, *(creds or (None, None)))
        reader, writer, _ = await open_turn_stream(config, self.bind, self._make_stream_socket,
                                                   self.bind_timeout, self.ssl_context, self.server_hostname)
        try:
            writer.write(binder.request())
            while True:
                head = await asyncio.wait_for(reader.readexactly(20), self.bind_timeout)
                body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[2:4], "big")),
                                              self.bind_timeout)
                state = binder.receive(head + body)
                if state is BindState.BOUND:
                    self._data.append(writer)
                    return reader, writer
                if state is BindState.FAILED:
                    code, reason = binder.error or (500, "")
                    raise TurnError(f"ConnectionBind refused: {code} {reason}".strip())
                writer.write(binder.request())
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            writer.close()
            raise TurnError(f"ConnectionBind failed: {exc!r}") from None
        except TurnError:
            writer.close()
            raise

    async def _accept_one(self, ev: ConnectionAttempt) -> None:
        try:
            reader, writer = await self._bind(ev.connection_id)
        except TurnError:
            self.client.stats["connection-attempt-not-bound"] += 1
            return
        await self._accepted.put((ev.peer, reader, writer))

    def _on_event(self, ev: TurnEvent) -> None:
        if isinstance(ev, PeerConnectionReady | PeerConnectFailed):
            fut = self._connects.get(ev.peer)
            if fut is None or fut.done():
                self.client.stats["connect-answer-unexpected"] += 1
            elif isinstance(ev, PeerConnectionReady):
                fut.set_result(ev.connection_id)
            else:
                fut.set_exception(TurnError(f"Connect refused: {ev.code} {ev.reason}".strip()))
        elif isinstance(ev, ConnectionAttempt):
            task = asyncio.ensure_future(self._accept_one(ev))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            super()._on_event(ev)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for writer in self._data:
            writer.close()
        self._data.clear()
        super().close()


__all__ = ["TurnTcpClient"]
