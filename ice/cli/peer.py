"""``icelab peer``: icelab's agent on the agent protocol (docs/agent-protocol.md), on stdin/stdout."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import TYPE_CHECKING

from ice.cli.common import event_loop_policy
from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def cmd_peer(args: argparse.Namespace) -> int:
    from ice.aio.peer import run_peer

    if not 0 <= args.ta <= 1000:
        raise UserError("--ta is in milliseconds, 0 to 1000 (RFC 8445 default: 50)")
    event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        return asyncio.run(run_peer(args.ta / 1000))
    return 0


def add_parser(sub: Subparsers) -> None:
    pe = sub.add_parser("peer", help="icelab's ICE agent on the agent protocol (stdin/stdout, "
                                     "docs/agent-protocol.md)")
    pe.add_argument("--ta", type=float, default=50.0, metavar="MS", help="check pacing in ms (default 50, RFC 8445)")
    pe.set_defaults(func=cmd_peer)
