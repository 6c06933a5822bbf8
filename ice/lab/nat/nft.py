"""Compile a :class:`NatBehaviour` to an nftables ruleset: a pure function, pinned by golden files.

The engine (docs/lab.md, "How the NATs are built"): dynamic maps learn each binding after source NAT and steer
inbound packets, which gives every mapping x filtering pair, hairpinning, port preservation, a binding timeout and
either inbound or outbound-only refresh. Every ruleset also drops unsolicited input on the WAN interface: without
it a peer's first packet confirms a conntrack entry in the NAT itself and port-preserving NATs silently turn
symmetric.

TCP follows the behaviour's TCP section (RFC 5382, docs/tcp.md): the engine gives TCP its own binding maps with the
TCP mapping and filtering; plain MASQUERADE gives conntrack's EIM/APDF. The unsolicited-SYN answer decides what the
WAN input chain does with TCP (drop it; accept it, so the box's own TCP stack answers RST; or reject it with ICMP
port unreachable), and a NAT that refuses a simultaneous open drops a bare SYN coming back on an outbound flow.
Other protocols are masqueraded. IPv4 only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind, SynAnswer

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
    from the unreplied timeout to the stream one, and the established-TCP one (RFC 5382 REQ-5)."""
    t = str(behaviour.mapping_timeout)
    return {
        "net.ipv4.ip_forward": "1",
        "net.netfilter.nf_conntrack_udp_timeout": t,
        "net.netfilter.nf_conntrack_udp_timeout_stream": t,
        "net.netfilter.nf_conntrack_tcp_timeout_established": str(behaviour.tcp.established_timeout),
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


def _input_chain(wan: str, b: NatBehaviour) -> list[str]:
    answer = b.tcp.unsolicited_syn
    tcp = {
        SynAnswer.DROP: [],
        SynAnswer.RST: [
            f"    iifname {_q(wan)} meta l4proto tcp accept  # our own TCP stack answers unsolicited SYNs: RST",
        ],
        SynAnswer.ICMP: [
            f"    iifname {_q(wan)} meta l4proto tcp reject with icmp type port-unreachable  # RFC 5382 REQ-4",
        ],
    }[answer]
    return [
        "  # Never let unsolicited WAN packets confirm a conntrack entry in the NAT itself: that entry would hold",
        "  # the tuple a LAN flow's preserved port needs, and the flow would get a new port.",
        "  # See docs/lab.md, 'How the NATs are built'.",
        *(["  # TCP is the exception this NAT declares (RFC 5382 REQ-4, docs/tcp.md)."] if tcp else []),
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f"    iifname {_q(wan)} ct state established,related accept",
        *tcp,
        f"    iifname {_q(wan)} drop",
        "  }",
        *_simultaneous_open(wan, b),
    ]


def _simultaneous_open(wan: str, b: NatBehaviour) -> list[str]:
    """A NAT that refuses a TCP simultaneous open (RFC 5382 REQ-2a not met): a bare SYN in the reply direction of
    a flow can only be the remote's SYN crossing the host's, so drop it."""
    if b.tcp.simultaneous_open:
        return []
    return [
        "  chain simopen {",
        "    type filter hook forward priority filter; policy accept;",
        f"    iifname {_q(wan)} ct direction reply tcp flags & (syn | ack) == syn drop  # no simultaneous open",
        "  }",
    ]


@dataclass(frozen=True)
class _Proto:
    """One transport protocol's settings in the engine: UDP with the RFC 4787 behaviour, TCP with the RFC 5382
    one; the TCP maps carry a ``tcp_`` prefix (UDP's keep their historical names)."""

    name: str
    prefix: str
    mapping: Mapping | None
    filtering: Filtering | None
    port_preservation: bool
    timeout: int

    def m(self, name: str) -> str:
        return f"@{self.prefix}{name}"


def _protos(b: NatBehaviour) -> tuple[_Proto, _Proto]:
    return (_Proto("udp", "", b.mapping, b.filtering, b.port_preservation, b.mapping_timeout),
            _Proto("tcp", "tcp_", b.tcp_mapping, b.tcp_filtering, b.tcp_port_preservation,
                   b.tcp.established_timeout))


def _engine(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    wan, lan, pub, src = _q(i.wan), _q(i.lan), i.public_ip, _src(i)
    protos = _protos(b)
    lines = []
    for p in protos:
        t = f"timeout {p.timeout}s;"
        pre = p.prefix
        lines += [
            "  # TCP bindings, keyed as the mapping behaviour says (RFC 5382 section 4.1), learnt after source NAT."
            if p.name == "tcp" else
            "  # Bindings, keyed as the mapping behaviour says (RFC 4787 section 4.1), learnt after source NAT.",
            f"  map {pre}bind_eim {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; "
            f"flags dynamic,timeout; {t} }}",
            f"  map {pre}bind_adm {{ type ipv4_addr . inet_service . ipv4_addr : ipv4_addr . inet_service; "
            f"flags dynamic,timeout; {t} }}",
            "  # TCP inbound steering, keyed as the filtering behaviour says (RFC 5382 section 4.3)."
            if p.name == "tcp" else
            "  # Inbound steering, keyed as the filtering behaviour says (RFC 4787 section 5).",
            f"  map {pre}in_eif {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; {t} }}",
            f"  map {pre}in_adf {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; "
            f"flags dynamic,timeout; {t} }}",
            f"  set {pre}used {{ type inet_service; flags dynamic,timeout; {t} }}",
        ]
    lines += [
        "  chain gate {",
        "    type filter hook prerouting priority mangle; policy accept;",
    ]
    if not b.inbound_refresh:
        lines.append(f"    iifname {wan} ip daddr {pub} udp dport != @used drop  # outbound-only refresh")
    lines += [
        "  }",
        "  chain pre {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    meta l4proto != { udp, tcp } accept",
    ]
    for p in protos:
        if p.filtering is Filtering.ENDPOINT_INDEPENDENT:
            lines.append(f"    iifname {wan} ip daddr {pub} dnat ip to {p.name} dport map {p.m('in_eif')}")
        elif p.filtering is Filtering.ADDRESS_DEPENDENT:
            lines.append(
                f"    iifname {wan} ip daddr {pub} dnat ip to ip saddr . {p.name} dport map {p.m('in_adf')}")
        if b.hairpinning:
            lines.append(f"    iifname {lan} ip daddr {pub} dnat ip to {p.name} dport map {p.m('in_eif')}  # hairpin")
    lines += [
        "  }",
        "  chain post {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta l4proto != {{ udp, tcp }} oifname {wan} {src}masquerade",
        "    meta l4proto != { udp, tcp } accept",
    ]
    if b.hairpinning:
        lines += [
            *(f"    iifname {lan} oifname {lan} ct status dnat snat ip to ip saddr . {p.name} sport map "
              f"{p.m('bind_eim')}" for p in protos),
            f"    iifname {lan} oifname {lan} ct status dnat snat ip to {pub}",
        ]
    to = _to(pub, b.port_range)
    for p in protos:
        if p.mapping is Mapping.ENDPOINT_INDEPENDENT:
            lines.append(f"    oifname {wan} {src}snat ip to ip saddr . {p.name} sport map {p.m('bind_eim')}")
        elif p.mapping is Mapping.ADDRESS_DEPENDENT:
            lines.append(
                f"    oifname {wan} {src}snat ip to ip saddr . {p.name} sport . ip daddr map {p.m('bind_adm')}")
        if p.port_preservation:
            lines += [
                f"    oifname {wan} {src}{p.name} sport {p.m('used')} snat ip to {to} random  # preserved port taken",
                f"    oifname {wan} {src}meta l4proto {p.name} snat ip to {to}",
            ]
        else:
            lines.append(f"    oifname {wan} {src}meta l4proto {p.name} snat ip to {to} random")
    lines += [
        "  }",
        "  # Runs after source NAT: ip saddr/udp sport are external, ct original still names the internal endpoint.",
        "  chain learn {",
        "    type filter hook postrouting priority srcnat + 10; policy accept;",
        f"    oifname != {wan} accept",
        "    meta l4proto != { udp, tcp } accept",
    ]
    for p in protos:
        n = p.name
        if p.mapping is Mapping.ENDPOINT_INDEPENDENT:
            lines.append(
                f"    meta l4proto {n} ct direction original update {p.m('bind_eim')} "
                f"{{ ct original ip saddr . ct original proto-src : ip saddr . {n} sport }}"
            )
        elif p.mapping is Mapping.ADDRESS_DEPENDENT:
            lines.append(
                f"    meta l4proto {n} ct direction original update {p.m('bind_adm')} "
                f"{{ ct original ip saddr . ct original proto-src . ip daddr : ip saddr . {n} sport }}"
            )
        lines += [
            f"    meta l4proto {n} ct direction original update {p.m('used')} {{ {n} sport }}",
            f"    meta l4proto {n} ct direction original update {p.m('in_eif')} "
            f"{{ {n} sport : ct original ip saddr . ct original proto-src }}",
            f"    meta l4proto {n} ct direction original update {p.m('in_adf')} "
            f"{{ ip daddr . {n} sport : ct original ip saddr . ct original proto-src }}",
            f"    meta l4proto {n} ct direction reply update {p.m('used')} {{ {n} sport }}",
            f"    meta l4proto {n} ct direction reply update {p.m('bind_eim')} "
            f"{{ ct reply ip saddr . ct reply proto-src : ip saddr . {n} sport }}",
            f"    meta l4proto {n} ct direction reply update {p.m('in_eif')} "
            f"{{ {n} sport : ct reply ip saddr . ct reply proto-src }}",
            f"    meta l4proto {n} ct direction reply update {p.m('in_adf')} "
            f"{{ ip daddr . {n} sport : ct reply ip saddr . ct reply proto-src }}",
        ]
    lines.append("  }")
    return lines + _input_chain(i.wan, b)


def _masquerade(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    def options(port_preservation: bool) -> str:
        opts = [f"to :{b.port_range[0]}-{b.port_range[1]}"] if b.port_range else []
        return " ".join(opts + ([] if port_preservation else ["random"]))

    wan, src = _q(i.wan), _src(i)
    rules = [f"    oifname {wan} {src}masquerade"]
    udp, tcp = options(b.port_preservation), options(b.tcp_port_preservation)
    # port options need a transport match in the same rule
    if udp == tcp and udp:
        rules.insert(0, f"    oifname {wan} {src}meta l4proto {{ tcp, udp }} masquerade {udp}")
    elif udp != tcp:
        for proto, opts in (("tcp", tcp), ("udp", udp)):
            if opts:
                rules.insert(-1, f"    oifname {wan} {src}meta l4proto {proto} masquerade {opts}")
    return [
        "  chain post {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *rules,
        "  }",
        *_input_chain(i.wan, b),
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
        *([] if b.tcp_port_preservation else [f"    oifname {wan} {_src(i)}meta l4proto tcp masquerade random"]),
        f"    oifname {wan} {_src(i)}masquerade",
        "  }",
        *_input_chain(i.wan, b),
    ]


def _none(b: NatBehaviour, i: NatInterfaces) -> list[str]:
    return ["  # No NAT: the box only routes; hosts behind it have public addresses."]
