"""Batched UDP I/O (ice/aio/udp.py, recvmmsg/sendmmsg in the C accelerator) and the servers' batch fast paths.

Each C function is checked against its pure-Python reference; the servers' ``handle_datagrams`` against feeding the
same datagrams one by one; the driver end to end on loopback, with the accelerator and without it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice.aio import driver as driver_module
from ice.aio import udp
from ice.aio.stun import StunServerRunner
from ice.aio.turn_server import TurnServerRunner
from ice.stun import Message, MessageClass, Method, long_term_key, parse
from ice.stun import server as stun_server
from ice.stun.attributes import (
    Address,
    Attribute,
    ChannelNumber,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.integrity import _speedups
from ice.stun.server import StunServer, StunServerConfig
from ice.stun.transaction import Transmit
from ice.turn import server as turn_server
from ice.turn.server import TurnServer, TurnServerConfig

needs_c = pytest.mark.skipif(_speedups is None or not hasattr(_speedups, "recv_batch"),
                             reason="the C accelerator is not built (or ICELAB_PURE_PYTHON is set)")

IMPLEMENTATIONS: list[tuple[str, Callable[..., Any], Callable[..., Any]]] = [
    ("python", udp.recv_batch_py, udp.send_batch_py)]
if _speedups is not None and hasattr(_speedups, "recv_batch"):
    IMPLEMENTATIONS.append(("c", _speedups.recv_batch, _speedups.send_batch))


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


FAMILIES = [pytest.param(socket.AF_INET, "127.0.0.1", id="ipv4"),
            pytest.param(socket.AF_INET6, "::1", id="ipv6",
                         marks=pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback"))]


@contextmanager
def pair(family: socket.AddressFamily, host: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socket(family, socket.SOCK_DGRAM), socket.socket(family, socket.SOCK_DGRAM)
    try:
        for s in (a, b):
            s.bind((host, 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield a, b
    finally:
        a.close()
        b.close()


def drain(recv: Callable[..., Any], sock: socket.socket, want: int, max: int = 64, size: int = 65535
          ) -> list[tuple[Address, bytes]]:
    got: list[tuple[Address, bytes]] = []
    for _ in range(1000):
        batch = recv(sock, max, size)
        assert len(batch) <= max
        got.extend(batch)
        if len(got) >= want:
            break
    return got


def local_of(sock: socket.socket) -> Address:
    sa = sock.getsockname()
    return (str(sa[0]), int(sa[1]))


@pytest.mark.parametrize(("family", "host"), FAMILIES)
@pytest.mark.parametrize(("name", "recv", "send"), IMPLEMENTATIONS, ids=[i[0] for i in IMPLEMENTATIONS])
def test_a_batch_moves_n_datagrams_intact_and_addressed(family: socket.AddressFamily, host: str, name: str,
                                                        recv: Callable[..., Any], send: Callable[..., Any]) -> None:
    with pair(family, host) as (a, b), pair(family, host) as (c, _):
        items = [(local_of(b), bytes([i % 256]) * (i % 300 + 1)) for i in range(200)]
        items += [(local_of(c), b"to c %d" % i) for i in range(5)]
        assert send(a, items, 0) == len(items)  # 2-tuples: no source to stop at
        got = drain(recv, b, 200, max=37)
        assert got == [(local_of(a), data) for _, data in items[:200]]  # in order, from a's address
        assert drain(recv, c, 5) == [(local_of(a), data) for _, data in items[200:]]
        assert recv(b, 64, 65535) == []  # empty: no datagram, no exception


@pytest.mark.parametrize("gso", [True, False])
@pytest.mark.parametrize(("family", "host"), FAMILIES)
@pytest.mark.parametrize(("name", "recv", "send"), IMPLEMENTATIONS, ids=[i[0] for i in IMPLEMENTATIONS])
def test_runs_of_equal_datagrams_arrive_as_the_datagrams_they_are(family: socket.AddressFamily, host: str, name: str,
                                                                  recv: Callable[..., Any],
                                                                  send: Callable[..., Any], gso: bool) -> None:
    """What the C send cuts into GSO segments (same destination, same size, a shorter last) arrives as the
    separate datagrams, in order."""
    with pair(family, host) as (a, b), pair(family, host) as (c, _):
        to_b = [(local_of(b), b"%04d" % i + bytes(96)) for i in range(150)]
        items = [*to_b[:70], (local_of(b), b"short"), *to_b[70:], (local_of(c), b"x" * 100), (local_of(b), b"")]
        assert send(a, items, 0, gso) == len(items)
        got = drain(recv, b, len(items) - 1, max=64)
        assert got == [(local_of(a), d) for dest, d in items if dest == local_of(b)]
        assert drain(recv, c, 1) == [(local_of(a), b"x" * 100)]


@pytest.mark.parametrize(("name", "recv", "send"), IMPLEMENTATIONS, ids=[i[0] for i in IMPLEMENTATIONS])
def test_send_stops_where_the_source_changes_and_from_start(name: str, recv: Callable[..., Any],
                                                            send: Callable[..., Any]) -> None:
    with pair(socket.AF_INET, "127.0.0.1") as (a, b):
        here, there = local_of(a), ("127.0.0.1", 9)
        items = [Transmit(local_of(b), b"1", here), Transmit(local_of(b), b"2", here),
                 Transmit(local_of(b), b"3", there), Transmit(local_of(b), b"4", here)]
        assert send(a, items, 0) == 2
        assert send(a, items, 3) == 4
        assert [d for _, d in drain(recv, b, 3)] == [b"1", b"2", b"4"]


@pytest.mark.parametrize(("name", "recv", "send"), IMPLEMENTATIONS, ids=[i[0] for i in IMPLEMENTATIONS])
def test_connected_sockets_send_to_none_and_cut_long_datagrams(name: str, recv: Callable[..., Any],
                                                               send: Callable[..., Any]) -> None:
    with pair(socket.AF_INET, "127.0.0.1") as (a, b):
        a.connect(local_of(b))
        assert send(a, [(None, b"x" * 100), (None, b"y" * 10)], 0) == 2
        assert drain(recv, b, 2, size=50) == [(local_of(a), b"x" * 50), (local_of(a), b"y" * 10)]


@pytest.mark.parametrize(("name", "recv", "send"), IMPLEMENTATIONS, ids=[i[0] for i in IMPLEMENTATIONS])
def test_an_icmp_error_is_raised_by_the_receive(name: str, recv: Callable[..., Any],
                                                send: Callable[..., Any]) -> None:
    with pair(socket.AF_INET, "127.0.0.1") as (a, b):
        gone = local_of(b)
        b.close()
        a.connect(gone)
        send(a, [(None, b"anyone?")], 0)
        with pytest.raises(ConnectionRefusedError):
            for _ in range(1000):
                recv(a, 8, 2048)


@needs_c
def test_the_c_send_leaves_what_it_cannot_address_to_the_caller() -> None:
    with pair(socket.AF_INET, "127.0.0.1") as (a, b):
        items = [(local_of(b), b"1"), (("localhost", local_of(b)[1]), b"2"), (("::1", 9), b"3"), (local_of(b), b"4")]
        assert _speedups.send_batch(a, items, 0) == 1  # a host name: sendto resolves it, not sendmmsg
        assert _speedups.send_batch(a, items, 2) == 2  # another family
        assert _speedups.send_batch(a, items, 3) == 4
        with pytest.raises(ValueError):
            _speedups.recv_batch(a, 0, 100)


# ------------------------------------------------------------------------------------ the STUN server's batch

ADDRESSES = st.one_of(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(0, 65535)),
)
BARE = st.binary(min_size=12, max_size=12).map(lambda tid: b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid)
DATAGRAMS = st.one_of(BARE, BARE, st.binary(max_size=40),
                      st.just(Message(Method.BINDING, MessageClass.REQUEST, attributes=[]).encode(fingerprint=True)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(ADDRESSES, DATAGRAMS), max_size=20), st.booleans(), st.booleans())
def test_the_stun_batch_answers_as_one_by_one(batch: list[tuple[Address, bytes]], fingerprint: bool,
                                              alternate: bool) -> None:
    cfg = StunServerConfig(("192.0.2.1", 3478), ("192.0.2.2", 3479) if alternate else None,
                           fingerprint=fingerprint)
    local = cfg.local_addresses[-1]
    one, many = StunServer(cfg), StunServer(cfg)
    for remote, data in batch:
        one.handle_datagram(0.0, local, remote, data)
    many.handle_datagrams(0.0, local, batch)
    assert many.poll_transmits() == one.poll_transmits()
    assert many.stats == one.stats
    # the C copy of the fast path is the reference's, answer for answer and where it stops
    length, tail = one._tail_for(local)
    for start in range(len(batch) + 1):
        py: list[Transmit] = []
        c: list[Transmit] = []
        assert (stun_server._binding_answers_py(batch, start, local, length, tail, fingerprint, py)
                == stun_server._binding_answers(batch, start, local, length, tail, fingerprint, c))
        assert py == c and all(type(t) is Transmit for t in c)


def test_the_bare_binding_answer_is_the_general_paths() -> None:
    srv = StunServer(StunServerConfig(("192.0.2.1", 3478)))
    request = Message(Method.BINDING, MessageClass.REQUEST, attributes=[]).encode()
    srv.handle_datagrams(0.0, ("192.0.2.1", 3478), [(("198.51.100.4", 1234), request)])
    (fast,) = srv.poll_transmits()
    assert fast == srv.handle_general(("192.0.2.1", 3478), ("198.51.100.4", 1234), request)
    assert parse(fast.data).get(XorMappedAddress) == XorMappedAddress("198.51.100.4", 1234)


# ------------------------------------------------------------------------------------ the TURN server's batch

LISTEN = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
PEERS = [("198.51.100.9", 50000), ("198.51.100.9", 50001), ("198.51.100.20", 7)]
KEY = long_term_key("alice", "icelab", "secret")


class Ports:
    def __init__(self) -> None:
        self.next_port = 49152

    def reserve(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release(self, relayed: Address) -> None:
        pass


def _signed(method: int, *attrs: Attribute, nonce: str) -> bytes:
    return Message(method, MessageClass.REQUEST, attributes=[*attrs, Username("alice"), Realm("icelab"),
                                                             Nonce(nonce)]).encode(KEY, fingerprint=True)


def _same(t: Transmit) -> tuple[Any, ...]:
    """A transmit, a Data indication's random transaction ID (and so its FINGERPRINT) left out."""
    if t.data[:2] == b"\x00\x17":
        return (t.remote, t.local, parse(t.data).attributes)
    return tuple(t)


OPS = st.one_of(
    st.tuples(st.just("data"), st.sampled_from([0x4000, 0x4001, 0x4002, 0x5000]), st.binary(max_size=12),
              st.integers(-2, 2)),
    st.tuples(st.just("peer"), st.integers(0, len(PEERS) - 1), st.binary(max_size=12)),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 30.0, 200.0, 400.0])),
    st.tuples(st.just("bind"), st.sampled_from([0x4000, 0x4001, 0x4002]), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("permit"), st.integers(0, len(PEERS) - 1)),
    st.tuples(st.just("refresh"), st.sampled_from([0, 700])),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(OPS, max_size=40))
def test_the_turn_batch_relays_as_one_by_one(ops: list[tuple[Any, ...]]) -> None:
    """The relay fast path caches the general path's decisions: whatever requests, timeouts and datagrams come,
    batches give the same datagrams and the same counters as one datagram at a time."""
    cfg = TurnServerConfig(LISTEN, users={"alice": "secret"}, allowed_peers=("198.51.100.0/24",))
    one, many = TurnServer(cfg, Ports(), secret=b"k"), TurnServer(cfg, Ports(), secret=b"k")
    now = 0.0
    first = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[RequestedTransport(17)]).encode()
    one.handle_datagram(now, LISTEN, CLIENT, first)
    nonce = parse(one.poll_transmits()[0].data).get(Nonce).text  # type: ignore[union-attr]
    many.handle_datagram(now, LISTEN, CLIENT, first)
    many.poll_transmits()
    setup = [_signed(Method.ALLOCATE, RequestedTransport(17), nonce=nonce),
             _signed(Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEERS[0]), nonce=nonce)]
    for raw in setup:
        for srv in (one, many):
            srv.handle_datagram(now, LISTEN, CLIENT, raw)
    relayed = parse(one.poll_transmits()[0].data).get(XorRelayedAddress)
    assert relayed is not None
    many.poll_transmits()

    pending: list[tuple[Address, list[tuple[Address, bytes]]]] = []

    def flush() -> None:
        for local, batch in pending:
            for remote, data in batch:
                one.handle_datagram(now, local, remote, data)
            many.handle_datagrams(now, local, batch)
        pending.clear()
        assert [_same(t) for t in many.poll_transmits()] == [_same(t) for t in one.poll_transmits()]

    def arrive(local: Address, remote: Address, data: bytes) -> None:
        if pending and pending[-1][0] == local:
            pending[-1][1].append((remote, data))
        else:
            pending.append((local, [(remote, data)]))

    for op in ops:
        if op[0] == "data":
            _, number, payload, delta = op
            arrive(LISTEN, CLIENT, number.to_bytes(2, "big") + max(0, len(payload) + delta).to_bytes(2, "big")
                   + payload)
        elif op[0] == "peer":
            arrive(relayed.address, PEERS[op[1]], op[2])
        else:
            flush()
            if op[0] == "tick":
                now += op[1]
                for srv in (one, many):
                    at = srv.next_timeout()
                    if at is not None and at <= now:
                        srv.handle_timeout(now)
            else:
                if op[0] == "bind":
                    raw = _signed(Method.CHANNEL_BIND, ChannelNumber(op[1]), XorPeerAddress(*PEERS[op[2]]),
                                  nonce=nonce)
                elif op[0] == "permit":
                    raw = _signed(Method.CREATE_PERMISSION, XorPeerAddress(*PEERS[op[1]]), nonce=nonce)
                else:
                    raw = _signed(Method.REFRESH, Lifetime(op[1]), nonce=nonce)
                arrive(LISTEN, CLIENT, raw)
                flush()
    flush()
    assert many.stats == one.stats


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([CLIENT, *PEERS]), st.binary(max_size=10)), max_size=12),
       st.dictionaries(st.sampled_from([CLIENT, *PEERS]),
                       st.tuples(st.sampled_from([1.0, 5.0]), st.sampled_from([0x4000, 0x4001]),
                                 st.just(CLIENT), st.just(LISTEN)), max_size=3),
       st.dictionaries(st.tuples(st.sampled_from([CLIENT, *PEERS]), st.sampled_from([0x4000, 0x4001])),
                       st.tuples(st.sampled_from([1.0, 5.0]), st.sampled_from(PEERS), st.just(LISTEN)), max_size=3),
       st.booleans())
def test_the_c_relay_is_the_reference(batch: list[tuple[Address, bytes]], to_client_routes: dict[Any, Any],
                                      to_peer_routes: dict[Any, Any], to_client: bool) -> None:
    if to_client:
        routes: dict[Any, Any] = to_client_routes
    else:
        routes = to_peer_routes
        batch = [(remote, (0x4000 + len(data) % 2).to_bytes(2, "big") + (len(data) - 4).to_bytes(2, "big", signed=True)
                  + data) if data[:1] != b"\x00" else (remote, data) for remote, data in batch]
    for start in range(len(batch) + 1):
        py: list[Transmit] = []
        c: list[Transmit] = []
        assert (turn_server._channel_relay_py(batch, start, routes, 3.0, to_client, py)
                == turn_server._channel_relay(batch, start, routes, 3.0, to_client, c))
        assert py == c and all(type(t) is Transmit for t in c)


# ------------------------------------------------------------------------------------------ the driver path


@pytest.fixture(params=["accelerated", "pure-python"])
def io(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pure-python":
        monkeypatch.setattr(driver_module, "recv_batch", udp.recv_batch_py)
        monkeypatch.setattr(driver_module, "send_batch", udp.send_batch_py)
    elif not udp.accelerated():
        pytest.skip("the C accelerator is not built")
    return str(request.param)


def test_the_driver_answers_a_burst_of_binding_requests(io: str) -> None:
    async def main() -> None:
        runner = await StunServerRunner(StunServerConfig(("127.0.0.1", 0))).start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                c.bind(("127.0.0.1", 0))
                c.setblocking(False)
                tids = [bytes([i]) * 12 for i in range(150)]
                for tid in tids:
                    c.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid, runner.addresses[0])
                got: list[bytes] = []
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    got += [d for _, d in udp.recv_batch_py(c, 64, 2048)]
                    if len(got) == len(tids):
                        break
                assert sorted(parse(d).transaction_id for d in got) == sorted(tids)
                assert all(parse(d).get(XorMappedAddress) == XorMappedAddress(*local_of(c)) for d in got)
                assert runner.server.stats["binding"] == len(tids)
        finally:
            runner.close()

    asyncio.run(main())


def test_the_driver_relays_a_burst_both_ways_then_stops_when_deallocated(io: str) -> None:
    async def main() -> None:
        cfg = TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"}, allowed_peers=("127.0.0.0/8",))
        runner = await TurnServerRunner(cfg, "127.0.0.1").start(tcp=False)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for s in (client, peer):
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
            loop = asyncio.get_running_loop()

            async def ask(raw: bytes) -> Message:
                await loop.sock_sendto(client, raw, runner.address)
                return parse(await asyncio.wait_for(loop.sock_recv(client, 4096), 2))

            nonce = (await ask(Message(Method.ALLOCATE, MessageClass.REQUEST).encode())).get(Nonce)
            assert nonce is not None
            relayed = (await ask(_signed(Method.ALLOCATE, RequestedTransport(17), nonce=nonce.text))
                       ).get(XorRelayedAddress)
            assert relayed is not None
            bound = await ask(_signed(Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*local_of(peer)),
                                      nonce=nonce.text))
            assert bound.message_class is MessageClass.SUCCESS
            payloads = [b"p%03d" % i for i in range(120)]
            for p in payloads:
                client.sendto(b"\x40\x00" + len(p).to_bytes(2, "big") + p, runner.address)
            at_peer: list[tuple[Address, bytes]] = []
            for _ in range(200):
                await asyncio.sleep(0.01)
                at_peer += udp.recv_batch_py(peer, 64, 2048)
                if len(at_peer) == len(payloads):
                    break
            assert at_peer == [(relayed.address, p) for p in payloads]
            for p in payloads:
                peer.sendto(p, relayed.address)
            at_client: list[bytes] = []
            for _ in range(200):
                await asyncio.sleep(0.01)
                at_client += [d for _, d in udp.recv_batch_py(client, 64, 2048)]
                if len(at_client) == len(payloads):
                    break
            assert at_client == [b"\x40\x00" + len(p).to_bytes(2, "big") + p for p in payloads]
            stats = runner.core.stats
            assert stats["relayed-to-peer"] == stats["relayed-to-client"] == len(payloads)
            assert runner.core._to_peer and runner.core._to_client  # the fast path learnt both routes
            gone = await ask(_signed(Method.REFRESH, Lifetime(0), nonce=nonce.text))
            assert gone.message_class is MessageClass.SUCCESS
            client.sendto(b"\x40\x00\x00\x01x", runner.address)  # no allocation any more: dropped, counted
            for _ in range(100):
                await asyncio.sleep(0.01)
                if stats["channel-data-dropped"]:
                    break
            assert stats["channel-data-dropped"] == 1 and stats["relayed-to-peer"] == len(payloads)
        finally:
            client.close()
            peer.close()
            runner.close()

    asyncio.run(main())


def test_the_driver_batches_udp_beside_a_tcp_client(io: str) -> None:
    """With a TCP client connected (its ChannelData framed and padded on the stream, RFC 8656 §12.5) the UDP
    clients' datagrams still leave in batches, each on its own transport."""

    async def main() -> None:
        cfg = TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"}, allowed_peers=("127.0.0.0/8",))
        runner = await TurnServerRunner(cfg, "127.0.0.1").start(tcp=True)
        loop = asyncio.get_running_loop()
        udp_client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        reader, writer = await asyncio.open_connection(*runner.address)
        try:
            for s in (udp_client, *peers):
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)

            async def ask_udp(raw: bytes) -> Message:
                await loop.sock_sendto(udp_client, raw, runner.address)
                return parse(await asyncio.wait_for(loop.sock_recv(udp_client, 4096), 2))

            async def ask_tcp(raw: bytes) -> Message:
                writer.write(raw)
                head = await asyncio.wait_for(reader.readexactly(20), 2)
                return parse(head + await reader.readexactly(int.from_bytes(head[2:4], "big")))

            relayed: list[Address] = []
            for ask, peer in ((ask_udp, peers[0]), (ask_tcp, peers[1])):
                nonce = (await ask(Message(Method.ALLOCATE, MessageClass.REQUEST).encode())).get(Nonce)
                assert nonce is not None
                got = (await ask(_signed(Method.ALLOCATE, RequestedTransport(17), nonce=nonce.text))
                       ).get(XorRelayedAddress)
                assert got is not None
                relayed.append(got.address)
                bound = await ask(_signed(Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*local_of(peer)),
                                          nonce=nonce.text))
                assert bound.message_class is MessageClass.SUCCESS
            payloads = [b"%03d-" % i + bytes(i % 4) for i in range(60)]
            for p in payloads:
                peers[0].sendto(p, relayed[0])
                peers[1].sendto(p, relayed[1])
            at_udp: list[bytes] = []
            for _ in range(200):
                await asyncio.sleep(0.01)
                at_udp += [d for _, d in udp.recv_batch_py(udp_client, 64, 2048)]
                if len(at_udp) == len(payloads):
                    break
            assert at_udp == [b"\x40\x00" + len(p).to_bytes(2, "big") + p for p in payloads]
            framed = b"".join(b"\x40\x00" + len(p).to_bytes(2, "big") + p + bytes(-len(p) & 3) for p in payloads)
            assert await asyncio.wait_for(reader.readexactly(len(framed)), 2) == framed
        finally:
            writer.close()
            udp_client.close()
            for s in peers:
                s.close()
            runner.close()

    asyncio.run(main())
