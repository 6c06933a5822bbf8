"""RFC 5769 test vectors, byte for byte, in both directions."""

from __future__ import annotations

import pytest
from conftest import VECTORS

from ice.stun import Message, MessageClass, Method, StringPrep, long_term_key, parse, short_term_key
from ice.stun.attributes import IceControlled, Nonce, Priority, Realm, Software, Username, XorMappedAddress

PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def test_sample_request_parses() -> None:
    """RFC 5769 §2.1."""
    raw = load("rfc5769_request.bin")
    m = parse(raw)
    assert (m.method, m.message_class, m.transaction_id) == (Method.BINDING, MessageClass.REQUEST, TID)
    assert m.attributes == [
        Software("STUN test client"),
        Priority(0x6E0001FF),
        IceControlled(0x932FF9B151263B36),
        Username("evtj:h6vY"),
    ]
    assert m.has_fingerprint
    assert m.check_integrity(short_term_key(PASSWORD))
    assert not m.check_integrity(short_term_key(PASSWORD + "x"))


def test_sample_request_builds() -> None:
    raw = load("rfc5769_request.bin")
    m = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        TID,
        [Software("STUN test client"), Priority(0x6E0001FF), IceControlled(0x932FF9B151263B36), Username("evtj:h6vY")],
    )
    # The RFC pads USERNAME with spaces (RFC 8489 §14 lets padding be any value).
    assert m.encode(short_term_key(PASSWORD), fingerprint=True, padding=b" ") == raw


@pytest.mark.parametrize(
    ("name", "mapped"),
    [
        ("rfc5769_response_ipv4.bin", ("192.0.2.1", 32853)),
        ("rfc5769_response_ipv6.bin", ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_sample_responses(name: str, mapped: tuple[str, int]) -> None:
    """RFC 5769 §2.2 and §2.3: parse, verify, and rebuild byte for byte."""
    raw = load(name)
    m = parse(raw)
    assert m.message_class is MessageClass.SUCCESS and m.transaction_id == TID
    xma = m.get(XorMappedAddress)
    assert xma is not None and xma.address == mapped
    assert m.get(Software) == Software("test vector")
    assert m.check_integrity(short_term_key(PASSWORD))
    built = Message(Method.BINDING, MessageClass.SUCCESS, TID, [Software("test vector"), XorMappedAddress(*mapped)])
    assert built.encode(short_term_key(PASSWORD), fingerprint=True, padding=b" ") == raw


def test_long_term_request() -> None:
    """RFC 5769 §2.4: long-term credentials, SASLprep'ed password, no FINGERPRINT."""
    raw = load("rfc5769_request_long_term.bin")
    m = parse(raw)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert m.attributes == [Username(username), Nonce("f//499k954d6OL34oL9FSTvy64sA"), Realm("example.org")]
    assert not m.has_fingerprint
    key = long_term_key(username, "example.org", "The\u00adM\u00aatr\u2168", prep=StringPrep.SASLPREP)
    assert key.key.hex() == "e8ca7ad59d5eb0518e312911d2dab2a9"
    assert m.check_integrity(key)
    assert m.check_integrity(long_term_key(username, "example.org", "TheMatrIX", prep=StringPrep.SASLPREP))
    assert not m.check_integrity(long_term_key(username, "example.org", "TheMatrix", prep=StringPrep.SASLPREP))
    rebuilt = Message(Method.BINDING, MessageClass.REQUEST, m.transaction_id, m.attributes).encode(key)
    assert rebuilt == raw


def test_fingerprint_corruption_is_a_parse_error() -> None:
    raw = bytearray(load("rfc5769_response_ipv4.bin"))
    raw[-1] ^= 1
    with pytest.raises(ValueError, match="FINGERPRINT"):
        parse(bytes(raw))
