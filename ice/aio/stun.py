"""asyncio adapters for the STUN client and server: sockets and one timer, nothing else.

All protocol decisions live in :mod:`ice.stun`; the sockets and the one timer are the :class:`Driver`'s (the aioquic
pattern: after every call into the core, send what it queued and re-arm at ``next_timeout()``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

from ice.aio.driver import Driver, DriverConfig
from ice.errors import StunErrorResponse, StunTimeout, StunUnreachable
from ice.stun.attributes import (
    Address,
    Attribute,
    ChangedAddress,
    MappedAddress,
    OtherAddress,
    ResponseOrigin,
    Software,
    XorMappedAddress,
)
from ice.stun.message import Message, MessageClass, Method
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import (
    RetransmissionConfig,
    StunClient,
    TransactionEvent,
    TransactionFailed,
    TransactionSucceeded,
    TransactionTimedOut,
    Transmit,
)


def parse_hostport(text: str, default_port: int | None = 3478) -> Address:
    """``"1.2.3.4:3478"``, ``"[::1]:3478"`` or ``"host"`` -> (host, port); raises ValueError with a clear message."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    else:
        host, port_s = text, ""
    if not host:
        raise ValueError(f"{text!r}: missing host (expected HOST:PORT)")
    if not port_s:
        if default_port is None:
            raise ValueError(f"{text!r}: missing port (expected HOST:PORT)")
        return host, default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{text!r}: {port_s!r} is not a port number (0-65535)")
    return host, int(port_s)


def format_address(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def resolve(addr: Address) -> Address:
    """Resolve a host name to a literal address (UDP); literals are returned unchanged."""
    host, port = addr
    try:
        socket.inet_pton(_family(host), host)
        return host, port
    except OSError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    sa = infos[0][4]
    return str(sa[0]), int(sa[1])


@dataclass(frozen=True)
class BindingResult:
    """What one Binding transaction learned."""

    local: Address
    server: Address
    mapped: Address
    """XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489 server)."""
    response_origin: Address | None
    other_address: Address | None
    software: str | None
    rtt: float
    sends: int
    source: Address
    """Where the response actually came from."""


class StunEndpoint:
    """One UDP socket driving a sans-IO :class:`StunClient` (and optionally receiving stray requests).

    It is the endpoint its :class:`Driver` drives: the client's, plus ``on_other`` for what is not a response."""

    def __init__(self, config: RetransmissionConfig | None = None, icmp_errors: bool = True) -> None:
        self.client = StunClient(config or RetransmissionConfig())
        self.icmp_errors = icmp_errors
        """Fail pending transactions at once when the kernel reports ICMP port unreachable (connection refused).
        The socket cannot tell which destination refused, so turn this off when talking to several servers."""
        self._driver: Driver[TransactionEvent] | None = None
        self._local: Address | None = None
        self._waiters: dict[bytes, asyncio.Future[TransactionSucceeded]] = {}
        self.on_other: Callable[[bytes, Address], None] | None = None
        """Called with datagrams that are not responses to our transactions (e.g. a hairpinned request)."""

    @property
    def local(self) -> Address:
        assert self._local is not None
        return self._local

    async def open(self, bind: Address = ("0.0.0.0", 0), connect: Address | None = None) -> Self:
        """Bind a UDP socket; with ``connect``, also connect it (only that peer's datagrams arrive, and the kernel
        reports ICMP port-unreachable, which unconnected UDP sockets never see)."""
        sock = self.make_socket(_family(bind[0]))
        try:
            sock.bind(bind)
            if connect is not None:
                sock.connect(connect)
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot bind {format_address(bind)}: {exc.strerror}") from None
        self._driver = Driver(self, self._on_event, stats=self.client.stats)
        self._driver.on_error = self._socket_error
        self._local = self._driver.add_socket(sock)
        return self

    def make_socket(self, family: socket.AddressFamily) -> socket.socket:
        """A new UDP socket (the lab overrides this to open it inside a network namespace)."""
        return socket.socket(family, socket.SOCK_DGRAM)

    def _socket_error(self, local: Address, exc: OSError) -> None:
        if not (self.icmp_errors and isinstance(exc, ConnectionRefusedError)):
            return
        for tid, fut in list(self._waiters.items()):
            self.client.cancel(tid)
            if not fut.done():
                fut.set_exception(StunUnreachable("port unreachable (the host answered with ICMP)"))

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()

    async def __aenter__(self) -> StunEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def send_raw(self, data: bytes, remote: Address) -> None:
        assert self._driver is not None
        self._driver.send(Transmit(remote, data, self._local))

    # -- the endpoint contract (ice.endpoint), for the driver ------------------------------------------------

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        if not self.client.handle_response(now, data, remote) and self.on_other is not None:
            self.on_other(data, remote)

    def handle_timeout(self, now: float) -> None:
        self.client.handle_timeout(now)

    def next_timeout(self) -> float | None:
        return self.client.next_timeout()

    def poll_transmit(self) -> Transmit | None:
        return self.client.poll_transmit()

    def next_event(self) -> TransactionEvent | None:
        return self.client.next_event()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_event(self, ev: TransactionEvent) -> None:
        fut = self._waiters.pop(ev.transaction_id, None)
        if fut is None or fut.done():
            return
        if isinstance(ev, TransactionSucceeded):
            fut.set_result(ev)
        elif isinstance(ev, TransactionFailed):
            fut.set_exception(StunErrorResponse(ev.code, ev.reason))
        elif isinstance(ev, TransactionTimedOut):
            fut.set_exception(StunTimeout(f"{ev.sends} requests over {ev.elapsed:.1f} s went unanswered"))

    async def request(self, message: Message, server: Address) -> TransactionSucceeded:
        """Run one transaction; raises StunTimeout or StunErrorResponse."""
        fut: asyncio.Future[TransactionSucceeded] = asyncio.get_running_loop().create_future()
        self._waiters[message.transaction_id] = fut
        assert self._driver is not None, "open() the endpoint first"
        self.client.request(self._now(), message, server)
        self._driver.pump()
        try:
            return await fut
        finally:
            self.client.cancel(message.transaction_id)
            self._waiters.pop(message.transaction_id, None)

    async def binding(self, server: Address, attributes: Iterable[Attribute] = ()) -> BindingResult:
        """Send a Binding request (RFC 8489 §3) and report the mapping it revealed."""
        ev = await self.request(Message(Method.BINDING, MessageClass.REQUEST, attributes=attributes), server)
        resp = ev.response
        xma = resp.get(XorMappedAddress)
        ma = resp.get(MappedAddress)
        mapped = xma.address if xma else ma.address if ma else None
        if mapped is None:
            raise StunErrorResponse(0, "the success response has no XOR-MAPPED-ADDRESS or MAPPED-ADDRESS")
        origin = resp.get(ResponseOrigin)
        other = resp.get(OtherAddress) or resp.get(ChangedAddress)  # RFC 3489 servers (stund) say CHANGED-ADDRESS
        sw = resp.get(Software)
        return BindingResult(
            local=self.local,
            server=server,
            mapped=mapped,
            response_origin=origin.address if origin else None,
            other_address=other.address if other else None,
            software=sw.text if sw else None,
            rtt=ev.rtt,
            sends=ev.sends,
            source=ev.source,
        )


async def stun_binding(
    server: Address, bind: Address | None = None, config: RetransmissionConfig | None = None
) -> BindingResult:
    """Learn the mapping of a fresh UDP socket from ``server`` (the seed milestone: ``icelab stun``)."""
    server = await resolve(server)
    if bind is None:
        bind = ("::", 0) if ":" in server[0] else ("0.0.0.0", 0)
    endpoint = await StunEndpoint(config).open(bind, connect=server)
    try:
        return await endpoint.binding(server)
    finally:
        endpoint.close()


@dataclass
class _LoggedStunServer(StunServer):
    """The Binding server with one log line per answer (``icelab server stun --json-log``)."""

    log: Callable[[dict[str, object]], None] = lambda _: None

    def handle_datagrams(self, now: float, local: Address, batch: list[tuple[Address, bytes]]) -> None:
        for remote, data in batch:  # one log line each: no fast path
            self.handle_datagram(now, local, remote, data)

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        out = self.handle(local, remote, data)
        if out is None:
            return
        self._out.append(out)
        self.log({"event": "binding", "from": format_address(remote), "to": format_address(out.remote),
                  "via": format_address(out.local or local)})


class StunServerRunner:
    """The embedded STUN server on asyncio: one UDP socket per local address of the config, one :class:`Driver`."""

    def __init__(
        self,
        config: StunServerConfig,
        log: Callable[[dict[str, object]], None] | None = None,
        make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
        driver: DriverConfig | None = None,
    ) -> None:
        self.make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_DGRAM))
        self.driver_config = driver or DriverConfig.server()
        """How the sockets are read and written (batches, buffers): see :class:`~ice.aio.driver.DriverConfig`."""
        self.server = StunServer(config) if log is None else _LoggedStunServer(config, log=log)
        self.config = config
        self.log = log
        self._driver: Driver[None] | None = None

    async def start(self) -> StunServerRunner:
        self._driver = Driver(self.server, stats=self.server.stats, config=self.driver_config)
        try:
            for local in self.config.local_addresses:
                sock = self.make_socket(_family(local[0]))
                try:
                    sock.bind(local)
                except OSError as exc:
                    sock.close()
                    raise OSError(f"cannot listen on {format_address(local)}: {exc.strerror}") from None
                self._driver.add_socket(sock)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def addresses(self) -> list[Address]:
        return list(self._driver.addresses) if self._driver is not None else []

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
