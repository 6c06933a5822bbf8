"""The sans-IO Binding server: RFC 8489 §6.3 answers, RFC 5780 §6.1 CHANGE-REQUEST/RESPONSE-PORT/PADDING, errors."""

from __future__ import annotations

import pytest

from ice.stun import Message, MessageClass, Method, parse
from ice.stun.attributes import (
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
    UnknownAttribute,
    UnknownAttributes,
    XorMappedAddress,
)
from ice.stun.server import StunServer, StunServerConfig

P = ("203.0.113.10", 3478)
A = ("203.0.113.11", 3479)
CLIENT = ("198.51.100.20", 40000)


def server(alt: bool = True) -> StunServer:
    return StunServer(StunServerConfig(P, A if alt else None, software="test"))


def req(*attrs: object, method: int = Method.BINDING, cls: MessageClass = MessageClass.REQUEST) -> Message:
    return Message(method, cls, attributes=attrs)  # type: ignore[arg-type]


def test_binding_success() -> None:
    s = server()
    r = req()
    out = s.handle(P, CLIENT, r.encode(fingerprint=True))
    assert out is not None and out.local == P and out.remote == CLIENT
    resp = parse(out.data)
    assert resp.message_class is MessageClass.SUCCESS and resp.transaction_id == r.transaction_id
    assert resp.get(XorMappedAddress) == XorMappedAddress(*CLIENT)
    assert resp.get(MappedAddress) == MappedAddress(*CLIENT)
    assert resp.get(OtherAddress) == OtherAddress(*A)
    assert resp.get(ResponseOrigin) == ResponseOrigin(*P)
    assert resp.get(Software) == Software("test")
    assert resp.has_fingerprint
    assert s.stats["binding"] == 1


@pytest.mark.parametrize(
    ("change", "source"),
    [
        (ChangeRequest(False, False), P),
        (ChangeRequest(False, True), (P[0], A[1])),
        (ChangeRequest(True, False), (A[0], P[1])),
        (ChangeRequest(True, True), A),
    ],
)
def test_change_request_answers_from_the_other_address(change: ChangeRequest, source: tuple[str, int]) -> None:
    out = server().handle(P, CLIENT, req(change).encode())
    assert out is not None and out.local == source
    assert parse(out.data).get(ResponseOrigin) == ResponseOrigin(*source)


def test_change_request_arriving_on_alternate_swaps_back() -> None:
    out = server().handle(A, CLIENT, req(ChangeRequest(True, True)).encode())
    assert out is not None and out.local == P
    assert parse(out.data).get(OtherAddress) == OtherAddress(*P)


def test_change_request_without_alternate_is_420() -> None:
    s = server(alt=False)
    out = s.handle(P, CLIENT, req(ChangeRequest(True, False)).encode())
    assert out is not None
    resp = parse(out.data)
    assert resp.message_class is MessageClass.ERROR and resp.error is not None and resp.error.code == 420
    assert resp.get(UnknownAttributes) == UnknownAttributes((ChangeRequest.TYPE,))
    # Without an alternate there is no OTHER-ADDRESS / RESPONSE-ORIGIN either.
    ok = parse(s.handle(P, CLIENT, req().encode()).data)  # type: ignore[union-attr]
    assert ok.get(OtherAddress) is None and ok.get(ResponseOrigin) is None


def test_response_port_and_padding() -> None:
    out = server().handle(P, CLIENT, req(ResponsePort(5555), Padding(b"x" * 37)).encode())
    assert out is not None and out.remote == (CLIENT[0], 5555)
    assert parse(out.data).get(Padding) == Padding(bytes(37))


def test_unknown_comprehension_required_is_420_listing_them() -> None:
    s = server()
    out = s.handle(P, CLIENT, req(UnknownAttribute(0x7777, b"1"), UnknownAttribute(0x8888, b"2")).encode())
    resp = parse(out.data)  # type: ignore[union-attr]
    assert resp.error == ErrorCode(420, "Unknown Attribute")
    assert resp.get(UnknownAttributes) == UnknownAttributes((0x7777,))
    assert s.stats["unknown-attribute"] == 1


def test_other_method_is_400_and_malformed_value_is_400() -> None:
    s = server()
    out = s.handle(P, CLIENT, req(method=Method.ALLOCATE).encode())
    assert parse(out.data).error.code == 400  # type: ignore[union-attr]
    bad = req(UnknownAttribute(ChangeRequest.TYPE, b"\x00")).encode()  # CHANGE-REQUEST must be 4 bytes
    assert parse(s.handle(P, CLIENT, bad).data).error.code == 400  # type: ignore[union-attr]
    assert s.stats["bad-request"] == 1 and s.stats["unsupported-method"] == 1


def test_drops_are_counted_never_raised() -> None:
    s = server()
    assert s.handle(P, CLIENT, b"\x00\x01garbage") is None
    assert s.handle(P, CLIENT, req(cls=MessageClass.INDICATION).encode()) is None
    assert s.handle(P, CLIENT, req(cls=MessageClass.SUCCESS).encode()) is None
    assert s.stats == {"malformed": 1, "not-a-request": 2}


def test_rfc3489_client_gets_mapped_source_and_changed_address() -> None:
    tid16 = bytes(range(16))
    legacy = Message(Method.BINDING, MessageClass.REQUEST, tid16, [ChangeRequest(False, True)]).encode()
    out = server().handle(P, CLIENT, legacy)
    assert out is not None and out.local == (P[0], A[1])
    resp = parse(out.data, legacy=True)
    assert resp.transaction_id == tid16 and not resp.has_fingerprint
    assert resp.get(MappedAddress) == MappedAddress(*CLIENT)
    assert resp.get(SourceAddress) == SourceAddress(P[0], A[1])
    assert resp.get(ChangedAddress) == ChangedAddress(*A)  # both IP and port changed (RFC 3489 §11.2.3)
    assert resp.get(XorMappedAddress) is None


def test_config_rejects_alternate_sharing_ip_or_port() -> None:
    with pytest.raises(ValueError, match="different IP and a different port"):
        StunServerConfig(P, (P[0], 4000))
    assert StunServerConfig(P, A).local_addresses == [P, (P[0], A[1]), (A[0], P[1]), A]
