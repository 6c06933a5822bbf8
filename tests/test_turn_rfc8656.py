"""The TURN server against RFC 8656 (and the parts of RFC 8489 it relies on), one test per requirement.

Every test drives the sans-IO core through the endpoint contract on a fixed clock and asserts the exact error code,
the response attributes or the counted drop. docs/turn-conformance.md maps each requirement to its test here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_turn_server import CLIENT, KEY, LISTEN, PEER, allocate, feed, request, server

from ice.stun import Message, MessageClass, Method, parse
from ice.stun.attributes import (
    AdditionalAddressFamily,
    AddressErrorCode,
    Attribute,
    AttributeType,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    Fingerprint,
    Lifetime,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    UnknownAttribute,
    UnknownAttributes,
    UserHash,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.stun.integrity import userhash
from ice.stun.message import Integrity
from ice.turn.server import RFC5766_CHANNELS, TurnServer, TurnServerConfig

OTHER = ("198.51.100.8", 40001)


def nonce_for(srv: TurnServer, now: float, client: Address = CLIENT) -> str:
    """The NONCE a 401 gives this source (the first leg of the long-term credential dance)."""
    out = feed(srv, now, LISTEN, client, Message(Method.ALLOCATE, MessageClass.REQUEST).encode())
    nonce = parse(out[0].data).get(Nonce)
    assert nonce is not None
    return nonce.text


def signed(srv: TurnServer, now: float, method: int, *attrs: Attribute, client: Address = CLIENT,
           nonce: str | None = None, tid: bytes | None = None, integrity: Integrity = Integrity.SHA1,
           credentials: tuple[Attribute, ...] | None = None) -> Message | None:
    """One authenticated request (the nonce fetched for ``client`` unless given); the parsed answer, or None."""
    if nonce is None:
        nonce = nonce_for(srv, now, client)
    creds = credentials if credentials is not None else (Username("alice"), Realm("icelab"), Nonce(nonce))
    msg = Message(method, MessageClass.REQUEST, tid, [*attrs, *creds])
    out = feed(srv, now, LISTEN, client, msg.encode(KEY, integrity=integrity, fingerprint=True))
    assert len(out) <= 1
    return parse(out[0].data) if out else None


@dataclass
class FamilyPorts:
    """Relayed addresses of the families the I/O layer has (asked for another, it answers with its first one,
    as the asyncio runner does with its one relay IP); ``capacity`` addresses at most."""

    families: tuple[int, ...] = (4,)
    next_port: int = 49152
    capacity: int = 100
    released: list[Address] = field(default_factory=list)

    def reserve(self, family: int) -> Address | None:
        if self.capacity <= 0:
            return None
        self.capacity -= 1
        self.next_port += 1
        got = family if family in self.families else self.families[0]
        return ("2001:db8::10" if got == 6 else "203.0.113.10", self.next_port)

    def release(self, relayed: Address) -> None:
        self.released.append(relayed)


def make(ports: FamilyPorts | None = None, **kw: object) -> tuple[TurnServer, FamilyPorts]:
    """A server with users alice and bob (bob: for 441), over ``ports``."""
    ports = ports or FamilyPorts()
    cfg = TurnServerConfig(LISTEN, users={"alice": "secret", "bob": "other"}, **kw)  # type: ignore[arg-type]
    return TurnServer(cfg, ports, secret=b"k"), ports


def code_of(resp: Message | None) -> int | None:
    assert resp is not None
    return resp.error.code if resp.error is not None else None


Address = tuple[str, int]


# ------------------------------------------------------------------------------------------------------------------
# RFC 8489 §6.3, §9.2: processing order, long-term credentials, nonces


def test_rfc8489_6_3_authentication_comes_before_unknown_attributes() -> None:
    srv, _ = server()
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[RequestedTransport(17),
                                                                      UnknownAttribute(0x7F01, b"xxxx")])
    resp = parse(feed(srv, 0, LISTEN, CLIENT, msg.encode())[0].data)
    assert code_of(resp) == 401 and resp.get(Realm) is not None and resp.get(Nonce) is not None


def test_rfc8489_6_3_1_unknown_comprehension_required_is_420_signed_with_the_codes() -> None:
    srv, _ = server()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), UnknownAttribute(0x7F01, b"x"),
                  UnknownAttribute(0x8F01, b"optional: ignored"))
    assert code_of(resp) == 420 and resp.check_integrity(KEY)  # type: ignore[union-attr]
    assert resp.get(UnknownAttributes) == UnknownAttributes((0x7F01,))  # type: ignore[union-attr]
    assert not srv.allocations and srv.stats["unknown-attribute"] == 1


def test_rfc8489_6_3_unknown_comprehension_optional_attributes_are_ignored() -> None:
    srv, _ = server()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), UnknownAttribute(0x8F01, b"ignored"))
    assert code_of(resp) is None and resp.get(XorRelayedAddress) is not None  # type: ignore[union-attr]


def test_rfc8489_9_2_4_malformed_attribute_after_authentication_is_400_signed() -> None:
    """A 400 without MESSAGE-INTEGRITY to an authenticated request is discarded by the client (§9.2.5)."""
    srv, _ = server()
    resp = signed(srv, 0, Method.ALLOCATE, UnknownAttribute(AttributeType.REQUESTED_TRANSPORT, b"\x11\x00"))
    assert code_of(resp) == 400 and resp.check_integrity(KEY)  # type: ignore[union-attr]
    assert srv.stats["bad-attribute"] == 1


@pytest.mark.parametrize("method", [0x00A, 0x0FF, Method.SEND, Method.DATA])
def test_rfc8489_6_3_a_request_of_an_unsupported_method_is_silently_discarded(method: int) -> None:
    srv, _ = server()
    assert feed(srv, 0, LISTEN, CLIENT, Message(method, MessageClass.REQUEST).encode()) == []
    assert srv.stats["unknown-method"] == 1


@pytest.mark.parametrize("cls", [MessageClass.SUCCESS, MessageClass.ERROR])
def test_rfc8489_6_3_responses_sent_to_the_server_are_discarded(cls: MessageClass) -> None:
    srv, _ = server()
    assert feed(srv, 0, LISTEN, CLIENT, Message(Method.ALLOCATE, cls).encode()) == []
    assert srv.stats["not-a-request"] == 1


def test_rfc8489_7_wrong_fingerprint_is_silently_discarded() -> None:
    srv, _ = server()
    raw = bytearray(Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[RequestedTransport(17)]).encode(
        fingerprint=True))
    raw[-1] ^= 1
    assert feed(srv, 0, LISTEN, CLIENT, bytes(raw)) == [] and srv.stats["malformed"] == 1


def test_rfc8656_5_no_rfc3489_backwards_compatibility_without_the_magic_cookie() -> None:
    srv, _ = server()
    raw = bytearray(Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[RequestedTransport(17)]).encode())
    raw[4:8] = b"\x00\x00\x00\x00"
    assert feed(srv, 0, LISTEN, CLIENT, bytes(raw)) == [] and srv.stats["malformed"] == 1


def test_rfc8489_9_2_4_no_integrity_is_401_with_realm_and_nonce_unsigned() -> None:
    srv, _ = server()
    out = feed(srv, 0, LISTEN, CLIENT, Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
        RequestedTransport(17)]).encode())
    resp = parse(out[0].data)
    assert code_of(resp) == 401 and resp.get(Realm) == Realm("icelab") and resp.get(Nonce) is not None
    assert not resp.has_integrity and resp.get(Username) is None


@pytest.mark.parametrize("missing", ["username", "realm", "nonce"])
def test_rfc8489_9_2_4_integrity_without_username_realm_or_nonce_is_400_bare(missing: str) -> None:
    srv, _ = server()
    nonce = nonce_for(srv, 0)
    creds = {"username": Username("alice"), "realm": Realm("icelab"), "nonce": Nonce(nonce)}
    del creds[missing]
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), credentials=tuple(creds.values()))
    assert code_of(resp) == 400
    assert resp.get(Realm) is None and resp.get(Nonce) is None and not resp.has_integrity  # type: ignore[union-attr]


@pytest.mark.parametrize("creds", ["unknown user", "wrong realm", "wrong password"])
def test_rfc8489_9_2_4_bad_credentials_are_401_with_realm_and_nonce(creds: str) -> None:
    srv, _ = server()
    nonce = nonce_for(srv, 0)
    user, realm = ("mallory", "icelab") if creds == "unknown user" else ("alice", "elsewhere") \
        if creds == "wrong realm" else ("alice", "icelab")
    msg = Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[RequestedTransport(17), Username(user),
                                                                      Realm(realm), Nonce(nonce)])
    from ice.stun import long_term_key

    key = long_term_key("alice", "icelab", "wrong") if creds == "wrong password" else KEY
    resp = parse(feed(srv, 0, LISTEN, CLIENT, msg.encode(key))[0].data)
    assert code_of(resp) == 401 and resp.get(Realm) == Realm("icelab") and resp.get(Nonce) is not None
    assert not resp.has_integrity and not srv.allocations


def test_rfc8489_9_2_4_stale_nonce_is_438_with_a_valid_new_nonce() -> None:
    srv, _ = server(nonce_lifetime=100)
    old = nonce_for(srv, 0)
    resp = signed(srv, 150, Method.ALLOCATE, RequestedTransport(17), nonce=old)
    assert code_of(resp) == 438 and resp.get(Realm) == Realm("icelab") and not resp.has_integrity  # type: ignore[union-attr]
    fresh = resp.get(Nonce).text  # type: ignore[union-attr]
    assert fresh != old
    assert code_of(signed(srv, 150, Method.ALLOCATE, RequestedTransport(17), nonce=fresh)) is None


def test_rfc8489_9_2_4_two_sources_never_get_the_same_nonce() -> None:
    srv, _ = server()
    mine, theirs = nonce_for(srv, 0, CLIENT), nonce_for(srv, 0, OTHER)
    assert mine != theirs
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=OTHER, nonce=mine)) == 438
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=OTHER, nonce=theirs)) is None


def test_rfc8489_9_2_4_userhash_instead_of_username() -> None:
    srv, _ = server()
    nonce = nonce_for(srv, 0)
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), credentials=(
        UserHash(userhash("alice", "icelab")), Realm("icelab"), Nonce(nonce)))
    assert code_of(resp) is None and resp.check_integrity(KEY)  # type: ignore[union-attr]
    (alloc,) = srv.allocations.values()
    assert alloc.username == "alice"


def test_rfc8489_9_2_4_sha256_integrity_is_accepted_and_answered_with_message_integrity() -> None:
    """No PASSWORD-ALGORITHM(S): the request is processed as MD5 and the response carries MESSAGE-INTEGRITY."""
    srv, _ = server()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), integrity=Integrity.SHA256)
    assert code_of(resp) is None and resp.check_integrity(KEY)  # type: ignore[union-attr]
    raw = resp.raw  # type: ignore[union-attr]
    assert AttributeType.MESSAGE_INTEGRITY.to_bytes(2, "big") + b"\x00\x14" in raw
    assert AttributeType.MESSAGE_INTEGRITY_SHA256.to_bytes(2, "big") not in raw[20:]


def test_rfc8656_5_software_in_allocate_and_refresh_responses() -> None:
    srv, _ = server()
    ok = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))
    err = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))
    refresh = signed(srv, 0, Method.REFRESH)
    for resp in (ok, err, refresh):
        assert resp is not None and resp.get(Software) == Software("icelab")
    assert code_of(err) == 437


def test_rfc8656_5_responses_carry_fingerprint() -> None:
    srv, _ = server()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))
    assert resp is not None and resp.has_fingerprint and resp.get(Fingerprint) is None


def test_rfc8656_7_2_success_response_attributes() -> None:
    srv, _ = server()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))
    assert resp is not None and resp.message_class is MessageClass.SUCCESS and resp.check_integrity(KEY)
    assert resp.get(XorRelayedAddress) == XorRelayedAddress("203.0.113.10", 49153)
    assert resp.get(XorMappedAddress) == XorMappedAddress(*CLIENT)
    assert resp.get(Lifetime) == Lifetime(600)
    assert resp.get(Realm) is None and resp.get(Nonce) is None and resp.get(Username) is None




# ------------------------------------------------------------------------------------------------------------------
# RFC 8656 §7.2: receiving an Allocate request, its checks in order


def test_rfc8656_7_2_step1_every_allocate_must_be_authenticated() -> None:
    srv, _ = make()
    resp = parse(feed(srv, 0, LISTEN, CLIENT, Message(Method.ALLOCATE, MessageClass.REQUEST, attributes=[
        RequestedTransport(17)]).encode())[0].data)
    assert code_of(resp) == 401 and not srv.allocations


def test_rfc8656_7_2_step2_5tuple_in_use_is_437() -> None:
    srv, _ = make()
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))) is None
    resp = signed(srv, 1, Method.ALLOCATE, RequestedTransport(17))
    assert code_of(resp) == 437 and resp.check_integrity(KEY) and len(srv.allocations) == 1  # type: ignore[union-attr]


def test_rfc8656_7_2_a_retransmitted_allocate_gets_the_same_success() -> None:
    srv, ports = make()
    tid = bytes(range(12))
    first = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), tid=tid, nonce=nonce_for(srv, 0))
    again = signed(srv, 2, Method.ALLOCATE, RequestedTransport(17), tid=tid, nonce=nonce_for(srv, 2))
    assert first is not None and again is not None and code_of(again) is None
    assert again.get(XorRelayedAddress) == first.get(XorRelayedAddress) and again.get(Lifetime) == Lifetime(598)
    assert ports.next_port == 49153 and len(srv.allocations) == 1


def test_rfc8656_6_an_expired_allocation_is_gone_even_before_the_timer_runs() -> None:
    srv, ports = make()
    first = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))
    assert code_of(signed(srv, 600, Method.REFRESH)) == 437  # expired at 600 s: no handle_timeout needed
    again = signed(srv, 601, Method.ALLOCATE, RequestedTransport(17))
    assert code_of(again) is None and again.get(XorRelayedAddress) != first.get(XorRelayedAddress)  # type: ignore[union-attr]
    assert ports.released == [first.get(XorRelayedAddress).address]  # type: ignore[union-attr]
    assert srv.stats["allocation-expired"] == 1


def test_rfc8656_7_2_step3_no_requested_transport_is_400() -> None:
    srv, _ = make()
    resp = signed(srv, 0, Method.ALLOCATE)
    assert code_of(resp) == 400 and resp.check_integrity(KEY) and not srv.allocations  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [b"", b"\x11", b"\x11\x00\x00\x00\x00\x00\x00\x00"])
def test_rfc8656_7_2_step3_malformed_requested_transport_is_400(value: bytes) -> None:
    srv, _ = make()
    resp = signed(srv, 0, Method.ALLOCATE, UnknownAttribute(AttributeType.REQUESTED_TRANSPORT, value))
    assert code_of(resp) == 400 and resp.check_integrity(KEY) and not srv.allocations  # type: ignore[union-attr]


@pytest.mark.parametrize("protocol", [0, 6, 132, 255])
def test_rfc8656_7_2_step3_a_transport_other_than_udp_is_442(protocol: int) -> None:
    srv, _ = make()
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(protocol))) == 442
    assert not srv.allocations


def test_rfc8656_18_8_requested_transport_reserved_bytes_are_ignored() -> None:
    srv, _ = make()
    resp = signed(srv, 0, Method.ALLOCATE, UnknownAttribute(AttributeType.REQUESTED_TRANSPORT, b"\x11\xff\xff\xff"))
    assert code_of(resp) is None


def test_rfc8656_7_2_step4_dont_fragment_unsupported_is_420_listing_it() -> None:
    srv, _ = make()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), DontFragment())
    assert code_of(resp) == 420 and resp.check_integrity(KEY)  # type: ignore[union-attr]
    assert resp.get(UnknownAttributes) == UnknownAttributes((AttributeType.DONT_FRAGMENT,))  # type: ignore[union-attr]
    assert not srv.allocations
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))) is None  # §7.4: retry without it


@pytest.mark.parametrize("other", [EvenPort(False), EvenPort(True), RequestedAddressFamily(1),
                                   AdditionalAddressFamily(2)])
def test_rfc8656_7_2_step5_reservation_token_with_even_port_or_a_family_is_400(other: Attribute) -> None:
    srv, _ = make()
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), ReservationToken(7), other)) == 400


def test_rfc8656_7_2_step5_an_unknown_reservation_token_is_508() -> None:
    srv, ports = make()
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), ReservationToken(7))) == 508
    assert ports.next_port == 49152 and not srv.allocations


def test_rfc8656_7_2_step6_requested_and_additional_family_together_is_400() -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), RequestedAddressFamily(1),
                  AdditionalAddressFamily(2))
    assert code_of(resp) == 400 and not srv.allocations


def test_rfc8656_7_2_step7_an_unsupported_requested_family_is_440_and_nothing_is_kept() -> None:
    srv, ports = make(FamilyPorts((4,)))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), RequestedAddressFamily(2))
    assert code_of(resp) == 440 and resp.check_integrity(KEY) and not srv.allocations  # type: ignore[union-attr]
    assert ports.released == [("203.0.113.10", 49153)]


@pytest.mark.parametrize("family", [0, 3, 255])
def test_rfc8656_7_2_step7_an_unknown_family_value_is_440(family: int) -> None:
    srv, ports = make(FamilyPorts((4, 6)))
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), RequestedAddressFamily(family))) == 440
    assert ports.next_port == 49152


def test_rfc8656_7_2_step7_no_requested_family_means_ipv4_even_for_an_ipv6_client() -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=("2001:db8::7", 5000))
    assert resp is not None and resp.get(XorRelayedAddress) == XorRelayedAddress("203.0.113.10", 49153)
    assert resp.get(XorMappedAddress) == XorMappedAddress("2001:db8::7", 5000)


def test_rfc8656_7_2_step7_no_requested_family_and_no_ipv4_is_440() -> None:
    srv, ports = make(FamilyPorts((6,)))
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))) == 440
    assert ports.released == [("2001:db8::10", 49153)]


@pytest.mark.parametrize(("family", "host"), [(1, "203.0.113.10"), (2, "2001:db8::10")])
def test_rfc8656_7_2_step7_the_requested_family_is_allocated(family: int, host: str) -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), RequestedAddressFamily(family))
    assert resp is not None and resp.get(XorRelayedAddress) == XorRelayedAddress(host, 49153)


def test_rfc8656_18_6_requested_family_reserved_bytes_are_ignored() -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    raf = UnknownAttribute(AttributeType.REQUESTED_ADDRESS_FAMILY, b"\x02\xff\xff\xff")
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), raf)
    assert resp is not None and resp.get(XorRelayedAddress) == XorRelayedAddress("2001:db8::10", 49153)


def test_rfc8656_7_2_step8_even_port_with_r_bit_and_additional_family_is_400() -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(True), AdditionalAddressFamily(2))
    assert code_of(resp) == 400


def test_rfc8656_7_2_even_port_r_bit_holds_the_next_port_for_its_token() -> None:
    srv, ports = make(FamilyPorts(next_port=49150))  # 49151 (odd, released), then 49152 and 49153
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(True))
    assert resp is not None and resp.get(XorRelayedAddress) == XorRelayedAddress("203.0.113.10", 49152)
    token = resp.get(ReservationToken)
    assert token is not None and ports.released == [("203.0.113.10", 49151)]
    # Any 5-tuple may claim it (a server-wide reservation), once.
    other = signed(srv, 1, Method.ALLOCATE, RequestedTransport(17), token, client=OTHER)
    assert other is not None and other.get(XorRelayedAddress) == XorRelayedAddress("203.0.113.10", 49153)
    assert other.get(ReservationToken) is None and ports.next_port == 49153
    third = ("198.51.100.9", 40002)
    assert code_of(signed(srv, 2, Method.ALLOCATE, RequestedTransport(17), token, client=third)) == 508


def test_rfc8656_7_2_a_reservation_is_held_30_seconds_then_released() -> None:
    srv, ports = make()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(True))
    token = resp.get(ReservationToken)  # type: ignore[union-attr]
    assert token is not None and srv.next_timeout() == 30.0
    srv.handle_timeout(29.9)
    assert ports.released == [("203.0.113.10", 49153)]  # odd: not used
    srv.handle_timeout(30.0)
    assert ports.released[1:] == [("203.0.113.10", 49155)] and srv.stats["reservation-expired"] == 1
    assert code_of(signed(srv, 31, Method.ALLOCATE, RequestedTransport(17), token, client=OTHER)) == 508
    assert srv.next_timeout() == 600


def test_rfc8656_7_2_even_port_r_bit_binds_the_next_port_where_the_io_layer_can() -> None:
    """With ``reserve_at`` (as the asyncio runner has), N + 1 is bound directly even if ports come at random."""
    @dataclass
    class RandomPorts(FamilyPorts):
        at: list[Address] = field(default_factory=list)

        def reserve(self, family: int) -> Address | None:
            self.next_port += 1000
            return ("203.0.113.10", self.next_port)

        def reserve_at(self, relayed: Address) -> Address | None:
            self.at.append(relayed)
            return relayed

    ports = RandomPorts(next_port=50000)
    srv, _ = make(ports)
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(True))
    assert resp is not None and resp.get(XorRelayedAddress) == XorRelayedAddress("203.0.113.10", 51000)
    assert ports.at == [("203.0.113.10", 51001)] and resp.get(ReservationToken) is not None


def test_rfc8656_7_2_step8_even_port_r_bit_that_cannot_be_satisfied_is_508() -> None:
    @dataclass
    class SpreadPorts(FamilyPorts):
        def reserve(self, family: int) -> Address | None:
            self.next_port += 10
            return ("203.0.113.10", self.next_port)

    srv, ports = make(SpreadPorts(), even_port_attempts=4)
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(True))) == 508
    assert len(ports.released) == 4 and not srv.allocations


def test_rfc8656_7_2_even_port_gives_an_even_port_and_releases_the_odd_ones() -> None:
    srv, ports = make(FamilyPorts(next_port=49150))  # the next one is odd (49151), then 49152
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(False))
    assert resp is not None and resp.get(XorRelayedAddress) == XorRelayedAddress("203.0.113.10", 49152)
    assert ports.released == [("203.0.113.10", 49151)]


def test_rfc8656_7_2_step8_even_port_that_cannot_be_had_is_508() -> None:
    @dataclass
    class OddPorts(FamilyPorts):
        def reserve(self, family: int) -> Address | None:
            self.next_port += 2
            return ("203.0.113.10", self.next_port + 1)

    srv, ports = make(OddPorts(), even_port_attempts=3)
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), EvenPort(False))) == 508
    assert len(ports.released) == 3 and not srv.allocations


def test_rfc8656_7_2_step9_additional_family_ipv4_is_400() -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), AdditionalAddressFamily(1))) == 400


@pytest.mark.parametrize(("families", "relayed", "missing"), [((4, 6), "203.0.113.10", 2), ((4,), "203.0.113.10", 2),
                                                              ((6,), "2001:db8::10", 1)])
def test_rfc8656_7_2_step9_additional_family_partial_success_names_the_other_family(
        families: tuple[int, ...], relayed: str, missing: int) -> None:
    """Dual allocations are not offered: one relayed address, the other family in ADDRESS-ERROR-CODE (440)."""
    srv, _ = make(FamilyPorts(families))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), AdditionalAddressFamily(2))
    assert resp is not None and code_of(resp) is None and resp.check_integrity(KEY)
    assert [a for a in resp.attributes if isinstance(a, XorRelayedAddress)] == [XorRelayedAddress(relayed, 49153)]
    assert resp.get(AddressErrorCode) == AddressErrorCode(missing, 440, "Address Family not Supported")


def test_rfc8656_7_2_step9_additional_family_and_no_address_at_all_is_508() -> None:
    srv, _ = make(FamilyPorts(capacity=0))
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), AdditionalAddressFamily(2))) == 508


def test_rfc8656_7_2_step10_quota_is_per_username_486() -> None:
    srv, _ = make(user_quota=1)
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))) is None
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=OTHER)
    assert code_of(resp) == 486 and resp.check_integrity(KEY) and len(srv.allocations) == 1  # type: ignore[union-attr]


def test_rfc8656_7_2_no_relayed_address_left_is_508() -> None:
    srv, _ = make(FamilyPorts(capacity=1))
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))) is None
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=OTHER)) == 508


@pytest.mark.parametrize(("asked", "granted"), [(None, 600), (0, 600), (1, 600), (600, 600), (601, 601),
                                                (1800, 1800), (3600, 3600), (3601, 3600), (0xFFFFFFFF, 3600)])
def test_rfc8656_7_2_initial_lifetime(asked: int | None, granted: int) -> None:
    srv, _ = make()
    extra = [] if asked is None else [Lifetime(asked)]
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), *extra)
    assert resp is not None and resp.get(Lifetime) == Lifetime(granted)
    assert srv.next_timeout() == granted


def test_rfc8656_7_2_lifetime_never_below_the_default_even_with_a_smaller_maximum() -> None:
    srv, _ = make(max_lifetime=300)
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), Lifetime(3600))
    assert resp is not None and resp.get(Lifetime) == Lifetime(600)


@pytest.mark.parametrize("client", [("2001:0:4136:e378::1", 4000), ("2002:c000:0204::1", 4000)])
def test_rfc8656_21_4_teredo_and_6to4_clients_are_refused(client: Address) -> None:
    srv, ports = make()
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), client=client)
    assert code_of(resp) == 403 and ports.next_port == 49152 and srv.stats["client-tunneled"] == 1


# ------------------------------------------------------------------------------------------------------------------
# RFC 8656 §5, §8: Refresh


def test_rfc8656_5_a_refresh_without_an_allocation_is_437() -> None:
    srv, _ = make()
    resp = signed(srv, 0, Method.REFRESH)
    assert code_of(resp) == 437 and resp.check_integrity(KEY)  # type: ignore[union-attr]


def test_rfc8656_5_a_request_from_another_user_is_441() -> None:
    srv, _ = make()
    assert code_of(signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))) is None
    from ice.stun import long_term_key

    bob = long_term_key("bob", "icelab", "other")
    msg = Message(Method.REFRESH, MessageClass.REQUEST, attributes=[Lifetime(0), Username("bob"), Realm("icelab"),
                                                                     Nonce(nonce_for(srv, 1))])
    resp = parse(feed(srv, 1, LISTEN, CLIENT, msg.encode(bob))[0].data)
    assert code_of(resp) == 441 and resp.check_integrity(bob) and len(srv.allocations) == 1


@pytest.mark.parametrize(("asked", "granted"), [(None, 600), (1, 600), (900, 900), (7200, 3600)])
def test_rfc8656_8_2_refresh_sets_the_time_to_expiry(asked: int | None, granted: int) -> None:
    srv, _ = make()
    signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), Lifetime(3600))
    resp = signed(srv, 100, Method.REFRESH, *([] if asked is None else [Lifetime(asked)]))
    assert resp is not None and resp.get(Lifetime) == Lifetime(granted) and resp.check_integrity(KEY)
    assert resp.get(Software) == Software("icelab")
    assert srv.next_timeout() == 100 + granted


def test_rfc8656_8_2_refresh_with_lifetime_zero_deletes_the_allocation() -> None:
    srv, ports = make()
    relayed = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17)).get(XorRelayedAddress)  # type: ignore[union-attr]
    resp = signed(srv, 1, Method.REFRESH, Lifetime(0))
    assert resp is not None and code_of(resp) is None and resp.get(Lifetime) == Lifetime(0)
    assert not srv.allocations and ports.released == [relayed.address]  # type: ignore[union-attr]
    assert code_of(signed(srv, 2, Method.REFRESH, Lifetime(0))) == 437  # §8.3: the client takes it as done


def test_rfc8656_8_2_refresh_with_another_family_is_443() -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    signed(srv, 0, Method.ALLOCATE, RequestedTransport(17))
    assert code_of(signed(srv, 1, Method.REFRESH, RequestedAddressFamily(2))) == 443
    assert code_of(signed(srv, 1, Method.REFRESH, RequestedAddressFamily(1))) is None


def test_rfc8656_6_sending_data_does_not_refresh_an_allocation() -> None:
    srv, _ = make()
    relayed = allocate(srv)
    assert request(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(*PEER)).error is None
    send = Message(Method.SEND, MessageClass.INDICATION, attributes=[XorPeerAddress(*PEER), Data(b"x")]).encode()
    for t in (100, 200, 299):
        assert len(feed(srv, t, LISTEN, CLIENT, send)) == 1
        assert len(feed(srv, t, relayed, PEER, b"y")) == 1
    assert srv.next_timeout() == 301  # the permission; the allocation still ends at 600
    srv.handle_timeout(600)
    assert not srv.allocations


Sent = tuple[Address | None, Address, bytes]
"""What the server sent: (from, to, bytes)."""


def relayed_for(srv: TurnServer, now: float = 0, client: Address = CLIENT) -> Address:
    resp = signed(srv, now, Method.ALLOCATE, RequestedTransport(17), client=client)
    assert resp is not None and code_of(resp) is None
    return resp.get(XorRelayedAddress).address  # type: ignore[union-attr]


def send(srv: TurnServer, now: float, *attrs: Attribute, client: Address = CLIENT) -> list[Sent]:
    """A Send indication from the client; what the server sent: (from, to, bytes)."""
    msg = Message(Method.SEND, MessageClass.INDICATION, attributes=list(attrs))
    return [(t.local, t.remote, t.data) for t in feed(srv, now, LISTEN, client, msg.encode(fingerprint=True))]


def channel_data(srv: TurnServer, now: float, frame: bytes, client: Address = CLIENT) -> list[Sent]:
    return [(t.local, t.remote, t.data) for t in feed(srv, now, LISTEN, client, frame)]


# ------------------------------------------------------------------------------------------------------------------
# RFC 8656 §9, §10: permissions and CreatePermission


def test_rfc8656_9_permission_lifetime_is_300_seconds() -> None:
    assert TurnServerConfig(LISTEN).permission_lifetime == 300
    srv, _ = make()
    relayed = relayed_for(srv)
    assert code_of(signed(srv, 10, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))) is None
    assert len(feed(srv, 309.9, relayed, PEER, b"x")) == 1
    assert feed(srv, 310, relayed, PEER, b"x") == [] and srv.stats["peer-data-no-permission"] == 1


def test_rfc8656_9_a_permission_is_per_ip_any_port() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(PEER[0], 1))
    out = feed(srv, 1, relayed, (PEER[0], 61000), b"x")
    assert len(out) == 1 and parse(out[0].data).get(XorPeerAddress) == XorPeerAddress(PEER[0], 61000)
    assert feed(srv, 1, relayed, ("198.51.100.99", PEER[1]), b"x") == []


def test_rfc8656_9_creating_again_resets_the_time_to_expiry() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    signed(srv, 200, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert len(feed(srv, 450, relayed, PEER, b"x")) == 1 and feed(srv, 500, relayed, PEER, b"x") == []


def test_rfc8656_9_permissions_of_one_allocation_are_not_anothers() -> None:
    srv, _ = make()
    mine = relayed_for(srv)
    theirs = relayed_for(srv, client=OTHER)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert len(feed(srv, 1, mine, PEER, b"x")) == 1 and feed(srv, 1, theirs, PEER, b"x") == []


def test_rfc8656_10_2_no_xor_peer_address_is_400() -> None:
    srv, _ = make()
    relayed_for(srv)
    resp = signed(srv, 1, Method.CREATE_PERMISSION)
    assert code_of(resp) == 400 and resp.check_integrity(KEY)  # type: ignore[union-attr]


def test_rfc8656_10_2_a_malformed_xor_peer_address_is_400_and_nothing_is_installed() -> None:
    srv, _ = make()
    relayed_for(srv)
    bad = UnknownAttribute(AttributeType.XOR_PEER_ADDRESS, b"\x00\x01\x00")
    resp = signed(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(*PEER), bad)
    assert code_of(resp) == 400 and resp.check_integrity(KEY)  # type: ignore[union-attr]
    (alloc,) = srv.allocations.values()
    assert alloc.permissions == {}


def test_rfc8656_10_2_several_peers_in_one_request() -> None:
    srv, _ = make()
    relayed_for(srv)
    resp = signed(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(*PEER), XorPeerAddress("192.0.2.1", 0))
    assert resp is not None and code_of(resp) is None and resp.check_integrity(KEY)
    assert [a for a in resp.attributes if not isinstance(a, Software)] == []  # no mandatory attributes
    (alloc,) = srv.allocations.values()
    assert set(alloc.permissions) == {PEER[0], "192.0.2.1"}


@pytest.mark.parametrize(("bad", "code"), [(XorPeerAddress("2001:db8::9", 9), 443),
                                           (XorPeerAddress("127.0.0.1", 9), 403),
                                           (XorPeerAddress("224.0.0.1", 9), 403)])
def test_rfc8656_10_2_all_or_nothing_443_for_another_family_403_for_a_denied_peer(bad: Attribute, code: int
                                                                                   ) -> None:
    srv, _ = make()
    relayed_for(srv)
    resp = signed(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(*PEER), bad)
    assert code_of(resp) == code and resp.check_integrity(KEY)  # type: ignore[union-attr]
    (alloc,) = srv.allocations.values()
    assert alloc.permissions == {}


@pytest.mark.parametrize("peer", ["2001:0:4136:e378::1", "2002:c000:204::1"])
def test_rfc8656_21_4_teredo_and_6to4_peers_are_refused_even_if_allowed(peer: str) -> None:
    srv, _ = make(FamilyPorts((6,)), allowed_peers=("2000::/3",))
    resp = signed(srv, 0, Method.ALLOCATE, RequestedTransport(17), RequestedAddressFamily(2))
    assert code_of(resp) is None
    assert code_of(signed(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress(peer, 9))) == 403
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(peer, 9))) == 403
    assert code_of(signed(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress("2001:db8::9", 9))) is None


def test_rfc8656_21_2_2_allowed_peers_lift_the_denied_ranges() -> None:
    srv, _ = make(allowed_peers=("127.0.0.0/8",))
    relayed_for(srv)
    assert code_of(signed(srv, 1, Method.CREATE_PERMISSION, XorPeerAddress("127.0.0.1", 9))) is None


@pytest.mark.parametrize("method", [Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_rfc8656_5_permission_and_channel_requests_without_an_allocation_are_437(method: int) -> None:
    srv, _ = make()
    resp = signed(srv, 0, method, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    assert code_of(resp) == 437 and resp.check_integrity(KEY)  # type: ignore[union-attr]


@pytest.mark.parametrize("method", [Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_rfc8656_5_permission_and_channel_requests_of_another_user_are_441(method: int) -> None:
    from ice.stun import long_term_key

    srv, _ = make()
    relayed_for(srv)
    bob = long_term_key("bob", "icelab", "other")
    msg = Message(method, MessageClass.REQUEST, attributes=[ChannelNumber(0x4000), XorPeerAddress(*PEER),
                                                            Username("bob"), Realm("icelab"), Nonce(nonce_for(srv, 1))])
    resp = parse(feed(srv, 1, LISTEN, CLIENT, msg.encode(bob))[0].data)
    assert code_of(resp) == 441
    (alloc,) = srv.allocations.values()
    assert alloc.permissions == {} and alloc.channels == {}


# ------------------------------------------------------------------------------------------------------------------
# RFC 8656 §11: Send and Data indications


def test_rfc8656_11_2_send_relays_data_from_the_relayed_address() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"hello")) == [(relayed, PEER, b"hello")]
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"")) == [(relayed, PEER, b"")]  # zero bytes are allowed


@pytest.mark.parametrize("attrs", [(), (Data(b"x"),), (XorPeerAddress(*PEER),)])
def test_rfc8656_11_2_send_without_peer_or_data_is_discarded(attrs: tuple[Attribute, ...]) -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert send(srv, 1, *attrs) == [] and srv.stats["send-dropped"] == 1


def test_rfc8656_11_2_send_with_a_malformed_peer_is_discarded() -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    bad = UnknownAttribute(AttributeType.XOR_PEER_ADDRESS, b"\x00\x03\x00\x00\x00\x00\x00\x00")
    assert send(srv, 1, bad, Data(b"x")) == [] and srv.stats["bad-attribute"] == 1


def test_rfc8656_11_2_send_without_a_permission_is_discarded_and_creates_none() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"x")) == [] and srv.stats["send-no-permission"] == 1
    assert feed(srv, 2, relayed, PEER, b"y") == []


def test_rfc8656_11_2_send_does_not_refresh_the_permission() -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert len(send(srv, 299, XorPeerAddress(*PEER), Data(b"x"))) == 1
    assert send(srv, 300, XorPeerAddress(*PEER), Data(b"x")) == []


def test_rfc8489_6_3_2_send_with_an_unknown_comprehension_required_attribute_is_discarded() -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"x"), UnknownAttribute(0x7F01, b"")) == []
    assert srv.stats["send-unknown-attribute"] == 1
    assert len(send(srv, 1, XorPeerAddress(*PEER), Data(b"x"), UnknownAttribute(0x8F01, b""))) == 1


def test_rfc8656_11_2_send_with_dont_fragment_the_relay_cannot_honour_is_discarded() -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"x"), DontFragment()) == []
    assert srv.stats["send-dont-fragment"] == 1


def test_rfc8656_13_dont_fragment_is_ignored_when_translating_between_families() -> None:
    v6 = ("2001:db8::7", 5000)
    srv, _ = make()
    relayed = relayed_for(srv, client=v6)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER), client=v6)
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"x"), DontFragment(), client=v6) == [(relayed, PEER, b"x")]


def test_rfc8656_5_send_without_an_allocation_is_silently_ignored() -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    assert send(srv, 1, XorPeerAddress(*PEER), Data(b"x"), client=OTHER) == []
    assert srv.stats["send-dropped"] == 1


def test_rfc8656_11_3_a_datagram_from_a_permitted_peer_becomes_a_data_indication() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    for payload in (b"hello", b""):
        (out,) = feed(srv, 1, relayed, PEER, payload)
        ind = parse(out.data)
        assert (out.local, out.remote) == (LISTEN, CLIENT)  # on the allocation's 5-tuple
        assert (ind.method, ind.message_class) == (Method.DATA, MessageClass.INDICATION)
        assert ind.get(XorPeerAddress) == XorPeerAddress(*PEER) and ind.get(Data) == Data(payload)


def test_rfc8656_11_3_a_datagram_to_an_unknown_relayed_address_goes_nowhere() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    signed(srv, 1, Method.REFRESH, Lifetime(0))
    assert feed(srv, 2, relayed, PEER, b"x") == []


# ------------------------------------------------------------------------------------------------------------------
# RFC 8656 §12: channels


@pytest.mark.parametrize("number", [0x4000, 0x4ABC, 0x4FFF])
def test_rfc8656_12_2_channel_numbers_0x4000_to_0x4fff_are_accepted(number: int) -> None:
    srv, _ = make()
    relayed_for(srv)
    resp = signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(number), XorPeerAddress(*PEER))
    assert resp is not None and code_of(resp) is None and resp.check_integrity(KEY)
    assert [a for a in resp.attributes if not isinstance(a, Software)] == []  # no required attributes


@pytest.mark.parametrize("number", [0x0000, 0x0001, 0x3FFF, 0x5000, 0x7FFF, 0x8000, 0xFFFF])
def test_rfc8656_12_2_other_channel_numbers_are_400(number: int) -> None:
    srv, _ = make()
    relayed_for(srv)
    resp = signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(number), XorPeerAddress(*PEER))
    assert code_of(resp) == 400 and resp.check_integrity(KEY)  # type: ignore[union-attr]
    (alloc,) = srv.allocations.values()
    assert alloc.channels == {} and alloc.permissions == {}
    # the numbers RFC 5766 allowed are counted apart, so the operator can be told about --rfc5766-channels
    assert srv.stats["channel-rfc5766-range"] == (1 if 0x5000 <= number <= 0x7FFF else 0)


def test_rfc8656_12_rfc5766_channel_numbers_only_when_configured() -> None:
    srv, _ = make(channel_numbers=RFC5766_CHANNELS)
    relayed_for(srv)
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x7FFF), XorPeerAddress(*PEER))) is None
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x8000), XorPeerAddress("192.0.2.1", 1))) == 400


@pytest.mark.parametrize("attrs", [(ChannelNumber(0x4000),), (XorPeerAddress(*PEER),)])
def test_rfc8656_12_2_channel_bind_needs_both_attributes(attrs: tuple[Attribute, ...]) -> None:
    srv, _ = make()
    relayed_for(srv)
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, *attrs)) == 400


def test_rfc8656_18_1_channel_number_reserved_bytes_are_ignored() -> None:
    srv, _ = make()
    relayed_for(srv)
    number = UnknownAttribute(AttributeType.CHANNEL_NUMBER, b"\x40\x00\xff\xff")
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, number, XorPeerAddress(*PEER))) is None


def test_rfc8656_12_2_a_channel_is_bound_to_one_peer_and_a_peer_to_one_channel() -> None:
    srv, _ = make()
    relayed_for(srv)
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))) is None
    assert code_of(signed(srv, 2, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(PEER[0], 1))) == 400
    assert code_of(signed(srv, 2, Method.CHANNEL_BIND, ChannelNumber(0x4001), XorPeerAddress(*PEER))) == 400
    assert code_of(signed(srv, 3, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))) is None


def test_rfc8656_12_2_channel_bind_with_another_family_is_443_and_a_denied_peer_403() -> None:
    srv, _ = make()
    relayed_for(srv)
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress("2001:db8::1", 1))) \
        == 443
    assert code_of(signed(srv, 1, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress("127.0.0.1", 1))) == 403


def test_rfc8656_12_2_channel_bind_installs_the_permission_and_rebinding_refreshes_both() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    assert feed(srv, 1, relayed, PEER, b"x")[0].data == b"\x40\x00\x00\x01x"
    signed(srv, 290, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    assert feed(srv, 589, relayed, PEER, b"x")[0].data == b"\x40\x00\x00\x01x"
    assert channel_data(srv, 589, b"\x40\x00\x00\x01z") == [(relayed, PEER, b"z")]


def test_rfc8656_12_a_channel_lasts_10_minutes() -> None:
    srv, _ = make()
    relayed = relayed_for(srv, 0)
    signed(srv, 0, Method.REFRESH, Lifetime(3600))
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    signed(srv, 500, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))  # the permission outlives the channel
    assert channel_data(srv, 599, b"\x40\x00\x00\x01z") == [(relayed, PEER, b"z")]
    assert channel_data(srv, 600, b"\x40\x00\x00\x01z") == [] and srv.stats["channel-data-unbound"] == 1
    ind = parse(feed(srv, 600, relayed, PEER, b"y")[0].data)  # no channel: a Data indication again
    assert ind.method == Method.DATA and ind.get(Data) == Data(b"y")


def test_rfc8656_12_an_expired_channel_can_be_rebound_elsewhere_after_the_hold() -> None:
    """The client must wait 5 minutes (§12); the server holds the number for its peer that long
    (``channel_reserve``), and with 0 follows the RFC's letter: unbound at once."""
    srv, _ = make(channel_lifetime=10, channel_reserve=0.0)
    relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    srv.handle_timeout(10)
    assert code_of(signed(srv, 10, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(PEER[0], 1))) is None


def test_rfc8656_12_channels_of_one_allocation_are_not_anothers() -> None:
    srv, _ = make()
    relayed_for(srv)
    relayed_for(srv, client=OTHER)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    resp = signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(PEER[0], 1), client=OTHER)
    assert code_of(resp) is None
    assert channel_data(srv, 1, b"\x40\x00\x00\x01z", client=OTHER)[0][1] == (PEER[0], 1)


def test_rfc8656_12_6_channel_data_to_the_peer_length_zero_and_udp_padding() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    assert channel_data(srv, 1, b"\x40\x00\x00\x00") == [(relayed, PEER, b"")]
    assert channel_data(srv, 1, b"\x40\x00\x00\x03abc\x00") == [(relayed, PEER, b"abc")]  # padding MAY be there


def test_rfc8656_12_6_channel_data_shorter_than_its_length_is_discarded() -> None:
    srv, _ = make()
    relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    assert channel_data(srv, 1, b"\x40\x00\x00\x05abc") == [] and srv.stats["channel-data-dropped"] == 1


@pytest.mark.parametrize("frame", [b"\x50\x00\x00\x01x", b"\x7f\xff\x00\x01x"])
def test_rfc8656_12_6_reserved_channel_numbers_are_discarded(frame: bytes) -> None:
    srv, _ = make()
    relayed_for(srv)
    assert channel_data(srv, 1, frame) == [] and srv.stats["channel-data-reserved"] == 1


def test_rfc8656_12_6_channel_data_on_an_unbound_channel_or_without_allocation_is_discarded() -> None:
    srv, _ = make()
    relayed_for(srv)
    assert channel_data(srv, 1, b"\x40\x01\x00\x01x") == [] and srv.stats["channel-data-unbound"] == 1
    assert channel_data(srv, 1, b"\x40\x01\x00\x01x", client=OTHER) == []
    assert srv.stats["channel-data-dropped"] == 1


def test_rfc8656_12_6_channel_data_refreshes_neither_channel_nor_permission() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    for t in (100, 200, 299):
        assert len(channel_data(srv, t, b"\x40\x00\x00\x01z")) == 1
    assert channel_data(srv, 300, b"\x40\x00\x00\x01z") == [] and feed(srv, 300, relayed, PEER, b"y") == []


def test_rfc8656_12_5_the_server_uses_channel_data_when_a_channel_is_bound() -> None:
    srv, _ = make()
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4ABC), XorPeerAddress(*PEER))
    (out,) = feed(srv, 1, relayed, PEER, b"hello")
    assert (out.local, out.remote, out.data) == (LISTEN, CLIENT, b"\x4a\xbc\x00\x05hello")  # no padding over UDP
    other = feed(srv, 1, relayed, (PEER[0], 1), b"hi")  # the same IP, another port: no channel for it
    assert parse(other[0].data).method == Method.DATA


def test_rfc8656_12_5_channel_data_is_padded_to_four_bytes_over_tcp() -> None:
    srv, _ = make()
    srv.stream_opened(LISTEN, CLIENT)
    relayed = relayed_for(srv)
    signed(srv, 0, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*PEER))
    (out,) = feed(srv, 1, relayed, PEER, b"hello")
    assert out.data == b"\x40\x00\x00\x05hello\x00\x00\x00"
    srv.stream_closed(LISTEN, CLIENT)  # §3.1: a TCP allocation ends with its connection
    assert not srv.allocations


# ------------------------------------------------------------------------------------------------------------------
# RFC 8656 §19: the error codes, and bad input never raising


@pytest.mark.parametrize(("code", "phrase", "provoke"), [
    (403, "Forbidden", (Method.CREATE_PERMISSION, XorPeerAddress("127.0.0.1", 1))),
    (437, "Allocation Mismatch", (Method.ALLOCATE, RequestedTransport(17))),
    (440, "Address Family not Supported", (Method.ALLOCATE, RequestedTransport(17), RequestedAddressFamily(2))),
    (442, "Unsupported Transport Protocol", (Method.ALLOCATE, RequestedTransport(6))),
    (443, "Peer Address Family Mismatch", (Method.CREATE_PERMISSION, XorPeerAddress("2001:db8::1", 1))),
    (486, "Allocation Quota Reached", (Method.ALLOCATE, RequestedTransport(17))),
    (508, "Insufficient Capacity", (Method.ALLOCATE, RequestedTransport(17), ReservationToken(1))),
])
def test_rfc8656_19_error_codes_and_reason_phrases(code: int, phrase: str, provoke: tuple[int | Attribute, ...]
                                                   ) -> None:
    srv, _ = make(user_quota=1 if code == 486 else 10)
    relayed_for(srv)
    method, *attrs = provoke
    assert isinstance(method, int)
    fresh = method == Method.ALLOCATE and code != 437  # a 5-tuple without an allocation
    resp = signed(srv, 1, method, *[a for a in attrs if isinstance(a, Attribute)], client=OTHER if fresh else CLIENT)
    assert resp is not None and resp.error is not None and resp.error.code == code
    assert resp.error.reason.startswith(phrase) and resp.check_integrity(KEY)


def test_rfc8656_19_441_reason_phrase() -> None:
    from ice.stun import long_term_key

    srv, _ = make()
    relayed_for(srv)
    bob = long_term_key("bob", "icelab", "other")
    msg = Message(Method.REFRESH, MessageClass.REQUEST, attributes=[Username("bob"), Realm("icelab"),
                                                                     Nonce(nonce_for(srv, 1))])
    resp = parse(feed(srv, 1, LISTEN, CLIENT, msg.encode(bob))[0].data)
    assert resp.error is not None and (resp.error.code, resp.error.reason) == (441, "Wrong Credentials")


hosts = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
turn_attributes = st.one_of(
    st.builds(ChannelNumber, st.integers(0, 0xFFFF)),
    st.builds(Lifetime, st.integers(0, 0xFFFFFFFF)),
    st.builds(RequestedTransport, st.integers(0, 255)),
    st.builds(RequestedAddressFamily, st.integers(0, 255)),
    st.builds(AdditionalAddressFamily, st.integers(0, 255)),
    st.builds(EvenPort, st.booleans()),
    st.builds(ReservationToken, st.integers(0, 2**64 - 1)),
    st.builds(DontFragment),
    st.builds(XorPeerAddress, hosts, st.integers(0, 0xFFFF)),
    st.builds(Data, st.binary(max_size=40)),
    st.builds(UnknownAttribute, st.sampled_from([0x000C, 0x000D, 0x0012, 0x0017, 0x0018, 0x0019, 0x0022, 0x7F00,
                                                  0x8000, 0x8001]), st.binary(max_size=24)),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([Method.ALLOCATE, Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND,
                        Method.SEND]),
       st.lists(turn_attributes, max_size=6), st.sampled_from([CLIENT, OTHER, ("2001:db8::7", 5000)]))
def test_rfc8656_any_combination_of_turn_attributes_is_answered_or_dropped_never_raised(
        method: int, attrs: list[Attribute], client: Address) -> None:
    srv, _ = make(FamilyPorts((4, 6)))
    relayed_for(srv)
    signed(srv, 0, Method.CREATE_PERMISSION, XorPeerAddress(*PEER))
    if method == Method.SEND:
        send(srv, 1, *attrs, client=client)
        return
    resp = signed(srv, 1, method, *attrs, client=client)
    assert resp is not None and resp.check_integrity(KEY)
    assert resp.message_class in (MessageClass.SUCCESS, MessageClass.ERROR)
    srv.handle_timeout(10_000)


def test_docs_turn_conformance_cites_every_test_here_and_only_tests_that_exist() -> None:
    tests = Path(__file__).parent
    doc = (tests.parent / "docs" / "turn-conformance.md").read_text()
    cited = set(re.findall(r"`(test_\w+)`", doc))
    defined = {name for f in tests.glob("test_*.py") for name in re.findall(r"^def (test_\w+)", f.read_text(), re.M)}
    assert cited - defined == set()
    here = set(re.findall(r"^def (test_\w+)", Path(__file__).read_text(), re.M))
    assert here - cited == {"test_docs_turn_conformance_cites_every_test_here_and_only_tests_that_exist"}
