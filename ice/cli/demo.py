"""``icelab demo``: the embedded STUN server and client on loopback."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded STUN server and client on loopback: a mapping and an RFC 5780 classification."""
    from ice.aio.discovery import discover_behaviour
    from ice.aio.stun import StunServerRunner, format_address, stun_binding
    from ice.stun.server import StunServerConfig

    async def main() -> int:
        config = StunServerConfig(("127.0.0.1", 0))
        runner = await StunServerRunner(config).start()
        try:
            server = runner.addresses[0]
            print(f"embedded STUN server on {format_address(server)}")
            res = await stun_binding(server, ("127.0.0.1", 0))
            print(f"STUN client learned its mapping: {format_address(res.local)} -> {format_address(res.mapped)} "
                  f"(rtt {res.rtt * 1000:.2f} ms, server '{res.software}')")
        finally:
            runner.close()
        # RFC 5780 needs two addresses: 127.0.0.1 and 127.0.0.2 both live on lo.
        ports = _free_udp_ports(2)
        cfg2 = StunServerConfig(("127.0.0.1", ports[0]), ("127.0.0.2", ports[1]))
        runner = await StunServerRunner(cfg2).start()
        try:
            rep = await discover_behaviour(cfg2.primary, ("127.0.0.1", 0))
            print(f"RFC 5780 behaviour on loopback: mapping {rep.mapping.value if rep.mapping else '-'}, "
                  f"filtering {rep.filtering.value if rep.filtering else '-'}"
                  f" ({'behind a NAT' if rep.behind_nat else 'no NAT, as expected'})")
        finally:
            runner.close()
        print("next: `icelab run` runs the NAT x NAT matrix; see README.")
        return 0

    return asyncio.run(main())


def _free_udp_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def add_parser(sub: Subparsers) -> None:
    demo = sub.add_parser("demo", help="embedded STUN server + client on loopback: a mapping and its RFC 5780 class")
    demo.set_defaults(func=cmd_demo)
