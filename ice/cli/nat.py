"""``icelab nat list|rules|probe|grid``: NAT presets, their nftables rules, the probe and the punch grid."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ice.cli.common import isolate, print_json
from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_nat_list(args: argparse.Namespace) -> int:
    from ice.lab.nat import PRESETS, NatKind

    rows = [{"name": name, "rfc4787": b.name, **b.as_json()} for name, b in PRESETS.items()]
    if args.json:
        print_json({"presets": rows})
        return 0
    width = max(len(name) for name in PRESETS)
    for name, b in PRESETS.items():
        extra = [] if b.port_preservation else ["no port preservation"]
        if b.hairpinning:
            extra.append("hairpin")
        m, f = b.tcp_mapping, b.tcp_filtering
        if b.kind is not NatKind.NONE and m is not None and f is not None:  # RFC 5382: TCP (docs/tcp.md)
            extra.append("TCP: " + ", ".join([
                *([f"{m.short}-{f.short}"] if (m, f) != (b.mapping, b.filtering) else []),
                f"unsolicited SYN {b.tcp.unsolicited_syn.value}",
                *([] if b.tcp.simultaneous_open else ["no simultaneous open"]),
            ]))
        print(f"{name:<{width}}  {b.name:<11}  {b.description}" + (f" [{', '.join(extra)}]" if extra else ""))
    return 0


def cmd_nat_rules(args: argparse.Namespace) -> int:
    from ice.lab.nat import NatInterfaces, compile_ruleset, preset

    behaviour = preset(args.preset)
    try:
        ifaces = NatInterfaces(args.wan, args.lan, args.public, args.lan_subnet)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    sys.stdout.write(compile_ruleset(behaviour, ifaces))
    return 0


def cmd_nat_probe(args: argparse.Namespace) -> int:
    from ice.lab.mn import require_lab
    from ice.lab.nat import preset
    from ice.lab.probe import probe
    from ice.nat.behaviour import SynAnswer

    behaviour = preset(args.preset)
    changes: dict[str, object] = {}
    if args.outbound_refresh:
        changes["inbound_refresh"] = False
    if args.no_hairpin:
        changes["hairpinning"] = False
    if args.no_port_preservation:
        changes["port_preservation"] = False
    tcp: dict[str, object] = {}
    if args.syn_answer:
        tcp["unsolicited_syn"] = SynAnswer(args.syn_answer)
    if args.no_simultaneous_open:
        tcp["simultaneous_open"] = False
    if changes or tcp:
        try:
            behaviour = behaviour.with_(**changes).with_tcp(**tcp)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if args.timeout < 1:
        raise UserError("--timeout must be at least 1 second")
    require_lab()
    isolate()
    result = probe(args.preset, behaviour, timeout_check=not args.no_timeout_check, timeout=args.timeout)
    if args.json:
        print_json(result.as_json())
    else:
        from ice.lab.probe import flat

        print(f"{args.preset}: {'conforms' if result.ok else 'DOES NOT CONFORM'} "
              f"(lab built in {result.build_seconds * 1000:.0f} ms, probed in {result.probe_seconds:.2f} s)")
        print(f"  {'check':<22} {'measured':<28} expected from the declaration")
        want = flat(result.expected)
        for key, got in flat(result.measured).items():
            if key == "tcp.mapping":
                print("  TCP (RFC 5382):")
            print(f"  {key:<22} {got!s:<28} {'(not checked)' if want[key] is None else want[key]}")
        for m in result.mismatches:
            print(f"  mismatch: {m}")
    return 0 if result.ok else 1


def cmd_nat_grid(args: argparse.Namespace) -> int:
    from ice.lab.mn import require_lab
    from ice.lab.nat import preset
    from ice.lab.punch import DEFAULT_GRID, punch_grid

    names = args.presets or list(DEFAULT_GRID)
    for name in names:  # an unknown preset is a usage error before root is asked for
        preset(name)
    require_lab()
    isolate()
    cells = punch_grid(names)
    bad = [c for c in cells if not c.matches]
    if args.json:
        print_json({"cells": [c.as_json() for c in cells], "mismatches": [c.as_json() for c in bad]})
    else:
        width = max(len(n) for n in names)
        corner = "A \\ B"
        print(f"{corner:<{width}}  " + "  ".join(f"{n[:9]:>9}" for n in names))
        for ra in names:
            row = [c for c in cells if c.a == ra]
            marks = [("yes" if c.direct else "-") + ("" if c.matches else "!") for c in row]
            print(f"{ra:<{width}}  " + "  ".join(f"{m:>9}" for m in marks))
        print("yes: direct UDP worked (both ways); -: it did not; !: differs from ice.nat.reach")
    return 1 if bad else 0


def add_parser(sub: Subparsers) -> None:
    n = sub.add_parser("nat", help="NAT presets (RFC 4787 behaviours) and the rules the lab loads for them")
    ns = n.add_subparsers(dest="nat_command", metavar="SUBCOMMAND")
    nl = ns.add_parser("list", help="every preset with its RFC 4787 mapping and filtering")
    nl.add_argument("--json", action="store_true")
    nl.set_defaults(func=cmd_nat_list)
    nr = ns.add_parser("rules", help="print the nftables ruleset for a preset (load it with nft -f)")
    nr.add_argument("preset", help="a name from `icelab nat list`")
    nr.add_argument("--wan", required=True, metavar="IFACE", help="the NAT's outside interface")
    nr.add_argument("--lan", required=True, metavar="IFACE", help="the NAT's inside interface")
    nr.add_argument("--public", required=True, metavar="IP", help="the NAT's public IPv4 address (on --wan)")
    nr.add_argument("--lan-subnet", metavar="CIDR", help="translate only packets from this subnet")
    nr.set_defaults(func=cmd_nat_rules)
    npr = ns.add_parser("probe", help="build a minimal lab around a preset and check it behaves as declared, UDP "
                                      "and TCP (root)")
    npr.add_argument("preset", help="a name from `icelab nat list`")
    npr.add_argument("--json", action="store_true")
    npr.add_argument("--no-timeout-check", action="store_true", help="skip the mapping-timeout check (saves ~6 s)")
    npr.add_argument("--timeout", type=int, default=2, help="mapping timeout the NAT is built with (default 2 s)")
    npr.add_argument("--outbound-refresh", action="store_true", help="variant: only outbound packets refresh")
    npr.add_argument("--no-hairpin", action="store_true", help="variant: no hairpinning")
    npr.add_argument("--no-port-preservation", action="store_true", help="variant: random external ports")
    npr.add_argument("--syn-answer", choices=["drop", "rst", "icmp"],
                     help="variant: what an unsolicited TCP SYN gets (RFC 5382 REQ-4)")
    npr.add_argument("--no-simultaneous-open", action="store_true",
                     help="variant: the NAT refuses a TCP simultaneous open (RFC 5382 REQ-2a)")
    npr.set_defaults(func=cmd_nat_probe)

    ng = ns.add_parser("grid", help="hole-punch every pairing of NAT presets in a two-NAT lab (root)")
    ng.add_argument("presets", nargs="*", help="presets to pair (default: seven representative ones)")
    ng.add_argument("--json", action="store_true")
    ng.set_defaults(func=cmd_nat_grid)
