"""Codec behaviour beyond the vectors: trailer rules, integrity variants, unknown attributes, legacy messages."""

from __future__ import annotations

import hashlib

import pytest

from ice.errors import StunParseError
from ice.stun import (
    Integrity,
    KeyAlgorithm,
    Message,
    MessageClass,
    Method,
    StringPrep,
    is_stun,
    long_term_key,
    opaque_string,
    parse,
    saslprep,
    short_term_key,
    userhash,
)
from ice.stun.attributes import (
    ChangeRequest,
    ErrorCode,
    Fingerprint,
    MessageIntegrity,
    Priority,
    Software,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
)
from ice.stun.message import message_type, split_message_type

KEY = short_term_key("secret-password")


def test_message_type_bits() -> None:
    """RFC 8489 §5: Binding request 0x0001, success 0x0101, error 0x0111; Allocate error 0x0113."""
    assert message_type(Method.BINDING, MessageClass.REQUEST) == 0x0001
    assert message_type(Method.BINDING, MessageClass.SUCCESS) == 0x0101
    assert message_type(Method.BINDING, MessageClass.ERROR) == 0x0111
    assert message_type(Method.ALLOCATE, MessageClass.ERROR) == 0x0113
    assert message_type(Method.SEND, MessageClass.INDICATION) == 0x0016
    for m in range(0x1000):
        for c in MessageClass:
            assert split_message_type(message_type(m, c)) == (m, c)


@pytest.mark.parametrize("mode", list(Integrity))
def test_integrity_modes_roundtrip(mode: Integrity) -> None:
    m = Message(Method.BINDING, MessageClass.REQUEST, attributes=[Username("a:b"), Priority(7)])
    raw = m.encode(KEY, integrity=mode, fingerprint=True)
    p = parse(raw)
    assert p.check_integrity(KEY)
    assert not p.check_integrity(short_term_key("other"))
    assert p.attributes == m.attributes


def test_attributes_after_integrity_are_ignored() -> None:
    """RFC 8489 §14.5: only MI-SHA256 and FINGERPRINT may follow MESSAGE-INTEGRITY; the rest are ignored."""
    raw = Message(Method.BINDING, MessageClass.REQUEST, attributes=[Username("a:b")]).encode(KEY)
    extra = Software("injected").tlv(b"")
    tampered = bytearray(raw + extra)
    tampered[2:4] = (len(tampered) - 20).to_bytes(2, "big")
    p = parse(bytes(tampered))
    assert p.get(Software) is None
    assert p.attributes == [Username("a:b")]
    assert p.check_integrity(KEY)  # the HMAC covers only what precedes it


def test_trailer_attributes_cannot_be_encoded_by_hand() -> None:
    for attr in (MessageIntegrity(bytes(20)), Fingerprint(0), UnknownAttribute(0x0008, bytes(20))):
        with pytest.raises(ValueError, match=r"added by Message\.encode"):
            Message(Method.BINDING, MessageClass.REQUEST, attributes=[attr]).encode()


def test_unknown_comprehension_required_reported() -> None:
    m = Message(
        Method.BINDING,
        MessageClass.REQUEST,
        attributes=[UnknownAttribute(0x7F01, b"abc"), UnknownAttribute(0xC001, b"x")],
    )
    p = parse(m.encode())
    assert p.unknown_comprehension_required() == [0x7F01]
    assert p.attributes == m.attributes  # unknown values round-trip verbatim
    assert m.unknown_comprehension_required() == [0x7F01]


def test_error_code_and_unknown_attributes() -> None:
    m = Message(Method.BINDING, MessageClass.ERROR, attributes=[ErrorCode(420, "Unknown"), UnknownAttributes((1, 2))])
    p = parse(m.encode())
    assert p.error == ErrorCode(420, "Unknown")
    assert p.get(UnknownAttributes) == UnknownAttributes((1, 2))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter"),
        (b"\x00\x01\x00\x00" + b"\x00" * 16, "cookie"),
        (b"\xc0\x01\x00\x00\x21\x12\xa4\x42" + b"\x00" * 12, "most significant"),
        (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"\x00" * 12, "header says"),
        (b"\x00\x01\x00\x02\x21\x12\xa4\x42" + b"\x00" * 14, "multiple of 4"),
        (b"\x00\x01\x00\x04\x21\x12\xa4\x42" + b"\x00" * 12 + b"\x00\x06\x00\x09", "overruns"),
    ],
)
def test_malformed_framing(data: bytes, why: str) -> None:
    with pytest.raises(StunParseError, match=why):
        parse(data)


def test_malformed_value_raises_parse_error_on_access() -> None:
    raw = Message(Method.BINDING, MessageClass.SUCCESS, attributes=[UnknownAttribute(0x0020, b"\x00\x09\x00")])
    p = parse(raw.encode())
    with pytest.raises(StunParseError):
        p.get(XorMappedAddress)
    with pytest.raises(StunParseError):
        _ = p.attributes


def test_legacy_rfc3489_message() -> None:
    tid16 = bytes(range(16))
    raw = Message(Method.BINDING, MessageClass.REQUEST, tid16, [ChangeRequest(True, False)]).encode()
    assert raw[4:20] == tid16
    with pytest.raises(StunParseError, match="cookie"):
        parse(raw)
    p = parse(raw, legacy=True)
    assert p.transaction_id == tid16 and p.get(ChangeRequest) == ChangeRequest(True, False)


def test_is_stun_demultiplexes() -> None:
    assert is_stun(Message(Method.BINDING, MessageClass.REQUEST).encode())
    assert not is_stun(b"\x80" + bytes(19))  # RTP
    assert not is_stun(b"\x40\x00\x00\x00")  # ChannelData


def test_string_preparation() -> None:
    assert saslprep("The\u00adM\u00aatr\u2168") == "TheMatrIX"  # RFC 5769 §2.4
    assert saslprep("I\u00adX") == "IX"  # RFC 4013 §3 examples
    assert saslprep("user") == "user"
    assert saslprep("\u00aa") == "a"
    with pytest.raises(ValueError):
        saslprep("\u0007")
    with pytest.raises(ValueError):
        saslprep("\u0627\u0031")  # RandALCat must start and end the string
    assert opaque_string("a\u00a0b") == "a b"  # non-ASCII space -> U+0020
    assert opaque_string("e\u0301") == "\u00e9"  # NFC
    with pytest.raises(ValueError):
        opaque_string("")


def test_long_term_sha256_and_userhash() -> None:
    md5 = long_term_key("user", "realm", "pass")
    sha = long_term_key("user", "realm", "pass", KeyAlgorithm.SHA256)
    assert len(md5.key) == 16 and len(sha.key) == 32
    assert md5.key.hex() == "8493fbc53ba582fb4c044c456bdc40eb"  # MD5("user:realm:pass")
    assert long_term_key("user", "realm", "pass", prep=StringPrep.SASLPREP).key == md5.key
    assert userhash("user", "realm") == hashlib.sha256(b"user:realm").digest()
