"""What the command modules share: the re-exec for isolation, address and retransmission options, JSON output."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
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


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_host_name(host: str) -> bool:
    """An RFC 1123 host name whose last label is not all digits (RFC 3696 §2: so ``300.1.1.1`` is neither an
    IPv4 address nor a name)."""
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return (0 < len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def parse_address(text: str, default_port: int | None = None) -> Address:
    """``HOST:PORT`` (``[v6]:PORT``; ``HOST`` alone with a ``default_port``) whose host is an IP address or a host
    name; anything else is a :class:`UserError` (exit 2) naming the input."""
    from ice.aio.stun import parse_hostport

    try:
        host, port = parse_hostport(text, default_port)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_host_name(host):
            raise UserError(f"{text}: {host!r} is not an IPv4/IPv6 address or host name") from None
    return host, port


def port_given(text: str) -> bool:
    """Whether ``text`` (as :func:`parse_address` reads it) names a port."""
    text = text.strip()
    if text.startswith("["):
        return "]:" in text
    return text.count(":") == 1


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
