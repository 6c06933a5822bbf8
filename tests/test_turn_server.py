"""The sans-IO TURN server core (RFC 8656) on a virtual clock: auth, allocations, permissions, channels, relaying."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ice.stun import Message, MessageClass, Method, long_term_key, parse
from ice.stun.attributes import (
    Address,
    Attribute,
    ChannelNumber,
    Data,
    ErrorCode,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.transaction import Transmit
from ice.turn.server import TurnServer, TurnServerConfig

LISTEN = ("203.0.113.10", 3478)
CLIENT = ("198.51.100.7", 40000)
PEER = ("198.51.100.9", 50000)
KEY = long_term_key("alice", "icelab", "secret")


@dataclass
class Ports:
    next_port: int = 49152
    released: list[Address] = field(default_factory=list)

    def reserve(self, family: int) -> Address | None:
        self.next_port += 1
        return ("203.0.113.10", self.next_port)

    def release(self, relayed: Address) -> None:
        self.released.append(relayed)


def server(**kw: object) -> tuple[TurnServer, Ports]:
    ports = Ports()
    cfg = TurnServerConfig(LISTEN, users={"alice": "secret"}, **kw)  # type: ignore[arg-type]
    return TurnServer(cfg, ports, secret=b"k"), ports


def feed(srv: TurnServer, now: float, local: Address, remote: Address, data: bytes) -> list[Transmit]:
    """One datagram through the endpoint contract: what arrived on ``local`` from ``remote``, and every answer."""
    srv.handle_datagram(now, local, remote, data)
    out = []
    while (t := srv.poll_transmit()) is not None:
        out.append(t)
    return out


def request(srv: TurnServer, now: float, method: int, *attrs: Attribute, client: Address = CLIENT,
            password: str = "secret", nonce: str | None = None) -> Message:
    """Send one request the way a client does after the 401 dance; return the parsed response."""
    if nonce is None:
        first = feed(srv, now, LISTEN, client, Message(method, MessageClass.REQUEST, attributes=list(attrs)).encode())
        nonce = parse(first[0].data).get(Nonce).text  # type: ignore[union-attr]
    key = long_term_key("alice", "icelab", password)
    msg = Message(method, MessageClass.REQUEST, attributes=[*attrs, Username("alice"), Realm("icelab"), Nonce(nonce)])
    out = feed(srv, now, LISTEN, client, msg.encode(key, fingerprint=True))
    assert len(out) == 1 and out[0].remote == client and out[0].local == LISTEN
    return parse(out[0].data)


def allocate(srv: TurnServer, now: float = 0.0, client: Address = CLIENT) -> Address:
    resp = request(srv, now, Method.ALLOCATE, RequestedTransport(17), client=client)
    assert resp.message_class is MessageClass.SUCCESS, resp.error
    assert resp.check_integrity(KEY)
    relayed = resp.get(XorRelayedAddress)
    assert relayed is not None and resp.get(Lifetime) == Lifetime(600)
    return relayed.address


def test_401_then_allocate_then_wrong_password_and_stale_nonce() -> None:
    srv, _ = server()
    first = parse(feed(srv, 0.0, LISTEN, CLIENT, Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
        RequestedTransport(17)]).encode())[0].data)
    assert first.error == ErrorCode(401, "Unauthorized") and first.get(Realm) == Realm("icelab")
    assert first.get(Nonce) is not None
    assert request(srv, 0.0, Method.ALLOCATE, RequestedTransport(17), password="wrong").error.code == 401  # type: ignore[union-attr]
    nonce = first.get(Nonce).text  # type: ignore[union-attr]
    stale = request(srv, 4000.0, Method.ALLOCATE, RequestedTransport(17), nonce=nonce)
    assert stale.error.code == 438 and stale.get(Nonce).text != nonce  # type: ignore[union-attr]
    assert allocate(srv) == ("203.0.113.10", 49153)
    assert request(srv, 1.0, Method.ALLOCATE, RequestedTransport(17)).error.code == 437  # type: ignore[union-attr]


@pytest.mark.parametrize("nonce", ["f" * 40 + "-" + "0" * 16, "-1-" + "0" * 15, "0-\u00e9" * 4, "zz-", "", "1-2"])
def test_crafted_nonces_are_stale_not_crashes(nonce: str) -> None:
    srv, _ = server()
    resp = request(srv, 0.0, Method.ALLOCATE, RequestedTransport(17), nonce=nonce)
    assert resp.error is not None and resp.error.code == 438
    assert srv.allocations == {}


def test_quota_transport_and_capacity_errors() -> None:
    srv, _ = server(user_quota=1)
    allocate(srv)
    other = ("198.51.100.8", 40001)
    assert request(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=other).error.code == 486  # type: ignore[union-attr]
    srv2, _ = server()
    assert request(srv2, 0, Method.ALLOCATE, RequestedTransport(6)).error.code == 442  # type: ignore[union-attr]
    assert request(srv2, 0, Method.ALLOCATE).error.code == 400  # type: ignore[union-attr]


def test_permission_send_indication_and_data_indication() -> None:
    srv, _ = server()
    relayed = allocate(srv)
    send = Message(Method.SEND, MessageClass.INDICATION, attributes=[XorPeerAddress(*PEER), Data(b"hi")]).encode()
    assert feed(srv, 1, LISTEN, CLIENT, send) == []  # no permission yet (RFC 8656 §9)
    assert srv.stats["send-no-permission"] == 1
    assert feed(srv, 1, relayed, PEER, b"x") == [] and srv.stats["peer-data-no-permission"] == 1
    assert request(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(*PEER)).message_class is MessageClass.SUCCESS
    out = feed(srv, 2, LISTEN, CLIENT, send)
    assert [(t.local, t.remote, t.data) for t in out] == [(relayed, PEER, b"hi")]
    back = feed(srv, 3, relayed, ("198.51.100.9", 50001), b"from another port of the same IP")
    ind = parse(back[0].data)
    assert back[0].remote == CLIENT and ind.method == Method.DATA and ind.message_class is MessageClass.INDICATION
    assert ind.get(XorPeerAddress) == XorPeerAddress("198.51.100.9", 50001)
    assert ind.get(Data) == Data(b"from another port of the same IP")
    assert feed(srv, 400, relayed, PEER, b"late") == []  # the permission expired after 300 s


def test_channel_bind_and_channel_data_both_ways() -> None:
    srv, _ = server()
    relayed = allocate(srv)
    assert request(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x4001), XorPeerAddress(*PEER)).message_class \
        is MessageClass.SUCCESS
    out = feed(srv, 2, LISTEN, CLIENT, b"\x40\x01\x00\x03abc")
    assert [(t.local, t.remote, t.data) for t in out] == [(relayed, PEER, b"abc")]
    back = feed(srv, 3, relayed, PEER, b"hello")
    assert back[0].data == b"\x40\x01\x00\x05hello" and back[0].remote == CLIENT
    # A peer keeps its channel; a channel keeps its peer (RFC 8656 §11.2).
    assert request(srv, 4, Method.CHANNEL_BIND, ChannelNumber(0x4002), XorPeerAddress(*PEER)).error.code == 400  # type: ignore[union-attr]
    other_peer = XorPeerAddress("198.51.100.9", 1)
    assert request(srv, 4, Method.CHANNEL_BIND, ChannelNumber(0x4001), other_peer).error.code == 400  # type: ignore[union-attr]
    assert request(srv, 4, Method.CHANNEL_BIND, ChannelNumber(0x3000), XorPeerAddress(*PEER)).error.code == 400  # type: ignore[union-attr]
    assert feed(srv, 5, LISTEN, CLIENT, b"\x40\x09\x00\x01z") == []  # unbound channel: dropped


def test_refresh_delete_and_expiry_release_relay_ports() -> None:
    srv, ports = server()
    relayed = allocate(srv)
    assert request(srv, 100, Method.REFRESH, Lifetime(1200)).get(Lifetime) == Lifetime(1200)
    srv.handle_timeout(700)
    assert relayed in srv.by_relay  # refreshed past the original 600 s
    assert request(srv, 800, Method.REFRESH, Lifetime(0)).get(Lifetime) == Lifetime(0)
    assert ports.released == [relayed] and not srv.allocations
    assert request(srv, 801, Method.REFRESH).error.code == 437  # type: ignore[union-attr]
    second = allocate(srv, 900)
    assert srv.next_timeout() == 1500
    srv.handle_timeout(1500)
    assert ports.released == [relayed, second] and srv.stats["allocation-expired"] == 1


def test_denied_peers_unless_allowed() -> None:
    srv, _ = server()
    allocate(srv)
    assert request(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress("127.0.0.1", 9)).error.code == 403  # type: ignore[union-attr]
    srv2, _ = server(allowed_peers=("127.0.0.0/8",))
    allocate(srv2)
    assert request(srv2, 1, Method.CREATE_PERMISSION, XorPeerAddress("127.0.0.1", 9)).message_class \
        is MessageClass.SUCCESS


@pytest.mark.parametrize("peer", ["::ffff:127.0.0.1", "169.254.1.1", "fe80::1", "::1"])
def test_mapped_loopback_and_link_local_peers_are_denied(peer: str) -> None:
    srv, _ = server()
    allocate(srv)
    resp = request(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(peer, 9))
    assert resp.error is not None and resp.error.code in (403, 443)
    assert not any(a.permissions for a in srv.allocations.values())


def test_integrity_without_username_realm_nonce_is_400_without_a_nonce() -> None:
    srv, _ = server()
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[RequestedTransport(17), Username("alice")])
    resp = parse(feed(srv, 0.0, LISTEN, CLIENT, msg.encode(KEY))[0].data)
    assert resp.error is not None and resp.error.code == 400
    assert resp.get(Nonce) is None and resp.get(Realm) is None


def test_binding_is_served_too() -> None:
    srv, _ = server()
    out = feed(srv, 0, LISTEN, CLIENT, Message(Method.BINDING, MessageClass.REQUEST).encode())
    assert parse(out[0].data).message_class is MessageClass.SUCCESS


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_garbage_never_raises(data: bytes) -> None:
    srv, _ = server()
    relayed = allocate(srv)
    feed(srv, 1, LISTEN, CLIENT, data)
    feed(srv, 1, LISTEN, CLIENT, b"\x40\x01" + data)
    feed(srv, 1, relayed, PEER, data)
    stun = b"\x00\x03" + len(data).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12) + data
    feed(srv, 1, LISTEN, CLIENT, stun)


def test_retransmitted_allocate_gets_the_same_success_not_437() -> None:
    srv, _ = server()
    first = parse(feed(srv, 0.0, LISTEN, CLIENT, Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
        RequestedTransport(17)]).encode())[0].data)
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
        RequestedTransport(17), Username("alice"), Realm("icelab"), first.get(Nonce)])  # type: ignore[list-item]
    wire = msg.encode(KEY, fingerprint=True)
    one = parse(feed(srv, 0.0, LISTEN, CLIENT, wire)[0].data)
    again = parse(feed(srv, 0.5, LISTEN, CLIENT, wire)[0].data)  # the success was lost; same transaction
    assert one.message_class is MessageClass.SUCCESS and again.message_class is MessageClass.SUCCESS
    assert again.transaction_id == msg.transaction_id and again.check_integrity(KEY)
    assert again.get(XorRelayedAddress) == one.get(XorRelayedAddress) and len(srv.allocations) == 1
    other = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=list(msg.attributes))
    assert parse(feed(srv, 1.0, LISTEN, CLIENT, other.encode(KEY))[0].data).error.code == 437  # type: ignore[union-attr]


def test_channel_bind_family_mismatch_is_443() -> None:
    srv, _ = server()
    allocate(srv)
    resp = request(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress("2001:db8::9", 9))
    assert resp.error is not None and resp.error.code == 443


def test_expired_permissions_and_channels_are_pruned_then_the_number_is_free() -> None:
    srv, _ = server(channel_lifetime=10, channel_reserve=5.0)
    allocate(srv)
    peer, other = ("198.51.100.9", 9), ("198.51.100.10", 10)
    assert request(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*peer)).error is None
    (alloc,) = srv.allocations.values()
    assert srv.next_timeout() == 15.0  # the channel's reservation ends before the permission (300 s)
    srv.handle_timeout(12.0)  # expired but still reserved for its peer: another peer may not take the number
    assert 0x4000 in alloc.channels
    assert request(srv, 12, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*other)).error.code == 400  # type: ignore[union-attr]
    srv.handle_timeout(15.0)
    assert alloc.channels == {} and alloc.by_peer == {}
    assert request(srv, 16, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*other)).error is None
    srv.handle_timeout(400.0)
    assert alloc.permissions == {} and srv.allocations  # permissions went, the allocation (600 s) stays


def test_memory_is_returned_when_allocations_are_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench turnscale at a tenth of its size: every allocation, permission and channel is gone after the Refreshes
    with lifetime 0, and setting the load up and deleting it again leaves no more memory behind each time."""
    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT))
    import bench.turnscale as scale

    monkeypatch.setattr(scale, "ALLOCATIONS", 100)
    monkeypatch.setattr(scale, "RELAYED_PACKETS", 1000)
    doc = scale.measure()
    assert doc["allocations_left"] == 0 and doc["relayed_packets"] == 1000
    assert doc["leak_bytes_per_cycle"] < 2000  # a few hundred bytes of interpreter noise at most
    assert 500 < doc["memory_per_allocation_bytes"] < 20_000  # type: ignore[operator]


def test_bench_robustness_puts_fuzzing_faults_and_load_in_one_table(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """Structure only: the fuzzing figures as recorded, the faults suite run in the sim, the TURN load measured."""
    import argparse
    import json
    from pathlib import Path

    from conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT))
    import bench.robustness as robustness
    import bench.turnscale as scale

    figures = Path(str(tmp_path)) / "figures.json"
    figures.write_text(json.dumps({"stun": {"inputs": 1000000, "exceptions": 0, "hangs": 0, "out_of_memory": 0,
                                            "rss_start_kb": 30000, "rss_end_kb": 30100, "new_corpus": 5}}))
    monkeypatch.setattr(robustness, "FIGURES", figures)
    monkeypatch.setattr(scale, "ALLOCATIONS", 50)
    monkeypatch.setattr(scale, "RELAYED_PACKETS", 200)
    assert robustness.main(argparse.Namespace(json=True)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fuzz"] == {"stun": {"inputs": 1000000, "exceptions": 0, "hangs": 0, "out_of_memory": 0,
                                    "rss_start_kb": 30000, "rss_end_kb": 30100}}
    assert doc["faults"]["cells"] >= 11 and doc["faults"]["survived"] == doc["faults"]["cells"]
    assert doc["load"]["turn_allocations"] == 50 and doc["load"]["turn_leak_bytes_per_cycle"] < 2000
