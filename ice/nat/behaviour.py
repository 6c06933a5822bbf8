"""NAT behaviour as one declarative value (RFC 4787 for UDP, RFC 5382 for TCP), and the preset names users know.

A :class:`NatBehaviour` says what a NAT does; :mod:`ice.lab.nat.nft` turns it into kernel rules, the in-memory
simulation turns it into a model, and the conformance probe measures a built lab against it. Its TCP section
(:class:`TcpBehaviour`) says what the NAT does to TCP: docs/tcp.md.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace

from ice.errors import UserError


class Mapping(enum.Enum):
    """RFC 4787 §4.1: what decides whether an outbound packet reuses an existing external address and port."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"

    @property
    def short(self) -> str:
        return {"endpoint-independent": "eim", "address-dependent": "adm", "address-and-port-dependent": "apdm"}[
            self.value
        ]


class Filtering(enum.Enum):
    """RFC 4787 §5: which inbound packets an existing mapping lets through."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"

    @property
    def short(self) -> str:
        return {"endpoint-independent": "eif", "address-dependent": "adf", "address-and-port-dependent": "apdf"}[
            self.value
        ]


class NatKind(enum.Enum):
    """How the behaviour is realised in the kernel."""

    ENGINE = "engine"
    """The nft RFC 4787 engine: dynamic maps give every mapping x filtering pair, hairpin, timeouts."""
    MASQUERADE = "masquerade"
    """Plain Linux MASQUERADE with the unsolicited-WAN-input drop: what a home router running Linux does."""
    UDP_BLOCKED = "udp-blocked"
    """A firewall that drops all outbound UDP and allows TCP only to TURN ports."""
    NONE = "none"
    """No NAT: the host has a public address (the box only routes)."""


class SynAnswer(enum.Enum):
    """What a NAT does with an unsolicited inbound TCP SYN, one no mapping or filter lets in (RFC 5382 §4.3, REQ-4).

    RFC 5382 REQ-4 wants silence for at least 6 s and then, unless policy forbids it (REQ-4a), an ICMP Port
    Unreachable; real boxes mostly drop, and a Linux router without a WAN input filter hands the SYN to its own TCP
    stack, which answers RST at once."""

    DROP = "drop"
    """Silently dropped (REQ-4a; a WAN input filter)."""
    RST = "rst"
    """Answered with a TCP RST (the NAT box's own TCP stack: nothing listens on that port)."""
    ICMP = "icmp"
    """Answered with ICMP Destination Unreachable, Port Unreachable (type 3, code 3), at once."""


@dataclass(frozen=True)
class TcpBehaviour:
    """What a NAT does to TCP, in RFC 5382 terms. Every field left None takes the NAT's UDP value
    (:meth:`NatBehaviour.tcp_mapping` and friends resolve them)."""

    mapping: Mapping | None = None
    """RFC 5382 §4.1 (REQ-1 wants endpoint-independent); None: as for UDP."""
    filtering: Filtering | None = None
    """RFC 5382 §4.3 (REQ-3: endpoint-independent or address-dependent recommended); which inbound SYNs an
    existing mapping admits. None: as for UDP."""
    port_preservation: bool | None = None
    """Port preservation as RFC 4787 §4.2.1 defines it, for TCP; None: as for UDP."""
    unsolicited_syn: SynAnswer = SynAnswer.DROP
    """The answer to an inbound SYN that no mapping and no filter admits (RFC 5382 REQ-4)."""
    simultaneous_open: bool = True
    """RFC 5382 REQ-2a: a SYN from the very endpoint the host just sent its SYN to (a TCP simultaneous open,
    RFC 793 §3.4) is let in on the host's mapping."""
    established_timeout: int = 7440
    """Idle timeout of an established connection's mapping, seconds (RFC 5382 REQ-5: at least 2 h 4 min)."""

    def __post_init__(self) -> None:
        if self.established_timeout < 1:
            raise ValueError("the TCP established_timeout must be at least 1 second")

    def as_json(self) -> dict[str, object]:
        return {
            "mapping": self.mapping.value if self.mapping else None,
            "filtering": self.filtering.value if self.filtering else None,
            "port_preservation": self.port_preservation,
            "unsolicited_syn": self.unsolicited_syn.value,
            "simultaneous_open": self.simultaneous_open,
            "established_timeout": self.established_timeout,
        }


LINUX_TCP_ESTABLISHED_TIMEOUT = 432000
"""Linux conntrack's default idle timeout for an established TCP connection (5 days)."""


@dataclass(frozen=True)
class NatBehaviour:
    """What a NAT does, in RFC 4787 terms. Frozen: presets are shared values."""

    mapping: Mapping | None
    """RFC 4787 §4.1 mapping behaviour (None: no NAT or no UDP)."""
    filtering: Filtering | None
    """RFC 4787 §5 filtering behaviour."""
    kind: NatKind = NatKind.ENGINE
    port_preservation: bool = True
    """RFC 4787 §4.2.1: try to keep the internal port for a new mapping (REQ-3 leaves it optional)."""
    hairpinning: bool = True
    """RFC 4787 §6 REQ-9: packets from the LAN to the NAT's own external address loop back to the LAN."""
    mapping_timeout: int = 120
    """Mapping idle timeout in seconds (RFC 4787 REQ-5: at least 120 s; the lab shortens it to test expiry)."""
    inbound_refresh: bool = True
    """True: inbound packets keep a mapping alive (Linux); False: only outbound ones (RFC 4787 REQ-6 "outbound")."""
    port_range: tuple[int, int] | None = None
    """External ports to use (None: the kernel's 1024-65535)."""
    allowed_tcp_ports: tuple[int, ...] = (443, 3478, 5349)
    """For the UDP-blocked firewall: the only TCP destination ports let out (TURN over TCP/TLS)."""
    tcp: TcpBehaviour = TcpBehaviour()
    """What the NAT does to TCP (RFC 5382); unset fields follow the UDP ones above."""
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.mapping_timeout < 1:
            raise ValueError("mapping_timeout must be at least 1 second")
        if self.port_range is not None:
            lo, hi = self.port_range
            if not 1 <= lo <= hi <= 65535:
                raise ValueError(f"port range {lo}-{hi} is not within 1-65535")
        if self.kind is NatKind.ENGINE and (self.mapping is None or self.filtering is None):
            raise ValueError("an engine NAT needs both a mapping and a filtering behaviour")
        if self.kind is NatKind.MASQUERADE:
            # What Linux MASQUERADE does (docs/lab.md, 'How the NATs are built'): it reuses a binding (EIM) and
            # keeps the port unless told --random, which picks a new port per flow (APDM); it always filters by
            # conntrack (APDF).
            mapping = Mapping.ENDPOINT_INDEPENDENT if self.port_preservation else Mapping.ADDRESS_AND_PORT_DEPENDENT
            if self.mapping is not mapping or self.filtering is not Filtering.ADDRESS_AND_PORT_DEPENDENT:
                raise ValueError(
                    f"plain MASQUERADE {'with' if self.port_preservation else 'without'} port preservation is "
                    f"{mapping.short}-apdf; declare that, or use an engine preset for other behaviours"
                )
        if self.kind in (NatKind.MASQUERADE, NatKind.UDP_BLOCKED):
            # TCP goes through plain MASQUERADE there too: conntrack's EIM (or APDM with random ports), APDF
            pp = self.tcp_port_preservation
            mapping = Mapping.ENDPOINT_INDEPENDENT if pp else Mapping.ADDRESS_AND_PORT_DEPENDENT
            if self.tcp.mapping not in (None, mapping) or self.tcp.filtering not in (
                    None, Filtering.ADDRESS_AND_PORT_DEPENDENT) or (
                    self.tcp.mapping is None and self.tcp_mapping is not mapping):
                raise ValueError(
                    f"TCP through plain MASQUERADE {'with' if pp else 'without'} port preservation is "
                    f"{mapping.short}-apdf; declare that, or use an engine preset for other TCP behaviours"
                )
        if self.kind is NatKind.NONE and self.tcp != TcpBehaviour():
            raise ValueError("a 'none' box does no NAT, so it has no TCP behaviour to declare")

    @property
    def name(self) -> str:
        """The RFC 4787 short name, e.g. ``eim-apdf`` (or the kind for the special boxes)."""
        if self.kind is NatKind.ENGINE and self.mapping and self.filtering:
            return f"{self.mapping.short}-{self.filtering.short}"
        return self.kind.value

    def with_(self, **changes: object) -> NatBehaviour:
        """A copy with some fields changed (e.g. a short timeout for an expiry test)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def with_tcp(self, **changes: object) -> NatBehaviour:
        """A copy with some fields of the TCP section changed (e.g. ``unsolicited_syn=SynAnswer.RST``)."""
        return replace(self, tcp=replace(self.tcp, **changes))  # type: ignore[arg-type]

    @property
    def tcp_mapping(self) -> Mapping | None:
        """RFC 5382 §4.1 mapping for TCP: the TCP section's, else the UDP one (None: no NAT)."""
        if self.kind is NatKind.NONE:
            return None
        if self.tcp.mapping is not None:
            return self.tcp.mapping
        if self.kind is NatKind.UDP_BLOCKED:  # no UDP behaviour to follow: its TCP is plain MASQUERADE
            return Mapping.ENDPOINT_INDEPENDENT if self.tcp_port_preservation else Mapping.ADDRESS_AND_PORT_DEPENDENT
        return self.mapping

    @property
    def tcp_filtering(self) -> Filtering | None:
        """RFC 5382 §4.3 filtering for TCP: the TCP section's, else the UDP one (None: no NAT)."""
        if self.kind is NatKind.NONE:
            return None
        if self.tcp.filtering is not None:
            return self.tcp.filtering
        if self.kind is NatKind.UDP_BLOCKED:
            return Filtering.ADDRESS_AND_PORT_DEPENDENT
        return self.filtering

    @property
    def tcp_port_preservation(self) -> bool:
        """Port preservation (RFC 4787 §4.2.1) for TCP: the TCP section's, else the UDP one."""
        return self.port_preservation if self.tcp.port_preservation is None else self.tcp.port_preservation

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        for key in ("mapping", "filtering", "kind"):
            v = getattr(self, key)
            d[key] = v.value if v is not None else None
        d["port_range"] = list(self.port_range) if self.port_range else None
        d["allowed_tcp_ports"] = list(self.allowed_tcp_ports)
        tcp_mapping, tcp_filtering = self.tcp_mapping, self.tcp_filtering
        d["tcp"] = {**self.tcp.as_json(), "mapping": tcp_mapping.value if tcp_mapping else None,
                    "filtering": tcp_filtering.value if tcp_filtering else None,
                    "port_preservation": self.tcp_port_preservation}
        return d


def _engine(mapping: Mapping, filtering: Filtering, description: str) -> NatBehaviour:
    return NatBehaviour(mapping, filtering, description=description)


_M = Mapping
_F = Filtering
_COMBINATIONS = {
    f"{m.short}-{f.short}": _engine(m, f, f"{m.value} mapping, {f.value} filtering") for m in _M for f in _F
}

PRESETS: dict[str, NatBehaviour] = {
    "full-cone": _engine(_M.ENDPOINT_INDEPENDENT, _F.ENDPOINT_INDEPENDENT,
                         "full cone: one mapping per internal endpoint, anyone may send to it (eim-eif)"),
    "restricted-cone": _engine(_M.ENDPOINT_INDEPENDENT, _F.ADDRESS_DEPENDENT,
                               "restricted cone: inbound only from IPs the host has sent to (eim-adf)"),
    "port-restricted-cone": _engine(_M.ENDPOINT_INDEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT,
                                    "port-restricted cone: inbound only from exact endpoints contacted (eim-apdf)"),
    "symmetric": _engine(_M.ADDRESS_AND_PORT_DEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT,
                         "symmetric: a new mapping per destination endpoint (apdm-apdf)"),
    **_COMBINATIONS,
    "linux-masquerade": NatBehaviour(
        _M.ENDPOINT_INDEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, NatKind.MASQUERADE, hairpinning=False,
        tcp=TcpBehaviour(unsolicited_syn=SynAnswer.DROP, established_timeout=LINUX_TCP_ESTABLISHED_TIMEOUT),
        description="plain Linux MASQUERADE plus the unsolicited-WAN-input drop (a Linux home router)",
    ),
    "linux-masquerade-rst": NatBehaviour(
        _M.ENDPOINT_INDEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, NatKind.MASQUERADE, hairpinning=False,
        tcp=TcpBehaviour(unsolicited_syn=SynAnswer.RST, established_timeout=LINUX_TCP_ESTABLISHED_TIMEOUT),
        description="plain Linux MASQUERADE whose own TCP stack answers unsolicited SYNs with RST "
                    "(no WAN input drop for TCP)",
    ),
    "udp-blocked": NatBehaviour(
        None, None, NatKind.UDP_BLOCKED, hairpinning=False,
        tcp=TcpBehaviour(unsolicited_syn=SynAnswer.DROP, established_timeout=LINUX_TCP_ESTABLISHED_TIMEOUT),
        description="firewall: all outbound UDP dropped, TCP only to TURN ports 443/3478/5349",
    ),
    "none": NatBehaviour(None, None, NatKind.NONE, port_preservation=True, hairpinning=False,
                         description="no NAT: a public address"),
}
"""Every preset by name. The nine RFC 4787 combinations are also there under their short names (``adm-apdf``).

TCP (RFC 5382): the engine presets treat TCP as they treat UDP (same mapping, filtering and port preservation),
drop unsolicited SYNs and admit a simultaneous open. The Linux boxes do what conntrack does (EIM with port
preservation, APDF, simultaneous open admitted); ``linux-masquerade`` drops unsolicited SYNs with its WAN input
filter, ``linux-masquerade-rst`` lets them reach its own TCP stack, which answers RST (docs/tcp.md)."""

ALIASES: dict[str, str] = {
    "full-cone": "eim-eif",
    "restricted-cone": "eim-adf",
    "port-restricted-cone": "eim-apdf",
    "symmetric": "apdm-apdf",
}
"""Classic names and the RFC 4787 combination each one is."""


def preset(name: str) -> NatBehaviour:
    """The preset called ``name``; an unknown name is a :class:`UserError` that lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(f"unknown NAT preset {name!r}; valid presets: {', '.join(PRESETS)}") from None
