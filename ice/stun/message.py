"""STUN messages: header, parsing, building, integrity and fingerprint (RFC 8489 §5, §6, §9, §14.5-§14.7).

:func:`parse` checks the framing eagerly (header, cookie, lengths, FINGERPRINT) and decodes attribute values
lazily: :meth:`Message.get` decodes one attribute on demand, :attr:`Message.attributes` decodes them all. Both
raise :class:`~ice.errors.StunParseError` for a malformed value, and nothing else.

The three trailer attributes (MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT) are not part of
:attr:`Message.attributes`: :meth:`Message.encode` adds them and :meth:`Message.check_integrity` verifies them.
As RFC 8489 §14.5/§14.6 require, attributes after MESSAGE-INTEGRITY (other than MESSAGE-INTEGRITY-SHA256 and
FINGERPRINT) and after MESSAGE-INTEGRITY-SHA256 (other than FINGERPRINT) are ignored.
"""

from __future__ import annotations

import enum
import os
import zlib
from collections.abc import Iterable
from struct import Struct
from typing import Any, TypeVar

from ice.errors import StunParseError
from ice.stun.attributes import (
    ATTRIBUTES,
    MAGIC_COOKIE,
    Address,
    Attribute,
    AttributeType,
    ErrorCode,
    decode_attribute,
    register_speedups,
)
from ice.stun.integrity import IntegrityKey, _speedups, as_key

A = TypeVar("A", bound=Attribute)

HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E
"""RFC 8489 §14.7: the CRC-32 is XORed with this constant."""

_HDR = Struct("!HHI")
_TL = Struct("!HH")
_U32 = Struct("!I")
_U16 = Struct("!H")
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
_MI_TL = _TL.pack(AttributeType.MESSAGE_INTEGRITY, 20)
_FP_TL = _TL.pack(AttributeType.FINGERPRINT, 4)
_MI256_TL = _TL.pack(AttributeType.MESSAGE_INTEGRITY_SHA256, 32)
_T_MI = int(AttributeType.MESSAGE_INTEGRITY)
_T_MI256 = int(AttributeType.MESSAGE_INTEGRITY_SHA256)
_T_FP = int(AttributeType.FINGERPRINT)
_TRAILER_TYPES = frozenset((_T_MI, _T_MI256, _T_FP))


class MessageClass(enum.IntEnum):
    """RFC 8489 §5: the two class bits of the message type."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Method(enum.IntEnum):
    """STUN methods (RFC 8489 §18.2; TURN methods from RFC 8656 §17, TCP allocations' from RFC 6062 §6.1)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class Integrity(enum.Enum):
    """Which MESSAGE-INTEGRITY attributes :meth:`Message.encode` adds (RFC 8489 §9.1.4, §9.2.4)."""

    SHA1 = "sha1"
    SHA256 = "sha256"
    BOTH = "both"


_CLASSES = tuple(MessageClass)
_METHODS = {int(m): m for m in Method}


def message_type(method: int, message_class: int) -> int:
    """RFC 8489 §5: interleave the 12 method bits with the 2 class bits (M11..M7 C1 M6..M4 C0 M3..M0)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 1) << 4)
        | ((message_class & 2) << 7)
    )


def split_message_type(mtype: int) -> tuple[int, MessageClass]:
    """Inverse of :func:`message_type`."""
    method = (mtype & 0x000F) | ((mtype >> 1) & 0x0070) | ((mtype >> 2) & 0x0F80)
    return method, _CLASSES[((mtype >> 4) & 1) | ((mtype >> 7) & 2)]


def new_transaction_id() -> bytes:
    """RFC 8489 §5: 96 bits, uniformly and cryptographically random."""
    return os.urandom(12)


class Message:
    """A STUN message: class, method, transaction ID and an ordered list of attributes."""

    __slots__ = ("_attrs", "_first", "_parsed", "_raw", "message_class", "method", "transaction_id")

    method: int
    message_class: MessageClass
    transaction_id: bytes
    _attrs: list[Attribute] | None
    _first: dict[int, _Entry] | None
    _parsed: _Parsed
    _raw: bytes

    def __init__(
        self,
        method: int,
        message_class: MessageClass,
        transaction_id: bytes | None = None,
        attributes: Iterable[Attribute] = (),
    ) -> None:
        self.method = method
        self.message_class = message_class
        if transaction_id is None:
            transaction_id = os.urandom(12)
        elif len(transaction_id) not in (12, 16):
            raise ValueError("a STUN transaction ID is 12 bytes (16 for an RFC 3489 message without magic cookie)")
        self.transaction_id = transaction_id
        self._attrs = list(attributes)
        # Built messages leave _parsed and _raw unset; _first is None exactly when the message was not parsed.
        self._first = None

    # ---------------------------------------------------------------------------------------------- attributes

    @property
    def attributes(self) -> list[Attribute]:
        """All attributes except the integrity/fingerprint trailer, decoded (raises StunParseError if malformed)."""
        if self._attrs is None:
            raw, index, _, _ = self._parsed
            tid = self.transaction_id
            self._attrs = [decode_attribute(t, raw[o : o + n], tid) for t, o, n in index]
        return self._attrs

    def get(self, cls: type[A]) -> A | None:
        """The first attribute of class ``cls``, or None (RFC 8489 §5: later duplicates are ignored)."""
        attrs = self._attrs
        if attrs is not None:
            for a in attrs:
                if type(a) is cls:
                    return a
            return None
        first = self._first
        if _c_get is not None:
            found = _c_get(first, self._raw, self.transaction_id, cls)
            if found is not NotImplemented:
                return found  # type: ignore[no-any-return]
        entry = first.get(cls.TYPE)  # type: ignore[union-attr]
        if entry is None:
            return None
        try:
            return cls.decode_at(self._raw, entry[1], entry[2], self.transaction_id)
        except StunParseError:
            raise
        except (ValueError, OSError, IndexError) as exc:
            raise StunParseError(f"attribute {cls.TYPE:#06x}: {exc}") from None

    def has(self, code: int) -> bool:
        """Whether an attribute with this type code is present (without decoding it)."""
        if self._attrs is not None:
            return any(a.code == code for a in self._attrs)
        return any(t == code for t, _, _ in self._parsed[1])

    def unknown_comprehension_required(self) -> list[int]:
        """Codes in 0x0000-0x7FFF this codec does not know: a server answers 420 listing them (RFC 8489 §6.3.1)."""
        if self._attrs is not None:
            return [a.code for a in self._attrs if a.code < 0x8000 and a.code not in ATTRIBUTES]
        return [t for t, _, _ in self._parsed[1] if t < 0x8000 and t not in ATTRIBUTES]

    def add(self, attribute: Attribute) -> Message:
        """Append an attribute; returns self for chaining."""
        self.attributes.append(attribute)
        return self

    @property
    def error(self) -> ErrorCode | None:
        """The ERROR-CODE attribute of an error response, if any."""
        return self.get(ErrorCode)

    # ------------------------------------------------------------------------------------------------- trailer

    def _trailer(self) -> tuple[int, int, int]:
        return self._parsed[2] if self._first is not None else (-1, -1, -1)

    @property
    def has_integrity(self) -> bool:
        """Whether the parsed message carried MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256."""
        mi, mi256, _ = self._trailer()
        return mi >= 0 or mi256 >= 0

    @property
    def has_fingerprint(self) -> bool:
        """Whether the parsed message carried a (valid: :func:`parse` checked it) FINGERPRINT."""
        return self._trailer()[2] >= 0

    @property
    def raw(self) -> bytes:
        """The bytes this message was parsed from (empty for messages built locally)."""
        return self._raw if self._first is not None else b""

    def check_integrity(self, key: bytes | IntegrityKey) -> bool:
        """Verify MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY (RFC 8489 §9.1.3, §9.2.4).

        False when neither is present or the HMAC does not match. Uses a constant-time comparison.
        """
        if self._first is None:
            return False
        p = self._parsed
        mi, mi256, _ = p[2]
        k = key if key.__class__ is IntegrityKey else as_key(key)
        if mi256 >= 0:
            return k.check_sha256(p[0], mi256)
        return mi >= 0 and k.check_sha1(p[0], mi)

    # ---------------------------------------------------------------------------------------------- building

    def encode(
        self,
        key: bytes | IntegrityKey | None = None,
        *,
        integrity: Integrity = Integrity.SHA1,
        fingerprint: bool = False,
        padding: bytes = b"\x00",
    ) -> bytes:
        """Serialize; with ``key`` add MESSAGE-INTEGRITY(-SHA256), with ``fingerprint`` add FINGERPRINT last.

        ``padding`` is the byte used to pad attribute values to 32 bits (RFC 8489 §14: any value is allowed;
        the RFC 5769 vectors use spaces).
        """
        tid = self.transaction_id
        attrs = self._attrs if self._attrs is not None else self.attributes
        # Trailer attributes (MESSAGE-INTEGRITY, FINGERPRINT) refuse to encode themselves.
        if padding == b"\x00":
            # One attribute (a Binding success response) is the server's hot path: no list, no join.
            body = attrs[0].tlv(tid) if len(attrs) == 1 else b"".join([a.tlv(tid) for a in attrs])
        else:
            pads = (b"", padding * 3, padding * 2, padding)
            body = b"".join([a.tlv(tid, pads) for a in attrs])
        mbits = _METHOD_BITS.get(self.method)
        if mbits is None:
            mbits = message_type(self.method, 0)
        return _finish(_CLASS_BITS[self.message_class] | mbits, tid, body, key, integrity, fingerprint)

    # ------------------------------------------------------------------------------------------------- misc

    def __repr__(self) -> str:
        try:
            attrs = ", ".join(repr(a) for a in self.attributes)
        except StunParseError as exc:
            attrs = f"<malformed: {exc}>"
        name = _METHODS[self.method].name if self.method in _METHODS else f"{self.method:#05x}"
        return f"Message({name} {self.message_class.name} tid={self.transaction_id.hex()} [{attrs}])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.method == other.method
            and self.message_class == other.message_class
            and self.transaction_id == other.transaction_id
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]


def encode_parts(method: int, message_class: MessageClass, transaction_id: bytes, body: bytes,
                 key: bytes | IntegrityKey | None = None, *, fingerprint: bool = False) -> bytes:
    """A message from attributes already encoded (``body``: their ``tlv`` bytes, in order), with
    MESSAGE-INTEGRITY under ``key`` and FINGERPRINT: the bytes :meth:`Message.encode` gives for the same
    attributes. For a sender that sends the same attributes again and again under new transaction IDs (an ICE
    agent's checks, RFC 8445 §7.1) and encodes them once."""
    mbits = _METHOD_BITS.get(method)
    if mbits is None:
        mbits = message_type(method, 0)
    return _finish(_CLASS_BITS[message_class] | mbits, transaction_id, body, key, Integrity.SHA1, fingerprint)


def _finish(mtype: int, tid: bytes, body: bytes, key: bytes | IntegrityKey | None, integrity: Integrity,
            fingerprint: bool) -> bytes:
    """Header, body, MESSAGE-INTEGRITY(-SHA256) under ``key`` (RFC 8489 §14.5, §14.6), FINGERPRINT (§14.7)."""
    length = len(body)
    if key is None and not fingerprint and len(tid) == 12:
        return _HDR.pack(mtype, length, MAGIC_COOKIE) + tid + body
    if _seal is not None and integrity is Integrity.SHA1 and len(tid) == 12:
        sealer = None if key is None else key.c if isinstance(key, IntegrityKey) else as_key(key).c
        if sealer is not None or key is None:  # a key made without the accelerator signs below, never not at all
            return _seal(mtype, tid, body, sealer, fingerprint)  # type: ignore[no-any-return]
    if key is not None:
        k = key if isinstance(key, IntegrityKey) else as_key(key)
        if integrity is not Integrity.SHA256:
            length += 24
            body += _MI_TL + k.sha1(_head(mtype, length, tid) + body)
        if integrity is not Integrity.SHA1:
            length += 36
            body += _MI256_TL + k.sha256(_head(mtype, length, tid) + body)
    if fingerprint:
        msg = _head(mtype, length + 8, tid) + body
        return msg + _FP_TL + _U32.pack(zlib.crc32(msg) ^ FINGERPRINT_XOR)
    return _head(mtype, length, tid) + body


def ice_check(data: bytes, prefix: bytes, key: Any, remote: Address
              ) -> tuple[bytes, int, int | None, int | None, bool, bytes | None] | None:
    """An ICE connectivity check read and verified in one pass by the C accelerator (``_speedups.ice_check``; its
    comment lists exactly what it accepts): (transaction ID, PRIORITY, the ICE-CONTROLLING tie-breaker, the
    ICE-CONTROLLED one, USE-CANDIDATE, the success response to ``remote``) when ``data`` is a plain Binding
    request whose USERNAME starts with ``prefix`` and whose MESSAGE-INTEGRITY verifies under ``key`` (an
    :attr:`IntegrityKey.c`). The response (XOR-MAPPED-ADDRESS, signed with ``key``, fingerprinted) is None for
    an IPv6 ``remote``. None for anything else, and always None without the accelerator: the caller's general
    path (:func:`parse`) decides those, with the same outcome for what this accepts (property tests compare the
    two)."""
    if _ice_check is None or key is None:
        return None
    return _ice_check(data, prefix, key, remote)  # type: ignore[no-any-return]


def ice_answer(data: bytes, key: Any) -> Address | None:
    """The mapped address of the success response to an ICE check, read and verified in one pass by the C
    accelerator (``_speedups.ice_answer``; its comment lists exactly what it accepts): a plain Binding success
    response with an IPv4 XOR-MAPPED-ADDRESS whose MESSAGE-INTEGRITY verifies under ``key`` (the peer's
    :attr:`IntegrityKey.c`). None for anything else, and always None without the accelerator: the caller's
    general path (:func:`parse`) decides those, with the same outcome for what this accepts (a property test)."""
    if _ice_answer is None or key is None:
        return None
    return _ice_answer(data, key)  # type: ignore[no-any-return]


def _head(mtype: int, length: int, tid: bytes) -> bytes:
    if len(tid) == 12:
        return _HDR.pack(mtype, length, MAGIC_COOKIE) + tid
    return _TL.pack(mtype, length) + tid  # RFC 3489: a 128-bit transaction ID, no magic cookie


def is_stun(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 7983 §7, RFC 8489 §5): top bits zero, magic cookie, sane length."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == _COOKIE and (len(data) - 20) == _TL.unpack_from(data, 2)[0]


def parse(data: bytes, *, legacy: bool = False) -> Message:
    """Parse one STUN message (RFC 8489 §6.3): check framing and FINGERPRINT; attribute values decode lazily.

    With ``legacy``, a message without the magic cookie is accepted as RFC 3489 (RFC 8489 §12): its transaction
    ID is the 16 bytes after the length. Raises :class:`StunParseError` if ``data`` is not a well-formed STUN
    message or its FINGERPRINT is wrong.
    """
    if data.__class__ is not bytes:
        data = bytes(data)
    mtype, tid, index, first, mi, mi256, fp = _scan(data, legacy)
    split = _SPLIT.get(mtype)
    if split is None:
        method, cls = split_message_type(mtype)
        split = _SPLIT[mtype] = (method, cls)
    # A parsed message skips __init__ (its checks and defaults); a class compiled by mypyc (ice/native.py) can only
    # be made through it.
    msg = Message(split[0], split[1], tid) if _COMPILED else _new_message(Message)
    msg.method, msg.message_class = split
    msg.transaction_id = tid
    msg._attrs = None
    msg._parsed = (data, index, (mi, mi256, fp), first)
    msg._raw = data
    msg._first = first
    return msg


def _scan_py(data: bytes, legacy: bool) -> _Scan:
    """The framing walk: message type, transaction ID, [(type, offset, length)] in order, the first entry of each
    type, and the offsets of MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (-1 when absent).

    The reference implementation; ``_speedups.scan`` is the same in C (a property test compares them).
    """
    n = len(data)
    if n < 20:
        raise StunParseError("shorter than the 20-byte STUN header")
    mtype, length, cookie = _HDR.unpack_from(data)
    if mtype & 0xC000:
        raise StunParseError("the two most significant bits of a STUN message must be zero")
    if cookie != MAGIC_COOKIE and not legacy:
        raise StunParseError("wrong magic cookie (not an RFC 5389/8489 message)")
    if length + 20 != n:
        raise StunParseError(f"header says {length} bytes of attributes, datagram has {n - 20}")
    if length & 3:
        raise StunParseError("message length is not a multiple of 4")
    index: list[tuple[int, int, int]] = []
    first: dict[int, tuple[int, int, int]] = {}
    unpack = _TL.unpack_from
    pos = 20
    # Ordinary attributes. Every position is a multiple of 4 below n (n is), so a header always fits.
    while pos < n:
        t, alen = unpack(data, pos)
        if t in _TRAILER_TYPES:
            break
        entry = (t, pos + 4, alen)
        index.append(entry)
        first.setdefault(t, entry)
        pos += 4 + alen + (-alen & 3)
    mi = mi256 = fp = -1
    while pos < n:  # the trailer: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT (RFC 8489 §14.5-7)
        t, alen = unpack(data, pos)
        if pos + 4 + alen > n:
            break
        if fp >= 0:
            raise StunParseError("FINGERPRINT must be the last attribute")
        if t == _T_FP:
            if alen != 4:
                raise StunParseError("FINGERPRINT must be 4 bytes")
            fp = pos
        elif mi256 >= 0:
            pass  # RFC 8489 §14.6: ignore everything after MESSAGE-INTEGRITY-SHA256 but FINGERPRINT
        elif t == _T_MI256:
            if alen not in (16, 20, 24, 28, 32):
                raise StunParseError("MESSAGE-INTEGRITY-SHA256 must be 16..32 bytes, a multiple of 4")
            mi256 = pos
        elif mi >= 0:
            pass  # RFC 8489 §14.5: ignore attributes after MESSAGE-INTEGRITY
        elif t == _T_MI:
            if alen != 20:
                raise StunParseError("MESSAGE-INTEGRITY must be 20 bytes")
            mi = pos
        pos += 4 + alen + (-alen & 3)
    if pos != n:
        raise StunParseError("an attribute overruns the message")
    if fp >= 0 and zlib.crc32(data[:fp]) ^ FINGERPRINT_XOR != _U32.unpack_from(data, fp + 4)[0]:
        raise StunParseError("FINGERPRINT does not match")
    tid = data[8:20] if cookie == MAGIC_COOKIE else data[4:20]
    return mtype, tid, index, first, mi, mi256, fp


_scan = _scan_py
_c_get: Any = None
_ice_check: Any = None
_ice_answer: Any = None
_seal: Any = None
"""The C accelerator's ``seal`` (header, MESSAGE-INTEGRITY and FINGERPRINT in one call; Message.encode's
common case), None without it."""
if _speedups is not None:
    _seal = _speedups.seal
    _ice_check = _speedups.ice_check
    _ice_answer = _speedups.ice_answer
    _speedups.set_error(StunParseError)
    register_speedups(_speedups)
    _scan = _speedups.scan
    _c_get = _speedups.get


_Entry = tuple[int, int, int]
_Scan = tuple[int, bytes, list[_Entry], dict[int, _Entry], int, int, int]
_Parsed = tuple[bytes, list[_Entry], tuple[int, int, int], dict[int, _Entry]]
"""Raw bytes, (type, value offset, length) per attribute, offsets of MI, MI-SHA256 and FINGERPRINT (-1: absent),
and the first entry of each type (what :meth:`Message.get` returns, RFC 8489 §5)."""


_new_message = object.__new__
_COMPILED = not hasattr(Message.__init__, "__code__")
"""Whether this module runs compiled (ice/native.py): its functions are then not Python functions."""
_SPLIT: dict[int, tuple[int, MessageClass]] = {}
_METHOD_BITS = {int(m): message_type(m, 0) for m in Method}
_CLASS_BITS = [message_type(0, c) for c in MessageClass]
