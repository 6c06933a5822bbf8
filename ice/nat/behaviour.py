"""NAT behaviour as one declarative value (RFC 4787), and the preset names users know.

A :class:`NatBehaviour` says what a NAT does; :mod:`ice.lab.nat.nft` turns it into kernel rules, the in-memory
simulation turns it into a model, and the conformance probe measures a built lab against it.
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

    @property
    def name(self) -> str:
        """The RFC 4787 short name, e.g. ``eim-apdf`` (or the kind for the special boxes)."""
        if self.kind is NatKind.ENGINE and self.mapping and self.filtering:
            return f"{self.mapping.short}-{self.filtering.short}"
        return self.kind.value

    def with_(self, **changes: object) -> NatBehaviour:
        """A copy with some fields changed (e.g. a short timeout for an expiry test)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        for key in ("mapping", "filtering", "kind"):
            v = getattr(self, key)
            d[key] = v.value if v is not None else None
        d["port_range"] = list(self.port_range) if self.port_range else None
        d["allowed_tcp_ports"] = list(self.allowed_tcp_ports)
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
        description="plain Linux MASQUERADE plus the unsolicited-WAN-input drop (a Linux home router)",
    ),
    "udp-blocked": NatBehaviour(
        None, None, NatKind.UDP_BLOCKED, hairpinning=False,
        description="firewall: all outbound UDP dropped, TCP only to TURN ports 443/3478/5349",
    ),
    "none": NatBehaviour(None, None, NatKind.NONE, port_preservation=True, hairpinning=False,
                         description="no NAT: a public address"),
}
"""Every preset by name. The nine RFC 4787 combinations are also there under their short names (``adm-apdf``)."""

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
