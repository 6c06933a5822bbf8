"""The fuzz targets: each takes the bytes libFuzzer made and drives one part of the stack with them.

The rule every target checks is the stack's own: bad input from the network never raises out of the stack; it
becomes an RFC error response or a counted drop (ice/errors.py). A target therefore fails only on an exception
out of the code under test, or on an invariant the stack promises and a driver relies on:

* what an endpoint sends is sendable (a literal IP, a port 0-65535) and, when it is STUN, parses again;
* an endpoint's timer makes progress (``handle_timeout(now)`` leaves ``next_timeout()`` later than ``now``,
  or the asyncio driver would spin);
* the TURN server's tables agree with each other (allocations, relayed addresses, channels).

The sans-IO machines run on a fixed, fuzz-advanced clock, so every input replays exactly. Structured targets (the
TURN server and client, the ICE agent, ICE over TURN) read their input as a small program (:mod:`fuzz.reader`):
set-up flags, then operations -- a raw datagram, a well-formed request with fuzzed fields signed with the right key
(so MESSAGE-INTEGRITY passes and the fuzzer reaches Refresh, CreatePermission, ChannelBind, Send, ChannelData and
the ICE check handling), a response to a request the machine sent, the clock moving on, an API call.

Adding a target is one entry in :data:`TARGETS` (and a corpus directory ``fuzz/corpus/<name>/``).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from fuzz.reader import Reader
from ice.agent.agent import IceAgent
from ice.agent.candidate import Candidate, CandidateType, candidate_priority
from ice.agent.config import AgentConfig, Nomination
from ice.agent.network import NetworkChange
from ice.agent.sdp import IceDescription
from ice.agent.tcp import ConnState as TcpConnState
from ice.agent.tcp import (
    TcpClose,
    TcpClosed,
    TcpConfig,
    TcpConnect,
    TcpConnected,
    TcpConnectFailed,
    TcpSend,
    TcpType,
    tcp_candidate,
)
from ice.agent.tcp import frame as rfc4571_frame
from ice.agents.pair import parse_selected
from ice.aio.driver import Driver
from ice.errors import StunParseError
from ice.stun import attributes as a
from ice.stun import integrity, message
from ice.stun.integrity import IntegrityKey, long_term_key, short_term_key
from ice.stun.message import Integrity, Message, MessageClass, Method, is_stun, parse
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import Transmit
from ice.turn.client import (
    ConnectionAttempt,
    PeerConnectionReady,
    TurnClient,
    TurnClientConfig,
)
from ice.turn.client import PeerConnectFailed as ClientConnectFailed
from ice.turn.framing import split_frames
from ice.turn.server import TurnServer, TurnServerConfig
from ice.turn.tcp_allocation import (
    CloseConnection,
    ConnectionClosed,
    ConnectPeer,
    ConnState,
    PeerAccepted,
    PeerConnected,
    PeerConnectFailed,
    Splice,
    TcpAllocationConfig,
    TcpEvent,
)
from ice.turn.tcp_client import BindState, ConnectionBinder

MAX_OPS = 32
"""Operations one input may run (bounds the time of one execution)."""

T0 = 1_000_000.0
"""The fixed clock every machine starts at."""

LAST: dict[str, Any] = {}
"""The machine each structured target drove last (tests read its counters to see how deep the corpus reaches)."""

REACHED: Counter[str] = Counter()
"""Paths of the harness itself the inputs reached (batches compared, binds done), for the same tests."""

DTS = (0.0, 0.001, 0.05, 0.5, 1.0, 5.0, 30.0, 60.0, 240.0, 299.0, 301.0, 540.0, 599.0, 601.0, 3600.0, 7200.0)
"""Clock steps that cross the timers that matter (pacing, retransmission, consent, refresh, expiry)."""


class FuzzFailure(AssertionError):
    """An invariant of the stack (not an exception it raised) did not hold."""


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise FuzzFailure(what)


class _Endpoint(Protocol):
    def handle_timeout(self, now: float) -> None: ...
    def next_timeout(self) -> float | None: ...
    def poll_transmit(self) -> Transmit | None: ...


def sendable(t: Transmit) -> None:
    """What the asyncio driver does with a transmit (``sendto``) must not raise for a reason other than OSError."""
    host, port = t.remote
    expect(isinstance(port, int) and 0 <= port <= 0xFFFF, f"a transmit to port {port!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise FuzzFailure(f"a transmit to {host!r}, not an IP address") from None
    expect(isinstance(t.data, bytes), "a transmit whose data is not bytes")


def own_stun(data: bytes) -> Message | None:
    """A STUN message the stack itself made must parse (its ChannelData and relayed payloads are not checked)."""
    if len(data) < 20 or data[0] >= 0x40 or data[4:8] != b"\x21\x12\xa4\x42":
        return None
    try:
        return parse(data)
    except StunParseError as exc:
        raise FuzzFailure(f"the stack sent a STUN message it cannot parse itself: {exc}") from None


def run_timers(ep: _Endpoint, now: float, drain: Callable[[], None]) -> None:
    """Fire the endpoint's timer as the driver does, until nothing is due at ``now``."""
    for _ in range(100):
        at = ep.next_timeout()
        if at is None or at > now:
            return
        ep.handle_timeout(max(at, now))
        drain()
    raise FuzzFailure(f"next_timeout() stays due at {now - T0:.3f}: the driver's timer would spin")


def _tid(r: Reader) -> bytes:
    return r.take(12).ljust(12, b"\x00")


def _address(r: Reader, known: tuple[a.Address, ...]) -> a.Address:
    kind = r.u8() % 6
    if kind < 3:
        return known[r.u8() % len(known)]
    if kind == 3:
        return r.ipv4(), r.u16()
    if kind == 4:
        return r.ipv6(), r.u16()
    return "::ffff:" + r.ipv4(), r.u16()  # IPv4-mapped: one more way to say an address


_TRAILERS = {a.AttributeType.MESSAGE_INTEGRITY, a.AttributeType.MESSAGE_INTEGRITY_SHA256,
             a.AttributeType.FINGERPRINT}
_CODES = [*sorted({int(t) for t in a.AttributeType} - _TRAILERS), 0x7FFF, 0xFFFF]


def _raw_attribute(r: Reader) -> a.Attribute:
    """Any code (a known one with a malformed value, mostly) with any value."""
    code = r.pick(_CODES) if r.flag() else r.u16()
    if code in _TRAILERS:
        code = 0x7FFE
    return a.UnknownAttribute(code, r.blob(80))


# ==================================================================================================== stun


STUN_KEY = short_term_key("fuzz")
_DECODABLE = sorted(set(a.ATTRIBUTES.values()) - {a.MessageIntegrity, a.MessageIntegritySha256, a.Fingerprint},
                    key=lambda c: c.TYPE)


def _outcome(scan: Callable[[bytes, bool], Any], data: bytes, legacy: bool) -> object:
    try:
        return scan(data, legacy)
    except StunParseError as exc:
        return ("error", str(exc))


def stun(data: bytes) -> None:
    """STUN parse (RFC 8489 §5, §6.3, §14): framing, FINGERPRINT, every attribute decoder, integrity checks, and
    a round trip of whatever parses. The C accelerator's framing walk and attribute decoder must agree with the
    pure-Python reference on every input (the reference is the instrumented code that guides the fuzzer)."""
    for legacy in (False, True):
        reference = _outcome(message._scan_py, data, legacy)
        if integrity._speedups is not None:
            accelerated = _outcome(integrity._speedups.scan, data, legacy)
            expect(accelerated == reference, f"C and Python framing disagree: {accelerated!r} != {reference!r}")
        try:
            m = parse(data, legacy=legacy)
        except StunParseError:
            expect(isinstance(reference, tuple) and reference[0] == "error", "parse() failed where _scan_py passed")
            continue
        try:
            m.error  # noqa: B018 (a property that decodes ERROR-CODE)
        except StunParseError:
            pass
        m.check_integrity(STUN_KEY)
        m.unknown_comprehension_required()
        repr(m)
        first = m._first or {}
        for cls in _DECODABLE:
            try:
                got: object = m.get(cls)
            except StunParseError as exc:
                got = ("error", str(exc))
            entry = first.get(cls.TYPE)
            if entry is None:
                expect(got is None, f"get({cls.__name__}) found an attribute that is not there")
                continue
            try:
                want: object = a.decode_attribute(cls.TYPE, m.raw[entry[1] : entry[1] + entry[2]], m.transaction_id)
            except StunParseError as exc:
                want = ("error", str(exc))
            expect(got == want and type(got) is type(want), f"get({cls.__name__}): {got!r} != {want!r}")
        try:
            attrs = m.attributes
        except StunParseError:
            continue
        if len(data) > 60_000:
            continue  # the re-encoded message with integrity and fingerprint could outgrow 16-bit lengths
        again = parse(Message(m.method, m.message_class, m.transaction_id, attrs).encode(STUN_KEY, fingerprint=True),
                      legacy=legacy)
        expect(again.attributes == attrs, "attributes do not survive encode/parse")
        expect(again.check_integrity(STUN_KEY), "MESSAGE-INTEGRITY of a re-encoded message does not check")
    is_stun(data)


# ============================================================================================= stun server


def stun_server(data: bytes) -> None:
    """The Binding server (RFC 8489 §6.3, RFC 5780 §6.1): any datagram, over IPv4 or IPv6, on any local address."""
    r = Reader(data)
    alternate = ("192.0.2.2", 3479) if r.flag() else None
    server = StunServer(StunServerConfig(("192.0.2.1", 3478), alternate, fingerprint=r.flag(), legacy=r.flag()))
    local = r.pick((("192.0.2.1", 3478), ("192.0.2.2", 3479), ("192.0.2.1", 3479), ("192.0.2.2", 3478)))
    remote = _address(r, (("198.51.100.1", 40000), ("2001:db8::1", 40000)))
    pad = r.u16()
    body = r.rest()
    if pad >= 0xF000:  # PADDING near STUN's size limit (RFC 5780 §7.6), out of reach of byte-level mutation
        size = min((pad - 0xF000) * 16, 0xFFFF - 4 - len(body)) & ~3
        body += b"\x00\x26" + size.to_bytes(2, "big") + bytes(size)
    wrapped = b"\x00\x01" + len(body).to_bytes(2, "big")[-2:] + b"\x21\x12\xa4\x42" + bytes(12) + body
    for datagram in (body, wrapped):
        server.handle_datagram(T0, local, remote, datagram)
        while (t := server.poll_transmit()) is not None:
            sendable(t)
            own_stun(t.data)
    # The batch path (the driver's recvmmsg batches, docs/stun.md): bare Binding requests answered in one pass by
    # the C accelerator's binding_answers, anything else through handle_datagram, in order. It must answer
    # exactly as one datagram at a time does, and the bare answer must be the general path's, byte for byte.
    bare = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + body[:12].ljust(12, b"\x00")
    other = ("2001:db8::2", 40001) if ":" in remote[0] else ("198.51.100.9", 1)
    batch = [(remote, bare), (remote, body), (remote, bare), (other, bare), (remote, wrapped), (remote, bare),
             (other, body), (remote, bare)]
    config = server.config
    one, many = StunServer(config), StunServer(config)
    for source, datagram in batch:
        one.handle_datagram(T0, local, source, datagram)
    single = one.poll_transmits()
    many.handle_datagrams(T0, local, batch)
    batched = many.poll_transmits()
    expect(batched == single, "handle_datagrams answers otherwise than one datagram at a time")
    expect(many.stats == one.stats, f"handle_datagrams counts otherwise: {many.stats} != {one.stats}")
    for t in batched:
        sendable(t)
        own_stun(t.data)
    general = StunServer(config).handle_general(local, remote, bare)
    expect(general == one.handle(local, remote, bare), "the bare Binding answer is not the general path's")


# ============================================================================================= TURN server


LISTEN = ("192.0.2.1", 3478)
CLIENTS: tuple[a.Address, ...] = (("198.51.100.1", 40000), ("198.51.100.2", 40001), ("2001:db8::10", 40002))
PEERS: tuple[a.Address, ...] = (("203.0.113.5", 5000), ("203.0.113.6", 6000), ("2001:db8:1::9", 7000),
                                ("127.0.0.1", 9000), ("198.51.100.1", 40000))
REALM = "icelab"
USERS = {"user": "pass", "other": "word"}
_LONG_KEYS = {u: long_term_key(u, REALM, p) for u, p in USERS.items()}
_WRONG_KEY = long_term_key("user", REALM, "not-the-password")
_METHODS = (Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND, Method.SEND,
            Method.BINDING, Method.DATA, Method.CONNECT, Method.CONNECTION_BIND, Method.CONNECTION_ATTEMPT)
"""Appended to, never reordered: a seed names a method by its index."""
_CLASSES = (MessageClass.REQUEST, MessageClass.REQUEST, MessageClass.REQUEST, MessageClass.INDICATION,
            MessageClass.SUCCESS, MessageClass.ERROR)
_CHANNELS = (0x4000, 0x4001, 0x4FFF, 0x5000, 0x7FFF, 0x8000, 0x3FFF, 0xFFFF)
_LIFETIMES = (0, 1, 599, 600, 601, 3600, 3601, 0xFFFFFFFF)


class _Ports:
    """The relay-address allocator the I/O layer would be: a few ports, then exhaustion (508)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.next = 50000
        self.live: set[a.Address] = set()

    def reserve(self, family: int) -> a.Address | None:
        if len(self.live) >= self.limit:
            return None
        host = "2001:db8::1" if family == 6 else "192.0.2.1"
        while (host, self.next) in self.live:  # reserve_at took it: a bound address is never handed out twice
            self.next += 1
        addr = (host, self.next)
        self.next += 1
        self.live.add(addr)
        return addr

    def reserve_at(self, relayed: a.Address) -> a.Address | None:
        """The given address (EVEN-PORT's pair, RFC 8656 §7.2) unless taken or past the limit."""
        if relayed in self.live or len(self.live) >= self.limit:
            return None
        self.live.add(relayed)
        return relayed

    def release(self, relayed: a.Address) -> None:
        expect(relayed in self.live, f"relay address {relayed} released but not reserved (or released twice)")
        self.live.discard(relayed)


class _TcpPorts(_Ports):
    """Relay ports that also listen on TCP (RFC 6062 §5.1: the server serves TCP allocations), another port
    space: the listening sockets are counted apart and must be closed exactly once too."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.next_tcp = 60000
        self.live_tcp: set[a.Address] = set()

    def reserve_tcp(self, family: int) -> a.Address | None:
        if len(self.live_tcp) >= self.limit:
            return None
        addr = ("2001:db8::1" if family == 6 else "192.0.2.1", self.next_tcp)
        self.next_tcp += 1
        self.live_tcp.add(addr)
        return addr

    def release_tcp(self, relayed: a.Address) -> None:
        expect(relayed in self.live_tcp, f"TCP relay address {relayed} released but not reserved (or twice)")
        self.live_tcp.discard(relayed)


CIDS: list[int] = []
"""The CONNECTION-IDs the TURN server of the input being run has given out (RFC 6062 §6.2.1; they are random)."""


def turn_attribute(r: Reader) -> a.Attribute:
    """One attribute for a TURN request: a well-formed one with a fuzzed value, or raw bytes under any code."""
    kind = r.u8() % 16
    if kind == 14:
        return a.ConnectionId(CIDS[r.u8() % len(CIDS)] if CIDS and r.flag() else r.u32())
    if kind == 0:
        return a.Lifetime(r.pick(_LIFETIMES) if r.flag() else r.u32())
    if kind == 1:
        return a.ChannelNumber(r.pick(_CHANNELS) if r.flag() else r.u16())
    if kind in (2, 3):
        return a.XorPeerAddress(*_address(r, PEERS))
    if kind == 4:
        return a.RequestedTransport(r.pick((17, 6, 0, 255)))
    if kind == 5:
        return a.RequestedAddressFamily(r.pick((1, 2)))
    if kind == 6:
        return a.AdditionalAddressFamily(r.pick((1, 2)))
    if kind == 7:
        return a.EvenPort(r.flag())
    if kind == 8:
        return a.DontFragment()
    if kind == 9:
        return a.ReservationToken(r.u64())
    if kind == 10:
        return a.Data(r.blob(600))
    if kind == 11:
        return r.pick((a.Username, a.Realm, a.Nonce, a.Software))(r.text(100))
    if kind == 12:
        return a.XorMappedAddress(*_address(r, CLIENTS))
    if kind == 13:
        return a.ChangeRequest(r.flag(), r.flag())
    return _raw_attribute(r)


def turn_request(r: Reader, server: TurnServer, now: float, tids: list[bytes], client: a.Address) -> bytes:
    """A TURN message with fuzzed method, class and attributes, authenticated (or not) as ``r`` says.

    Fields, in order (fuzz/seeds.py writes them): method (u8: one of _METHODS, or from 0xE0 a raw u16), class,
    transaction ID (u8: ``& 3 == 0`` reuses a recent one, else 12 bytes follow), attribute count and attributes,
    authentication (u8 % 8: 0 valid, 1 wrong key, 2 stale nonce, 3-5 another or unknown user, 6 USERNAME without
    MESSAGE-INTEGRITY, 7 none), then for 0-5 the user, nonce and realm choices (u8 each: 0 means fuzzed text),
    where the credentials go, the integrity algorithm and whether FINGERPRINT follows."""
    sel = r.u8()
    method = _METHODS[sel % len(_METHODS)] if sel < 0xE0 else r.u16() & 0xFFF
    cls = r.pick(_CLASSES)
    sel = r.u8()
    tid = tids[(sel >> 2) % len(tids)] if tids and sel & 3 == 0 else _tid(r)
    attrs = [turn_attribute(r) for _ in range(r.u8() % 6)]
    auth = r.u8() % 8
    key: IntegrityKey | None = None
    if auth < 6:
        who = r.u8()
        user = "user" if auth < 3 else ("other", "nobody", "user")[who % 3]
        nonce = r.text(40) if r.u8() == 0 else server._nonce(now - 7200 if auth == 2 else now, client)
        realm = r.text(40) if r.u8() == 0 else REALM
        key = _WRONG_KEY if auth == 1 else _LONG_KEYS.get(user, _WRONG_KEY)
        creds: list[a.Attribute] = [a.Username(user), a.Realm(realm), a.Nonce(nonce)]
        attrs = [*attrs, *creds] if r.u8() & 1 == 0 else [*creds, *attrs]
    elif auth == 6:
        attrs.append(a.Username("user"))
    msg = Message(method, cls, tid, attrs)
    tids.append(tid)
    del tids[:-8]
    if key is None:
        return msg.encode(fingerprint=r.flag())
    return msg.encode(key, integrity=r.pick((Integrity.SHA1, Integrity.SHA1, Integrity.SHA256, Integrity.BOTH)),
                      fingerprint=r.u8() % 4 != 0)


def _turn_invariants(server: TurnServer, ports: _Ports) -> None:
    relays = {alloc.relayed for alloc in server.allocations.values() if not alloc.tcp}  # TCP ones: _tcp_invariants
    expect(relays == set(server.by_relay), "by_relay and allocations disagree")
    reserved = {relayed for relayed, _ in server._reservations.values()}  # EVEN-PORT's next port (RFC 8656 §7.2)
    expect(relays | reserved == ports.live, "relay addresses held and allocations (or reservations) disagree")
    for alloc in server.allocations.values():
        if alloc.tcp:
            continue
        expect(server.by_relay[alloc.relayed] is alloc, "by_relay points at another allocation")
        expect(len(alloc.channels) == len(alloc.by_peer), "channels and by_peer differ in size")
        for number, (peer, _) in alloc.channels.items():
            expect(alloc.by_peer.get(peer) == number, "a channel's peer maps to another channel")


class _TcpIo:
    """What the I/O layer of RFC 6062 holds (ice/aio/turn_tcp.py): the peer data connections it was asked to open
    or reported accepting, until the core says CloseConnection (or the I/O reported the connect failed)."""

    def __init__(self) -> None:
        self.links: set[tuple[a.Address, a.Address]] = set()
        self.connecting: set[tuple[a.Address, a.Address]] = set()
        self.exact = True
        """False once the input fed an event no I/O layer would report (the model no longer applies)."""

    def intent(self, server: TurnServer, intent: ConnectPeer | Splice | CloseConnection) -> None:
        pair = (intent.relayed, intent.peer)
        if isinstance(intent, ConnectPeer):
            expect(intent.relayed in server.tcp.by_relay, "ConnectPeer from a relayed address that is not a TCP "
                                                          "allocation's")
            expect(not self.exact or pair not in self.links, "ConnectPeer for a connection the I/O layer holds")
            self.links.add(pair)
            self.connecting.add(pair)
        elif isinstance(intent, Splice):
            conn = server.tcp.by_pair.get(pair)
            expect(conn is not None and conn.state is ConnState.BOUND, "Splice of a connection that is not bound")
            expect(not self.exact or pair in self.links, "Splice of a connection the I/O layer does not hold")
            expect((intent.local, intent.client) in server._stream_clients, "Splice to a client that is not a "
                                                                            "connected stream")
        else:
            self.links.discard(pair)
            self.connecting.discard(pair)

    def reported(self, event: TcpEvent) -> None:
        """The I/O layer reported ``event``: a failed connect is gone from it; the rest it holds until closed."""
        pair = (event.relayed, event.peer)
        if isinstance(event, PeerConnectFailed):
            self.links.discard(pair)
            self.connecting.discard(pair)
        elif isinstance(event, PeerConnected):
            self.connecting.discard(pair)
        elif isinstance(event, PeerAccepted):
            self.links.add(pair)


def _tcp_invariants(server: TurnServer, ports: _Ports, io: _TcpIo) -> None:
    """RFC 6062: TCP allocations, their listening sockets, their connections and what the I/O layer holds agree;
    no connection outlives its allocation; each waiting connection's deadline is on the server's timer."""
    tcp = server.tcp
    tcp_allocs = {alloc.relayed: alloc for alloc in server.allocations.values() if alloc.tcp}
    expect(set(tcp.by_relay) == set(tcp_allocs), "TCP allocations and tcp.by_relay disagree")
    if isinstance(ports, _TcpPorts):
        expect(ports.live_tcp == set(tcp_allocs), "listening TCP relay addresses and TCP allocations disagree")
    expect(not set(tcp_allocs) & set(server.by_relay), "a TCP allocation in the UDP relays' table")
    expect(len(tcp.by_pair) == len(tcp.conns), "tcp.conns and tcp.by_pair differ in size")
    per_alloc: dict[int, int] = {}
    per_user: dict[str, int] = {}
    for cid, conn in tcp.conns.items():
        expect(conn.cid == cid and tcp.by_pair.get(conn.pair) is conn, "a connection under another id or pair")
        expect(tcp_allocs.get(conn.alloc.relayed) is conn.alloc, "a peer data connection outlived its allocation")
        expect((conn.deadline is None) == (conn.state is ConnState.BOUND), f"a {conn.state} connection's deadline")
        expect(conn.request is None or conn.state is ConnState.CONNECTING, "a Connect unanswered past connecting")
        per_alloc[id(conn.alloc)] = per_alloc.get(id(conn.alloc), 0) + 1
        per_user[conn.alloc.username] = per_user.get(conn.alloc.username, 0) + 1
    expect(max(per_alloc.values(), default=0) <= server.config.tcp.max_connections, "connections over quota")
    expect(max(per_user.values(), default=0) <= server.config.tcp.user_connections, "user connections over quota")
    deadlines = tcp.deadlines()
    if deadlines:
        at = server.next_timeout()
        expect(at is not None and at <= min(deadlines), "a connection's deadline is not on the server's timer")
    if io.exact:
        expect(io.links == set(tcp.by_pair), f"the I/O layer holds {sorted(io.links)}, the core "
                                             f"{sorted(tcp.by_pair)}")
        expect(io.connecting == {c.pair for c in tcp.conns.values() if c.state is ConnState.CONNECTING},
               "connections being opened disagree")


def _signed_allocate(server: TurnServer, now: float, client: a.Address, user: str, tids: list[bytes]) -> bytes:
    tid = bytes([len(tids), *client[1].to_bytes(2, "big")]) * 4
    tids.append(tid)
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, tid,
                  [a.RequestedTransport(17), a.Lifetime(600), a.Username(user), a.Realm(REALM),
                   a.Nonce(server._nonce(now, client))])
    return msg.encode(_LONG_KEYS[user], fingerprint=True)


def _signed(server: TurnServer, now: float, method: int, attrs: list[a.Attribute], tids: list[bytes]) -> bytes:
    """A request of CLIENTS[0]'s, signed with a nonce the server made for that source (RFC 8489 §9.2.4)."""
    tid = bytes([0xA0 + len(tids)]) * 12
    tids.append(tid)
    msg = Message(method, MessageClass.REQUEST, tid,
                  [*attrs, a.Username("user"), a.Realm(REALM), a.Nonce(server._nonce(now, CLIENTS[0]))])
    return msg.encode(_LONG_KEYS["user"], fingerprint=True)


def _same(t: Transmit) -> tuple[a.Address, a.Address | None, bytes]:
    """A transmit as two runs of the same input give it: an indication's transaction ID is random (RFC 8489 §6),
    and so its FINGERPRINT."""
    data = t.data
    to_client = t.local is not None and t.local[1] in (3478, 3479)  # (from a relayed address: a peer's payload)
    if to_client and own_stun(data) is not None and data[0] & 0x01 == 0 and data[1] & 0x10:  # an indication
        data = data[:8] + data[20:-8]
    return t.remote, t.local, data


def _signed_as(server: TurnServer, now: float, client: a.Address, user: str, method: int, attrs: list[a.Attribute],
               tids: list[bytes], key: IntegrityKey | None = None) -> bytes:
    """A request of ``client``'s as ``user``, signed with a nonce the server made for that source (``key``: another
    key than the user's)."""
    tid = bytes([0xB0 + len(tids) % 16, *client[1].to_bytes(2, "big")]) * 4
    tids.append(tid)
    del tids[:-8]
    msg = Message(method, MessageClass.REQUEST, tid,
                  [*attrs, a.Username(user), a.Realm(REALM), a.Nonce(server._nonce(now, client))])
    return msg.encode(key or _LONG_KEYS[user], fingerprint=True)


_DATA_PORTS = (41000, 41001, 41002)
"""Ports of the clients' data connections (RFC 6062 §4.4: a new TCP connection to the server per peer)."""


def _tcp_event(r: Reader, server: TurnServer, io: _TcpIo) -> TcpEvent:
    """What the I/O layer reports: a connection asked for came up or failed, a peer connected to a relayed
    address, a connection ended; or (rarely) an event no I/O layer would report, for the core's robustness."""
    kind = r.u8() % 8
    connecting, links = sorted(io.connecting), sorted(io.links - io.connecting)
    if kind in (0, 1) and connecting:
        pair = connecting[r.u8() % len(connecting)]
        return PeerConnected(*pair) if kind == 0 else PeerConnectFailed(*pair, "refused")
    if kind == 2 and links:
        return ConnectionClosed(*links[r.u8() % len(links)])
    if kind < 7:  # a peer connects to a relayed TCP address (a permitted one, mostly)
        relays = [*server.tcp.by_relay, ("192.0.2.1", 60999)]
        relayed = relays[r.u8() % len(relays)]
        peer = _address(r, PEERS)
        if (relayed, peer) in io.links:  # a TCP 4-tuple is one connection
            peer = (peer[0], (peer[1] + 1) % 0x10000)
        if (relayed, peer) not in io.links:
            return PeerAccepted(relayed, peer)
    io.exact = False
    pairs = [*server.tcp.by_pair, (("192.0.2.1", 60999), PEERS[0])]
    pair = pairs[r.u8() % len(pairs)]
    return r.pick((PeerConnected, PeerConnectFailed, PeerAccepted, ConnectionClosed))(*pair)


def _big(r: Reader, server: TurnServer, now: float, deliver: Callable[[a.Address, a.Address, bytes], None]) -> None:
    """Sizes up to the limits of UDP and of STUN's 16-bit length, which byte-level mutation of a 4 KiB input never
    reaches: a peer's datagram to a relay address, a Binding request with PADDING, a Send indication's DATA."""
    kind, size = r.u8() % 3, r.u16()
    if kind == 0:
        relays = [*server.by_relay, ("192.0.2.1", 59999)]
        deliver(relays[r.u8() % len(relays)], _address(r, PEERS), bytes(min(size, 65527)))
    elif kind == 1:
        size = min(size, 0xFFFF - 4) & ~3
        request = Message(Method.BINDING, MessageClass.REQUEST, _tid(r), [a.Padding(bytes(size))])
        deliver(LISTEN, r.pick(CLIENTS), request.encode())
    else:
        data = a.Data(bytes(min(size, 0xFFFF - 4 - 24 - 8)))
        send = Message(Method.SEND, MessageClass.INDICATION, _tid(r), [a.XorPeerAddress(*_address(r, PEERS)), data])
        deliver(LISTEN, r.pick(CLIENTS), send.encode())


def turn_server(data: bytes) -> None:
    """The TURN server (RFC 8656 §5-§12) through its sans-IO entry points: datagrams from clients and from peers,
    stream clients (RFC 8656 §3.1) with framed input, the clock. Set-up flags build allocations, a permission and
    a channel first, so the operations after them reach the authenticated handlers and the relay paths."""
    r = Reader(data)
    flags = r.u8()
    ports = _Ports(limit=1 + flags % 4) if flags & 0x80 else _TcpPorts(limit=1 + flags % 4)
    allowed = ("127.0.0.0/8",) if flags & 0x40 else ()
    tcp = TcpAllocationConfig(max_connections=3, user_connections=4, connect_needs_permission=not flags & 0x20)
    server = TurnServer(TurnServerConfig(LISTEN, realm=REALM, users=dict(USERS), user_quota=2,
                                         allowed_peers=allowed, tcp=tcp), ports, secret=b"fuzz-secret-0123")
    LAST["turn-server"] = server
    now = T0
    tids: list[bytes] = []
    io = _TcpIo()
    CIDS.clear()

    def check(out: list[Transmit]) -> None:
        for t in out:
            sendable(t)
            if t.local not in ports.live:  # to a client (what goes from a relay address is the peers' payload)
                m = own_stun(t.data)
                if m is not None and m.method in (Method.CONNECT, Method.CONNECTION_ATTEMPT):
                    cid = m.get(a.ConnectionId)
                    if cid is not None:
                        CIDS.append(cid.number)
                        del CIDS[:-8]

    def drain() -> None:
        check(server.poll_transmits())
        while (intent := server.tcp.next_intent()) is not None:
            io.intent(server, intent)

    def invariants() -> None:
        _turn_invariants(server, ports)
        _tcp_invariants(server, ports, io)

    def deliver(local: a.Address, remote: a.Address, datagram: bytes) -> None:
        server.handle_datagram(now, local, remote, datagram)
        drain()
        invariants()

    def batch(local: a.Address, datagrams: list[tuple[a.Address, bytes]]) -> None:
        """handle_datagrams (the relay's fast path for routes the general path has decided, in C) must do what
        handle_datagram does one datagram at a time: the same transmits, counters, intents and tables."""
        twin = copy.deepcopy(server)
        REACHED["turn-server-batch"] += 1
        server.handle_datagrams(now, local, datagrams)
        for remote, datagram in datagrams:
            twin.handle_datagram(now, local, remote, datagram)
        out, want = server.poll_transmits(), twin.poll_transmits()
        expect([_same(t) for t in out] == [_same(t) for t in want],
               f"handle_datagrams sent {len(out)} datagrams, one at a time {len(want)}, or others")
        expect(server.stats == twin.stats, f"handle_datagrams counts otherwise: {server.stats} != {twin.stats}")
        expect(list(server.tcp.intents) == list(twin.tcp.intents), "handle_datagrams' intents differ")
        expect(set(server.allocations) == set(twin.allocations), "handle_datagrams' allocations differ")
        check(out)
        drain()
        invariants()

    if flags & 0x04:
        server.stream_opened(LISTEN, CLIENTS[0])
    if flags & 0x01:
        deliver(LISTEN, CLIENTS[0], _signed_allocate(server, now, CLIENTS[0], "user", tids))
        if flags & 0x02:
            deliver(LISTEN, CLIENTS[0], _signed(server, now, Method.CREATE_PERMISSION,
                                                [a.XorPeerAddress(*PEERS[0])], tids))
            deliver(LISTEN, CLIENTS[0], _signed(server, now, Method.CHANNEL_BIND,
                                                [a.ChannelNumber(0x4000), a.XorPeerAddress(*PEERS[1])], tids))
    if flags & 0x08:
        deliver(LISTEN, CLIENTS[2], _signed_allocate(server, now, CLIENTS[2], "user", tids))
    if flags & 0x10:
        deliver(LISTEN, CLIENTS[1], _signed_allocate(server, now, CLIENTS[1], "other", tids))

    for _ in range(MAX_OPS):
        if not r.remaining():
            break
        op = r.u8() % 13
        if op == 0:
            deliver(r.pick((LISTEN, LISTEN, LISTEN, ("192.0.2.1", 3479))), r.pick(CLIENTS), r.blob())
        elif op == 1:
            relays = [*server.by_relay, ("192.0.2.1", 59999)]
            deliver(relays[r.u8() % len(relays)], _address(r, PEERS), r.blob())
        elif op == 2:
            client = r.pick(CLIENTS)
            deliver(LISTEN, client, turn_request(r, server, now, tids, client))
        elif op == 3:
            number = r.pick(_CHANNELS[:5]) if r.flag() else 0x4000 | (r.u16() & 0x3FFF)
            payload = r.blob()
            length = len(payload) if r.u8() % 4 else r.u16()
            frame = number.to_bytes(2, "big") + length.to_bytes(2, "big") + payload
            deliver(LISTEN, r.pick(CLIENTS), frame + b"\x00" * (-len(frame) & 3) if r.flag() else frame)
        elif op == 4:
            now += r.pick(DTS) if r.u8() % 8 else r.u32() / 1000
            run_timers(server, now, drain)
            invariants()
        elif op == 5:
            client = r.pick(CLIENTS)
            if r.flag():
                server.stream_opened(LISTEN, client)
            else:
                server.stream_closed(LISTEN, client)
            drain()
            invariants()
        elif op == 6:
            client = r.pick(CLIENTS)
            server.stream_opened(LISTEN, client)
            buffer = bytearray(r.blob(4000))
            try:
                frames = split_frames(buffer)
            except ValueError:
                frames = []
            for frame in frames:
                deliver(LISTEN, client, frame)
        elif op == 7:
            server.handle_timeout(now)  # an early call: a no-op for whatever is not due
            drain()
            invariants()
        elif op == 8:
            _big(r, server, now, deliver)
        elif op == 9:  # a TCP allocation on a control connection, with permissions (RFC 6062 §4.1)
            client, user = r.pick(CLIENTS), r.pick(("user", "user", "other"))
            server.stream_opened(LISTEN, client)
            deliver(LISTEN, client, _signed_as(server, now, client, user, Method.ALLOCATE,
                                                [a.RequestedTransport(6), a.Lifetime(600)], tids))
            peers = [PEERS[i] for i in range(3) if r.flag()]
            if peers:
                deliver(LISTEN, client, _signed_as(server, now, client, user, Method.CREATE_PERMISSION,
                                                    [a.XorPeerAddress(*p) for p in peers], tids))
        elif op == 10:  # Connect on a control connection, or ConnectionBind on a data connection (RFC 6062 §4.3-4)
            sel = r.u8()
            host = r.pick(CLIENTS)[0]
            client = (host, r.pick(_DATA_PORTS)) if sel & 1 else r.pick(CLIENTS)
            if sel & 2 == 0:
                server.stream_opened(LISTEN, client)
            if sel & 4 == 0:
                attrs: list[a.Attribute] = [a.XorPeerAddress(*_address(r, PEERS))]
                method = Method.CONNECT
            else:
                cid = CIDS[r.u8() % len(CIDS)] if CIDS and r.u8() % 8 else r.u32()
                attrs, method = [a.ConnectionId(cid)], Method.CONNECTION_BIND
            if sel & 8:
                attrs.append(turn_attribute(r))
            user = ("user", "user", "other", "user")[sel >> 4 & 3]
            key = _WRONG_KEY if sel >> 6 == 3 else None
            deliver(LISTEN, client, _signed_as(server, now, client, user, method, attrs, tids, key))
            if sel & 0x20 and client[1] in _DATA_PORTS:
                server.stream_closed(LISTEN, client)  # the data connection ends
                drain()
                invariants()
        elif op == 11:
            event = _tcp_event(r, server, io)
            io.reported(event)
            server.tcp.handle_event(now, event)
            drain()
            invariants()
        else:  # a batch on one address: ChannelData and its relayed answers, mostly on routes already decided
            relays = [*server.by_relay]
            to_client = bool(relays) and r.flag()
            local = relays[r.u8() % len(relays)] if to_client else LISTEN
            alloc = server.by_relay[local] if to_client else None
            datagrams: list[tuple[a.Address, bytes]] = []
            for _ in range(1 + r.u8() % 12):
                kind = r.u8() % 4
                if kind == 0 and datagrams:
                    datagrams.append(datagrams[-1])
                elif alloc is not None:
                    peers = [*alloc.by_peer, *PEERS[:2]]
                    datagrams.append((peers[r.u8() % len(peers)] if kind < 3 else _address(r, PEERS), r.blob(300)))
                elif kind < 3:
                    owners = [(al.client, n) for al in server.allocations.values() for n in al.channels]
                    client, number = (owners[r.u8() % len(owners)] if owners and kind < 2
                                      else (r.pick(CLIENTS), r.pick(_CHANNELS[:5])))
                    payload = r.blob(300)
                    length = len(payload) if r.u8() % 8 else r.u16() % 400
                    datagrams.append((client, number.to_bytes(2, "big") + length.to_bytes(2, "big") + payload))
                else:
                    datagrams.append((r.pick(CLIENTS), r.blob(300)))
            batch(local, datagrams)
        server.next_timeout()


# ============================================================================================= TURN client


SERVER = ("192.0.2.1", 3478)
ALTERNATE = ("192.0.2.2", 3478)
CLIENT_LOCAL = ("198.51.100.1", 40000)
_ERRORS = (300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 486, 500, 508, 446, 447)
"""Appended to, never reordered: a seed names a code by its index."""


def _requests(out: list[bytes], pending: list[tuple[bytes, int]]) -> None:
    for datagram in out:
        m = own_stun(datagram)
        if m is not None and m.message_class is MessageClass.REQUEST:
            pending.append((m.transaction_id, m.method))
    del pending[:-16]


def client_response(r: Reader, tid: bytes, method: int, key: IntegrityKey | None) -> bytes:
    """A response from "the server" to one of the client's requests, fields fuzzed."""
    if r.u8() % 8 == 0:
        method = r.u16() & 0xFFF
    error = r.flag()
    attrs: list[a.Attribute] = []
    if error:
        if r.u8() % 8:
            attrs.append(a.ErrorCode(r.pick(_ERRORS), r.text(40)))
        if r.u8() % 4:
            attrs += [a.Realm(REALM if r.flag() else r.text(40)), a.Nonce(r.text(40) or "nonce")]
        if r.flag():
            attrs.append(a.AlternateServer(*_address(r, (ALTERNATE, SERVER))))
    else:
        if r.u8() % 8:
            attrs.append(a.XorRelayedAddress(*_address(r, (("192.0.2.1", 50000), ("2001:db8::1", 50000)))))
        if r.flag():
            attrs.append(a.XorMappedAddress(*_address(r, (CLIENT_LOCAL,))))
        if r.flag():
            attrs.append(a.Lifetime(r.pick(_LIFETIMES) if r.flag() else r.u32()))
        if method == Method.CONNECT and r.u8() % 4:  # RFC 6062 §4.3: the new connection's CONNECTION-ID
            attrs.append(a.ConnectionId(r.u32()))
    for _ in range(r.u8() % 3):
        attrs.append(turn_attribute(r))
    msg = Message(method, MessageClass.ERROR if error else MessageClass.SUCCESS, tid, attrs)
    sign = r.u8() % 4
    if sign == 0 or key is None:
        return msg.encode(fingerprint=r.flag())
    return msg.encode(key if sign != 1 else _WRONG_KEY, fingerprint=r.flag())


def turn_client(data: bytes) -> None:
    """The TURN client (RFC 8656 §5-§12, RFC 8489 §9.2): responses to its own requests with fuzzed codes and
    attributes (401/438 with REALM and NONCE, 300 with ALTERNATE-SERVER, 437, successes with fuzzed addresses and
    lifetimes), Data indications, ChannelData, raw datagrams, its API and the clock."""
    r = Reader(data)
    flags = r.u8()
    transport = "tcp" if flags & 0x18 else "udp"
    relay = "tcp" if flags & 0x10 else "udp"  # a TCP allocation (RFC 6062 §4.1)
    client = TurnClient(TurnClientConfig(SERVER, "user", "pass", transport=transport, relay_transport=relay),
                        CLIENT_LOCAL)
    LAST["turn-client"] = client
    CIDS.clear()
    now = T0
    pending: list[tuple[bytes, int]] = []
    connects: set[a.Address] = set()
    """Peers the client sent a Connect for (RFC 6062 §4.3)."""

    def drain() -> None:
        out = []
        while (t := client.poll_transmit()) is not None:
            sendable(t)
            expect(t.remote == client.server, "the client sends somewhere else than its server")
            out.append(t.data)
            m = own_stun(t.data)
            if m is not None and m.method == Method.CONNECT:
                expect(relay == "tcp", "a Connect from a client without a TCP allocation")
                peer = m.get(a.XorPeerAddress)
                if peer is not None:
                    connects.add(peer.address)
        _requests(out, pending)
        while (event := client.next_event()) is not None:
            if isinstance(event, (PeerConnectionReady, ClientConnectFailed)):
                expect(event.peer in connects, f"{type(event).__name__} for a peer the client never connected to")
            elif isinstance(event, ConnectionAttempt):
                CIDS.append(event.connection_id)
                del CIDS[:-8]
            if isinstance(event, PeerConnectionReady):
                CIDS.append(event.connection_id)
                del CIDS[:-8]

    def bind(r: Reader) -> None:
        """A client data connection's ConnectionBind (RFC 6062 §4.4) with the allocation's credentials, and the
        server's answers: success, or 401/438 with a new nonce (sent again), or another error."""
        creds = client.bind_credentials()
        cid = CIDS[r.u8() % len(CIDS)] if CIDS and r.u8() % 8 else r.u32()
        binder = ConnectionBinder("user", "pass", cid, *(creds if creds and r.u8() % 4 else (None, None)))
        sent = 1
        request = own_stun(binder.request())
        expect(request is not None and request.method == Method.CONNECTION_BIND, "ConnectionBind is not one")
        for _ in range(3):
            assert request is not None
            if r.u8() % 8 == 0:
                answer = r.blob()
            else:
                error = r.u8() % 3
                tid = request.transaction_id if r.u8() % 8 else _tid(r)
                attrs: list[a.Attribute] = []
                if error:
                    attrs.append(a.ErrorCode(r.pick((401, 438, 400, 441, 500)), r.text(20)))
                    if r.u8() % 4:
                        attrs += [a.Realm(REALM if r.flag() else r.text(40)), a.Nonce(r.text(40) or "n")]
                msg = Message(Method.CONNECTION_BIND if r.u8() % 8 else r.u16() & 0xFFF,
                              MessageClass.ERROR if error else MessageClass.SUCCESS, tid, attrs)
                key = (None, _WRONG_KEY, _LONG_KEYS["user"], _LONG_KEYS["user"])[r.u8() % 4]
                answer = msg.encode(key, fingerprint=r.flag())
            state = binder.receive(answer)
            REACHED[f"turn-client-bind-{state.value}"] += 1
            if state is not BindState.SENT:
                expect((state is BindState.FAILED) == (binder.error is not None), "a bind's state and error")
                return
            sent += 1
            expect(sent <= 3, "ConnectionBind sent more often than its attempts allow")
            request = own_stun(binder.request())
            expect(request is not None and request.has(a.AttributeType.CONNECTION_ID), "a ConnectionBind again")

    def deliver(datagram: bytes) -> None:
        client.handle_datagram(now, CLIENT_LOCAL, client.server, datagram)
        drain()

    def answer(tid: bytes, method: int, attrs: list[a.Attribute], key: IntegrityKey | None,
               cls: MessageClass = MessageClass.SUCCESS) -> None:
        deliver(Message(method, cls, tid, attrs).encode(key, fingerprint=True))

    if flags & 0x01:  # allocate through the 401 round trip (RFC 8489 §9.2.3)
        client.allocate(now)
        drain()
        tid, method = pending.pop()
        answer(tid, method, [a.ErrorCode(401, "Unauthorized"), a.Realm(REALM), a.Nonce("n0nce")], None,
               MessageClass.ERROR)
        if pending:
            tid, method = pending.pop()
            answer(tid, method, [a.XorRelayedAddress("192.0.2.1", 50000), a.XorMappedAddress(*CLIENT_LOCAL),
                                 a.Lifetime(600)], _LONG_KEYS["user"])
        if flags & 0x02:
            client.bind_channel(now, PEERS[0])
            client.create_permission(now, PEERS[1])
            drain()
            for tid, method in pending[-2:]:
                answer(tid, method, [], _LONG_KEYS["user"])
            pending.clear()

    for _ in range(MAX_OPS):
        if not r.remaining():
            break
        op = r.u8() % 10
        if op == 0:
            deliver(r.blob())
        elif op in (1, 2):
            if pending and r.u8() % 8:
                tid, method = pending[r.u8() % len(pending)]
            else:
                tid, method = _tid(r), r.pick(_METHODS)
            deliver(client_response(r, tid, method, client._key))
        elif op == 3:
            attrs: list[a.Attribute] = []
            if r.u8() % 4:
                attrs.append(a.XorPeerAddress(*_address(r, PEERS)))
            if r.u8() % 4:
                attrs.append(a.Data(r.blob()))
            deliver(Message(Method.DATA, MessageClass.INDICATION, _tid(r), attrs).encode(fingerprint=r.flag()))
        elif op == 4:
            numbers = [*client.channels.values(), 0x4000, 0x7FFF]
            number = numbers[r.u8() % len(numbers)]
            payload = r.blob()
            length = len(payload) if r.u8() % 4 else r.u16()
            deliver(number.to_bytes(2, "big") + length.to_bytes(2, "big") + payload)
        elif op == 5:
            now += r.pick(DTS) if r.u8() % 8 else r.u32() / 1000
            run_timers(client, now, drain)
        elif op == 8:  # a peer connected to the TCP relayed address (RFC 6062 §4.4)
            attrs = []
            if r.u8() % 8:
                attrs.append(a.XorPeerAddress(*_address(r, PEERS)))
            if r.u8() % 8:
                attrs.append(a.ConnectionId(r.u32()))
            for _ in range(r.u8() % 2):
                attrs.append(turn_attribute(r))
            deliver(Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, _tid(r), attrs).encode(
                fingerprint=r.flag()))
        elif op == 9:
            bind(r)
        else:
            call = r.u8() % 7
            peer = _address(r, PEERS)
            if call == 6:
                client.connect(now, peer)
            elif call == 0:
                client.create_permission(now, peer)
            elif call == 1:
                if len(client.channels) < 16:
                    client.bind_channel(now, peer)
            elif call == 2:
                client.send(now, peer, r.blob())
            elif call == 3:
                client.close(now)
            elif call == 4 and client.state.value in ("idle", "failed"):
                client.allocate(now)
            else:
                client.handle_timeout(now)  # early: nothing is due
            drain()
        client.next_timeout()


# ================================================================================================== agent


LOCAL_PWD = "localpassword0123456789"
REMOTE_PWD = "remotepassword012345678"
REMOTE_PWD2 = "secondremotepassword0123"
BASES: tuple[a.Address, ...] = (("192.0.2.10", 5000), ("2001:db8::10", 5000), ("192.0.2.11", 5001))
RELAYED = ("203.0.113.50", 6000)
REMOTES: tuple[a.Address, ...] = (("198.51.100.20", 7000), ("198.51.100.21", 7001), ("2001:db8::20", 7000),
                                  ("203.0.113.60", 6001))
STUN_SERVER = ("192.0.2.100", 3478)
_AGENT_ERRORS = (487, 487, 401, 400, 420, 500, 300)
_REMOTE_KEYS = {REMOTE_PWD: IntegrityKey(REMOTE_PWD.encode()), REMOTE_PWD2: IntegrityKey(REMOTE_PWD2.encode())}
_WRONG_SHORT = IntegrityKey(b"not-the-password")


def agent_attribute(r: Reader) -> a.Attribute:
    kind = r.u8() % 8
    if kind == 0:
        return a.Priority(r.u32())
    if kind == 1:
        return a.IceControlling(r.u64())
    if kind == 2:
        return a.IceControlled(r.u64())
    if kind == 3:
        return a.UseCandidate()
    if kind == 4:
        return a.XorMappedAddress(*_address(r, REMOTES))
    if kind == 5:
        return a.Username(r.text(80))
    if kind == 6:
        return a.ErrorCode(r.pick(_AGENT_ERRORS), r.text(20))
    return _raw_attribute(r)


TCP_BASES: tuple[tuple[a.Address, TcpType], ...] = (
    (("192.0.2.10", 5100), TcpType.PASSIVE), (("192.0.2.10", 5101), TcpType.SO), (("192.0.2.10", 0), TcpType.ACTIVE),
    (("2001:db8::10", 5100), TcpType.PASSIVE), (("2001:db8::10", 0), TcpType.ACTIVE))
"""Local ICE-TCP candidates (RFC 6544 §4.1): an active one is signalled with port 9 whatever its port."""
TCP_REMOTES: tuple[tuple[a.Address, str], ...] = (
    (("198.51.100.20", 7100), "passive"), (("198.51.100.20", 9), "active"), (("198.51.100.21", 7101), "so"),
    (("2001:db8::20", 7100), "passive"), (("198.51.100.20", 7102), "bogus"))


class _TcpDriver:
    """What the asyncio driver holds for the agent's ICE-TCP connections (ice/aio/tcp.py): the ids it was asked to
    connect (until it reports them up or failed) and the ones up (connected or accepted), until closed."""

    def __init__(self) -> None:
        self.conns: dict[int, str] = {}
        """Connection id -> "connecting" or "up"."""
        self.checks: list[tuple[bytes, int]] = []
        """The agent's checks sent on connections: (transaction ID, connection id)."""
        self.exact = True

    def intent(self, ice: IceAgent, intent: TcpConnect | TcpSend | TcpClose) -> None:
        if isinstance(intent, TcpConnect):
            expect(intent.conn not in self.conns, "TcpConnect with the id of a connection the driver holds")
            expect(intent.local in ice.tcp_bases or intent.local[1] == 0, f"TcpConnect from {intent.local}")
            sendable(Transmit(intent.remote, b"", intent.local))
            self.conns[intent.conn] = "connecting"
        elif isinstance(intent, TcpSend):
            expect(not self.exact or self.conns.get(intent.conn) == "up", "TcpSend on a connection that is not up")
            data = intent.data
            expect(2 < len(data) <= 0x10001 and int.from_bytes(data[:2], "big") == len(data) - 2,
                   "TcpSend of something that is not one RFC 4571 frame")
            m = own_stun(data[2:])
            if m is not None and m.message_class is MessageClass.REQUEST:
                self.checks.append((m.transaction_id, intent.conn))
                del self.checks[:-16]
        else:
            expect(not self.exact or intent.conn in self.conns, "TcpClose of a connection the driver does not hold")
            self.conns.pop(intent.conn, None)

    def invariants(self, ice: IceAgent) -> None:
        if not self.exact:
            return
        asked = {c.id: c for c in ice._tcp.conns.values() if c.started_at is not None}
        expect(set(self.conns) == set(asked), f"the driver holds connections {sorted(self.conns)}, the agent "
                                              f"{sorted(asked)}: one would never be closed")
        for conn_id, state in self.conns.items():
            expect((state == "up") == (asked[conn_id].state is TcpConnState.UP), "a connection's state differs")
        expect(all(c in ice._tcp.conns.values() for c in ice._tcp.pair_conn.values()), "a pair on a forgotten "
                                                                                       "connection")


def peer_check(r: Reader, ice: IceAgent, extra: bool = True) -> bytes:
    """A check from the peer (RFC 8445 §7.2.2): PRIORITY, a role (or none), USE-CANDIDATE or not, with ``extra``
    up to one fuzzed attribute more, signed with the agent's password unless the input says not."""
    attrs: list[a.Attribute] = [a.Username(f"{ice.ufrag}:{ice.remote_ufrag or 'RMTE'}"), a.Priority(r.u32())]
    role = r.u8() % 3
    if role < 2:
        attrs.append(a.IceControlling(r.u64()) if role == 0 else a.IceControlled(r.u64()))
    if r.flag():
        attrs.append(a.UseCandidate())
    for _ in range(r.u8() % 2 if extra else 0):
        attrs.append(agent_attribute(r))
    key = IntegrityKey(ice.pwd.encode()) if r.u8() % 8 else _WRONG_SHORT
    return Message(Method.BINDING, MessageClass.REQUEST, _tid(r), attrs).encode(key, fingerprint=True)


def _candidate(r: Reader) -> Candidate | None:
    if r.flag():
        try:
            return Candidate.from_sdp(r.text(300))
        except ValueError:
            return None
    host, port = _address(r, REMOTES)
    kind = r.pick(list(CandidateType))
    component = r.pick((1, 1, 1, 2))
    return Candidate(str(r.u8()), component, r.pick(("udp", "udp", "tcp")),
                     candidate_priority(kind, r.u16(), component), host, port, kind)


def agent(data: bytes) -> None:
    """The ICE agent's ``handle_datagram`` with credentials set (RFC 8445 §7.2-§7.3, RFC 7675): checks from the
    peer signed with the agent's own password (so MESSAGE-INTEGRITY passes and role conflicts, nominations,
    peer-reflexive candidates and triggered checks are reached), responses to its own checks signed with the
    remote password, data, raw datagrams, restarts and the other API calls, on a clock the input advances."""
    r = Reader(data)
    flags = r.u8()
    config = AgentConfig(lite=bool(flags & 0x10),
                         nomination=Nomination.AGGRESSIVE if flags & 0x20 else Nomination.REGULAR,
                         triggered_grace=0.0 if flags & 0x40 else 0.005, pace_triggered=bool(flags & 0x80),
                         tcp=TcpConfig(enabled=True))
    ice = IceAgent(controlling=bool(flags & 1), config=config, ufrag="LOCL", pwd=LOCAL_PWD,
                   tie_breaker=r.u64() or 1, rng=random.Random(7))
    LAST["agent"] = ice
    now = T0
    old_keys: list[IntegrityKey] = []
    remote_pwd = REMOTE_PWD
    pending: list[tuple[bytes, a.Address | None, a.Address]] = []

    driver = _TcpDriver()

    def drain() -> None:
        while (t := ice.poll_transmit()) is not None:
            sendable(t)
            m = own_stun(t.data)
            if m is not None and m.message_class is MessageClass.REQUEST:
                pending.append((m.transaction_id, t.local, t.remote))
        del pending[:-16]
        while ice.next_event() is not None:
            pass
        while (intent := ice.poll_tcp()) is not None:
            driver.intent(ice, intent)
        driver.invariants(ice)

    def check(r: Reader) -> bytes:
        return peer_check(r, ice)

    def tcp_op(r: Reader, op: int) -> None:
        """ICE-TCP (RFC 6544): candidates, the driver's reports on connections, RFC 4571 frames read from them."""
        if op == 8:  # local and remote TCP candidates
            sel = r.u8()
            for i, (addr, tcptype) in enumerate(TCP_BASES):
                if sel >> i & 1:
                    ice.add_tcp_host_candidate(addr, tcptype)
            for i, ((host, port), tcptype) in enumerate(TCP_REMOTES):
                if r.u8() & 1:
                    ice.add_remote_candidate(now, Candidate(f"t{i}", 1, "tcp", candidate_priority(
                        CandidateType.HOST, r.u16()), host, port, CandidateType.HOST, tcptype=tcptype))
        elif op == 9:  # the driver: a connection came up, failed, closed; or one was accepted
            kind = r.u8() % 8
            connecting = sorted(i for i, st in driver.conns.items() if st == "connecting")
            up = sorted(i for i, st in driver.conns.items() if st == "up")
            if kind in (0, 1) and connecting:
                conn = connecting[r.u8() % len(connecting)]
                if kind == 0:
                    driver.conns[conn] = "up"
                    ice.handle_tcp_event(now, TcpConnected(conn))
                else:
                    del driver.conns[conn]
                    ice.handle_tcp_event(now, TcpConnectFailed(conn, "refused"))
            elif kind == 2 and up:
                conn = up[r.u8() % len(up)]
                del driver.conns[conn]
                ice.handle_tcp_event(now, TcpClosed(conn))
            elif kind < 7:
                bases = [*ice.tcp_bases, ("192.0.2.99", 1)]
                remote = _address(r, tuple(addr for addr, _ in TCP_REMOTES))
                got = ice.accept_tcp(now, bases[r.u8() % len(bases)], remote)
                if got is not None:
                    expect(got not in driver.conns, "accept_tcp gave the id of a connection the driver holds")
                    driver.conns[got] = "up"
            else:  # an event about a connection the driver does not report on that way
                driver.exact = False
                event = r.pick((TcpConnected, TcpClosed, TcpConnected))(r.u8() % 8)
                ice.handle_tcp_event(now, event)
        else:  # bytes read from a connection: frames with checks, answers, data, or garbage, cut anywhere
            up = sorted(i for i, st in driver.conns.items() if st == "up")
            conn = up[r.u8() % len(up)] if up and r.u8() % 8 else r.u8() % 8
            kind = r.u8() % 4
            if kind == 0:
                data = rfc4571_frame(check(r))
            elif kind == 1:
                tid = driver.checks[r.u8() % len(driver.checks)][0] if driver.checks and r.u8() % 8 else _tid(r)
                error = r.u8() % 4 == 0
                attrs: list[a.Attribute] = [a.ErrorCode(r.pick(_AGENT_ERRORS), "x")] if error else []
                if r.u8() % 8:
                    attrs.append(a.XorMappedAddress(*_address(r, (("192.0.2.10", 40000), ("203.0.113.77", 4000)))))
                key = _REMOTE_KEYS.get(remote_pwd) if r.u8() % 8 else _WRONG_SHORT
                answer = Message(Method.BINDING, MessageClass.ERROR if error else MessageClass.SUCCESS, tid, attrs)
                data = rfc4571_frame(answer.encode(key, fingerprint=True))
            elif kind == 2:
                data = rfc4571_frame(b"\x80" + r.blob())
            else:
                data = r.blob()
            if r.flag():
                data += data
            cut = r.u8() % (len(data) + 1)
            ice.handle_tcp_data(now, conn, data[:cut])
            drain()
            ice.handle_tcp_data(now, conn, data[cut:])
        drain()

    def deliver(local: a.Address, remote: a.Address, datagram: bytes) -> None:
        ice.handle_datagram(now, local, remote, datagram)
        drain()

    ice.add_host_candidate(BASES[0])
    if flags & 0x02:
        ice.add_host_candidate(BASES[1])
        ice.add_host_candidate(BASES[2], component=2)
    if flags & 0x04:
        ice.add_relayed_candidate(RELAYED, mapped=("198.51.100.99", 1234), server_ip="192.0.2.200")
    if not flags & 0x08:
        ice.set_remote_credentials(now, "RMTE", remote_pwd, lite=bool(flags & 0x20) and not flags & 0x10)
    for i, (host, port) in enumerate(REMOTES[: 1 + (flags >> 5)]):
        kind = (CandidateType.HOST, CandidateType.SERVER_REFLEXIVE, CandidateType.HOST, CandidateType.RELAYED)[i]
        ice.add_remote_candidate(now, Candidate(f"f{i}", 1, "udp", candidate_priority(kind), host, port, kind))
    ice.end_of_local_candidates()
    drain()
    run_timers(ice, now, drain)

    for _ in range(MAX_OPS):
        if not r.remaining():
            break
        op = r.u8() % 11
        if op >= 8:
            tcp_op(r, op)
            run_timers(ice, now, drain)
        elif op == 0:
            deliver(r.pick((*BASES, RELAYED, ("192.0.2.99", 1))), _address(r, REMOTES), r.blob())
        elif op in (1, 2):  # a check from the peer
            user_kind = r.u8() % 6
            remote_ufrag = ice.remote_ufrag or "RMTE"
            attrs: list[a.Attribute] = []
            if user_kind < 3:
                attrs.append(a.Username(f"{ice.ufrag}:{remote_ufrag}"))
            elif user_kind == 3:
                attrs.append(a.Username(f"{r.text(16)}:{remote_ufrag}"))
            elif user_kind == 4:
                attrs.append(a.Username(r.text(60)))
            if r.u8() % 8:
                attrs.append(a.Priority(r.u32()))
            role = r.u8() % 3
            if role == 0:
                attrs.append(a.IceControlling(r.u64()))
            elif role == 1:
                attrs.append(a.IceControlled(r.u64()))
            if r.flag():
                attrs.append(a.UseCandidate())
            for _ in range(r.u8() % 3):
                attrs.append(agent_attribute(r))
            sign = r.u8() % 8
            key = (IntegrityKey(ice.pwd.encode()) if sign < 5 else old_keys[-1] if sign == 5 and old_keys
                   else _WRONG_SHORT if sign == 6 else None)
            msg = Message(Method.BINDING, MessageClass.REQUEST, _tid(r), attrs)
            datagram = (msg.encode(key, integrity=r.pick((Integrity.SHA1, Integrity.SHA1, Integrity.SHA256)),
                                   fingerprint=r.u8() % 8 != 0)
                        if key is not None else msg.encode(fingerprint=True))
            deliver(r.pick((*BASES, RELAYED, BASES[0])), _address(r, REMOTES), datagram)
        elif op == 3:  # a response to one of the agent's requests
            if pending and r.u8() % 8:
                tid, local, remote = pending[r.u8() % len(pending)]
            else:
                tid, local, remote = _tid(r), BASES[0], REMOTES[0]
            error = r.u8() % 4 == 0
            attrs = [a.ErrorCode(r.pick(_AGENT_ERRORS), "x")] if error else []
            if r.u8() % 8:
                attrs.append(a.XorMappedAddress(*_address(r, (local or BASES[0], ("203.0.113.77", 4000)))))
            for _ in range(r.u8() % 2):
                attrs.append(agent_attribute(r))
            sign = r.u8() % 8
            key = (_REMOTE_KEYS.get(remote_pwd) if sign < 5 else None if sign == 5
                   else _REMOTE_KEYS[REMOTE_PWD] if sign == 6 else _WRONG_SHORT)
            msg = Message(Method.BINDING, MessageClass.ERROR if error else MessageClass.SUCCESS, tid, attrs)
            datagram = msg.encode(key, fingerprint=True)
            if r.u8() % 8 == 0:
                local, remote = r.pick(BASES), _address(r, REMOTES)
            deliver(local or BASES[0], remote, datagram)
        elif op == 4:  # data
            deliver(r.pick(BASES), _address(r, REMOTES), b"\x80" + r.blob())
        elif op == 5:
            now += r.pick(DTS) if r.u8() % 8 else r.u32() / 1000
            run_timers(ice, now, drain)
        else:
            call = r.u8() % 9
            if call == 0:
                old_keys.append(IntegrityKey(ice.pwd.encode()))
                ice.restart(now)
                if r.flag():
                    remote_pwd = REMOTE_PWD2
                    ice.set_remote_credentials(now, "RMT2", remote_pwd)
            elif call == 1:
                ice.send(b"\xff" + r.blob(), r.pick((None, 1, 2)))
            elif call == 2:
                ice.add_remote_candidate(now, _candidate(r))
            elif call == 3:
                ice.add_remote_candidate(now, None)
            elif call == 4:
                ice.set_remote_credentials(now, ice.remote_ufrag or "RMTE", remote_pwd, lite=r.flag())
            elif call == 5:
                ice.close()
            elif call == 6:
                ice.gather_server_reflexive(now, r.pick(BASES[:2]), STUN_SERVER)
            elif call == 7:
                ice.stun_server_unreachable(now, r.pick(BASES[:2]), STUN_SERVER, "unreachable")
            else:
                ice.add_host_candidate(("192.0.2.12", 5002 + r.u8() % 4))
            drain()
            run_timers(ice, now, drain)
        ice.next_timeout()


# ================================================================================================ relayed


TURN_LOCAL = ("198.51.100.1", 40000)
TURN_LOCAL2 = ("198.51.100.2", 40000)
"""The TURN client's socket after a network change."""
"""The relayed agent's socket to the TURN server (its host candidate is BASES[0])."""


def _wrapped(r: Reader, client: TurnClient, peer: a.Address, inner: bytes) -> bytes:
    """``inner`` from ``peer`` as the TURN server delivers it: a Data indication, or ChannelData on the peer's
    channel when there is one (RFC 8656 §11.3, §12.5)."""
    number = client.channels.get(peer)
    if number is not None and r.flag():
        return number.to_bytes(2, "big") + len(inner).to_bytes(2, "big") + inner
    ind = Message(Method.DATA, MessageClass.INDICATION, _tid(r), [a.XorPeerAddress(*peer), a.Data(inner)])
    return ind.encode(fingerprint=True)


def _allocated(turn_pending: list[tuple[bytes, int]], from_server: Callable[[bytes], None]) -> None:
    """The server's side of an allocation through the 401 round trip (RFC 8656 §7.1): the newest pending request
    (the Allocate) refused for its REALM and NONCE, then the retried one allocated 192.0.2.1:50000."""
    if not turn_pending:
        return
    tid, method = turn_pending.pop()
    from_server(Message(method, MessageClass.ERROR, tid, [a.ErrorCode(401, "Unauthorized"), a.Realm(REALM),
                                                          a.Nonce("n0nce")]).encode(fingerprint=True))
    if turn_pending:
        tid, method = turn_pending.pop()
        from_server(Message(method, MessageClass.SUCCESS, tid,
                            [a.XorRelayedAddress("192.0.2.1", 50000), a.XorMappedAddress(*TURN_LOCAL),
                             a.Lifetime(600)]).encode(_LONG_KEYS["user"], fingerprint=True))


def relayed(data: bytes) -> None:
    """ICE over TURN (RFC 8445 §5.1.1.2): :class:`~ice.relayed.RelayedAgent`, an agent whose relayed candidate comes
    from a TURN allocation. The input plays the TURN server (responses to the client's requests, fuzzed as in
    ``turn-client``) and the remote agent behind it: checks signed with the agent's password arrive in Data
    indications or ChannelData, and the agent's own checks, relayed in Send indications or ChannelData, are
    answered the same way, so checks, nominations and the channel bound on selection all go through the relay."""
    from ice.relayed import RelayedAgent

    r = Reader(data)
    flags = r.u8()
    ice = IceAgent(controlling=bool(flags & 1), ufrag="LOCL", pwd=LOCAL_PWD, tie_breaker=r.u64() or 1,
                   rng=random.Random(7))
    composed = RelayedAgent(ice, TurnClientConfig(SERVER, "user", "pass"), TURN_LOCAL,
                            bind_channels=not flags & 0x40)
    LAST["relayed"] = ice
    CIDS.clear()  # turn_attribute's CONNECTION-IDs: none here
    client = composed.client
    now = T0
    turn_pending: list[tuple[bytes, int]] = []
    checks: list[tuple[bytes, a.Address]] = []

    def drain() -> None:
        while (t := composed.poll_transmit()) is not None:
            sendable(t)
            if t.local != TURN_LOCAL:
                own_stun(t.data)
                continue
            expect(t.remote == client.server, "the TURN client sends somewhere else than its server")
            inner, peer = b"", None
            if t.data[:1] and 0x40 <= t.data[0] <= 0x7F:
                number = int.from_bytes(t.data[:2], "big")
                peer = next((p for p, n in client.channels.items() if n == number), None)
                inner = t.data[4:]
            else:
                m = own_stun(t.data)
                if m is None:
                    continue
                if m.message_class is MessageClass.REQUEST:
                    turn_pending.append((m.transaction_id, m.method))
                elif m.method == Method.SEND:
                    xpa, payload = m.get(a.XorPeerAddress), m.get(a.Data)
                    peer, inner = (xpa.address if xpa else None), (payload.data if payload else b"")
            check = own_stun(inner) if peer is not None else None
            if check is not None and check.message_class is MessageClass.REQUEST and peer is not None:
                checks.append((check.transaction_id, peer))
        del turn_pending[:-16]
        del checks[:-16]
        while composed.next_event() is not None:
            pass

    def from_server(datagram: bytes) -> None:
        composed.handle_datagram(now, TURN_LOCAL, client.server, datagram)
        drain()

    if flags & 0x02:
        ice.add_host_candidate(BASES[0])
    composed.start(now)
    drain()
    if flags & 0x04:
        _allocated(turn_pending, from_server)
    if not flags & 0x08:
        ice.set_remote_credentials(now, "RMTE", REMOTE_PWD)
    for i, (host, port) in enumerate(REMOTES[: 1 + (flags >> 5) % 4]):
        kind = (CandidateType.RELAYED, CandidateType.HOST, CandidateType.HOST, CandidateType.RELAYED)[i]
        ice.add_remote_candidate(now, Candidate(f"r{i}", 1, "udp", candidate_priority(kind), host, port, kind))
    ice.add_remote_candidate(now, None)
    drain()
    run_timers(composed, now, drain)

    for _ in range(MAX_OPS):
        if not r.remaining():
            break
        op = r.u8() % 8
        if op == 0:
            if r.flag():
                from_server(r.blob())
            else:
                composed.handle_datagram(now, r.pick((*BASES, TURN_LOCAL)), _address(r, REMOTES), r.blob())
                drain()
        elif op == 1:  # the TURN server answers one of the client's requests
            if turn_pending and r.u8() % 8:
                tid, method = turn_pending[r.u8() % len(turn_pending)]
            else:
                tid, method = _tid(r), r.pick(_METHODS)
            from_server(client_response(r, tid, method, client._key))
        elif op == 2:  # a check from the remote agent, through the relay
            peer = _address(r, REMOTES)
            check = peer_check(r, ice)
            from_server(_wrapped(r, client, peer, check))
        elif op == 3:  # the remote agent answers one of our relayed checks
            if checks and r.u8() % 8:
                tid, peer = checks[r.u8() % len(checks)]
            else:
                tid, peer = _tid(r), _address(r, REMOTES)
            error = r.u8() % 4 == 0
            attrs: list[a.Attribute] = [a.ErrorCode(r.pick(_AGENT_ERRORS), "x")] if error else []
            if r.u8() % 8:
                attrs.append(a.XorMappedAddress(*_address(r, (("192.0.2.1", 50000), ("203.0.113.77", 4000)))))
            key = _REMOTE_KEYS[REMOTE_PWD] if r.u8() % 8 else None
            answer = Message(Method.BINDING, MessageClass.ERROR if error else MessageClass.SUCCESS, tid, attrs)
            from_server(_wrapped(r, client, peer, answer.encode(key, fingerprint=True)))
        elif op == 4:
            now += r.pick(DTS) if r.u8() % 8 else r.u32() / 1000
            run_timers(composed, now, drain)
        else:
            call = r.u8() % 6
            if call == 0:
                ice.restart(now)
                ice.set_remote_credentials(now, "RMTE", REMOTE_PWD)
            elif call == 1:
                ice.send(b"\xff" + r.blob())
            elif call == 2:
                composed.close(now)
            elif call == 3:
                ice.add_remote_candidate(now, _candidate(r))
            elif call == 4:
                composed.start(now)
            else:
                ice.set_remote_credentials(now, "RMTE", REMOTE_PWD, lite=r.flag())
            drain()
            run_timers(composed, now, drain)
        composed.next_timeout()


def relayed_tcp(data: bytes) -> None:
    """Relayed TCP candidates (RFC 6544 §5.3) over a TURN TCP allocation (RFC 6062): the ICE-over-TURN composition's
    :class:`~ice.relayed_tcp.TcpRelaying`. The input plays the TURN server on the control connection (answers to
    the client's requests, Connect answers with or without a CONNECTION-ID, ConnectionAttempt indications, raw
    bytes), the driver (data connections up, refused or closed; what is read on them: ConnectionBind answers, the
    peer's RFC 4571 frames, garbage, in any split), the peer (checks signed with the agent's password, answers to
    its checks) and time. Checked besides "nothing raises": no intent for the driver goes through an allocation
    (``TcpConnect.relayed`` is the composition's), every TcpSend and TcpClose names a connection the driver was
    asked to open (or one it reported), a data connection's first message is its ConnectionBind, the composition's
    pending Connects and data connections belong to an allocation it has, and its timer makes progress."""
    from ice.relayed import RelayedAgent

    r = Reader(data)
    flags = r.u8()
    ice = IceAgent(controlling=bool(flags & 1), config=AgentConfig(tcp=TcpConfig(enabled=True)), ufrag="LOCL",
                   pwd=LOCAL_PWD, tie_breaker=r.u64() or 1, rng=random.Random(7))
    composed = RelayedAgent(ice, TurnClientConfig(SERVER, "user", "pass", transport="tcp"))
    relay = composed.add_allocation(TURN_LOCAL, tcp=True)
    LAST["relayed-tcp"] = ice
    client = relay.client
    CIDS.clear()
    now = T0
    turn_pending: list[tuple[bytes, int]] = []
    opened: list[int] = []
    """Connections the driver was asked to open, oldest first (the harness is the driver)."""
    known: set[int] = set()
    """Every connection the driver was asked to open or reported on (an intent may name only these)."""
    binds: dict[int, bytes] = {}
    """Data connection -> the transaction ID of its ConnectionBind."""
    checks: list[tuple[int, bytes]] = []
    """(connection, transaction ID) of the agent's checks sent on TCP."""

    def drain() -> None:
        for _ in range(100):  # a TCP intent can make a TURN request (a Connect) and the other way round
            if not drain_once():
                break
        else:
            raise FuzzFailure("the composition keeps producing output with no input")
        del turn_pending[:-16]
        del checks[:-16]
        del opened[:-32]
        while composed.next_event() is not None:
            pass
        for (relayed, _), waiting in composed.tcp.connecting.items():
            expect(relayed == relay.relayed and bool(waiting), "a pending Connect of no allocation (or unwaited)")
        for d in composed.tcp.data.values():  # a bound one is the agent's: it ends when the server closes it
            expect(d.bound or d.relay in composed.relays, "a pending data connection of an allocation that is gone")

    def drain_once() -> bool:
        moved = False
        while (t := composed.poll_transmit()) is not None:
            moved = True
            sendable(t)
            expect(t.local in (TURN_LOCAL, TURN_LOCAL2) and t.remote == client.server,  # ALTERNATE-SERVER moves it
                   f"a datagram that is not the TURN client's: {t.local} -> {t.remote}")
            m = own_stun(t.data)
            if m is not None and m.message_class is MessageClass.REQUEST:
                turn_pending.append((m.transaction_id, m.method))
        while (i := composed.poll_tcp()) is not None:
            moved = True
            if isinstance(i, TcpConnect):
                expect(i.relayed is None, "a connection through the allocation reached the driver")
                opened.append(i.conn)
                known.add(i.conn)
            elif isinstance(i, TcpSend):
                expect(i.conn in known, f"a write on connection {i.conn}, never opened")
                pending = composed.tcp.data.get(i.conn)
                if pending is not None and not pending.bound:  # RFC 6062 §4.4: ConnectionBind, not framed
                    m = own_stun(i.data)
                    expect(m is not None and m.method == Method.CONNECTION_BIND, "a data connection's first "
                           "message is not its ConnectionBind")
                    assert m is not None
                    binds[i.conn] = m.transaction_id
                    REACHED["relayed-tcp-bind-sent"] += 1
                    continue
                for payload in split_rfc4571(i.data):
                    m = own_stun(payload)
                    if m is not None and m.message_class is MessageClass.REQUEST:
                        checks.append((i.conn, m.transaction_id))
            else:
                expect(i.conn in known, f"a close of connection {i.conn}, never opened")
                if i.conn in opened:
                    opened.remove(i.conn)
        return moved

    def from_server(datagram: bytes) -> None:
        composed.handle_datagram(now, relay.local, client.server, datagram)
        drain()

    if flags & 0x02:
        ice.add_tcp_host_candidate(("198.51.100.1", 0), TcpType.ACTIVE)
    composed.start(now)
    drain()
    if flags & 0x04:
        _allocated(turn_pending, from_server)
    if not flags & 0x08:
        ice.set_remote_credentials(now, "RMTE", REMOTE_PWD)
    for i, (host, port) in enumerate(REMOTES[: 1 + (flags >> 4) % 4]):
        tcptype = (TcpType.PASSIVE, TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO)[i]
        kind = (CandidateType.HOST, CandidateType.SERVER_REFLEXIVE, CandidateType.RELAYED, CandidateType.HOST)[i]
        ice.add_remote_candidate(now, tcp_candidate(kind, tcptype, (host, port)))
    ice.add_remote_candidate(now, None)
    drain()
    run_timers(composed, now, drain)

    for _ in range(MAX_OPS):
        if not r.remaining():
            break
        op, known_one, which = r.u8() % 8, r.u8() % 8, r.u8()
        conn = opened[-1 - which % len(opened)] if opened and known_one else which  # 0: the newest
        if op == 0:  # raw bytes on the control connection
            from_server(r.blob())
        elif op == 1:  # the server answers one of the client's requests (Connect: with its CONNECTION-ID)
            newest, index = r.u8() % 8, r.u8()
            if turn_pending and newest:
                tid, method = turn_pending[-1 - index % len(turn_pending)]
            else:
                tid, method = _tid(r), r.pick(_METHODS)
            if method == Method.CONNECT and r.u8() % 4:
                cid = r.u32()
                CIDS.append(cid)
                del CIDS[:-8]
                from_server(Message(method, MessageClass.SUCCESS, tid, [a.ConnectionId(cid)]).encode(
                    _LONG_KEYS["user"] if r.u8() % 8 else None, fingerprint=True))
            else:
                from_server(client_response(r, tid, method, client._key))
        elif op == 2:  # a peer connected to the relayed address: ConnectionAttempt (RFC 6062 §4.4)
            cid = CIDS[r.u8() % len(CIDS)] if CIDS and r.flag() else r.u32()
            attrs: list[a.Attribute] = [a.ConnectionId(cid), a.XorPeerAddress(*_address(r, REMOTES))]
            if r.u8() % 8 == 0:
                attrs = attrs[r.u8() % 2:]
            from_server(Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, _tid(r), attrs).encode(
                fingerprint=True))
        elif op == 3:  # the driver reports on a connection
            event = r.u8() % 3
            ev = TcpConnected(conn) if event == 0 else TcpConnectFailed(conn, "refused") if event == 1 \
                else TcpClosed(conn)
            if event and conn in opened:
                opened.remove(conn)
            known.add(conn)
            composed.handle_tcp_event(now, ev)
            drain()
        elif op == 4:  # the server answers a ConnectionBind, perhaps with the peer's first bytes behind it
            tid = binds.get(conn) or _tid(r)
            answer = r.u8() % 4
            if answer == 0:
                msg = Message(Method.CONNECTION_BIND, MessageClass.ERROR, tid, [
                    a.ErrorCode(r.pick((401, 438, 400, 403)), "x"), a.Realm(REALM if r.flag() else r.text(20)),
                    a.Nonce("n0nce2")])
            else:
                msg = Message(Method.CONNECTION_BIND, MessageClass.SUCCESS, tid)
            raw = msg.encode(_LONG_KEYS["user"] if r.flag() else None, fingerprint=True)
            raw += r.blob(200) if r.u8() % 4 == 0 else b""
            cut = r.u8() % (len(raw) + 1) if r.u8() % 4 == 0 else len(raw)
            known.add(conn)
            composed.handle_tcp_data(now, conn, raw[:cut])
            drain()
            if cut < len(raw):
                composed.handle_tcp_data(now, conn, raw[cut:])
                drain()
        elif op == 5:  # the peer over a connection: a check, an answer to one of ours, or bytes
            what = r.u8() % 3
            if what == 0:
                payload = rfc4571_frame(peer_check(r, ice, extra=False))
            elif what == 1:
                newest, index = r.u8() % 8, r.u8()
                if checks and newest:
                    conn, tid = checks[-1 - index % len(checks)]
                else:
                    tid = _tid(r)
                error = r.u8() % 4 == 0
                answer_attrs: list[a.Attribute] = [a.ErrorCode(r.pick(_AGENT_ERRORS), "x")] if error else []
                answer_attrs.append(a.XorMappedAddress(*_address(r, REMOTES)))
                reply = Message(Method.BINDING, MessageClass.ERROR if error else MessageClass.SUCCESS, tid,
                                answer_attrs)
                payload = rfc4571_frame(reply.encode(_REMOTE_KEYS[REMOTE_PWD] if r.u8() % 8 else None,
                                                     fingerprint=True))
            else:
                payload = r.blob()
            known.add(conn)
            composed.handle_tcp_data(now, conn, payload)
            drain()
        elif op == 6:
            now += r.pick(DTS) if r.u8() % 8 else r.u32() / 1000
            run_timers(composed, now, drain)
        else:
            call = r.u8() % 5
            if call == 0:
                ice.restart(now)
                ice.set_remote_credentials(now, "RMTE", REMOTE_PWD)
            elif call == 1:
                ice.send(b"\xff" + r.blob())
            elif call == 2:
                composed.close(now)
            elif call == 3:
                host, port = _address(r, REMOTES)
                ice.add_remote_candidate(now, tcp_candidate(r.pick(list(CandidateType)), r.pick(list(TcpType)),
                                                            (host, port)))
            else:  # the control connection's address left: the allocation goes, another is made (RFC 8445 §9)
                composed.network_changed(now, NetworkChange(gone=(relay.local,), turn_tcp=((1, TURN_LOCAL2),)))
                relay = composed.relays[-1]
                client = relay.client
            drain()
            run_timers(composed, now, drain)
        composed.next_timeout()


def split_rfc4571(data: bytes) -> list[bytes]:
    """The frames of one write (RFC 4571 §2); what the agent writes is whole frames."""
    out = []
    while len(data) >= 2:
        n = int.from_bytes(data[:2], "big")
        expect(len(data) >= 2 + n, "a write with a partial RFC 4571 frame")
        out.append(data[2:2 + n])
        data = data[2 + n:]
    expect(not data, "a write with a stray byte after its frames")
    return out


# ==================================================================================================== SDP


def sdp(data: bytes) -> None:
    """SDP candidate and ICE attribute parsing (RFC 8839 §5.1, §5.4): ``Candidate.from_sdp``,
    ``IceDescription.from_lines`` and the harness's ``selected`` line parser raise ValueError or nothing; what
    parses round-trips through ``to_sdp`` and is usable: an agent that is given it sends only to addresses a
    socket can send to."""
    r = Reader(data)
    mode = r.u8() % 4
    text = r.rest().decode("utf-8", "replace")
    if mode == 0:
        for line in text.splitlines() or [text]:
            try:
                cand = Candidate.from_sdp(line)
            except ValueError:
                continue
            expect(Candidate.from_sdp(cand.to_sdp()) == cand, f"candidate does not round-trip: {cand.to_sdp()!r}")
            expect(0 <= cand.port <= 0xFFFF, f"candidate port {cand.port} accepted")
            expect(0 <= cand.priority < 2**32, f"candidate priority {cand.priority} accepted (RFC 8839: 32 bits)")
            if cand.related is not None:
                expect(0 <= cand.related[1] <= 0xFFFF, f"candidate rport {cand.related[1]} accepted")
            _use_candidate(cand)
    elif mode == 1:
        try:
            desc = IceDescription.from_lines(text)
        except ValueError:
            return
        try:
            desc.validate()
        except ValueError:
            pass
        again = IceDescription.from_lines(desc.to_lines())
        expect(again.candidates == desc.candidates and again.ufrag == desc.ufrag.strip(), "SDP does not round-trip")
    elif mode == 2:
        try:
            parse_selected(text, 0.0)
        except ValueError:
            pass
    else:
        try:
            cand = Candidate.from_sdp(text)
        except ValueError:
            return
        _use_candidate(cand)


def _use_candidate(cand: Candidate) -> None:
    """An agent with a UDP host candidate and ICE-TCP ones of every tcptype (RFC 6544 §4.1) is given ``cand``:
    what it sends, or connects to, must be reachable by a socket."""
    ice = IceAgent(controlling=True, ufrag="LOCL", pwd=LOCAL_PWD, tie_breaker=5, rng=random.Random(1),
                   config=AgentConfig(tcp=TcpConfig(enabled=True)))
    host = "2001:db8::10" if ":" in cand.host else "192.0.2.10"
    ice.add_host_candidate((host, 5000))
    for port, tcptype in ((0, TcpType.ACTIVE), (5100, TcpType.PASSIVE), (5101, TcpType.SO)):
        ice.add_tcp_host_candidate((host, port), tcptype)
    ice.set_remote_credentials(T0, "RMTE", REMOTE_PWD)
    ice.add_remote_candidate(T0, cand)
    for now in (T0, T0 + 0.05):
        ice.handle_timeout(now)
        while (t := ice.poll_transmit()) is not None:
            sendable(t)
        while (intent := ice.poll_tcp()) is not None:
            if isinstance(intent, TcpConnect):
                expect(cand.transport == "tcp" and cand.tcptype in ("passive", "so"),
                       f"a TCP connection to a {cand.transport} {cand.tcptype} candidate")
                sendable(Transmit(intent.remote, b"", intent.local))


# ================================================================================================= stream


class _Writer:
    """What the driver writes to a stream, kept (a StreamWriter's surface that Driver uses)."""

    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        pass


_LOOP: asyncio.AbstractEventLoop | None = None


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


def stream(data: bytes) -> None:
    """TURN-over-TCP/TLS framing (RFC 8489 §6.2.2, RFC 8656 §12.5): STUN and padded ChannelData back to back.

    The bytes are cut into chunks as a socket would deliver them: ``split_frames`` must give the same frames
    whatever the cut, consume exactly them, and signal garbage only with ValueError. The frames then go to a
    TURN server (a stream client with an allocation and a channel) and to a TURN client over TCP, and the whole
    stream through the asyncio driver's ``run_stream`` into a server."""
    r = Reader(data)
    cuts = [1 + r.u8() % 64 for _ in range(r.u8() % 8)]
    body = r.rest()
    try:
        whole = split_frames(bytearray(body))
        whole_error = False
    except ValueError:
        whole, whole_error = [], True
    buffer = bytearray()
    frames: list[bytes] = []
    pos, i, error = 0, 0, False
    while pos < len(body) and not error:
        n = cuts[i % len(cuts)] if cuts else len(body)
        buffer += body[pos : pos + n]
        pos += n
        i += 1
        try:
            frames += split_frames(buffer)
        except ValueError:
            error = True
    consumed = b"".join(frames)
    expect(body.startswith(consumed), "split_frames returned bytes that were not at the start of the stream")
    if not error and not whole_error:
        expect(frames == whole, "split_frames depends on how the stream was cut")
        expect(bytes(buffer) == body[len(consumed):], "split_frames lost or kept the wrong bytes")
    expect(error or len(buffer) < 20 + 65536 + 4, "split_frames buffers more than one frame's worth")

    ports = _Ports(limit=2)
    server = TurnServer(TurnServerConfig(LISTEN, realm=REALM, users=dict(USERS)), ports, secret=b"fuzz-secret-0123")
    server.stream_opened(LISTEN, CLIENTS[0])
    tids: list[bytes] = []
    for setup in (_signed_allocate(server, T0, CLIENTS[0], "user", tids),
                  _signed(server, T0, Method.CHANNEL_BIND, [a.ChannelNumber(0x4000), a.XorPeerAddress(*PEERS[0])],
                          tids)):
        server.handle_datagram(T0, LISTEN, CLIENTS[0], setup)
    client = TurnClient(TurnClientConfig(SERVER, "user", "pass", transport="tcp"), CLIENT_LOCAL)
    client.channels[PEERS[0]] = 0x4000
    for frame in frames or whole:
        server.handle_datagram(T0, LISTEN, CLIENTS[0], frame)
        client.handle_datagram(T0, CLIENT_LOCAL, SERVER, frame)
    while (t := server.poll_transmit()) is not None:
        sendable(t)
    while (t := client.poll_transmit()) is not None:
        sendable(t)
    _turn_invariants(server, ports)

    loop = _loop()
    driver: Driver[None] = Driver(server, loop=loop)
    reader = asyncio.StreamReader(loop=loop)
    reader.feed_data(body)
    reader.feed_eof()
    writer = _Writer()
    loop.run_until_complete(driver.run_stream(reader, writer, LISTEN, CLIENTS[0]))  # type: ignore[arg-type]
    driver.close()  # cancels its timer: the loop is shared by every input and would keep each server alive
    server.stream_closed(LISTEN, CLIENTS[0])
    _turn_invariants(server, ports)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "stun": stun,
    "stun-server": stun_server,
    "turn-server": turn_server,
    "turn-client": turn_client,
    "agent": agent,
    "relayed": relayed,
    "relayed-tcp": relayed_tcp,
    "sdp": sdp,
    "stream": stream,
}
"""Target name -> the function libFuzzer calls with each input."""

MAX_LEN = {"stream": 16384, "sdp": 2048}
"""Longest input per target (libFuzzer's -max_len); the default is 4096 bytes."""
