"""``icelab topo list|check``: the lab's topology modules."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ice.cli.common import isolate, print_json

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_topo_list(args: argparse.Namespace) -> int:
    import inspect as _inspect

    from ice.lab.topo import describe, registry

    builders = registry()
    rows = [{"name": name, "description": describe(b), "parameters": list(_inspect.signature(b).parameters)}
            for name, b in builders.items()]
    if args.json:
        print_json({"topologies": rows})
    else:
        for r in rows:
            print(f"{r['name']:<12} {r['description']}")
    return 0


def cmd_topo_check(args: argparse.Namespace) -> int:
    from ice.lab.check import check
    from ice.lab.mn import require_root
    from ice.lab.topo import topology

    spec = topology(args.name, *args.args)
    require_root()
    isolate()
    build, paths = check(spec)
    if args.json:
        print_json({"topology": args.name, "build_seconds": round(build, 3), "peers": [p.as_json() for p in paths]})
    else:
        print(f"{args.name}: built in {build * 1000:.0f} ms")
        for p in paths:
            if p.mapped is None:
                print(f"  {p.peer:<4} {p.address:<15} no UDP path to the STUN server")
            else:
                print(f"  {p.peer:<4} {p.address:<15} -> {p.mapped:<21} mapping {p.mapping}, filtering {p.filtering}, "
                      f"hairpin {'-' if p.hairpinning is None else p.hairpinning}")
    return 0


def add_parser(sub: Subparsers) -> None:
    tp = sub.add_parser("topo", help="the lab's topologies (one module each in topologies/)")
    ts = tp.add_subparsers(dest="topo_command", metavar="SUBCOMMAND")
    tl = ts.add_parser("list", help="every topology module with its parameters")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_topo_list)
    tc = ts.add_parser("check", help="build a topology and classify each peer's path to the STUN server (root)")
    tc.add_argument("name")
    tc.add_argument("args", nargs="*", help="the topology's NAT presets, in order")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=cmd_topo_check)
