"""``icelab bench``: the benchmarks in bench/."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from ice.cli.common import repo_root

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    root = repo_root()
    sys.path.insert(0, str(root))
    module = importlib.import_module(f"bench.{args.what}")
    rc: int = module.main(args)
    return rc


def add_parser(sub: Subparsers) -> None:
    b = sub.add_parser("bench", help="benchmarks against peers, side by side in one run")
    b.add_argument("what", choices=["codec", "server", "lab", "connect", "relay", "matrix", "turnscale",
                                    "throughput", "robustness"])
    b.add_argument("--json", action="store_true")
    b.add_argument("--seconds", type=float, default=0.4, help="codec: time per measurement")
    b.add_argument("--requests", type=int, default=100_000,
                   help="server: Binding requests per server; relay: relayed packets per round")
    b.add_argument("--rounds", type=int, help="lab: build/teardown rounds per topology (default 5)")
    b.add_argument("--runs", type=int, help="connect: measured connections per stack and place (default 30); "
                                            "throughput: measured bursts per stack and path (default 5)")
    b.add_argument("--peers", default="all", metavar="all|NAME,...",
                   help="connect, throughput: the stacks beside icelab (aioice, libnice, pion; default all)")
    b.add_argument("--count", type=int, help="throughput: datagrams per burst (default 50000)")
    b.add_argument("--size", type=int, help="throughput: bytes per datagram, 8 to 1472 (default 1200)")
    b.add_argument("--where", choices=["both", "loopback", "nat"], default="both",
                   help="connect: on loopback, through two port-restricted NATs in the kernel lab, or both (default)")
    b.add_argument("--only", choices=["sim", "lab"], help="matrix: measure only this back-end")
    b.add_argument("--tcp", action="store_true",
                   help="connect: ICE-TCP only (RFC 6544), with UDP between the peers dropped in the lab")
    b.set_defaults(func=cmd_bench)
