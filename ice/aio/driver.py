"""The one asyncio driver of every sans-IO endpoint (:mod:`ice.endpoint`): sockets, one timer, a pump.

A :class:`Driver` owns the UDP sockets (and TCP/TLS streams) of one endpoint and one re-armed timer:

* readable sockets are drained in batches (``add_reader``; up to ``DriverConfig.batch`` datagrams per callback
  in one ``recvmmsg`` where the C accelerator is built, :mod:`ice.aio.udp`; all stamped with one loop time)
  straight into ``endpoint.handle_datagrams`` when the endpoint has it (the servers: one call per batch), else
  ``endpoint.handle_datagram`` for each; a stream delivers one framed message per call (RFC 8656 §12.5
  framing, :func:`~ice.turn.framing.split_frames`);
* after every input -- a whole batch is one input -- :meth:`Driver.pump` sends what the endpoint queued
  (``poll_transmits`` when the endpoint has it, else ``poll_transmit`` until None; consecutive datagrams from one
  UDP socket in one ``sendmmsg``, runs of equal-sized ones to one destination as UDP GSO messages), hands its
  events to ``on_event`` and re-arms the timer at ``next_timeout()`` -- only when that deadline changed, never
  early: the endpoint sees ``handle_timeout(max(deadline, loop.time()))``;
* the pump is not re-entrant. An ``on_event`` callback may call into the endpoint (send data, add a candidate)
  or deliver a datagram (:meth:`Driver.datagram_received`): the nested pump returns at once, the datagram waits in
  an inbox, and the running pump handles both after the current step, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
import struct
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, KeysView
from dataclasses import dataclass
from typing import Generic, TypeVar

from ice.aio.udp import recv_batch, recv_reserve, send_batch
from ice.endpoint import Endpoint
from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.turn.framing import split_frames

E = TypeVar("E")


@dataclass(frozen=True)
class DriverConfig:
    """How a :class:`Driver` moves datagrams."""

    batch: int = 64
    """Datagrams read from one readable socket per loop callback (one ``recvmmsg``, at most 1024): a server drains
    many; a low-rate endpoint reads one and saves the extra read that would find the socket empty."""
    datagram_size: int = 65535
    """The receive buffer per datagram: the largest UDP payload (a TURN relay forwards any size, RFC 8656 §11)."""
    gso: bool = True
    """Send a run of equal-sized datagrams to one destination as one UDP GSO message where the kernel takes it
    (:func:`ice.aio.udp.send_batch`); False: one datagram per message (still one ``sendmmsg`` per run)."""
    socket_buffer: int | None = None
    """SO_RCVBUF and SO_SNDBUF of every UDP socket added (None: the system's default; Linux caps it at
    net.core.rmem_max/wmem_max): a server that drains in batches needs room for a burst between two reads."""

    @classmethod
    def server(cls) -> DriverConfig:
        """The embedded STUN and TURN servers': reads of 16 datagrams -- enough to pay each system call and
        Python call over many datagrams, few enough that the first answers leave while the senders' next
        datagrams arrive (with 64 a whole window moved in lockstep, one process idle while the other worked) --
        and 4 MiB socket buffers (a few thousand datagrams of a burst)."""
        return cls(batch=16, socket_buffer=4 << 20)


_IP_RECVERR, _IPV6_RECVERR = 11, 25
"""Linux <linux/in.h>, <linux/in6.h> (Python's socket module does not name them)."""


class Driver(Generic[E]):
    """Drives one endpoint on the running asyncio loop (or on ``loop``, e.g. a test's virtual clock)."""

    def __init__(self, endpoint: Endpoint[E], on_event: Callable[[E], None] | None = None,
                 stats: Counter[str] | None = None, loop: asyncio.AbstractEventLoop | None = None,
                 config: DriverConfig | None = None) -> None:
        self.endpoint = endpoint
        self.config = config or DriverConfig()
        self.on_event = on_event
        self.stats: Counter[str] = stats if stats is not None else Counter()
        """Socket-level counters (send-failed, recv-error, socket-error, no-socket-for-transmit, ...)."""
        self.on_error: Callable[[Address, OSError], None] | None = None
        """Called with a socket's receive error (e.g. ICMP port unreachable on a connected UDP socket)."""
        self.on_unreachable: Callable[[Address, Address, OSError], None] | None = None
        """Called for each ICMP error on a socket added with ``icmp_errors=True``: (local, the destination of the
        datagram that drew it, the error), e.g. ECONNREFUSED for port unreachable."""
        self.on_send_error: Callable[[Address, Address, OSError], None] | None = None
        """Called with (local, destination, the error) when a datagram could not be sent (not for a full buffer),
        e.g. ENETUNREACH from a socket whose local address left the interface."""
        self._recverr: set[Address] = set()
        self._loop = loop
        self._socks: dict[Address, socket.socket] = {}
        self._connected: set[Address] = set()
        self._default: Address | None = None
        self._streams: dict[tuple[Address, Address], asyncio.StreamWriter] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._pumping = False
        self._inbox: deque[tuple[Address, Address, bytes]] = deque()
        self.closed = False

    @property
    def endpoint(self) -> Endpoint[E]:
        """The endpoint driven (a server may swap in a wrapper); its optional batch entry points
        (``handle_datagrams``, ``poll_transmits``) are looked up once, when it is set."""
        return self._endpoint

    @endpoint.setter
    def endpoint(self, endpoint: Endpoint[E]) -> None:
        self._endpoint = endpoint
        self._handle_many: Callable[[float, Address, list[tuple[Address, bytes]]], None] | None = \
            getattr(endpoint, "handle_datagrams", None)
        self._poll_many: Callable[[], list[Transmit]] | None = getattr(endpoint, "poll_transmits", None)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def time(self) -> float:
        return self.loop.time()

    @property
    def timer_at(self) -> float | None:
        """The deadline the timer is armed for (None: disarmed)."""
        return self._timer_at

    # ------------------------------------------------------------------------------------------- sockets

    def add_socket(self, sock: socket.socket, default: bool = False, icmp_errors: bool = False) -> Address:
        """Own a bound UDP socket: read it, send from it. ``default``: it sends transmits whose ``local`` is None.
        A connected socket sends with ``send`` (only its peer's datagrams arrive, ICMP errors are reported).
        ``icmp_errors`` (Linux): also learn of ICMP errors on an unconnected socket (IP_RECVERR), each with the
        destination it answers, through :attr:`on_unreachable`."""
        sock.setblocking(False)
        if self.config.socket_buffer is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, self.config.socket_buffer)
                except OSError:
                    self.stats["socket-buffer-refused"] += 1
        sa = sock.getsockname()
        local = (str(sa[0]), int(sa[1]))
        if icmp_errors and sys.platform == "linux":
            try:
                if sock.family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
                else:
                    sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
                self._recverr.add(local)
            except (OSError, AttributeError):
                pass
        try:
            sock.getpeername()
            self._connected.add(local)
        except OSError:
            pass
        self._socks[local] = sock
        recv_reserve(self.config.batch, self.config.datagram_size)  # the receive buffer before the first datagram
        if default or self._default is None:
            self._default = local
        self.loop.add_reader(sock.fileno(), self._on_readable, sock, local)
        return local

    def remove_socket(self, local: Address) -> None:
        sock = self._socks.pop(local, None)
        self._connected.discard(local)
        self._recverr.discard(local)
        if sock is None:
            return
        if self._default == local:
            self._default = next(iter(self._socks), None)
        self.loop.remove_reader(sock.fileno())
        sock.close()

    @property
    def addresses(self) -> KeysView[Address]:
        """The local addresses of the sockets the driver owns."""
        return self._socks.keys()

    def _on_readable(self, sock: socket.socket, local: Address) -> None:
        try:
            batch = recv_batch(sock, self.config.batch, self.config.datagram_size)
        except OSError as exc:
            self.stats["socket-error"] += 1
            if self.on_error is not None:
                self.on_error(local, exc)
            if local in self._recverr:
                self._drain_errors(sock, local)
            self.pump()
            return
        if not batch:
            if local in self._recverr:
                self._drain_errors(sock, local)  # woken by a queued ICMP error alone (EPOLLERR)
                self.pump()
            return
        now = (self._loop or self.loop).time()
        handle_many = self._handle_many
        if handle_many is not None:
            handle_many(now, local, batch)
        else:
            handle = self._endpoint.handle_datagram
            for remote, data in batch:
                handle(now, local, remote, data)
        self.pump()

    def _drain_errors(self, sock: socket.socket, local: Address) -> None:
        """Read the socket's error queue (IP_RECVERR) empty -- a queued error keeps the socket readable -- and
        report each ICMP error with the destination of the datagram that drew it. Then watch the socket afresh:
        libuv (uvloop) stops polling a descriptor that reported an error (EPOLLERR), and its datagrams would
        never be read again."""
        while True:
            try:
                _, ancdata, _, addr = sock.recvmsg(1, 1024, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                if self._socks.get(local) is sock:
                    self.loop.remove_reader(sock.fileno())
                    self.loop.add_reader(sock.fileno(), self._on_readable, sock, local)
                return
            except OSError:
                self.stats["errqueue-error"] += 1
                return
            self.stats["icmp-error"] += 1
            code = errno.EIO
            for _level, _type, data in ancdata:
                if len(data) >= 4:  # struct sock_extended_err: ee_errno first
                    code = struct.unpack("=I", data[:4])[0]
            if self.on_unreachable is not None and isinstance(addr, tuple) and len(addr) >= 2:
                self.on_unreachable(local, (str(addr[0]), int(addr[1])), OSError(code, os.strerror(code)))

    # ------------------------------------------------------------------------------------------- streams

    def add_stream(self, writer: asyncio.StreamWriter, local: Address, remote: Address) -> None:
        """Transmits from ``local`` to ``remote`` go on this stream (framed by the endpoint)."""
        self._streams[(local, remote)] = writer

    def remove_stream(self, local: Address, remote: Address) -> None:
        """Forget a stream without closing it (e.g. a TURN client data connection that became a byte pipe, RFC
        6062 §5.4)."""
        self._streams.pop((local, remote), None)

    def start_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: Address,
                     remote: Address) -> asyncio.Task[None]:
        """:meth:`run_stream` as a task; the stream takes transmits at once."""
        self.add_stream(writer, local, remote)
        return asyncio.ensure_future(self.run_stream(reader, writer, local, remote))

    def remove_streams(self, local: Address) -> None:
        """Close the streams whose local end is ``local`` (its address left the host); their readers end."""
        for key in [k for k in self._streams if k[0] == local]:
            self._streams.pop(key).close()

    async def run_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: Address,
                         remote: Address) -> None:
        """Read framed messages (STUN or ChannelData, RFC 8656 §12.5) until the stream ends; each is a datagram
        received on ``local`` from ``remote``."""
        self.add_stream(writer, local, remote)
        buffer = bytearray()
        try:
            while chunk := await reader.read(65536):
                buffer += chunk
                try:
                    frames = split_frames(buffer)
                except ValueError:
                    self.stats["stream-garbage"] += 1
                    break
                for frame in frames:
                    self.datagram_received(local, remote, frame)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._streams.pop((local, remote), None)
            writer.close()

    # --------------------------------------------------------------------------------------------- input

    def datagram_received(self, local: Address, remote: Address, data: bytes) -> None:
        """Feed one datagram and pump; during a pump it waits in the inbox and is handled after the current
        step (the pump is never re-entered)."""
        if self._pumping:
            self._inbox.append((local, remote, data))
            return
        self._endpoint.handle_datagram(self.loop.time(), local, remote, data)
        self.pump()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Calls into the endpoint inside the block pump once, when it ends: several inputs of one callback (the
        remote credentials, candidates and end-of-candidates of one signalling message) cost one pump -- one
        round of polls, events and timer re-arming -- not one each. Inside a pump it changes nothing (that pump
        runs afterwards anyway)."""
        if self._pumping:
            yield
            return
        self._pumping = True
        try:
            yield
        finally:
            self._pumping = False
            self.pump()

    def pump(self) -> None:
        """Send what the endpoint queued, deliver its events, re-arm the timer; again while callbacks add work."""
        if self._pumping or self.closed:
            return
        self._pumping = True
        endpoint = self._endpoint
        poll = endpoint.poll_transmit
        polls = self._poll_many
        try:
            while True:
                while self._inbox:
                    local, remote, data = self._inbox.popleft()
                    endpoint.handle_datagram((self._loop or self.loop).time(), local, remote, data)
                if polls is not None:
                    if out := polls():
                        self.send_all(out)
                elif (t := poll()) is not None:
                    out = [t]
                    while (t := poll()) is not None:
                        out.append(t)
                    self.send_all(out)
                evented = False
                while (ev := endpoint.next_event()) is not None:
                    evented = True
                    if self.on_event is not None:
                        self.on_event(ev)
                if not evented and not self._inbox:
                    break
        finally:
            self._pumping = False
        if not self.closed:
            self._rearm()

    def send_all(self, out: list[Transmit]) -> None:
        """Send datagrams in order: each run of consecutive ones from the same UDP socket in as few
        ``send_batch`` calls as it takes (it stops where the source changes); a datagram the batch refused goes
        through :meth:`send`, which counts the failure as it always has. Where a socket is connected or reports
        ICMP errors, every datagram goes through :meth:`send`; so does each one on an open stream."""
        if self._connected or self._recverr:
            for t in out:
                self.send(t)
            return
        if self._streams:
            streams, plain = self._streams, []
            for t in out:
                if t[2] is not None and (t[2], t[0]) in streams:
                    self.send(t)  # framed on its TCP/TLS stream
                else:
                    plain.append(t)
            out = plain
        if len(out) <= 1:
            for t in out:
                self.send(t)
            return
        socks, default, gso = self._socks, self._default, self.config.gso
        i, n = 0, len(out)
        while i < n:
            local = out[i][2]
            src = local if local is not None else default
            sock = socks.get(src) if src is not None else None
            if sock is None:
                self.send(out[i])  # counted: no socket for it
                i += 1
                continue
            j = send_batch(sock, out, i, gso)
            if j < n and out[j][2] == local:
                self.send(out[j])  # refused (e.g. a full buffer) or an address only sendto handles
                j += 1
            i = j

    def send(self, t: Transmit) -> None:
        """Send one datagram now: on the stream or socket of ``t.local`` (None: the default socket)."""
        if self._streams and t.local is not None:
            writer = self._streams.get((t.local, t.remote))
            if writer is not None:
                writer.write(t.data)
                return
        local = t.local if t.local is not None else self._default
        sock = self._socks.get(local) if local is not None else None
        if sock is None:
            self.stats["no-socket-for-transmit"] += 1
            return
        try:
            if self._connected and local in self._connected:
                sock.send(t.data)
            else:
                sock.sendto(t.data, t.remote)
        except BlockingIOError:  # a full buffer: as if lost on the wire
            self.stats["send-failed"] += 1
        except OSError as exc:
            if local not in self._recverr:  # an unreachable destination
                self.stats["send-failed"] += 1
                if local is not None:
                    self._send_failed(local, t.remote, exc)
                return
            # With IP_RECVERR the kernel also reports an ICMP error for an EARLIER datagram (to any destination)
            # as the socket's pending error, on the next call: this datagram was not sent. The call consumed the
            # pending error; read the queue (whose entries name the destination) and send again, once.
            self._drain_errors(sock, local)
            try:
                sock.sendto(t.data, t.remote)
            except OSError as again:
                self.stats["send-failed"] += 1
                self._send_failed(local, t.remote, again)

    def _send_failed(self, local: Address, remote: Address, exc: OSError) -> None:
        if self.on_send_error is not None:
            self.on_send_error(local, remote, exc)

    # --------------------------------------------------------------------------------------------- timer

    def _rearm(self) -> None:
        at = self._endpoint.next_timeout()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = (self._loop or self.loop).call_at(at, self._on_timer) if at is not None else None
        self._timer_at = at

    def _on_timer(self) -> None:
        at = self._timer_at if self._timer_at is not None else 0.0
        self._timer = self._timer_at = None
        # never early, whatever the loop's resolution
        self._endpoint.handle_timeout(max(at, (self._loop or self.loop).time()))
        self.pump()

    def close(self) -> None:
        """Flush what the endpoint still queued (e.g. a deallocation), then stop the timer and close the sockets."""
        self.pump()
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_at = None
        for local in list(self._socks):
            self.remove_socket(local)
        for writer in self._streams.values():
            writer.close()
        self._streams.clear()


__all__ = ["Driver", "DriverConfig"]
