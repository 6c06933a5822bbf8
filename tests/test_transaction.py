"""The RFC 8489 §6.2 retransmission machine on a virtual clock: exact send times, no sleeping."""

from __future__ import annotations

import pytest

from ice.stun import Message, MessageClass, Method, short_term_key
from ice.stun.attributes import ErrorCode, XorMappedAddress
from ice.stun.transaction import (
    RetransmissionConfig,
    StunClient,
    TransactionFailed,
    TransactionSucceeded,
    TransactionTimedOut,
)

SERVER = ("192.0.2.1", 3478)


def drive(client: StunClient, until: float, start: float = 0.0) -> list[float]:
    """Advance the virtual clock timer by timer; return the times at which datagrams went out."""
    sent: list[float] = []
    now = start
    while True:
        while client.poll_transmit() is not None:
            sent.append(now)
        at = client.next_timeout()
        if at is None or at > until:
            return sent
        now = at
        client.handle_timeout(now)


def test_unreliable_schedule_is_rfc8489() -> None:
    """RTO 500 ms doubling, Rc = 7, then Rm x RTO = 8 s: sends at 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5; fail at 39.5."""
    client = StunClient()
    tid = client.request(100.0, Message(Method.BINDING, MessageClass.REQUEST), SERVER)
    sent = drive(client, until=1000.0, start=100.0)
    assert [round(t - 100.0, 6) for t in sent] == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    ev = client.next_event()
    assert isinstance(ev, TransactionTimedOut)
    assert ev.transaction_id == tid and ev.sends == 7 and ev.elapsed == pytest.approx(39.5)
    assert client.next_timeout() is None and client.pending == 0


def test_reliable_transport_sends_once_and_waits_39_5_s() -> None:
    client = StunClient(reliable=True)
    client.request(0.0, Message(Method.BINDING, MessageClass.REQUEST), SERVER)
    assert drive(client, until=1000.0) == [0.0]
    ev = client.next_event()
    assert isinstance(ev, TransactionTimedOut) and ev.elapsed == pytest.approx(39.5)


def test_custom_config_schedule() -> None:
    cfg = RetransmissionConfig(rto=0.1, rc=3, rm=4)
    assert cfg.schedule() == ((0.0, 0.1, 0.30000000000000004), pytest.approx(0.7))
    with pytest.raises(ValueError):
        RetransmissionConfig(rto=0)


def test_schedule_worked_out_when_asked() -> None:
    """The UDP schedule is computed by ``schedule()``, not when the config is made: a config whose Rc is too large
    for a UDP schedule (2**Rc overflows a float) still serves a reliable transport."""
    cfg = RetransmissionConfig(rc=2000)
    assert cfg.schedule(reliable=True) == ((0.0,), 39.5)
    with pytest.raises(OverflowError):
        cfg.schedule()


def _response(req: Message, cls: MessageClass = MessageClass.SUCCESS, key: object = None) -> bytes:
    attrs = [XorMappedAddress("198.51.100.7", 40000)] if cls is MessageClass.SUCCESS else [ErrorCode(401, "nope")]
    return Message(req.method, cls, req.transaction_id, attrs).encode(key, fingerprint=True)  # type: ignore[arg-type]


def test_response_stops_retransmissions_and_reports_rtt() -> None:
    client = StunClient()
    req = Message(Method.BINDING, MessageClass.REQUEST)
    client.request(0.0, req, SERVER)
    assert drive(client, until=1.6) == [0.0, 0.5, 1.5]
    assert client.handle_response(1.75, _response(req), SERVER)
    ev = client.next_event()
    assert isinstance(ev, TransactionSucceeded)
    assert ev.sends == 3 and ev.rtt == pytest.approx(0.25)
    assert ev.response.get(XorMappedAddress) == XorMappedAddress("198.51.100.7", 40000)
    assert client.next_timeout() is None and drive(client, until=100.0, start=1.75) == []


def test_error_response_fails_the_transaction() -> None:
    client = StunClient()
    req = Message(Method.BINDING, MessageClass.REQUEST)
    client.request(0.0, req, SERVER)
    client.handle_response(0.01, _response(req, MessageClass.ERROR), SERVER)
    ev = client.next_event()
    assert isinstance(ev, TransactionFailed) and (ev.code, ev.reason) == (401, "nope")


def test_bad_integrity_response_is_ignored_and_counted() -> None:
    key = short_term_key("right")
    client = StunClient()
    req = Message(Method.BINDING, MessageClass.REQUEST)
    client.request(0.0, req, SERVER, key=key)
    client.handle_response(0.01, _response(req, key=short_term_key("wrong")), SERVER)
    assert client.next_event() is None and client.stats["bad-integrity"] == 1
    assert client.pending == 1  # still waiting: as if the response never arrived (RFC 8489 §9.1.4)
    client.handle_response(0.02, _response(req, key=key), SERVER)
    assert isinstance(client.next_event(), TransactionSucceeded)


def test_stray_and_malformed_datagrams_are_counted() -> None:
    client = StunClient()
    client.handle_response(0.0, b"garbage", SERVER)
    client.handle_response(0.0, Message(Method.BINDING, MessageClass.SUCCESS).encode(), SERVER)
    client.handle_response(0.0, Message(Method.BINDING, MessageClass.REQUEST).encode(), SERVER)
    assert client.stats == {"malformed": 1, "unknown-transaction": 1, "not-a-response": 1}


def test_concurrent_transactions_share_one_deadline() -> None:
    client = StunClient()
    client.request(0.0, Message(Method.BINDING, MessageClass.REQUEST), SERVER)
    assert drive(client, until=0.2) == [0.0]
    client.request(0.2, Message(Method.BINDING, MessageClass.REQUEST), ("192.0.2.2", 3478))
    assert drive(client, until=1.6, start=0.2) == [0.2, 0.5, 0.7, 1.5]
