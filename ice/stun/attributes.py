"""STUN attributes as typed classes, registered in one table (RFC 8489 §14, RFC 5780 §7, RFC 8445 §16.1).

Every attribute is a slotted dataclass (treat it as an immutable value; it is not frozen only because frozen
dataclasses cost 2-3x more to construct, and the codec builds millions of them) with a ``TYPE`` code and:

* ``decode(value, transaction_id)`` (classmethod): the attribute's value bytes -> instance, raising
  :class:`~ice.errors.StunParseError` on malformed input and nothing else;
* ``value(transaction_id)``: instance -> value bytes (no type/length header, no padding);
* ``tlv(transaction_id, pads)``: the whole encoded attribute, header and padding included (hot path).

:data:`ATTRIBUTES` maps type codes to classes. Codes it does not know decode to :class:`UnknownAttribute`, which
keeps the bytes so a message round-trips; :func:`comprehension_required` tells whether an unknown code obliges a
server to answer 420 (RFC 8489 §5, §14).
"""

from __future__ import annotations

import enum
import socket
from dataclasses import dataclass
from struct import Struct
from typing import ClassVar, Self

from ice.errors import StunParseError

MAGIC_COOKIE = 0x2112A442
"""RFC 8489 §5: the fixed value in bytes 4..8 of every STUN message."""

_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_TL = Struct("!HH")
_U16 = Struct("!H")
_U32 = Struct("!I")
_U64 = Struct("!Q")
_ADDR_HDR = Struct("!xBH")
_XOR4 = Struct("!HHHHI")
_TLU32 = Struct("!HHI")
_TLU64 = Struct("!HHQ")
_FAMILY_V4 = 0x01
_FAMILY_V6 = 0x02

Address = tuple[str, int]
"""A transport address as ``(host, port)``; the host is a literal IPv4 or IPv6 address."""


class AttributeType(enum.IntEnum):
    """Attribute type codes (IANA "STUN Attributes" registry)."""

    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    SOURCE_ADDRESS = 0x0004
    CHANGED_ADDRESS = 0x0005
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    CONNECTION_ID = 0x002A
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


def comprehension_required(code: int) -> bool:
    """RFC 8489 §14: codes 0x0000-0x7FFF must be understood; an unknown one makes a request fail with 420."""
    return code < 0x8000


class Attribute:
    """Base of all attribute classes; subclasses are frozen dataclasses with a ``TYPE`` code."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            cls.TYPE = int(cls.TYPE)  # plain int: packing an IntEnum is slower

    @property
    def code(self) -> int:
        """The attribute's type code."""
        return self.TYPE

    def tlv(self, transaction_id: bytes, pads: tuple[bytes, ...] = (b"", b"\0\0\0", b"\0\0", b"\0")) -> bytes:
        """Type, length, value and padding (``pads[n % 4]`` is appended to a value of n bytes)."""
        v = self.value(transaction_id)
        n = len(v)
        return _TL.pack(self.TYPE, n) + v + pads[n & 3]

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        raise NotImplementedError

    @classmethod
    def decode_at(cls, raw: bytes, offset: int, length: int, transaction_id: bytes) -> Self:
        """Decode the value at ``raw[offset:offset + length]`` (subclasses skip the slice where they can)."""
        return cls.decode(raw[offset : offset + length], transaction_id)

    def value(self, transaction_id: bytes) -> bytes:
        raise NotImplementedError


@dataclass(slots=True)
class UnknownAttribute(Attribute):
    """An attribute whose code is not in :data:`ATTRIBUTES`; its bytes are kept verbatim."""

    type: int
    raw: bytes

    @property
    def code(self) -> int:
        return self.type

    def value(self, transaction_id: bytes) -> bytes:
        return self.raw

    def tlv(self, transaction_id: bytes, pads: tuple[bytes, ...] = (b"", b"\0\0\0", b"\0\0", b"\0")) -> bytes:
        if self.type in _TRAILER_CODES:
            raise ValueError(_TRAILER_ERROR)
        n = len(self.raw)
        return _TL.pack(self.type, n) + self.raw + pads[n & 3]


# --------------------------------------------------------------------------------------------------------------
# Address attributes (RFC 8489 §14.1, §14.2)


def _pack_address(host: str, port: int) -> bytes:
    if ":" in host:
        return b"\x00\x02" + _U16.pack(port) + socket.inet_pton(socket.AF_INET6, host)
    return b"\x00\x01" + _U16.pack(port) + socket.inet_aton(host)


def _unpack_address(value: bytes) -> Address:
    n = len(value)
    if n < 4:
        raise StunParseError("address attribute shorter than 4 bytes")
    family, port = _ADDR_HDR.unpack_from(value)
    if family == _FAMILY_V4 and n == 8:
        return socket.inet_ntoa(value[4:8]), port
    if family == _FAMILY_V6 and n == 20:
        return socket.inet_ntop(socket.AF_INET6, value[4:20]), port
    raise StunParseError(f"address attribute with family {family:#x} and length {n}")


def _xor_bytes(data: bytes, mask: bytes) -> bytes:
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")


def _pack_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    xport = port ^ 0x2112
    if ":" in host:
        raw = socket.inet_pton(socket.AF_INET6, host)
        return b"\x00\x02" + _U16.pack(xport) + _xor_bytes(raw, _COOKIE_BYTES + transaction_id)
    ip = int.from_bytes(socket.inet_aton(host), "big") ^ MAGIC_COOKIE
    return b"\x00\x01" + _U16.pack(xport) + _U32.pack(ip)


def _unpack_xor_address(value: bytes, transaction_id: bytes) -> Address:
    n = len(value)
    if n < 4:
        raise StunParseError("XOR address attribute shorter than 4 bytes")
    family, xport = _ADDR_HDR.unpack_from(value)
    port = xport ^ 0x2112
    if family == _FAMILY_V4 and n == 8:
        return socket.inet_ntoa(_U32.pack(_U32.unpack_from(value, 4)[0] ^ MAGIC_COOKIE)), port
    if family == _FAMILY_V6 and n == 20 and len(transaction_id) == 12:
        return socket.inet_ntop(socket.AF_INET6, _xor_bytes(value[4:20], _COOKIE_BYTES + transaction_id)), port
    raise StunParseError(f"XOR address attribute with family {family:#x} and length {n}")


def _check_address(host: str, port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        raise ValueError(f"{host!r} is not a literal IPv4 or IPv6 address") from None


@dataclass(slots=True)
class _AddressAttribute(Attribute):
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(*_unpack_address(value))

    def value(self, transaction_id: bytes) -> bytes:
        return _pack_address(self.host, self.port)


@dataclass(slots=True)
class _XorAddressAttribute(Attribute):
    host: str
    port: int

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(*_unpack_xor_address(value, transaction_id))

    def value(self, transaction_id: bytes) -> bytes:
        return _pack_xor_address(self.host, self.port, transaction_id)

    def tlv(self, transaction_id: bytes, pads: tuple[bytes, ...] = ()) -> bytes:
        host = self.host
        if ":" in host:
            return _TL.pack(self.TYPE, 20) + _pack_xor_address(host, self.port, transaction_id)
        return _XOR4.pack(self.TYPE, 8, 1, self.port ^ 0x2112, _U32.unpack(socket.inet_aton(host))[0] ^ MAGIC_COOKIE)


@dataclass(slots=True)
class MappedAddress(_AddressAttribute):
    """MAPPED-ADDRESS (RFC 8489 §14.1): the reflexive address, unobfuscated (kept for RFC 3489 clients)."""

    TYPE: ClassVar[int] = AttributeType.MAPPED_ADDRESS


@dataclass(slots=True)
class SourceAddress(_AddressAttribute):
    """SOURCE-ADDRESS (RFC 3489 §11.2.3): where an RFC 3489 response was sent from (kept for legacy clients)."""

    TYPE: ClassVar[int] = AttributeType.SOURCE_ADDRESS


@dataclass(slots=True)
class ChangedAddress(_AddressAttribute):
    """CHANGED-ADDRESS (RFC 3489 §11.2.3): the server's other address; RFC 5780 renamed it OTHER-ADDRESS."""

    TYPE: ClassVar[int] = AttributeType.CHANGED_ADDRESS


@dataclass(slots=True)
class XorMappedAddress(_XorAddressAttribute):
    """XOR-MAPPED-ADDRESS (RFC 8489 §14.2): the reflexive address XORed with the cookie (and transaction ID)."""

    TYPE: ClassVar[int] = AttributeType.XOR_MAPPED_ADDRESS


@dataclass(slots=True)
class XorPeerAddress(_XorAddressAttribute):
    """XOR-PEER-ADDRESS (RFC 8656 §18.3)."""

    TYPE: ClassVar[int] = AttributeType.XOR_PEER_ADDRESS


@dataclass(slots=True)
class XorRelayedAddress(_XorAddressAttribute):
    """XOR-RELAYED-ADDRESS (RFC 8656 §18.5)."""

    TYPE: ClassVar[int] = AttributeType.XOR_RELAYED_ADDRESS


@dataclass(slots=True)
class AlternateServer(_AddressAttribute):
    """ALTERNATE-SERVER (RFC 8489 §14.15): where a 300 response redirects the client."""

    TYPE: ClassVar[int] = AttributeType.ALTERNATE_SERVER


@dataclass(slots=True)
class ResponseOrigin(_AddressAttribute):
    """RESPONSE-ORIGIN (RFC 5780 §7.3): the address the response was sent from."""

    TYPE: ClassVar[int] = AttributeType.RESPONSE_ORIGIN


@dataclass(slots=True)
class OtherAddress(_AddressAttribute):
    """OTHER-ADDRESS (RFC 5780 §7.4): the server's alternate IP and port for behaviour discovery."""

    TYPE: ClassVar[int] = AttributeType.OTHER_ADDRESS


# --------------------------------------------------------------------------------------------------------------
# Integer attributes


@dataclass(slots=True)
class _IntAttribute(Attribute):
    """An unsigned integer value of fixed size (``_VALUE`` packs it, ``_TLV`` packs type, length and value)."""

    number: int
    _VALUE: ClassVar[Struct] = _U32
    _TLV: ClassVar[Struct] = _TLU32

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls.decode_at(value, 0, len(value), transaction_id)

    @classmethod
    def decode_at(cls, raw: bytes, offset: int, length: int, transaction_id: bytes) -> Self:
        if length != cls._VALUE.size:
            raise StunParseError(f"attribute {cls.TYPE:#06x} must be {cls._VALUE.size} bytes, got {length}")
        return cls(cls._VALUE.unpack_from(raw, offset)[0])

    def value(self, transaction_id: bytes) -> bytes:
        return self._VALUE.pack(self.number)

    def tlv(self, transaction_id: bytes, pads: tuple[bytes, ...] = ()) -> bytes:
        return self._TLV.pack(self.TYPE, self._VALUE.size, self.number)


@dataclass(slots=True)
class _U32Attribute(_IntAttribute):
    pass


@dataclass(slots=True)
class _U64Attribute(_IntAttribute):
    _VALUE: ClassVar[Struct] = _U64
    _TLV: ClassVar[Struct] = _TLU64


@dataclass(slots=True)
class Priority(_U32Attribute):
    """PRIORITY (RFC 8445 §7.1.1): the priority a peer-reflexive candidate would get."""

    TYPE: ClassVar[int] = AttributeType.PRIORITY


@dataclass(slots=True)
class IceControlled(_U64Attribute):
    """ICE-CONTROLLED (RFC 8445 §7.1.3): the sender is controlled; the number is its tie-breaker."""

    TYPE: ClassVar[int] = AttributeType.ICE_CONTROLLED


@dataclass(slots=True)
class IceControlling(_U64Attribute):
    """ICE-CONTROLLING (RFC 8445 §7.1.3): the sender is controlling; the number is its tie-breaker."""

    TYPE: ClassVar[int] = AttributeType.ICE_CONTROLLING


@dataclass(slots=True)
class Lifetime(_U32Attribute):
    """LIFETIME (RFC 8656 §18.2), in seconds."""

    TYPE: ClassVar[int] = AttributeType.LIFETIME


@dataclass(slots=True)
class ReservationToken(_U64Attribute):
    """RESERVATION-TOKEN (RFC 8656 §18.10): 8 bytes naming a relayed address the server holds in reserve."""

    TYPE: ClassVar[int] = AttributeType.RESERVATION_TOKEN


@dataclass(slots=True)
class ConnectionId(_U32Attribute):
    """CONNECTION-ID (RFC 6062 §6.2.1): 4 bytes naming one peer data connection of a TCP allocation."""

    TYPE: ClassVar[int] = AttributeType.CONNECTION_ID


@dataclass(slots=True)
class ChangeRequest(Attribute):
    """CHANGE-REQUEST (RFC 5780 §7.2): ask the server to answer from its other IP and/or port."""

    TYPE: ClassVar[int] = AttributeType.CHANGE_REQUEST
    change_ip: bool = False
    change_port: bool = False

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise StunParseError(f"CHANGE-REQUEST must be 4 bytes, got {len(value)}")
        flags = _U32.unpack(value)[0]
        return cls(bool(flags & 0x4), bool(flags & 0x2))

    def value(self, transaction_id: bytes) -> bytes:
        return _U32.pack((0x4 if self.change_ip else 0) | (0x2 if self.change_port else 0))


@dataclass(slots=True)
class ResponsePort(Attribute):
    """RESPONSE-PORT (RFC 5780 §7.5): send the response to this port of the client's source IP."""

    TYPE: ClassVar[int] = AttributeType.RESPONSE_PORT
    port: int

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise StunParseError(f"RESPONSE-PORT must be 4 bytes, got {len(value)}")
        return cls(_U16.unpack_from(value)[0])

    def value(self, transaction_id: bytes) -> bytes:
        return _U16.pack(self.port) + b"\x00\x00"


@dataclass(slots=True)
class ChannelNumber(Attribute):
    """CHANNEL-NUMBER (RFC 8656 §18.1): 0x4000-0x4FFF, followed by two reserved bytes."""

    TYPE: ClassVar[int] = AttributeType.CHANNEL_NUMBER
    number: int

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise StunParseError(f"CHANNEL-NUMBER must be 4 bytes, got {len(value)}")
        return cls(_U16.unpack_from(value)[0])

    def value(self, transaction_id: bytes) -> bytes:
        return _U16.pack(self.number) + b"\x00\x00"


@dataclass(slots=True)
class RequestedTransport(Attribute):
    """REQUESTED-TRANSPORT (RFC 8656 §18.8): an IANA protocol number (17 = UDP; 6 = TCP, RFC 6062 §6.2), then 3
    reserved bytes (ignored)."""

    TYPE: ClassVar[int] = AttributeType.REQUESTED_TRANSPORT
    protocol: int = 17

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise StunParseError(f"REQUESTED-TRANSPORT must be 4 bytes, got {len(value)}")
        return cls(value[0])

    def value(self, transaction_id: bytes) -> bytes:
        return bytes((self.protocol, 0, 0, 0))


@dataclass(slots=True)
class _FamilyAttribute(Attribute):
    """A family byte (1 = IPv4, 2 = IPv6) and 3 reserved bytes, ignored on reception (RFC 8656 §18.6). Any family
    byte decodes: which values a request may carry is the server's to judge (RFC 8656 §7.2: 440 or 400)."""

    family: int

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise StunParseError(f"address family attribute {cls.TYPE:#06x} must be 4 bytes, got {len(value)}")
        return cls(value[0])

    def value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0, 0, 0))


@dataclass(slots=True)
class RequestedAddressFamily(_FamilyAttribute):
    """REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.6): 1 = IPv4, 2 = IPv6."""

    TYPE: ClassVar[int] = AttributeType.REQUESTED_ADDRESS_FAMILY


@dataclass(slots=True)
class AdditionalAddressFamily(_FamilyAttribute):
    """ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.11): an IPv6 relayed address besides the IPv4 one (only 2 is valid)."""

    TYPE: ClassVar[int] = AttributeType.ADDITIONAL_ADDRESS_FAMILY


@dataclass(slots=True)
class EvenPort(Attribute):
    """EVEN-PORT (RFC 8656 §18.7): the R bit asks to reserve the next port too (the other 7 bits are ignored)."""

    TYPE: ClassVar[int] = AttributeType.EVEN_PORT
    reserve: bool = False

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 1:
            raise StunParseError(f"EVEN-PORT must be 1 byte, got {len(value)}")
        return cls(bool(value[0] & 0x80))

    def value(self, transaction_id: bytes) -> bytes:
        return b"\x80" if self.reserve else b"\x00"


# --------------------------------------------------------------------------------------------------------------
# Flags (empty value)


@dataclass(slots=True)
class _FlagAttribute(Attribute):
    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if value:
            raise StunParseError(f"attribute {cls.TYPE:#06x} must be empty")
        return cls()

    @classmethod
    def decode_at(cls, raw: bytes, offset: int, length: int, transaction_id: bytes) -> Self:
        if length:
            raise StunParseError(f"attribute {cls.TYPE:#06x} must be empty")
        return cls()

    def value(self, transaction_id: bytes) -> bytes:
        return b""

    def tlv(self, transaction_id: bytes, pads: tuple[bytes, ...] = ()) -> bytes:
        return _TL.pack(self.TYPE, 0)


@dataclass(slots=True)
class UseCandidate(_FlagAttribute):
    """USE-CANDIDATE (RFC 8445 §7.1.2): the controlling agent nominates this pair."""

    TYPE: ClassVar[int] = AttributeType.USE_CANDIDATE


@dataclass(slots=True)
class DontFragment(_FlagAttribute):
    """DONT-FRAGMENT (RFC 8656 §18.9): set the DF bit on what is relayed to the peer."""

    TYPE: ClassVar[int] = AttributeType.DONT_FRAGMENT


# --------------------------------------------------------------------------------------------------------------
# Text and opaque attributes


@dataclass(slots=True)
class _TextAttribute(Attribute):
    text: str
    MAX_BYTES: ClassVar[int] = 763

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) > cls.MAX_BYTES:
            raise StunParseError(f"attribute {cls.TYPE:#06x} longer than {cls.MAX_BYTES} bytes")
        try:
            return cls(value.decode("utf-8"))
        except UnicodeDecodeError:
            raise StunParseError(f"attribute {cls.TYPE:#06x} is not valid UTF-8") from None

    @classmethod
    def decode_at(cls, raw: bytes, offset: int, length: int, transaction_id: bytes) -> Self:
        if length > cls.MAX_BYTES:
            raise StunParseError(f"attribute {cls.TYPE:#06x} longer than {cls.MAX_BYTES} bytes")
        try:
            return cls(str(raw[offset : offset + length], "utf-8"))
        except UnicodeDecodeError:
            raise StunParseError(f"attribute {cls.TYPE:#06x} is not valid UTF-8") from None

    def value(self, transaction_id: bytes) -> bytes:
        return self.text.encode("utf-8")


@dataclass(slots=True)
class Username(_TextAttribute):
    """USERNAME (RFC 8489 §14.3): at most 509 bytes of UTF-8 (OpaqueString-processed by the sender)."""

    TYPE: ClassVar[int] = AttributeType.USERNAME
    MAX_BYTES: ClassVar[int] = 509


@dataclass(slots=True)
class Realm(_TextAttribute):
    """REALM (RFC 8489 §14.9): fewer than 128 characters, at most 763 bytes."""

    TYPE: ClassVar[int] = AttributeType.REALM


@dataclass(slots=True)
class Nonce(_TextAttribute):
    """NONCE (RFC 8489 §14.10): fewer than 128 characters, at most 763 bytes; may carry the security feature
    cookie ``obMatJos2`` (§9.2)."""

    TYPE: ClassVar[int] = AttributeType.NONCE


@dataclass(slots=True)
class Software(_TextAttribute):
    """SOFTWARE (RFC 8489 §14.14): a description of the agent, fewer than 128 characters."""

    TYPE: ClassVar[int] = AttributeType.SOFTWARE


@dataclass(slots=True)
class AlternateDomain(_TextAttribute):
    """ALTERNATE-DOMAIN (RFC 8489 §14.16): the TLS name of the ALTERNATE-SERVER."""

    TYPE: ClassVar[int] = AttributeType.ALTERNATE_DOMAIN


@dataclass(slots=True)
class _BytesAttribute(Attribute):
    data: bytes

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(bytes(value))

    def value(self, transaction_id: bytes) -> bytes:
        return self.data


@dataclass(slots=True)
class Data(_BytesAttribute):
    """DATA (RFC 8656 §18.4): an application datagram inside Send/Data indications."""

    TYPE: ClassVar[int] = AttributeType.DATA


@dataclass(slots=True)
class Padding(_BytesAttribute):
    """PADDING (RFC 5780 §7.6): filler bytes for path-MTU tests; servers echo it back in the response."""

    TYPE: ClassVar[int] = AttributeType.PADDING


_TRAILER_CODES = (AttributeType.MESSAGE_INTEGRITY, AttributeType.MESSAGE_INTEGRITY_SHA256, AttributeType.FINGERPRINT)
_TRAILER_ERROR = "MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT are added by Message.encode(), not by the caller"


class _Trailer(Attribute):
    """Integrity and fingerprint attributes: computed by Message.encode(), never encoded from a value."""

    __slots__ = ()

    def tlv(self, transaction_id: bytes, pads: tuple[bytes, ...] = ()) -> bytes:
        raise ValueError(_TRAILER_ERROR)


@dataclass(slots=True)
class _FixedBytesAttribute(Attribute):
    data: bytes
    LENGTHS: ClassVar[tuple[int, ...]] = ()

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) not in cls.LENGTHS:
            raise StunParseError(f"attribute {cls.TYPE:#06x} has length {len(value)}, expected {cls.LENGTHS}")
        return cls(bytes(value))

    def value(self, transaction_id: bytes) -> bytes:
        return self.data


@dataclass(slots=True)
class UserHash(_FixedBytesAttribute):
    """USERHASH (RFC 8489 §14.4): SHA-256(OpaqueString(username) ":" OpaqueString(realm))."""

    TYPE: ClassVar[int] = AttributeType.USERHASH
    LENGTHS: ClassVar[tuple[int, ...]] = (32,)


@dataclass(slots=True)
class MessageIntegrity(_Trailer, _FixedBytesAttribute):
    """MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 over the message up to this attribute."""

    TYPE: ClassVar[int] = AttributeType.MESSAGE_INTEGRITY
    LENGTHS: ClassVar[tuple[int, ...]] = (20,)


@dataclass(slots=True)
class MessageIntegritySha256(_Trailer, _FixedBytesAttribute):
    """MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6): HMAC-SHA256, possibly truncated to 16..32 bytes (multiple of 4)."""

    TYPE: ClassVar[int] = AttributeType.MESSAGE_INTEGRITY_SHA256
    LENGTHS: ClassVar[tuple[int, ...]] = (16, 20, 24, 28, 32)


@dataclass(slots=True)
class Fingerprint(_Trailer):
    """FINGERPRINT (RFC 8489 §14.7): CRC-32 of the message up to this attribute, XOR 0x5354554E."""

    TYPE: ClassVar[int] = AttributeType.FINGERPRINT
    crc: int

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise StunParseError(f"FINGERPRINT must be 4 bytes, got {len(value)}")
        return cls(_U32.unpack(value)[0])

    def value(self, transaction_id: bytes) -> bytes:
        return _U32.pack(self.crc)


# --------------------------------------------------------------------------------------------------------------
# Structured attributes


@dataclass(slots=True)
class ErrorCode(Attribute):
    """ERROR-CODE (RFC 8489 §14.8): a code 300..699 and a UTF-8 reason phrase (at most 763 bytes)."""

    TYPE: ClassVar[int] = AttributeType.ERROR_CODE
    code: int
    reason: str = ""

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4 or len(value) > 4 + 763:
            raise StunParseError(f"ERROR-CODE has length {len(value)}")
        code = (value[2] & 0x07) * 100 + value[3]
        if not 300 <= code <= 699 or value[3] > 99:
            raise StunParseError(f"ERROR-CODE {code} out of range")
        try:
            reason = value[4:].decode("utf-8")
        except UnicodeDecodeError:
            raise StunParseError("ERROR-CODE reason is not valid UTF-8") from None
        return cls(code, reason)

    def value(self, transaction_id: bytes) -> bytes:
        return bytes((0, 0, self.code // 100, self.code % 100)) + self.reason.encode("utf-8")


@dataclass(slots=True)
class AddressErrorCode(Attribute):
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of an ADDITIONAL-ADDRESS-FAMILY request was not
    allocated (440 or 508): a family byte, reserved bits, the class and number of the code, then a reason phrase."""

    TYPE: ClassVar[int] = AttributeType.ADDRESS_ERROR_CODE
    family: int
    code: int
    reason: str = ""

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4 or len(value) > 4 + 763:
            raise StunParseError(f"ADDRESS-ERROR-CODE has length {len(value)}")
        code = (value[2] & 0x07) * 100 + value[3]
        if not 300 <= code <= 699 or value[3] > 99:
            raise StunParseError(f"ADDRESS-ERROR-CODE {code} out of range")
        try:
            reason = value[4:].decode("utf-8")
        except UnicodeDecodeError:
            raise StunParseError("ADDRESS-ERROR-CODE reason is not valid UTF-8") from None
        return cls(value[0], code, reason)

    def value(self, transaction_id: bytes) -> bytes:
        return bytes((self.family, 0, self.code // 100, self.code % 100)) + self.reason.encode("utf-8")


@dataclass(slots=True)
class UnknownAttributes(Attribute):
    """UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): the codes a 420 response did not understand."""

    TYPE: ClassVar[int] = AttributeType.UNKNOWN_ATTRIBUTES
    types: tuple[int, ...]

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise StunParseError("UNKNOWN-ATTRIBUTES has an odd length")
        return cls(tuple(_U16.unpack_from(value, i)[0] for i in range(0, len(value), 2)))

    def value(self, transaction_id: bytes) -> bytes:
        return b"".join(_U16.pack(t) for t in self.types)


class PasswordAlgorithmId(enum.IntEnum):
    """RFC 8489 §18.5 "STUN Password Algorithms" registry."""

    MD5 = 0x0001
    SHA256 = 0x0002


def _pack_algorithm(algorithm: int, params: bytes) -> bytes:
    pad = -len(params) % 4
    return _U16.pack(algorithm) + _U16.pack(len(params)) + params + b"\x00" * pad


def _unpack_algorithms(value: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(value):
        if pos + 4 > len(value):
            raise StunParseError("truncated password algorithm")
        algorithm = _U16.unpack_from(value, pos)[0]
        n = _U16.unpack_from(value, pos + 2)[0]
        if pos + 4 + n > len(value):
            raise StunParseError("password algorithm parameters overrun the attribute")
        out.append((algorithm, bytes(value[pos + 4 : pos + 4 + n])))
        pos += 4 + n + (-n % 4)
    return out


@dataclass(slots=True)
class PasswordAlgorithm(Attribute):
    """PASSWORD-ALGORITHM (RFC 8489 §14.12): the algorithm the client chose for the long-term key."""

    TYPE: ClassVar[int] = AttributeType.PASSWORD_ALGORITHM
    algorithm: int
    parameters: bytes = b""

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        items = _unpack_algorithms(value)
        if len(items) != 1:
            raise StunParseError("PASSWORD-ALGORITHM must hold exactly one algorithm")
        return cls(*items[0])

    def value(self, transaction_id: bytes) -> bytes:
        return _pack_algorithm(self.algorithm, self.parameters)


@dataclass(slots=True)
class PasswordAlgorithms(Attribute):
    """PASSWORD-ALGORITHMS (RFC 8489 §14.11): the server's algorithms in order of preference."""

    TYPE: ClassVar[int] = AttributeType.PASSWORD_ALGORITHMS
    algorithms: tuple[tuple[int, bytes], ...]

    @classmethod
    def decode(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(tuple(_unpack_algorithms(value)))

    def value(self, transaction_id: bytes) -> bytes:
        return b"".join(_pack_algorithm(a, p) for a, p in self.algorithms)


ATTRIBUTES: dict[int, type[Attribute]] = {
    cls.TYPE: cls
    for cls in (
        MappedAddress,
        SourceAddress,
        ChangedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        AlternateServer,
        ResponseOrigin,
        OtherAddress,
        Priority,
        IceControlled,
        IceControlling,
        Lifetime,
        ReservationToken,
        ConnectionId,
        ChangeRequest,
        ResponsePort,
        ChannelNumber,
        RequestedTransport,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        UseCandidate,
        DontFragment,
        Username,
        Realm,
        Nonce,
        Software,
        AlternateDomain,
        Data,
        Padding,
        UserHash,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
        ErrorCode,
        AddressErrorCode,
        UnknownAttributes,
        PasswordAlgorithm,
        PasswordAlgorithms,
    )
}
"""The registry: attribute type code -> typed class."""


def register_speedups(speedups: object) -> None:
    """Tell the C accelerator which classes it may decode itself, and into which slots (see _speedups.c get())."""
    register = speedups.register  # type: ignore[attr-defined]
    kinds: list[tuple[int, tuple[type[Attribute], ...], str | None, str | None]] = [
        (1, (Priority, Lifetime), "number", None),
        (2, (IceControlled, IceControlling, ReservationToken), "number", None),
        (3, (UseCandidate, DontFragment), None, None),
        (4, (Username, Realm, Nonce, Software, AlternateDomain), "text", None),
        (5, (XorMappedAddress, XorPeerAddress, XorRelayedAddress), "host", "port"),
    ]
    for kind, classes, field1, field2 in kinds:
        for cls in classes:
            register(cls, kind, cls.TYPE, field1, field2, getattr(cls, "MAX_BYTES", 0))


def decode_attribute(code: int, value: bytes, transaction_id: bytes) -> Attribute:
    """Decode one attribute value; unknown codes become :class:`UnknownAttribute`."""
    cls = ATTRIBUTES.get(code)
    if cls is None:
        return UnknownAttribute(code, bytes(value))
    try:
        return cls.decode(value, transaction_id)
    except StunParseError:
        raise
    except (ValueError, OSError, IndexError) as exc:  # defensive: never let a decoder leak another type
        raise StunParseError(f"attribute {code:#06x}: {exc}") from None


def check_address(host: str, port: int) -> None:
    """Raise ValueError if ``(host, port)`` is not a literal IP address and a valid port (for user input)."""
    _check_address(host, port)
