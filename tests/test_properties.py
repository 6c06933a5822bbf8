"""Property tests: every attribute type round-trips; no input makes the codec raise anything but StunParseError."""

from __future__ import annotations

import os
import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from ice.errors import StunParseError
from ice.stun import ATTRIBUTES, Attribute, Integrity, Message, MessageClass, Method, parse, short_term_key
from ice.stun import attributes as a
from ice.stun.server import StunServer, StunServerConfig

KEY = short_term_key("hypothesis")

ipv4 = st.ip_addresses(v=4).map(str)
# The codec emits the kernel's canonical text form (inet_ntop), so generate hosts in that form.
ipv6 = st.ip_addresses(v=6).map(lambda ip: socket.inet_ntop(socket.AF_INET6, ip.packed))
hosts = st.one_of(ipv4, ipv6)
ports = st.integers(0, 0xFFFF)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
text = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 509)


def address_attr(cls: type[a.Attribute]) -> st.SearchStrategy[Attribute]:
    return st.builds(cls, hosts, ports)


STRATEGIES: dict[type[Attribute], st.SearchStrategy[Attribute]] = {
    a.MappedAddress: address_attr(a.MappedAddress),
    a.SourceAddress: address_attr(a.SourceAddress),
    a.ChangedAddress: address_attr(a.ChangedAddress),
    a.XorMappedAddress: address_attr(a.XorMappedAddress),
    a.XorPeerAddress: address_attr(a.XorPeerAddress),
    a.XorRelayedAddress: address_attr(a.XorRelayedAddress),
    a.AlternateServer: address_attr(a.AlternateServer),
    a.ResponseOrigin: address_attr(a.ResponseOrigin),
    a.OtherAddress: address_attr(a.OtherAddress),
    a.Priority: st.builds(a.Priority, u32),
    a.IceControlled: st.builds(a.IceControlled, u64),
    a.IceControlling: st.builds(a.IceControlling, u64),
    a.Lifetime: st.builds(a.Lifetime, u32),
    a.ReservationToken: st.builds(a.ReservationToken, u64),
    a.ConnectionId: st.builds(a.ConnectionId, u32),
    a.ChangeRequest: st.builds(a.ChangeRequest, st.booleans(), st.booleans()),
    a.ResponsePort: st.builds(a.ResponsePort, ports),
    a.ChannelNumber: st.builds(a.ChannelNumber, st.integers(0x4000, 0x4FFF)),
    a.RequestedTransport: st.builds(a.RequestedTransport, st.integers(0, 255)),
    a.RequestedAddressFamily: st.builds(a.RequestedAddressFamily, st.sampled_from([1, 2])),
    a.AdditionalAddressFamily: st.builds(a.AdditionalAddressFamily, st.sampled_from([1, 2])),
    a.EvenPort: st.builds(a.EvenPort, st.booleans()),
    a.UseCandidate: st.builds(a.UseCandidate),
    a.DontFragment: st.builds(a.DontFragment),
    a.Username: st.builds(a.Username, text),
    a.Realm: st.builds(a.Realm, text),
    a.Nonce: st.builds(a.Nonce, text),
    a.Software: st.builds(a.Software, text),
    a.AlternateDomain: st.builds(a.AlternateDomain, text),
    a.Data: st.builds(a.Data, st.binary(max_size=200)),
    a.Padding: st.builds(a.Padding, st.binary(max_size=200)),
    a.UserHash: st.builds(a.UserHash, st.binary(min_size=32, max_size=32)),
    a.ErrorCode: st.builds(
        a.ErrorCode, st.integers(3, 6).flatmap(lambda h: st.integers(h * 100, h * 100 + 99)), text
    ),
    a.AddressErrorCode: st.builds(
        a.AddressErrorCode,
        st.sampled_from([1, 2]),
        st.integers(3, 6).flatmap(lambda h: st.integers(h * 100, h * 100 + 99)),
        text,
    ),
    a.UnknownAttributes: st.builds(a.UnknownAttributes, st.lists(st.integers(0, 0xFFFF), max_size=8).map(tuple)),
    a.PasswordAlgorithm: st.builds(a.PasswordAlgorithm, st.integers(0, 0xFFFF), st.binary(max_size=9)),
    a.PasswordAlgorithms: st.builds(
        a.PasswordAlgorithms,
        st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=9)), max_size=4).map(tuple),
    ),
}
TRAILERS = {a.MessageIntegrity, a.MessageIntegritySha256, a.Fingerprint}


def test_every_registered_attribute_has_a_strategy() -> None:
    assert set(ATTRIBUTES.values()) - TRAILERS == set(STRATEGIES)


any_attribute = st.one_of(*STRATEGIES.values())
messages = st.builds(
    Message,
    st.integers(0, 0xFFF),
    st.sampled_from(list(MessageClass)),
    st.binary(min_size=12, max_size=12),
    st.lists(any_attribute, max_size=6),
)


@settings(max_examples=400)
@given(messages, st.sampled_from([None, *Integrity]), st.booleans())
def test_build_parse_roundtrip(msg: Message, integrity: Integrity | None, fingerprint: bool) -> None:
    key = KEY if integrity else None
    raw = msg.encode(key, integrity=integrity or Integrity.SHA1, fingerprint=fingerprint)
    p = parse(raw)
    assert (p.method, p.message_class, p.transaction_id) == (msg.method, msg.message_class, msg.transaction_id)
    assert p.attributes == msg.attributes
    assert p.has_fingerprint == fingerprint
    assert p.check_integrity(KEY) == (integrity is not None)
    for attr in msg.attributes:  # get() returns the first of each class
        assert p.get(type(attr)) == next(x for x in msg.attributes if type(x) is type(attr))


def _exercise(data: bytes) -> None:
    try:
        m = parse(data, legacy=True)
        _ = m.attributes
        m.check_integrity(KEY)
        m.unknown_comprehension_required()
        repr(m)
    except StunParseError:
        pass


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    _exercise(data)
    _exercise(b"\x00\x01" + len(data).to_bytes(2, "big")[-2:] + b"\x21\x12\xa4\x42" + bytes(12) + data)


@settings(max_examples=500)
@given(messages, st.data())
def test_mutated_messages_only_raise_parse_error(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(msg.encode(KEY, fingerprint=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    _exercise(bytes(raw))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_server_never_raises(data: bytes) -> None:
    server = StunServer(StunServerConfig(("127.0.0.1", 3478), ("127.0.0.2", 3479)))
    server.handle(("127.0.0.1", 3478), ("10.0.0.1", 5000), data)
    req = b"\x00\x01" + len(data).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + bytes(12) + data
    server.handle(("127.0.0.1", 3478), ("10.0.0.1", 5000), req)


@settings(max_examples=300)
@given(
    st.sampled_from([("127.0.0.1", 3478), ("127.0.0.1", 3479), ("127.0.0.2", 3478), ("127.0.0.2", 3479)]),
    ipv4,
    ports,
    st.booleans(),
    st.booleans(),
    st.binary(min_size=12, max_size=12),
)
def test_server_fast_path_matches_general_path(
    local: tuple[str, int], host: str, port: int, alt: bool, fingerprint: bool, tid: bytes
) -> None:
    config = StunServerConfig(("127.0.0.1", 3478), ("127.0.0.2", 3479) if alt else None, fingerprint=fingerprint)
    server = StunServer(config)
    request = Message(0x001, MessageClass.REQUEST, tid).encode()
    fast = server.handle(local, (host, port), request)
    general = server.handle_general(local, (host, port), request)
    assert fast == general and fast is not None
    assert server.stats["binding"] == 2


# ------------------------------------------------------------------------------------------------------------
# The optional C accelerator must behave exactly like the pure-Python reference.

from ice.stun import integrity, message  # noqa: E402


def test_speedups_are_built_in_the_provisioned_environment() -> None:
    if os.environ.get("ICELAB_PURE_PYTHON"):
        assert not integrity.speedups_enabled()
    else:
        assert integrity.speedups_enabled(), "ice/stun/_speedups.c was not built: provision.sh installs gcc/libssl-dev"


def _outcome(scan: object, data: bytes) -> object:
    try:
        return scan(data, True)  # type: ignore[operator]
    except StunParseError as exc:
        return ("error", str(exc))


@settings(max_examples=500)
@given(messages, st.data())
def test_c_scan_equals_python_scan(msg: Message, data: st.DataObject) -> None:
    if integrity._speedups is None:
        return
    raw = bytearray(msg.encode(KEY, integrity=data.draw(st.sampled_from(list(Integrity))),
                               fingerprint=data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    assert _outcome(integrity._speedups.scan, bytes(raw)) == _outcome(message._scan_py, bytes(raw))


@settings(max_examples=300)
@given(messages, st.booleans(), st.booleans(), st.sampled_from([b"\x00", b" "]))
def test_c_seal_equals_python_encode(msg: Message, signed: bool, fingerprint: bool, padding: bytes) -> None:
    """Message.encode through the C ``seal`` gives the bytes the pure-Python trailer code gives."""
    if message._seal is None:
        return
    key = KEY if signed else None
    sealed = msg.encode(key, fingerprint=fingerprint, padding=padding)
    seal, message._seal = message._seal, None
    try:
        assert sealed == msg.encode(key, fingerprint=fingerprint, padding=padding)
    finally:
        message._seal = seal


def test_a_key_made_without_the_accelerator_still_signs() -> None:
    """A key built while the C accelerator was off has no C key: Message.encode signs it in Python, never sends
    the message unsigned."""
    if integrity._speedups is None:
        return
    saved, integrity._speedups = integrity._speedups, None
    try:
        key = integrity.IntegrityKey(b"secret")
    finally:
        integrity._speedups = saved
    assert key.c is None
    raw = Message(Method.BINDING, MessageClass.REQUEST, b"x" * 12).encode(key, fingerprint=True)
    assert parse(raw).check_integrity(integrity.IntegrityKey(b"secret"))


@st.composite
def _checks(draw: st.DrawFn) -> tuple[bytes, bool]:
    """An ICE check as peers send them (and some as they should not): bytes, and whether it is the plain case."""
    ufrag = draw(st.sampled_from(["ab12", "zz99", "ab1", "ab12é"]))
    attrs: list[Attribute] = [a.Username(f"{ufrag}:{draw(st.text('xyz', max_size=6))}")]
    plain = ufrag == "ab12"
    if draw(st.booleans()):
        attrs.append(a.Priority(draw(st.integers(0, 2**32 - 1))))
    else:
        plain = False
    role = draw(st.sampled_from(["controlling", "controlled", "both", "none"]))
    if role in ("controlling", "both"):
        attrs.append(a.IceControlling(draw(st.integers(0, 2**64 - 1))))
    if role in ("controlled", "both"):
        attrs.append(a.IceControlled(draw(st.integers(0, 2**64 - 1))))
    if draw(st.booleans()):
        attrs.append(a.UseCandidate())
    if draw(st.booleans()):
        attrs.append(a.Software("peer"))
    if draw(st.booleans()):
        attrs.append(a.UnknownAttribute(draw(st.sampled_from([0x0030, 0x7F00, 0xC0DE])), b"\x01\x02"))
        plain = plain and attrs[-1].code >= 0x8000
    return _signed_and_mutated(draw, MessageClass.REQUEST, attrs, plain)


def _signed_and_mutated(draw: st.DrawFn, cls: MessageClass, attrs: list[Attribute], plain: bool
                        ) -> tuple[bytes, bool]:
    """A Binding message of ``attrs`` in a drawn order, signed with KEY or another key, maybe fingerprinted, maybe
    with bytes changed; still plain if ``plain`` and signed with KEY and unchanged."""
    draw(st.randoms()).shuffle(attrs)
    key = draw(st.sampled_from([KEY, short_term_key("other")]))
    raw = bytearray(Message(Method.BINDING, cls, os.urandom(12), attrs).encode(key, fingerprint=draw(st.booleans())))
    changes = draw(st.integers(0, 2))
    for _ in range(changes):
        raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw), plain and key is KEY and not changes


@settings(max_examples=600)
@given(_checks())
def test_c_ice_check_accepts_only_what_the_general_path_accepts_alike(check: tuple[bytes, bool]) -> None:
    """What ``ice_check`` reads from a check is what parse() and the attribute decoders read, the general path
    would have accepted it too (user, integrity, no 420, PRIORITY), and its answer is the bytes the general path
    sends; the plain case is never left to the general path."""
    from ice.stun.message import ice_check

    raw, plain = check
    if message._ice_check is None:
        return
    remote = ("192.0.2.7", 40123)
    fields = ice_check(raw, b"ab12:", KEY.c, remote)
    assert (fields is not None) >= plain
    if fields is None:
        return
    answer = message.encode_parts(Method.BINDING, MessageClass.SUCCESS, fields[0],
                                  a.XorMappedAddress(*remote).tlv(fields[0]), KEY, fingerprint=True)
    assert fields[5] == answer  # what the general path sends back
    six = ice_check(raw, b"ab12:", KEY.c, ("2001:db8::7", 40123))
    assert six is not None and six[:5] == fields[:5] and six[5] is None  # IPv6: the general path answers
    msg = parse(raw)
    user, prio = msg.get(a.Username), msg.get(a.Priority)
    controlling, controlled = msg.get(a.IceControlling), msg.get(a.IceControlled)
    assert user is not None and user.text.startswith("ab12:") and prio is not None
    assert msg.check_integrity(KEY) and not msg.unknown_comprehension_required()
    assert fields[:5] == (msg.transaction_id, prio.number, controlling.number if controlling else None,
                          controlled.number if controlled else None, msg.get(a.UseCandidate) is not None)


@st.composite
def _answers(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Success responses to a check as peers send them (and some as they should not), and whether it is plain."""
    attrs: list[Attribute] = []
    if draw(st.booleans()):
        attrs.append(a.Software("peer"))
    family = draw(st.sampled_from(["ipv4", "ipv6", "none"]))
    if family == "ipv4":
        attrs.append(a.XorMappedAddress(draw(st.sampled_from(["192.0.2.7", "10.0.0.1"])), draw(st.integers(0, 65535))))
    elif family == "ipv6":
        attrs.append(a.XorMappedAddress("2001:db8::7", 40123))
    plain = family == "ipv4"
    if draw(st.booleans()):
        attrs.append(a.MappedAddress("192.0.2.99", 1))  # comprehension-required: left to the general path
        plain = False
    cls = draw(st.sampled_from([MessageClass.SUCCESS, MessageClass.SUCCESS, MessageClass.ERROR]))
    return _signed_and_mutated(draw, cls, attrs, plain and cls is MessageClass.SUCCESS)


@settings(max_examples=600)
@given(_answers())
def test_c_ice_answer_reads_what_the_general_path_reads(answer: tuple[bytes, bool]) -> None:
    """What ``ice_answer`` accepts, parse() accepts too, with a verifying MESSAGE-INTEGRITY and the same mapped
    address; the plain case is never left to the general path."""
    from ice.stun.message import ice_answer

    raw, plain = answer
    if message._ice_answer is None:
        return
    mapped = ice_answer(raw, KEY.c)
    assert (mapped is not None) >= plain
    if mapped is None:
        return
    msg = parse(raw)
    xma = msg.get(a.XorMappedAddress)
    assert msg.message_class is MessageClass.SUCCESS and msg.check_integrity(KEY) and xma is not None
    assert xma.address == mapped


@settings(max_examples=200)
@given(st.binary(max_size=100), st.binary(max_size=300), st.integers(0, 400))
def test_c_hmac_equals_python_hmac(key: bytes, data: bytes, pos: int) -> None:
    import hashlib
    import hmac as std_hmac

    k = integrity.IntegrityKey(key)
    assert k.sha1(data) == std_hmac.digest(key, data, hashlib.sha1) == k._sha1(data)
    assert k.sha256(data) == std_hmac.digest(key, data, hashlib.sha256) == k._sha256(data)
    assert k.check_sha1(data, pos) == k._check_sha1(data, pos)
    assert k.check_sha256(data, pos) == k._check_sha256(data, pos)


@settings(max_examples=500)
@given(st.binary(max_size=40), st.binary(min_size=12, max_size=12), st.data())
def test_c_get_equals_python_decode(value: bytes, tid: bytes, data: st.DataObject) -> None:
    """Whatever the value bytes, the C decoder returns what the Python decoder returns (or defers to it)."""
    cls = data.draw(st.sampled_from(sorted(set(ATTRIBUTES.values()) - TRAILERS, key=lambda c: c.TYPE)))
    raw = Message(1, MessageClass.REQUEST, tid, [a.UnknownAttribute(cls.TYPE, value)]).encode()
    try:
        expected: object = cls.decode(value, tid)
    except StunParseError as exc:
        expected = ("error", str(exc))
    try:
        got: object = parse(raw).get(cls)
    except StunParseError as exc:
        got = ("error", str(exc))
    assert got == expected and type(got) is type(expected)


def _canonical_host_by_ipaddress(text: str) -> str:
    """The candidate parser's host rule with ipaddress alone (what its dotted-quad fast path must agree with)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if text.endswith(".local") or text.replace("-", "").replace(".", "").isalnum():
            return text
        raise


@given(st.one_of(st.ip_addresses().map(str), st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,4}){0,4}", fullmatch=True),
                 st.text(alphabet="0123456789.:abcdef%-", max_size=20)))
def test_candidate_host_fast_path_agrees_with_ipaddress(text: str) -> None:
    from ice.agent.candidate import _canonical_host

    try:
        expected: str | None = _canonical_host_by_ipaddress(text)
    except ValueError:
        expected = None
    try:
        got: str | None = _canonical_host(text)
    except ValueError:
        got = None
    assert got == expected


@given(st.one_of(st.ip_addresses().map(str), st.from_regex(r"[0-9]{1,4}(\.[0-9]{1,4}){0,4}", fullmatch=True),
                 st.text(alphabet="0123456789.:abcdef%-x ", max_size=20)))
def test_remote_candidate_ip_check_agrees_with_ipaddress(text: str) -> None:
    import ipaddress

    from ice.agent.agent import _is_ip

    try:
        ipaddress.ip_address(text)
        expected = True
    except ValueError:
        expected = False
    assert _is_ip(text) == expected
