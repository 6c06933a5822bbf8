"""``icelab topo list|check``: the topology modules (built-in, entry points, --topologies directories)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ice.cli.common import isolate, print_json

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_topo_list(args: argparse.Namespace) -> int:
    from ice.topology.registry import Topologies

    found = Topologies([Path(d) for d in args.topologies]).all()
    rows = [{"name": t.name, "description": t.description, "roles": list(t.roles), "defaults": dict(t.defaults),
             "link_conditions": t.takes_link, "origin": t.origin} for t in found.values()]
    if args.json:
        print_json({"topologies": rows})
    else:
        width = max((len(r["name"]) for r in rows), default=0)  # type: ignore[arg-type]
        for r in rows:
            roles = ", ".join(f"{k}={v}" for k, v in r["defaults"].items())  # type: ignore[attr-defined]
            origin = "" if r["origin"] == "built-in" else f"  [{r['origin']}]"
            print(f"{r['name']:<{width}}  {r['description']}\n{'':<{width}}  roles: {roles or '-'}{origin}")
    return 0


def cmd_topo_check(args: argparse.Namespace) -> int:
    from ice.errors import UserError
    from ice.lab.check import check
    from ice.lab.mn import require_lab
    from ice.topology.builder import NoNatHere, server_problem
    from ice.topology.registry import Topologies

    topologies = Topologies([Path(d) for d in args.topologies])
    topologies.get(args.name)  # an unknown name or a bad --topologies directory: its own sentence, unprefixed
    try:
        spec = topologies.build(args.name, *args.args)
        problem = server_problem(spec)
    except (NoNatHere, ValueError) as exc:
        raise UserError(f"topology {args.name}: {exc}") from None
    except UserError:
        raise  # already one sentence naming what is wrong
    except Exception as exc:  # a user's build(): one sentence, not a traceback
        raise UserError(f"topology {args.name}'s build() failed: {type(exc).__name__}: {exc}") from None
    if problem:
        raise UserError(f"topology {args.name} {problem}")
    require_lab()
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
    tp = sub.add_parser("topo", help="the topologies (built-in, entry points, --topologies DIR)")
    ts = tp.add_subparsers(dest="topo_command", metavar="SUBCOMMAND")
    tl = ts.add_parser("list", help="every topology with its NAT roles and their default presets")
    tl.add_argument("--json", action="store_true")
    tl.add_argument("--topologies", action="append", default=[], metavar="DIR",
                    help="also load the topology modules in DIR (repeatable)")
    tl.set_defaults(func=cmd_topo_list)
    tc = ts.add_parser("check", help="build a topology and classify each peer's path to the STUN server (root)")
    tc.add_argument("name")
    tc.add_argument("args", nargs="*", help="the topology's NAT presets, in role order")
    tc.add_argument("--json", action="store_true")
    tc.add_argument("--topologies", action="append", default=[], metavar="DIR",
                    help="also load the topology modules in DIR (repeatable)")
    tc.set_defaults(func=cmd_topo_check)
