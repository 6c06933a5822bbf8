"""ICE-TCP (RFC 6544) on asyncio: the listening sockets, connections and TCP STUN bindings of one agent.

The agent (:mod:`ice.agent.tcp`) decides; this carries it out. :class:`TcpPlumbing` listens on each passive and
so candidate's port, opens the connections the agent asks for (an active candidate's from an ephemeral port; a
simultaneous open from the so candidate's own port, bound with SO_REUSEADDR and SO_REUSEPORT beside its
listener), keeps one connection per pair (the agent's connection ids), writes the RFC 4571 frames the agent
produces and feeds back what it reads. :class:`TcpEndpoint` wraps the agent (or the ICE-over-TURN composition)
for the :class:`~ice.aio.driver.Driver`: every pump drains the agent's TCP intents too.

Server-reflexive TCP candidates come from a STUN Binding sent over TCP (RFC 8489 §6.2.2: STUN messages back to
back on the stream, no RFC 4571 prefix) from the candidate's own port (:func:`tcp_stun_binding`).
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from typing import Generic, TypeVar

from ice.agent import IceAgent
from ice.agent.tcp import (
    TcpClose,
    TcpClosed,
    TcpConnect,
    TcpConnected,
    TcpConnectFailed,
    TcpDriven,
    TcpSend,
    TcpType,
)
from ice.endpoint import Endpoint
from ice.stun.attributes import Address, XorMappedAddress
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.transaction import Transmit
from ice.turn.framing import split_frames

E = TypeVar("E")

StreamSocketFactory = Callable[[socket.AddressFamily], socket.socket]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _address(sa: object) -> Address:
    assert isinstance(sa, tuple)
    return (str(sa[0]), int(sa[1]))


def _reuse(sock: socket.socket) -> None:
    """SO_REUSEADDR and SO_REUSEPORT: a so candidate's listener and its outgoing connections share one port."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)


def _nodelay(sock: object) -> None:
    """TCP_NODELAY: a check is one small write and its answer another; with Nagle's algorithm a second small write
    waits for the ACK of the first, which the peer delays (about 40 ms on Linux). asyncio sets it itself only on
    sockets created with proto=IPPROTO_TCP."""
    setsockopt = getattr(sock, "setsockopt", None)  # a socket, or asyncio's TransportSocket wrapper of one
    if setsockopt is not None:
        try:
            setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def _connect_low_ttl(sock: socket.socket, remote: Address, ttl: int) -> None:
    """connect() whose SYN leaves with IP TTL ``ttl``; the default TTL is back before anything else is sent (the
    SYN-ACK of a simultaneous open, the data). Raises OSError like ``sock_connect``."""
    loop = asyncio.get_running_loop()
    level, name = ((socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) if sock.family == socket.AF_INET6
                   else (socket.IPPROTO_IP, socket.IP_TTL))
    default = sock.getsockopt(level, name)
    sock.setsockopt(level, name, ttl)
    try:
        err = sock.connect_ex(remote)  # non-blocking: the SYN is sent now
    finally:
        sock.setsockopt(level, name, default)
    if err == 0:
        return
    if err not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
        raise OSError(err, os.strerror(err))
    done: asyncio.Future[None] = loop.create_future()

    def writable() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_writer(sock.fileno(), writable)
    try:
        await done
    finally:
        loop.remove_writer(sock.fileno())
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))


async def tcp_stun_binding(local: Address, server: Address, timeout: float = 2.0,
                           make_socket: StreamSocketFactory | None = None) -> Address:
    """The mapped address of a TCP connection from ``local`` (its very port, shared with a listener through
    SO_REUSEPORT) to the STUN ``server``: one Binding request over TCP (RFC 8489 §6.2.2). Raises OSError or
    TimeoutError."""
    loop = asyncio.get_running_loop()
    make = make_socket or (lambda fam: socket.socket(fam, socket.SOCK_STREAM))
    sock = make(_family(local[0]))
    writer: asyncio.StreamWriter | None = None
    try:
        _reuse(sock)
        sock.bind(local)
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, server)
            reader, writer = await asyncio.open_connection(sock=sock)
            request = Message(Method.BINDING, MessageClass.REQUEST, _tid())
            writer.write(request.encode(fingerprint=True))
            buffer = bytearray()
            while chunk := await reader.read(4096):
                buffer += chunk
                try:
                    frames = split_frames(buffer)
                except ValueError as exc:
                    raise OSError(f"not STUN from {server}: {exc}") from None
                for f in frames:
                    try:
                        msg = parse(f)
                    except Exception:  # a malformed answer: keep reading until the timeout
                        continue
                    xma = msg.get(XorMappedAddress)
                    if msg.transaction_id == request.transaction_id and msg.message_class is MessageClass.SUCCESS \
                            and xma is not None:
                        return xma.address
            raise OSError(f"{server} closed the connection without a Binding answer")
    finally:
        if writer is not None:
            writer.close()
        else:
            sock.close()


def _tid() -> bytes:
    return secrets.token_bytes(12)  # RFC 8489 §6: unpredictable transaction IDs


class TcpPlumbing:
    """The sockets behind one agent's TCP candidates (see the module docstring). ``wake`` is called after every
    input to the agent (the Connection's ``driver.pump``)."""

    def __init__(self, agent: IceAgent, wake: Callable[[], None],
                 make_socket: StreamSocketFactory | None = None, driven: TcpDriven | None = None) -> None:
        self.agent = agent
        self.driven: TcpDriven = driven or agent
        """Whose intents are carried out and who hears of the connections: the agent, or the ICE-over-TURN
        composition around it (its TURN TCP allocations' data connections too)."""
        self.wake = wake
        self.make_socket = make_socket or (lambda fam: socket.socket(fam, socket.SOCK_STREAM))
        self.stats: Counter[str] = agent.stats
        self._servers: dict[Address, asyncio.AbstractServer] = {}
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._closing: set[int] = set()
        self._other: set[asyncio.Task[None]] = set()
        self.closed = False

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    # ----------------------------------------------------------------------------------------- candidates

    async def add_candidate(self, ip: str, tcptype: TcpType, component: int = 1) -> Address:
        """A TCP host candidate on ``ip``: passive and so ones listen on a fresh port (so with SO_REUSEPORT, its
        outgoing connections bind the same port); an active one needs no socket until it connects."""
        local = await self.open(ip, tcptype)
        return self.agent.add_tcp_host_candidate(local, tcptype, component=component).address

    async def open(self, ip: str, tcptype: TcpType) -> Address:
        """The socket of a TCP host candidate on ``ip``, not yet told to the agent: a passive or so one's listener
        (its address), an active one's IP with port 0 (it needs no socket until it connects)."""
        if tcptype is TcpType.ACTIVE:
            return (ip, 0)
        sock = self.make_socket(_family(ip))
        try:
            _reuse(sock)  # so: its connections bind this port; both: the TCP STUN binding does
            sock.bind((ip, 0))
            sock.listen(64)
            sock.setblocking(False)
            local = _address(sock.getsockname())
            server = await asyncio.start_server(lambda r, w: self._accepted(r, w, local), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._servers[local] = server
        return local

    def forget(self, ip: str) -> None:
        """``ip`` left the interface: close its candidates' listeners (the agent closes their connections)."""
        for local in [a for a in self._servers if a[0] == ip]:
            self._servers.pop(local).close()

    async def gather_server_reflexive(self, server: Address, timeout: float = 2.0,
                                      only: set[Address] | None = None) -> None:
        """A TCP STUN Binding from every passive and so base (or those of ``only``) to ``server``: their
        server-reflexive candidates (RFC 6544 §4.1), each learnt over TCP from the candidate's own port."""

        async def one(base: Address) -> None:
            try:
                mapped = await tcp_stun_binding(base, server, timeout, self.make_socket)
            except (OSError, TimeoutError):
                self.stats["tcp-srflx-failed"] += 1
                return
            self.agent.add_tcp_server_reflexive(base, mapped, server[0])

        bases = [b for b in self.agent.tcp_bases if b[1] != 9 and (":" in b[0]) == (":" in server[0])
                 and (only is None or b in only)]
        await asyncio.gather(*(one(b) for b in bases))

    # ---------------------------------------------------------------------------------------- the intents

    def drain(self) -> None:
        """Carry out what the agent asked for on TCP (called from every pump)."""
        while (intent := self.driven.poll_tcp()) is not None:
            if isinstance(intent, TcpSend):
                writer = self._writers.get(intent.conn)
                if writer is None or writer.is_closing():
                    self.stats["tcp-send-no-connection"] += 1
                else:
                    writer.write(intent.data)
            elif isinstance(intent, TcpConnect):
                if self.closed:
                    continue
                task = asyncio.ensure_future(self._connect(intent))
                self._tasks[intent.conn] = task
            elif isinstance(intent, TcpClose):
                self._close(intent.conn)

    def _close(self, conn: int) -> None:
        if conn in self._writers or conn in self._tasks:  # what comes of it is not reported (the agent closed it)
            self._closing.add(conn)
        writer = self._writers.pop(conn, None)
        if writer is not None:
            writer.close()
        task = self._tasks.pop(conn, None)
        if task is not None and not task.done():
            task.cancel()

    async def _connect(self, intent: TcpConnect) -> None:
        loop = asyncio.get_running_loop()
        sock = self.make_socket(_family(intent.local[0]))
        try:
            if intent.local[1]:
                _reuse(sock)  # the so candidate's port, shared with its listener
            sock.bind(intent.local)
            sock.setblocking(False)
            _nodelay(sock)
            if intent.syn_ttl is not None:
                await _connect_low_ttl(sock, intent.remote, intent.syn_ttl)
            else:
                await loop.sock_connect(sock, intent.remote)
            reader, writer = await asyncio.open_connection(sock=sock)
        except asyncio.CancelledError:
            sock.close()
            self._closing.discard(intent.conn)
            raise
        except OSError as exc:
            sock.close()
            self.stats["tcp-connect-error"] += 1
            self._tasks.pop(intent.conn, None)
            if intent.conn in self._closing:
                self._closing.discard(intent.conn)
            else:
                self.driven.handle_tcp_event(self._now(), TcpConnectFailed(intent.conn, exc.strerror or str(exc)))
                self.wake()
            return
        self._writers[intent.conn] = writer
        self.driven.handle_tcp_event(self._now(), TcpConnected(intent.conn))
        self.wake()
        await self._read(intent.conn, reader, writer)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: Address) -> None:
        remote = _address(writer.get_extra_info("peername"))
        _nodelay(writer.get_extra_info("socket"))
        conn = self.driven.accept_tcp(self._now(), local, remote) if not self.closed else None
        if conn is None:
            writer.close()
            self.wake()
            return
        self._writers[conn] = writer
        task = asyncio.current_task()
        if task is not None:
            self._tasks[conn] = task
        self.wake()
        await self._read(conn, reader, writer)

    async def _read(self, conn: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.driven.handle_tcp_data(self._now(), conn, data)
                self.wake()
        except OSError:
            self.stats["tcp-read-error"] += 1
        finally:
            writer.close()
            self._writers.pop(conn, None)
            self._tasks.pop(conn, None)
            if conn in self._closing:
                self._closing.discard(conn)
            elif not self.closed:
                self.driven.handle_tcp_event(self._now(), TcpClosed(conn))
                self.wake()

    def close(self) -> None:
        self.closed = True
        for server in self._servers.values():
            server.close()
        for conn in list(self._writers):
            self._close(conn)
        for conn in list(self._tasks):
            self._close(conn)


class TcpEndpoint(Generic[E]):
    """An endpoint for the :class:`~ice.aio.driver.Driver` that also drains the agent's TCP intents on every
    pump (through ``poll_transmit``, which the driver calls after every input and timer)."""

    def __init__(self, inner: Endpoint[E], plumbing: TcpPlumbing) -> None:
        self.inner = inner
        self.plumbing = plumbing

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        self.inner.handle_datagram(now, local, remote, data)

    def handle_timeout(self, now: float) -> None:
        self.inner.handle_timeout(now)

    def next_timeout(self) -> float | None:
        return self.inner.next_timeout()

    def poll_transmit(self) -> Transmit | None:
        self.plumbing.drain()
        return self.inner.poll_transmit()

    def next_event(self) -> E | None:
        self.plumbing.drain()
        return self.inner.next_event()


__all__ = ["TcpEndpoint", "TcpPlumbing", "tcp_stun_binding"]
