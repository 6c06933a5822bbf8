"""What the command modules share: the re-exec for isolation, address and retransmission options, JSON output."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ice.errors import UserError
from ice.stun.attributes import Address
from ice.stun.transaction import RetransmissionConfig

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What ``add_subparsers()`` returns: each command module's ``add_parser(sub)`` adds its commands to it."""

ICELAB_COMMAND = [sys.executable, "-m", "ice.cli"]


def isolate() -> None:
    """Re-run this very command as PID 1 of a private PID namespace (see ice.lab.isolate)."""
    from ice.lab.isolate import reexec_isolated

    reexec_isolated([*ICELAB_COMMAND, *sys.argv[1:]])


def event_loop_policy() -> None:
    """Use uvloop when it is installed (faster datagram paths); plain asyncio otherwise."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def repo_root() -> Path:
    """The source checkout icelab runs from (``icelab test`` and ``icelab bench`` need it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UserError("this command needs the icelab source checkout: run it as ./icelab from the repository")
    return root


def parse_address(text: str, default_port: int | None = None) -> Address:
    from ice.aio.stun import parse_hostport

    try:
        return parse_hostport(text, default_port)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def retransmission(args: argparse.Namespace, default: RetransmissionConfig) -> RetransmissionConfig:
    """``--rto``/``--rc`` over ``default``."""
    try:
        return RetransmissionConfig(
            rto=default.rto if args.rto is None else args.rto, rc=default.rc if args.rc is None else args.rc,
            rm=default.rm,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))
