"""``icelab peer``: an ICE agent on the interop harness's line protocol."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import TYPE_CHECKING

from ice.cli.common import event_loop_policy, parse_address
from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_peer(args: argparse.Namespace) -> int:
    from ice.agent import Nomination
    from ice.aio.peer import PeerOptions, run_peer
    from ice.turn.client import TurnClientConfig

    turn = None
    if args.turn:
        if len(args.turn) != 4 or not args.turn[1].isdigit():
            raise UserError("--turn takes HOST PORT USER PASSWORD (as the interop peers do)")
        host, port, user, password = args.turn
        turn = TurnClientConfig((host, int(port)), user, password)
    if args.relay_only and turn is None:
        raise UserError("--relay-only needs --turn HOST PORT USER PASSWORD")
    opts = PeerOptions(
        controlling=args.controlling,
        echo=args.echo,
        bind=args.bind or ["127.0.0.1"],
        stun=[parse_address(s, 3478) for s in args.stun],
        lite=args.lite,
        nomination=Nomination.AGGRESSIVE if args.aggressive else Nomination.REGULAR,
        ta=args.ta / 1000,
        turn=turn,
        relay_only=args.relay_only,
    )
    if not 0 <= args.ta <= 1000:
        raise UserError("--ta is in milliseconds, 0 to 1000 (RFC 8445 default: 50)")
    event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        return asyncio.run(run_peer(opts))
    return 0


def add_parser(sub: Subparsers) -> None:
    pe = sub.add_parser("peer", help="an ICE agent on the line protocol (stdin/stdout) of the interop harness")
    pe.add_argument("--controlling", action="store_true")
    pe.add_argument("--echo", action="store_true", help="send every received datagram back")
    pe.add_argument("--bind", "--ip", action="append", metavar="IP", help="gather host candidates here (repeatable)")
    pe.add_argument("--stun", action="append", default=[], metavar="HOST:PORT", help="STUN server for srflx")
    pe.add_argument("--turn", nargs=4, metavar=("HOST", "PORT", "USER", "PASSWORD"),
                    help="TURN server for relayed candidates")
    pe.add_argument("--relay-only", action="store_true")
    pe.add_argument("--lite", action="store_true", help="ICE-lite (always controlled, no checks of its own)")
    pe.add_argument("--ta", type=float, default=50.0, metavar="MS", help="check pacing in ms (default 50, RFC 8445)")
    mode = pe.add_mutually_exclusive_group()
    mode.add_argument("--regular", action="store_true", help="regular nomination (default, RFC 8445)")
    mode.add_argument("--aggressive", action="store_true", help="aggressive nomination (RFC 5245, for interop)")
    pe.set_defaults(func=cmd_peer)
