"""Inputs the fuzzer (icelab fuzz, docs/robustness.md) found breaking the stack, each replayed on the fixed code
through the machine's own API: bad input from the network becomes an error response or a counted drop."""

from __future__ import annotations

import pytest

from ice.agent.candidate import Candidate
from ice.stun.attributes import ErrorCode, Nonce, Padding, Realm
from ice.stun.message import Message, MessageClass, parse
from ice.stun.server import StunServer, StunServerConfig
from ice.turn.client import AllocationFailed, TurnClient, TurnClientConfig, TurnState

SERVER = ("192.0.2.1", 3478)
LOCAL = ("198.51.100.1", 40000)


@pytest.mark.parametrize("realm", ["", "ice\x00lab", "\x1a"])
def test_turn_client_survives_a_401_whose_realm_has_no_key(realm: str) -> None:
    """RFC 8489 §9.2.2: the long-term key needs OpaqueString(realm), which an empty REALM or one with control
    characters does not have; the 401 then stands as the Allocate's answer instead of raising ValueError out of
    handle_datagram."""
    client = TurnClient(TurnClientConfig(SERVER, "user", "pass"), LOCAL)
    client.allocate(0.0)
    request = client.poll_transmit()
    assert request is not None
    tid = parse(request.data).transaction_id
    answer = Message(0x003, MessageClass.ERROR, tid, [ErrorCode(401, "Unauthorized"), Realm(realm), Nonce("n")])
    client.handle_datagram(0.1, LOCAL, SERVER, answer.encode(fingerprint=True))
    assert client.poll_transmit() is None  # nothing signed with a key it could not derive
    assert client.state is TurnState.FAILED
    assert client.next_event() == AllocationFailed(401, "Unauthorized")
    assert client.stats["unusable-realm"] == 1


@pytest.mark.parametrize("line", [
    "candidate:1 1 udp 2130706431 192.0.2.1 99999 typ host",  # a port past 65535: sendto() raises OverflowError
    "candidate:1 1 udp 99999999999 192.0.2.1 9 typ host",  # RFC 8839: priority is 32 bits
    "candidate:1 1 udp 1 192.0.2.1 9 typ srflx raddr 192.0.2.2 rport 999999",
    "candidate:1 1 udp 1 192.0.2.1 \u0661\u0662 typ host",  # Unicode digits are not RFC 5234 DIGIT
    "candidate:candidate:1 1 udp 1 192.0.2.1 9 typ host",  # a foundation of non-ice-chars: no round trip
    "candidate:f=1 1 udp 1 192.0.2.1 9 typ host",
    "candidate:" + "f" * 33 + " 1 udp 1 192.0.2.1 9 typ host",
])
def test_candidate_outside_rfc_8839_is_refused(line: str) -> None:
    """RFC 8839 §5.1: a port (and rport) fits 16 bits, a priority 32, a foundation is 1-32 ice-chars. A candidate
    past that used to be accepted and the agent then sent checks its driver's sendto() refused with OverflowError
    (not an OSError: out of the event loop)."""
    with pytest.raises(ValueError):
        Candidate.from_sdp(line)


def test_candidate_limits_are_inclusive() -> None:
    c = Candidate.from_sdp("candidate:a+/Z 256 udp 4294967295 192.0.2.1 65535 typ srflx raddr 0.0.0.0 rport 65535")
    assert (c.component, c.priority, c.port, c.related) == (256, 2**32 - 1, 65535, ("0.0.0.0", 65535))
    assert Candidate.from_sdp(c.to_sdp()) == c


@pytest.mark.parametrize("size", [65436, 65440, 65480])
def test_stun_server_refuses_padding_that_cannot_be_echoed(size: int) -> None:
    """RFC 5780 §7.6: PADDING may not push a datagram past 64 KiB. A request (65,504 bytes fit one IPv4 UDP
    datagram) whose PADDING the response cannot echo within STUN's 16-bit length used to raise struct.error out of
    the server; now it gets 400 Bad Request, and one that fits is still echoed."""
    server = StunServer(StunServerConfig(("192.0.2.1", 3478), ("192.0.2.2", 3479)))
    request = Message(0x001, MessageClass.REQUEST, b"p" * 12, [Padding(bytes(size))]).encode()
    out = server.handle(("192.0.2.1", 3478), ("2001:db8::1", 5000), request)
    assert out is not None
    response = parse(out.data)
    if size <= 65436:
        assert response.message_class is MessageClass.SUCCESS
        assert response.get(Padding) == Padding(bytes(size))
    else:
        assert response.message_class is MessageClass.ERROR and response.error is not None
        assert response.error.code == 400
        assert server.stats["padding-too-long"] == 1
