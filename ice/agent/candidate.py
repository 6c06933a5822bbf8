"""ICE candidates: priorities and foundations (RFC 8445 §5.1), SDP ``a=candidate`` lines (RFC 8839 §5.1)."""

from __future__ import annotations

import enum
import ipaddress
import socket
import string
import zlib
from dataclasses import dataclass, field, replace

from ice.stun.attributes import Address


class CandidateType(enum.Enum):
    __hash__ = object.__hash__  # members are singletons: the identity hash, not Enum's Python-level one (a hot path)

    HOST = "host"
    SERVER_REFLEXIVE = "srflx"
    PEER_REFLEXIVE = "prflx"
    RELAYED = "relay"


_TYPES = {t.value: t for t in CandidateType}
"""A candidate type by its SDP name (RFC 8839 §5.1 cand-type), looked up without the Enum call's machinery."""

TYPE_PREFERENCE = {
    CandidateType.HOST: 126,
    CandidateType.PEER_REFLEXIVE: 110,
    CandidateType.SERVER_REFLEXIVE: 100,
    CandidateType.RELAYED: 0,
}
"""RFC 8445 §5.1.2.2 recommended type preferences."""


def candidate_priority(kind: CandidateType, local_preference: int = 65535, component: int = 1) -> int:
    """RFC 8445 §5.1.2.1: 2^24 * type preference + 2^8 * local preference + (256 - component ID)."""
    if not 0 <= local_preference <= 65535 or not 1 <= component <= 256:
        raise ValueError("local preference is 0..65535 and component ID 1..256")
    return (TYPE_PREFERENCE[kind] << 24) | (local_preference << 8) | (256 - component)


def foundation(kind: CandidateType, base_ip: str, server_ip: str | None = None, transport: str = "udp") -> str:
    """RFC 8445 §5.1.1.3: equal for candidates of the same type, base IP, STUN/TURN server IP and transport."""
    return str(zlib.crc32(f"{kind.value}|{base_ip}|{server_ip or ''}|{transport}".encode()))


def pair_priority(controlling: int, controlled: int) -> int:
    """RFC 8445 §6.1.2.3: 2^32 * MIN(G,D) + 2 * MAX(G,D) + (G > D ? 1 : 0)."""
    g, d = controlling, controlled
    return (min(g, d) << 32) + 2 * max(g, d) + (1 if g > d else 0)


@dataclass(frozen=True)
class Candidate:
    """One candidate (RFC 8445 §2, §5). ``related`` is the base for srflx/prflx/relay candidates (raddr/rport)."""

    foundation: str
    component: int
    transport: str
    priority: int
    host: str
    port: int
    type: CandidateType
    related: Address | None = None
    tcptype: str | None = None
    generation: int | None = None
    extensions: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    """Attributes this code does not interpret, kept in order (RFC 8839 §5.1 extension-att-name/value)."""

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def family(self) -> int:
        return 6 if ":" in self.host else 4

    def with_(self, **changes: object) -> Candidate:
        return replace(self, **changes)  # type: ignore[arg-type]

    # ----------------------------------------------------------------------------------------------- SDP

    def to_sdp(self) -> str:
        """The attribute value of ``a=candidate`` (RFC 8839 §5.1), without ``a=`` and ``candidate:``."""
        parts = [self.foundation, str(self.component), self.transport, str(self.priority), self.host,
                 str(self.port), "typ", self.type._value_]
        if self.related is not None:
            parts += ["raddr", self.related[0], "rport", str(self.related[1])]
        if self.tcptype is not None:
            parts += ["tcptype", self.tcptype]
        if self.generation is not None:
            parts += ["generation", str(self.generation)]
        for name, value in self.extensions:
            parts += [name, value]
        return " ".join(parts)

    @classmethod
    def from_sdp(cls, text: str) -> Candidate:
        """Parse ``a=candidate:...``, ``candidate:...`` or the bare value; raises ValueError on malformed input."""
        text = text.strip()
        for prefix in ("a=", "candidate:"):
            if text.startswith(prefix):
                text = text[len(prefix):]
        bits = text.split()
        if len(bits) < 8 or bits[6] != "typ":
            raise ValueError(f"not an ICE candidate (RFC 8839 section 5.1): {text!r}")
        found, comp, transport, prio, host, port = bits[:6]
        kind = _TYPES.get(bits[7])
        if kind is None:
            raise ValueError(f"unknown candidate type {bits[7]!r}")
        # str methods and a set, not a regex or helper calls: a peer's candidates are parsed on the way to its
        # first check (ASCII digits only: str.isdigit alone takes any Unicode digit).
        if not (comp.isdigit() and prio.isdigit() and port.isdigit() and (comp + prio + port).isascii()
                and len(comp) <= 10 and len(prio) <= 10 and len(port) <= 10):
            raise ValueError(f"malformed component, priority or port in {text!r}")
        component, priority, number = int(comp), int(prio), int(port)
        if not (1 <= component <= 256 and priority <= 0xFFFFFFFF and number <= 0xFFFF):
            raise ValueError(f"malformed component, priority or port in {text!r}")
        if len(found) > 32 or not _ICE_CHARS.issuperset(found):
            raise ValueError("a foundation is 1 to 32 ice-chars (ALPHA / DIGIT / + / /)")
        host = _canonical_host(host)
        rest = bits[8:]
        if len(rest) % 2:
            raise ValueError(f"dangling attribute name in {text!r}")
        raddr = rport = None
        tcptype = None
        generation = None
        extensions: list[tuple[str, str]] = []
        for name, value in zip(rest[::2], rest[1::2], strict=True):
            if name == "raddr":
                raddr = _canonical_host(value)
            elif name == "rport":
                if not _number(value, 0xFFFF):
                    raise ValueError(f"rport {value!r} is not a port")
                rport = int(value)
            elif name == "tcptype":
                tcptype = value
            elif name == "generation" and _number(value, 0xFFFFFFFF):
                generation = int(value)
            else:
                extensions.append((name, value))
        related = (raddr, rport) if raddr is not None and rport is not None else None
        return cls(found, component, transport.lower(), priority, host, number, kind, related, tcptype,
                   generation, tuple(extensions))


def pair_text(local: Candidate, remote: Candidate, separator: str = "->") -> str:
    """``srflx 203.0.113.1:5000 -> prflx 203.0.113.2:6000``: a pair's candidate types and addresses, local first.
    A TCP candidate (RFC 6544) says so, with its tcptype: ``srflx tcp so 203.0.113.1:5004``."""

    def one(c: Candidate) -> str:
        kind = f"{c.type._value_} tcp {c.tcptype or '?'}" if c.transport == "tcp" else c.type._value_
        return f"{kind} [{c.host}]:{c.port}" if ":" in c.host else f"{kind} {c.host}:{c.port}"

    return f"{one(local)} {separator} {one(remote)}"


_ICE_CHARS = frozenset(string.ascii_letters + string.digits + "+/")
"""RFC 8839 §5.1: foundation = 1*32ice-char; ice-char = ALPHA / DIGIT / "+" / "/"."""


def _number(text: str, limit: int) -> bool:
    """ASCII digits (RFC 5234 DIGIT, not any Unicode digit) for a value of at most ``limit``."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) <= limit


def _canonical_host(text: str) -> str:
    try:
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text  # already a canonical dotted quad (the common case, without ipaddress's objects)
    except OSError:
        pass
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        if text.endswith(".local") or text.replace("-", "").replace(".", "").isalnum():
            return text  # an mDNS name (RFC 8839 allows FQDNs); the agent ignores what it cannot resolve
        raise ValueError(f"{text!r} is not an address") from None
