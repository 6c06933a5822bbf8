"""Inputs the fuzzer (icelab fuzz, docs/robustness.md) found breaking the stack, each replayed on the fixed code
through the machine's own API: bad input from the network becomes an error response or a counted drop."""

from __future__ import annotations

import pytest

from ice.stun.attributes import ErrorCode, Nonce, Realm
from ice.stun.message import Message, MessageClass, parse
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
