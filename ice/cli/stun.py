"""``icelab stun``: a Binding request, or RFC 5780 behaviour discovery, against a STUN server."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from ice.cli.common import parse_address, port_given, print_json, retransmission
from ice.errors import StunTimeout, StunUnreachable
from ice.stun.attributes import Address
from ice.stun.transaction import RetransmissionConfig

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_stun(args: argparse.Namespace) -> int:
    from ice.aio.stun import format_address

    server = parse_address(args.server, 3478)
    defaulted = not port_given(args.server)
    label = format_address(server) + (" (default port)" if defaulted else "")
    bind = parse_address(args.bind, 0) if args.bind else None
    try:
        return _run(args, server, bind, label, defaulted)
    except StunUnreachable as exc:
        raise StunUnreachable(f"{label}: {exc}") from None
    except StunTimeout as exc:
        raise StunTimeout(f"{label}: {exc}") from None
    except OSError as exc:  # e.g. a host name that does not resolve
        raise OSError(exc.errno, f"{label}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace, server: Address, bind: Address | None, label: str, defaulted: bool) -> int:
    from ice.aio.discovery import FAST_PROBE, discover_behaviour
    from ice.aio.stun import format_address, stun_binding

    if args.behaviour:
        report = asyncio.run(discover_behaviour(server, bind, retransmission(args, FAST_PROBE)))
        if args.json:
            print_json(report.as_json())
        else:
            print(f"local        {format_address(report.local)}")
            nat = "behind a NAT" if report.behind_nat else "no NAT"
            print(f"mapped       {format_address(report.mapped)}  ({nat})")
            print(f"mapping      {report.mapping.value if report.mapping else '-'}")
            print(f"filtering    {report.filtering.value if report.filtering else '-'}")
            hp = report.hairpinning
            print(f"hairpinning  {'-' if hp is None else 'yes' if hp else 'no'}")
            for note in report.notes:
                print(f"note         {note}")
        return 0
    result = asyncio.run(stun_binding(server, bind, retransmission(args, RetransmissionConfig())))
    doc = {
        "server": format_address(result.server),
        "server_port_defaulted": defaulted,
        "local": format_address(result.local),
        "mapped": format_address(result.mapped),
        "mapped_address": {"host": result.mapped[0], "port": result.mapped[1]},
        "rtt_ms": round(result.rtt * 1000, 3),
        "requests_sent": result.sends,
        "software": result.software,
        "response_origin": format_address(result.response_origin) if result.response_origin else None,
        "other_address": format_address(result.other_address) if result.other_address else None,
    }
    if args.json:
        print_json(doc)
    else:
        via = format_address(result.server) + (" (default port)" if defaulted else "")
        print(f"mapped {doc['mapped']} (local {doc['local']}) via {via}: rtt {doc['rtt_ms']} ms, "
              f"server software {result.software or '-'}")
    return 0


def add_parser(sub: Subparsers) -> None:
    s = sub.add_parser("stun", help="learn this host's external mapping from a STUN server")
    s.add_argument("server", metavar="HOST:PORT", help="STUN server (port defaults to 3478)")
    s.add_argument("--bind", metavar="IP:PORT", help="local address to send from (default: any, ephemeral port)")
    s.add_argument("--json", action="store_true", help="print a JSON document")
    s.add_argument("--behaviour", "--behavior", action="store_true",
                   help="RFC 5780 NAT mapping/filtering/hairpinning discovery (server needs --alt)")
    s.add_argument("--rto", type=float, help="initial retransmission timeout in s (default 0.5; 0.1 for --behaviour)")
    s.add_argument("--rc", type=int, help="requests before giving up (default 7 per RFC 8489; 3 for --behaviour)")
    s.set_defaults(func=cmd_stun)
