"""The TURN server against RFC 8656 (and the parts of RFC 8489 it relies on), one test per requirement.

Every test drives the sans-IO core through the endpoint contract on a fixed clock and asserts the exact error code,
the response attributes or the counted drop. docs/turn-conformance.md maps each requirement to its test here.
"""

from __future__ import annotations

import pytest
from test_turn_server import CLIENT, KEY, LISTEN, PEER, Ports, allocate, feed, request, server

from ice.stun import Message, MessageClass, Method, parse
from ice.stun.attributes import (
    Attribute,
    AttributeType,
    Fingerprint,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Software,
    UnknownAttribute,
    UnknownAttributes,
    UserHash,
    Username,
    XorMappedAddress,
    XorRelayedAddress,
)
from ice.stun.integrity import userhash
from ice.stun.message import Integrity
from ice.turn.server import TurnServer

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


_ = (PEER, Ports, allocate, request)
