"""RFC 6062 §6: the methods, attribute and REQUESTED-TRANSPORT value of TCP allocations on the wire."""

from __future__ import annotations

from ice.stun.attributes import ATTRIBUTES, AttributeType, ConnectionId, ErrorCode, RequestedTransport, XorPeerAddress
from ice.stun.message import Message, MessageClass, Method, message_type, parse
from ice.turn.tcp_allocation import (
    CONNECTION_ALREADY_EXISTS,
    CONNECTION_TIMEOUT_OR_FAILURE,
    TCP,
)


def test_methods_and_message_types() -> None:
    """RFC 6062 §6.1: Connect 0x000a, ConnectionBind 0x000b, ConnectionAttempt 0x000c (an indication)."""
    assert (Method.CONNECT, Method.CONNECTION_BIND, Method.CONNECTION_ATTEMPT) == (0x000A, 0x000B, 0x000C)
    assert message_type(Method.CONNECT, MessageClass.REQUEST) == 0x000A
    assert message_type(Method.CONNECT, MessageClass.SUCCESS) == 0x010A
    assert message_type(Method.CONNECTION_BIND, MessageClass.ERROR) == 0x011B
    assert message_type(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION) == 0x001C


def test_connection_id_round_trips_as_four_bytes() -> None:
    """RFC 6062 §6.2.1: CONNECTION-ID (0x002a) is a 32-bit value."""
    assert AttributeType.CONNECTION_ID == 0x002A and ATTRIBUTES[0x002A] is ConnectionId
    msg = Message(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION,
                  attributes=[XorPeerAddress("127.0.0.1", 9), ConnectionId(0xDEADBEEF)])
    raw = msg.encode(fingerprint=True)
    assert bytes.fromhex("002a0004deadbeef") in raw
    back = parse(raw)
    assert back.method == Method.CONNECTION_ATTEMPT and back.get(ConnectionId) == ConnectionId(0xDEADBEEF)


def test_requested_transport_tcp_and_the_error_codes() -> None:
    """RFC 6062 §6.2: REQUESTED-TRANSPORT 6 asks for TCP; §6.3: 446 and 447 with their reason phrases."""
    assert TCP == 6
    assert RequestedTransport(TCP).value(b"") == b"\x06\x00\x00\x00"
    assert CONNECTION_ALREADY_EXISTS == (446, "Connection Already Exists")
    assert CONNECTION_TIMEOUT_OR_FAILURE == (447, "Connection Timeout or Failure")
    raw = Message(Method.CONNECT, MessageClass.ERROR, attributes=[ErrorCode(*CONNECTION_ALREADY_EXISTS)]).encode()
    assert parse(raw).error == ErrorCode(446, "Connection Already Exists")
