"""Credentials and message integrity (RFC 8489 §9, §14.5-§14.7; RFC 8265 OpaqueString; RFC 4013 SASLprep).

Keys are wrapped in :class:`IntegrityKey`, which prepares the HMAC inner and outer hash states once (in the C
accelerator when it is built, else on first use): an ICE agent or a TURN client signs and checks many messages with
one key, and re-keying HMAC per message would cost more than the rest of the codec put together.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import stringprep
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any

_speedups: Any = None
if not os.environ.get("ICELAB_PURE_PYTHON"):
    try:
        from ice.stun import _speedups  # type: ignore[attr-defined, no-redef]
    except ImportError:  # not built (no compiler or OpenSSL headers): the pure-Python code below is complete
        _speedups = None


def speedups_enabled() -> bool:
    """Whether the optional C accelerator (ice/stun/_speedups.c) is in use."""
    return _speedups is not None


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class IntegrityKey:
    """An HMAC key for MESSAGE-INTEGRITY (SHA-1) and MESSAGE-INTEGRITY-SHA256 with precomputed pad states."""

    __slots__ = ("_i1", "_i256", "_o1", "_o256", "c", "check_sha1", "check_sha256", "key", "sha1", "sha256")

    def __init__(self, key: bytes) -> None:
        self.key = bytes(key)
        self._i1: Any = None  # the pure-Python pad states, prepared on first use (never, with the C accelerator)
        self.c: Any = None
        """The C accelerator's key (``_speedups.HmacKey``), None without the accelerator."""
        if _speedups is not None:
            c = self.c = _speedups.HmacKey(self.key)
            self.sha1: Callable[[bytes], bytes] = c.sha1
            self.sha256: Callable[[bytes], bytes] = c.sha256
            self.check_sha1: Callable[[bytes, int], bool] = c.check_sha1
            self.check_sha256: Callable[[bytes, int], bool] = c.check_sha256
            return
        self.sha1 = self._sha1
        self.sha256 = self._sha256
        self.check_sha1 = self._check_sha1
        self.check_sha256 = self._check_sha256

    def _prepare(self) -> None:
        k1 = hashlib.sha1(self.key).digest() if len(self.key) > 64 else self.key
        k1 = k1.ljust(64, b"\x00")
        k256 = hashlib.sha256(self.key).digest() if len(self.key) > 64 else self.key
        k256 = k256.ljust(64, b"\x00")
        self._o1: Any = hashlib.sha1(k1.translate(_OPAD))
        self._i256: Any = hashlib.sha256(k256.translate(_IPAD))
        self._o256: Any = hashlib.sha256(k256.translate(_OPAD))
        self._i1 = hashlib.sha1(k1.translate(_IPAD))

    def _sha1(self, data: bytes) -> bytes:
        """HMAC-SHA1 (RFC 2104)."""
        if self._i1 is None:
            self._prepare()
        inner = self._i1.copy()
        inner.update(data)
        outer = self._o1.copy()
        outer.update(inner.digest())
        return outer.digest()  # type: ignore[no-any-return]

    def _sha256(self, data: bytes) -> bytes:
        """HMAC-SHA256 (RFC 2104)."""
        if self._i1 is None:
            self._prepare()
        inner = self._i256.copy()
        inner.update(data)
        outer = self._o256.copy()
        outer.update(inner.digest())
        return outer.digest()  # type: ignore[no-any-return]

    def _check(self, raw: bytes, pos: int, mac: Callable[[bytes], bytes], sha256: bool) -> bool:
        if pos < 20 or pos + 4 > len(raw):
            return False
        n = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if pos + 4 + n > len(raw) or (not sha256 and n != 20) or n > 32:
            return False
        digest = mac(raw[0:2] + (pos + 4 + n - 20).to_bytes(2, "big") + raw[4:pos])
        return hmac.compare_digest(digest[:n], raw[pos + 4 : pos + 4 + n])

    def _check_sha1(self, raw: bytes, pos: int) -> bool:
        """Verify the MESSAGE-INTEGRITY at ``pos`` of a STUN message (RFC 8489 §14.5: length adjusted)."""
        return self._check(raw, pos, self._sha1, False)

    def _check_sha256(self, raw: bytes, pos: int) -> bool:
        """Verify the MESSAGE-INTEGRITY-SHA256 at ``pos`` of a STUN message (RFC 8489 §14.6)."""
        return self._check(raw, pos, self._sha256, True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntegrityKey) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"IntegrityKey(<{len(self.key)} bytes>)"


@lru_cache(maxsize=256)
def as_key(key: bytes | IntegrityKey) -> IntegrityKey:
    """Accept raw key bytes or a prepared :class:`IntegrityKey` (prepared keys are cached by value)."""
    return key if isinstance(key, IntegrityKey) else IntegrityKey(key)


class KeyAlgorithm(enum.Enum):
    """Long-term key derivation (RFC 8489 §9.2.2, §18.5)."""

    MD5 = "md5"
    SHA256 = "sha256"


class StringPrep(enum.Enum):
    """How passwords and realms are normalised before hashing.

    RFC 8489 uses the OpaqueString profile (RFC 8265 §4.2); RFC 5389, and therefore the RFC 5769 test vectors and
    many deployed servers, used SASLprep (RFC 4013).
    """

    OPAQUE_STRING = "opaque"
    SASLPREP = "saslprep"


def _prohibited(ch: str) -> bool:
    return (
        stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
    )


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep (stored strings): map, NFKC, reject prohibited output, check bidi (RFC 3454 §6).

    Raises ValueError for strings the profile prohibits.
    """
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    out = unicodedata.normalize("NFKC", mapped)
    if not out:
        return out
    for c in out:
        if _prohibited(c) or stringprep.in_table_a1(c):
            raise ValueError(f"SASLprep prohibits character U+{ord(c):04X}")
    ral = [stringprep.in_table_d1(c) for c in out]
    if any(ral):
        if any(stringprep.in_table_d2(c) for c in out):
            raise ValueError("SASLprep: mixed right-to-left and left-to-right text")
        if not (ral[0] and ral[-1]):
            raise ValueError("SASLprep: right-to-left text must start and end with a right-to-left character")
    return out


def opaque_string(text: str) -> str:
    """RFC 8265 §4.2 OpaqueString: non-ASCII spaces become U+0020, then NFC; control characters are rejected.

    Raises ValueError for an empty result or a disallowed character (RFC 8264 FreeformClass, simplified to the
    checks that matter for credentials: controls and unassigned code points).
    """
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in text)
    out = unicodedata.normalize("NFC", mapped)
    if not out:
        raise ValueError("OpaqueString: empty string")
    for c in out:
        cat = unicodedata.category(c)
        if cat in ("Cc", "Cn", "Cs"):
            raise ValueError(f"OpaqueString disallows U+{ord(c):04X}")
    return out


def _prep(text: str, prep: StringPrep) -> str:
    return saslprep(text) if prep is StringPrep.SASLPREP else opaque_string(text)


def short_term_key(password: str, prep: StringPrep = StringPrep.OPAQUE_STRING) -> IntegrityKey:
    """RFC 8489 §9.1.1: key = OpaqueString(password). ICE (RFC 8445 §7.2.2) uses the peer's ice-pwd."""
    return IntegrityKey(_prep(password, prep).encode("utf-8"))


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: KeyAlgorithm = KeyAlgorithm.MD5,
    prep: StringPrep = StringPrep.OPAQUE_STRING,
) -> IntegrityKey:
    """RFC 8489 §9.2.2: key = H(username ":" OpaqueString(realm) ":" OpaqueString(password)), H = MD5 or SHA-256.

    Use ``prep=StringPrep.SASLPREP`` for RFC 5389 peers (and the RFC 5769 §2.4 vector).
    """
    material = f"{username}:{_prep(realm, prep)}:{_prep(password, prep)}".encode()
    if algorithm is KeyAlgorithm.SHA256:
        return IntegrityKey(hashlib.sha256(material).digest())
    return IntegrityKey(hashlib.md5(material).digest())


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 §14.4: USERHASH = SHA-256(OpaqueString(username) ":" OpaqueString(realm))."""
    return hashlib.sha256(f"{opaque_string(username)}:{opaque_string(realm)}".encode()).digest()
