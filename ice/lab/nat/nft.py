"""Compile a :class:`NatBehaviour` to an nftables ruleset: a pure function, pinned by golden files.

The engine (docs/lab.md, "How the NATs are built"): dynamic maps learn each binding after source NAT and steer
inbound packets, which gives every mapping x filtering pair, hairpinning, port preservation, a binding timeout and
either inbound or outbound-only refresh. Every ruleset also drops unsolicited input on the WAN interface: without
it a peer's first packet confirms a conntrack entry in the NAT itself and port-preserving NATs silently turn
symmetric.

UDP is the protocol the behaviours describe; TCP is masqueraded (Linux EIM/APDF). IPv4 only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind

TABLE = "icelab"
_IFNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


@dataclass(frozen=True)
class NatInterfaces:
    """Where the rules apply: the WAN and LAN interface names and the NAT's public address."""

    wan: str
    lan: str
    public_ip: str
    lan_subnet: str | None = None
    """When set, only packets from this subnet are translated."""

    def __post_init__(self) -> None:
        for name in (self.wan, self.lan):
            if not _IFNAME.match(name):
                raise ValueError(f"{name!r} is not a valid interface name (1-15 letters, digits, _ . : -)")
        if self.wan == self.lan:
            raise ValueError("the WAN and LAN interfaces must differ")
        try:
            ipaddress.IPv4Address(self.public_ip)
        except ValueError:
            raise ValueError(f"{self.public_ip!r} is not an IPv4 address (the lab's NATs are IPv4)") from None
        if self.lan_subnet is not None:
            try:
                ipaddress.IPv4Network(self.lan_subnet, strict=False)
            except ValueError:
                raise ValueError(f"{self.lan_subnet!r} is not an IPv4 subnet such as 10.0.0.0/24") from None


def sysctls(behaviour: NatBehaviour) -> dict[str, str]:
    """Per-namespace settings that go with the ruleset: both UDP conntrack timeouts, since a replied flow moves
    from the unreplied timeout to the stream one."""
    t = str(behaviour.mapping_timeout)
    return {
        "net.ipv4.ip_forward": "1",
        "net.netfilter.nf_conntrack_udp_timeout": t,
        "net.netfilter.nf_conntrack_udp_timeout_stream": t,
    }


def compile_ruleset(behaviour: NatBehaviour, ifaces: NatInterfaces) -> str:
    """The complete ruleset text for ``nft -f`` inside the NAT's namespace (idempotent: it replaces the table)."""
    body = {
        NatKind.ENGINE: _engine,
        NatKind.MASQUERADE: _masquerade,
        NatKind.UDP_BLOCKED: _udp_blocked,
        NatKind.NONE: _none,
    }[behaviour.kind](behaviour, ifaces)
    settings = " ".join(f"{k}={v}" for k, v in sysctls(behaviour).items())
    header = [
        f"# icelab NAT ruleset: {behaviour.name}" + (f" ({behaviour.description})" if behaviour.description else ""),
        f"# WAN {ifaces.wan}, LAN {ifaces.lan}, public address {ifaces.public_ip}"
        + (f", LAN subnet {ifaces.lan_subnet}" if ifaces.lan_subnet else ""),
        "# Load it inside the NAT's network namespace with `nft -f FILE`, after setting there:",
        f"#   sysctl -w {settings}",
        "# and flush conntrack (`conntrack -F`) whenever the rules change.",
        f"table ip {TABLE}",
        f"delete table ip {TABLE}",
    ]
    return "\n".join([*header, f"table ip {TABLE} {{", *body, "}", ""])


def _q(name: str) -> str:
    return f'"{name}"'


def _src(ifaces: NatInterfaces) -> str:
    return f"ip saddr {ifaces.lan_subnet} " if ifaces.lan_subnet else ""


def _to(public_ip: str, port_range: tuple[int, int] | None) -> str:
    return f"{public_ip}:{port_range[0]}-{port_range[1]}" if port_range else public_ip


def _input_chain(wan: str) -> list[str]:
    return [
        "  # Never let unsolicited WAN packets confirm a conntrack entry in the NAT itself: that entry would hold",
        "  # the tuple a LAN flow's preserved port needs, and the flow would get a new port.",
        "  # See docs/lab.md, 'How the NATs are built'.",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    iifname {_q(wan)} ct state established,related accept",
        f"    iifname {_q(wan)} drop",
        "  }",
    ]


def _engine(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    t = f"timeout {b.mapping_timeout}s;"
    wan, lan, pub, src = _q(i.wan), _q(i.lan), i.public_ip, _src(i)
    lines = [
        "  # Bindings, keyed as the mapping behaviour says (RFC 4787 section 4.1), learnt after source NAT.",
        f"  map bind_eim {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; flags dynamic,timeout; {t} }}",
        "  map bind_adm { type ipv4_addr . inet_service . ipv4_addr : ipv4_addr . inet_service; "
        f"flags dynamic,timeout; {t} }}",
        "  # Inbound steering, keyed as the filtering behaviour says (RFC 4787 section 5).",
        f"  map in_eif {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; {t} }}",
        f"  map in_adf {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; flags dynamic,timeout; {t} }}",
        f"  set used {{ type inet_service; flags dynamic,timeout; {t} }}",
        "  chain gate {",
        "    type filter hook prerouting priority mangle; policy accept;",
    ]
    if not b.inbound_refresh:
        lines.append(f"    iifname {wan} ip daddr {pub} udp dport != @used drop  # outbound-only refresh")
    lines += [
        "  }",
        "  chain pre {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    meta l4proto != udp accept",
    ]
    if b.filtering is Filtering.ENDPOINT_INDEPENDENT:
        lines.append(f"    iifname {wan} ip daddr {pub} dnat ip to udp dport map @in_eif")
    elif b.filtering is Filtering.ADDRESS_DEPENDENT:
        lines.append(f"    iifname {wan} ip daddr {pub} dnat ip to ip saddr . udp dport map @in_adf")
    if b.hairpinning:
        lines.append(f"    iifname {lan} ip daddr {pub} dnat ip to udp dport map @in_eif  # hairpin")
    lines += [
        "  }",
        "  chain post {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta l4proto != udp oifname {wan} {src}masquerade",
        "    meta l4proto != udp accept",
    ]
    if b.hairpinning:
        lines += [
            f"    iifname {lan} oifname {lan} ct status dnat snat ip to ip saddr . udp sport map @bind_eim",
            f"    iifname {lan} oifname {lan} ct status dnat snat ip to {pub}",
        ]
    if b.mapping is Mapping.ENDPOINT_INDEPENDENT:
        lines.append(f"    oifname {wan} {src}snat ip to ip saddr . udp sport map @bind_eim")
    elif b.mapping is Mapping.ADDRESS_DEPENDENT:
        lines.append(f"    oifname {wan} {src}snat ip to ip saddr . udp sport . ip daddr map @bind_adm")
    to = _to(pub, b.port_range)
    if b.port_preservation:
        lines += [
            f"    oifname {wan} {src}udp sport @used snat ip to {to} random  # preserved port taken",
            f"    oifname {wan} {src}meta l4proto udp snat ip to {to}",
        ]
    else:
        lines.append(f"    oifname {wan} {src}meta l4proto udp snat ip to {to} random")
    lines += [
        "  }",
        "  # Runs after source NAT: ip saddr/udp sport are external, ct original still names the internal endpoint.",
        "  chain learn {",
        "    type filter hook postrouting priority srcnat + 10; policy accept;",
        f"    oifname != {wan} accept",
        "    meta l4proto != udp accept",
    ]
    if b.mapping is Mapping.ENDPOINT_INDEPENDENT:
        lines.append(
            "    meta l4proto udp ct direction original update @bind_eim "
            "{ ct original ip saddr . ct original proto-src : ip saddr . udp sport }"
        )
    elif b.mapping is Mapping.ADDRESS_DEPENDENT:
        lines.append(
            "    meta l4proto udp ct direction original update @bind_adm "
            "{ ct original ip saddr . ct original proto-src . ip daddr : ip saddr . udp sport }"
        )
    lines += [
        "    meta l4proto udp ct direction original update @used { udp sport }",
        "    meta l4proto udp ct direction original update @in_eif "
        "{ udp sport : ct original ip saddr . ct original proto-src }",
        "    meta l4proto udp ct direction original update @in_adf "
        "{ ip daddr . udp sport : ct original ip saddr . ct original proto-src }",
        "    meta l4proto udp ct direction reply update @used { udp sport }",
        "    meta l4proto udp ct direction reply update @bind_eim "
        "{ ct reply ip saddr . ct reply proto-src : ip saddr . udp sport }",
        "    meta l4proto udp ct direction reply update @in_eif { udp sport : ct reply ip saddr . ct reply proto-src }",
        "    meta l4proto udp ct direction reply update @in_adf "
        "{ ip daddr . udp sport : ct reply ip saddr . ct reply proto-src }",
        "  }",
    ]
    return lines + _input_chain(i.wan)


def _masquerade(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    options = []
    if b.port_range:
        options.append(f"to :{b.port_range[0]}-{b.port_range[1]}")
    if not b.port_preservation:
        options.append("random")
    wan, src = _q(i.wan), _src(i)
    rules = [f"    oifname {wan} {src}masquerade"]
    if options:  # port options need a transport match in the same rule
        rules.insert(0, f"    oifname {wan} {src}meta l4proto {{ tcp, udp }} masquerade {' '.join(options)}")
    return [
        "  chain post {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *rules,
        "  }",
        *_input_chain(i.wan),
    ]


def _udp_blocked(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    ports = ", ".join(str(p) for p in b.allowed_tcp_ports)
    lan, wan = _q(i.lan), _q(i.wan)
    return [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f"    iifname {lan} oifname {wan} meta l4proto udp drop",
        f"    iifname {lan} oifname {wan} tcp dport {{ {ports} }} accept",
        f"    iifname {lan} oifname {wan} meta l4proto tcp drop",
        "  }",
        "  chain post {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    oifname {wan} {_src(i)}masquerade",
        "  }",
        *_input_chain(i.wan),
    ]


def _none(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    return ["  # No NAT: the box only routes; hosts behind it have public addresses."]
