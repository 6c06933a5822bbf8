"""``icelab agent list`` and ``icelab agent check NAME|"COMMAND"``: the agents a cell can name, and the agent
protocol's conformance check (docs/agent-protocol.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers


def _spec(target: str) -> object:
    from ice.agents.registry import BUILTIN, resolve

    try:
        return resolve(target if target in BUILTIN else {"command": target})
    except ValueError as exc:
        raise UserError(str(exc)) from None


def cmd_check(args: argparse.Namespace) -> int:
    from ice.agents.check import Step, check
    from ice.agents.registry import AgentSpec
    from ice.cli.common import event_loop_policy

    spec = _spec(args.agent)
    assert isinstance(spec, AgentSpec)

    def progress(step: Step) -> None:
        if not args.json:
            print(step.line(), flush=True)

    if not args.json:
        print(f"checking {spec.label} against icelab on 127.0.0.1 (docs/agent-protocol.md)", flush=True)
    event_loop_policy()
    checker = asyncio.run(check(spec, progress))
    missing = [s for s in checker.steps if s.verdict.value == "missing"]
    if args.json:
        print(json.dumps({"agent": spec.label, "hello": getattr(checker, "hello", None),
                          "features": sorted(checker.features), "pass": not missing,
                          "steps": [{"step": s.name, "verdict": s.verdict.value, "detail": s.detail}
                                    for s in checker.steps]}, indent=2))
    else:
        about = getattr(checker, "hello", None)
        if about:
            print(f"agent: {about}")
        print(f"{'PASS' if not missing else 'FAIL'}: {len(checker.steps) - len(missing)} of {len(checker.steps)} "
              "steps ok or unsupported" + (f"; missing: {', '.join(s.name for s in missing)}" if missing else ""))
    return 0 if not missing else 1


def cmd_list(args: argparse.Namespace) -> int:
    from ice.agents.registry import BUILTIN

    rows = []
    for name, builtin in BUILTIN.items():
        missing = builtin.missing()
        rows.append({"agent": name, "installed": missing is None, "why_not": missing, "about": builtin.about})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = "installed" if row["installed"] else f"NOT INSTALLED: {row['why_not']}"
        print(f"{row['agent']:<9} {row['about']}; {state}")
    print("any other program: { command = \"...\" } in a cell (docs/agent-protocol.md)", file=sys.stderr)
    return 0


def add_parser(sub: Subparsers) -> None:
    ag = sub.add_parser("agent", help="the ICE agents cells can run: list them, check one against the protocol")
    agsub = ag.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    ch = agsub.add_parser("check", help="run an agent against icelab on loopback through every step of the "
                                        "agent protocol (docs/agent-protocol.md)")
    ch.add_argument("agent", metavar="NAME|COMMAND", help="a built-in agent (icelab, aioice, libnice, pion) or a "
                                                           "command line in quotes")
    ch.add_argument("--json", action="store_true")
    ch.set_defaults(func=cmd_check)
    li = agsub.add_parser("list", help="the built-in agents and whether each is installed here")
    li.add_argument("--json", action="store_true")
    li.set_defaults(func=cmd_list)
