"""Sans-IO STUN Binding server with RFC 5780 behaviour-discovery support (RFC 8489 §6.3, RFC 5780 §6).

The server owns up to four transport addresses: the primary ``(IP1, P1)``, and with an alternate ``(IP2, P2)`` also
``(IP1, P2)`` and ``(IP2, P1)``. :meth:`StunServer.handle` takes the local address a datagram arrived on, the
remote address and the bytes, and returns the :class:`~ice.stun.transaction.Transmit` to send (from which local
address, to where) or None. It never raises for network input: malformed datagrams are counted and dropped;
requests it cannot serve get 400 or 420. It also meets the endpoint contract (:mod:`ice.endpoint`), which is how
the asyncio runner and the simulation drive it: :meth:`StunServer.handle_datagram` queues the answer for
:meth:`StunServer.poll_transmit`; it has no timers and emits no events. :meth:`StunServer.handle` stays the
one-call form underneath (with the bare-Binding fast path); the TURN server answers Binding with it.
"""

from __future__ import annotations

import socket
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from struct import Struct

from ice.errors import StunParseError
from ice.stun.attributes import (
    MAGIC_COOKIE,
    Address,
    Attribute,
    ChangedAddress,
    ChangeRequest,
    ErrorCode,
    MappedAddress,
    OtherAddress,
    Padding,
    ResponseOrigin,
    ResponsePort,
    Software,
    SourceAddress,
    UnknownAttributes,
    XorMappedAddress,
)
from ice.stun.integrity import _speedups
from ice.stun.message import Message, MessageClass, Method, parse
from ice.stun.transaction import Transmit

DEFAULT_SOFTWARE = "icelab"
_BARE_BINDING_HEAD = b"\x00\x01\x00\x00" + MAGIC_COOKIE.to_bytes(4, "big")
_BINDING_SUCCESS_HEAD = Struct("!HHI")
_ADDR4 = Struct("!HHHHI")
_ADDR4_MAPPED = Struct("!HHHH")
_U32 = Struct("!I")
_FP_TL = b"\x80\x28\x00\x04"
_inet_aton = socket.inet_aton


def _bare_response(data: bytes, remote: Address, length: int, rest: bytes, fingerprint: bool) -> bytes:
    """The success response to a bare IPv4 Binding request ``data`` from ``remote`` (RFC 8489 §6.3.1):
    XOR-MAPPED-ADDRESS (§14.2), MAPPED-ADDRESS (§14.1), the server's cached attributes ``rest`` (the message
    length ``length`` counts them) and FINGERPRINT (§14.7)."""
    ip = _inet_aton(remote[0])
    port = remote[1]
    msg = (
        _BINDING_SUCCESS_HEAD.pack(0x0101, length, MAGIC_COOKIE)
        + data[8:20]
        + _ADDR4.pack(0x0020, 8, 1, port ^ 0x2112, _U32.unpack(ip)[0] ^ MAGIC_COOKIE)
        + _ADDR4_MAPPED.pack(0x0001, 8, 1, port)
        + ip
        + rest
    )
    if fingerprint:
        return msg + _FP_TL + _U32.pack(zlib.crc32(msg) ^ 0x5354554E)
    return msg


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return False
    return True


def _binding_answers_py(batch: list[tuple[Address, bytes]], start: int, local: Address, length: int, rest: bytes,
                        fingerprint: bool, out: list[Transmit]) -> int:
    """Answer ``batch[start:]`` while each is a bare Binding request from an IPv4 address (a Transmit from
    ``local`` appended to ``out`` per answer); the index of the first that is not (the general path's). The
    reference of the C accelerator's ``binding_answers``."""
    for i in range(start, len(batch)):
        remote, data = batch[i]
        if len(data) != 20 or data[:8] != _BARE_BINDING_HEAD or not _is_ipv4(remote[0]):
            return i
        out.append(Transmit(remote, _bare_response(data, remote, length, rest, fingerprint), local))
    return len(batch)


_binding_answers = _binding_answers_py
if _speedups is not None and hasattr(_speedups, "binding_answers"):  # (one built from older sources lacks it)
    _speedups.set_transmit(Transmit)
    _binding_answers = _speedups.binding_answers


@dataclass(frozen=True)
class StunServerConfig:
    """What the Binding server answers and from where."""

    primary: Address
    """The address clients send to first (IP1, P1)."""
    alternate: Address | None = None
    """The other IP and port (IP2, P2) for RFC 5780; None for a single-address server."""
    software: str | None = DEFAULT_SOFTWARE
    """SOFTWARE attribute in every response (None: leave it out)."""
    fingerprint: bool = True
    """Add FINGERPRINT to responses (RFC 8489 §7: recommended when multiplexed with other protocols)."""
    legacy: bool = True
    """Answer RFC 3489 requests (no magic cookie) with MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS."""

    def __post_init__(self) -> None:
        if self.alternate is not None:
            if self.alternate[0] == self.primary[0] or self.alternate[1] == self.primary[1]:
                raise ValueError("the alternate address needs a different IP and a different port (RFC 5780 §6)")
            if (":" in self.alternate[0]) != (":" in self.primary[0]):
                raise ValueError("the primary and alternate addresses must be of the same IP family")

    @property
    def local_addresses(self) -> list[Address]:
        """Every address the server must listen on: 1, or 4 with an alternate."""
        if self.alternate is None:
            return [self.primary]
        (ip1, p1), (ip2, p2) = self.primary, self.alternate
        return [(ip1, p1), (ip1, p2), (ip2, p1), (ip2, p2)]


@dataclass
class StunServer:
    """Answers Binding requests (RFC 8489 §6.3) and CHANGE-REQUEST/RESPONSE-PORT/PADDING (RFC 5780 §6.1)."""

    config: StunServerConfig
    stats: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._tails: dict[Address, tuple[int, bytes]] = {}
        c = self.config
        self._software: list[Attribute] = [Software(c.software)] if c.software else []
        self._ips = (c.primary[0], c.alternate[0] if c.alternate else None)
        self._ports = (c.primary[1], c.alternate[1] if c.alternate else None)
        self._out: deque[Transmit] = deque()

    # ------------------------------------------------------------------------------------- endpoint contract

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        """:meth:`handle`, its answer queued for :meth:`poll_transmit` (a Binding server needs no clock)."""
        out = self.handle(local, remote, data)
        if out is not None:
            self._out.append(out)

    def handle_timeout(self, now: float) -> None:
        """No timers: a Binding server keeps no state between requests (RFC 8489 §6.3)."""

    def next_timeout(self) -> float | None:
        return None

    def poll_transmit(self) -> Transmit | None:
        return self._out.popleft() if self._out else None

    def poll_transmits(self) -> list[Transmit]:
        """Everything :meth:`poll_transmit` would give, in order, at once (the driver drains a batch's answers)."""
        out = list(self._out)
        self._out.clear()
        return out

    def next_event(self) -> None:
        return None

    def _other(self, local: Address, change_ip: bool, change_port: bool) -> Address | None:
        """The local address obtained by swapping the IP and/or port to the other one (None if impossible)."""
        ip, port = local
        ip1, ip2 = self._ips
        p1, p2 = self._ports
        if change_ip:
            if ip2 is None:
                return None
            ip = ip2 if ip == ip1 else ip1
        if change_port:
            if p2 is None:
                return None
            port = p2 if port == p1 else p1
        return (ip, port)

    def handle(self, local: Address, remote: Address, data: bytes) -> Transmit | None:
        """Process one datagram received on ``local`` from ``remote``."""
        if len(data) == 20 and data[:8] == _BARE_BINDING_HEAD and ":" not in remote[0]:
            return self._bare_binding(local, remote, data)
        return self.handle_general(local, remote, data)

    def handle_general(self, local: Address, remote: Address, data: bytes) -> Transmit | None:
        """:meth:`handle` without the bare-Binding fast path (the reference the fast path is tested against)."""
        try:
            req = parse(data, legacy=self.config.legacy)
        except StunParseError:
            self.stats["malformed"] += 1
            return None
        if req.message_class is not MessageClass.REQUEST:
            self.stats["not-a-request"] += 1  # RFC 8489 §6.3: indications and stray responses are dropped
            return None
        legacy = len(req.transaction_id) == 16
        try:
            return self._answer(req, local, remote, legacy)
        except StunParseError:
            self.stats["bad-request"] += 1
            return self._error(req, local, remote, 400, "Bad Request", legacy)

    def handle_datagrams(self, now: float, local: Address, batch: list[tuple[Address, bytes]]) -> None:
        """:meth:`handle_datagram` for each ``(remote, data)`` of a batch received on ``local``, in order; the bare
        IPv4 Binding requests among them are answered in one pass (:func:`_binding_answers_py`, or the C
        accelerator's copy of it)."""
        i, n = 0, len(batch)
        length, tail = self._tail_for(local)
        fingerprint = self.config.fingerprint
        answers: list[Transmit] = []
        while True:
            j = _binding_answers(batch, i, local, length, tail, fingerprint, answers)
            if j > i:
                self.stats["binding"] += j - i
                self._out.extend(answers)
                answers.clear()
            if j >= n:
                return
            remote, data = batch[j]
            self.handle_datagram(now, local, remote, data)
            i = j + 1

    def _tail_for(self, local: Address) -> tuple[int, bytes]:
        tail = self._tails.get(local)
        if tail is None:
            tail = self._tails[local] = self._tail(local)
        return tail

    def _bare_binding(self, local: Address, remote: Address, data: bytes) -> Transmit:
        """Fast path for the commonest request, a Binding request with no attributes over IPv4.

        The response is the general path's, byte for byte (a property test checks it): only the transaction ID
        and the client's address vary, so everything after XOR-MAPPED-ADDRESS and MAPPED-ADDRESS is a cached tail.
        """
        self.stats["binding"] += 1
        length, rest = self._tail_for(local)
        return Transmit(remote, _bare_response(data, remote, length, rest, self.config.fingerprint), local)

    def _tail(self, local: Address) -> tuple[int, bytes]:
        """Attributes after the two mapped addresses for a bare Binding request received on ``local``."""
        attrs: list[Attribute] = []
        if self._ips[1] is not None:
            attrs.append(ResponseOrigin(*local))
        other_addr = self._other(local, True, True)
        if other_addr is not None:
            attrs.append(OtherAddress(*other_addr))
        attrs.extend(self._software)
        rest = b"".join(a.tlv(b"") for a in attrs)
        return 24 + len(rest) + (8 if self.config.fingerprint else 0), rest

    def _error(
        self, req: Message, local: Address, remote: Address, code: int, reason: str, legacy: bool, *extra: Attribute
    ) -> Transmit:
        attrs: list[Attribute] = [ErrorCode(code, reason), *extra, *self._software]
        resp = Message(req.method, MessageClass.ERROR, req.transaction_id, attrs)
        return Transmit(remote, resp.encode(fingerprint=self.config.fingerprint and not legacy), local)

    def _answer(self, req: Message, local: Address, remote: Address, legacy: bool) -> Transmit:
        if req.method != Method.BINDING:
            self.stats["unsupported-method"] += 1
            return self._error(req, local, remote, 400, "Bad Request: only Binding is served here", legacy)
        unknown = req.unknown_comprehension_required()
        if unknown:
            self.stats["unknown-attribute"] += 1
            return self._error(
                req, local, remote, 420, "Unknown Attribute", legacy, UnknownAttributes(tuple(unknown[:32]))
            )
        source = local
        destination = remote
        change = req.get(ChangeRequest)
        if change is not None and (change.change_ip or change.change_port):
            other = self._other(local, change.change_ip, change.change_port)
            if other is None:
                # RFC 5780 §6.1: a server without an alternate address rejects CHANGE-REQUEST with 420.
                self.stats["change-request-unsupported"] += 1
                return self._error(
                    req, local, remote, 420, "Unknown Attribute: CHANGE-REQUEST needs an alternate address",
                    legacy, UnknownAttributes((ChangeRequest.TYPE,)),
                )
            source = other
        response_port = req.get(ResponsePort)
        if response_port is not None:
            destination = (remote[0], response_port.port)  # RFC 5780 §6.1: same IP, the requested port
        self.stats["binding"] += 1
        attrs: list[Attribute]
        if legacy:
            attrs = [MappedAddress(*remote), SourceAddress(*source)]
        else:
            attrs = [XorMappedAddress(*remote), MappedAddress(*remote)]
            if self._ips[1] is not None:
                attrs.append(ResponseOrigin(*source))
        other_addr = self._other(local, True, True)
        if other_addr is not None:
            attrs.append(ChangedAddress(*other_addr) if legacy else OtherAddress(*other_addr))
        attrs.extend(self._software)
        padding = req.get(Padding)
        if padding is not None and not legacy:
            # RFC 5780 §7.6: PADDING must not make the datagram longer than 64 KiB. Echoed, a PADDING that (nearly)
            # filled the request would not fit the response's 16-bit length with the other attributes.
            fingerprint = 8 if self.config.fingerprint else 0
            room = 0xFFFF - sum(len(a.tlv(req.transaction_id)) for a in attrs) - 4 - fingerprint
            if len(padding.data) + (-len(padding.data) & 3) > room:
                self.stats["padding-too-long"] += 1
                return self._error(req, local, remote, 400, "Bad Request: PADDING too long", legacy)
            attrs.insert(len(attrs) - len(self._software), Padding(bytes(len(padding.data))))
        resp = Message(Method.BINDING, MessageClass.SUCCESS, req.transaction_id, attrs)
        return Transmit(destination, resp.encode(fingerprint=self.config.fingerprint and not legacy), source)
