"""``icelab server stun|turn``: the embedded STUN and TURN servers."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import TYPE_CHECKING

from ice import __version__
from ice.cli.common import event_loop_policy, parse_address
from ice.errors import UserError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ice.cli.common import Subparsers


async def until_signalled() -> None:
    """Return on SIGTERM or SIGINT (a server runs until then)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def cmd_server_stun(args: argparse.Namespace) -> int:
    from ice.aio.stun import StunServerRunner, format_address
    from ice.stun.server import StunServerConfig

    primary = parse_address(args.listen)
    alt = parse_address(args.alt) if args.alt else None
    try:
        config = StunServerConfig(primary, alt, software=f"icelab {__version__}")
    except ValueError as exc:
        raise UserError(str(exc)) from None

    def log(event: dict[str, object]) -> None:
        print(json.dumps({"ts": round(time.time(), 6), **event}), flush=True)

    async def main() -> None:
        runner = await StunServerRunner(config, log if args.json_log else None).start()
        addrs = ", ".join(format_address(a) for a in runner.addresses)
        msg = {"event": "listening", "addresses": [format_address(a) for a in runner.addresses],
               "rfc5780": alt is not None}
        if args.json_log:
            log(msg)
        else:
            print(f"icelab STUN server listening on {addrs}" + (" (RFC 5780)" if alt else ""), flush=True)
        try:
            await until_signalled()
        finally:
            runner.close()
            if args.json_log:
                log({"event": "stopped", "stats": dict(runner.server.stats)})

    event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


async def _hint_rfc5766_clients(stats: Mapping[str, int], every: float = 1.0) -> None:
    """Say once, on stderr, when a client asked for a channel RFC 5766 allowed and RFC 8656 §12 does not
    (0x5000-0x7FFF): the server answered 400 as the RFC says, and the operator can serve such clients."""
    while not stats.get("channel-rfc5766-range"):
        await asyncio.sleep(every)
    print("icelab server turn: refused a ChannelBind for a channel number above 0x4FFF (RFC 8656 §12 allows "
          "0x4000-0x4FFF); restart with --rfc5766-channels to serve RFC 5766 clients such as coturn's "
          "turnutils_uclient", file=sys.stderr, flush=True)


def cmd_server_turn(args: argparse.Namespace) -> int:
    import dataclasses
    import ipaddress

    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.server import RFC5766_CHANNELS, TurnServerConfig

    listen = parse_address(args.listen)
    users: dict[str, str] = {}
    for spec in args.user or []:
        name, sep, password = spec.partition(":")
        if not sep or not name or not password:
            raise UserError(f"--user {spec!r}: expected USER:PASSWORD")
        users[name] = password
    if not users:
        raise UserError("a TURN server needs at least one --user USER:PASSWORD (long-term credentials)")
    ports: tuple[int, int] | None = None
    if args.relay_ports:
        lo, _, hi = args.relay_ports.partition("-")
        if not (lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi) <= 65535):
            raise UserError(f"--relay-ports {args.relay_ports!r}: expected LOW-HIGH, e.g. 49152-49999")
        ports = (int(lo), int(hi))
    for cidr in args.allow_peer or []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise UserError(f"--allow-peer {cidr!r} is not an address range such as 127.0.0.0/8") from None
    config = TurnServerConfig(listen, realm=args.realm, users=users, software=f"icelab {__version__}",
                              allowed_peers=tuple(args.allow_peer or ()))
    if args.rfc5766_channels:
        config = dataclasses.replace(config, channel_numbers=RFC5766_CHANNELS)

    def log(event: dict[str, object]) -> None:
        print(json.dumps({"ts": round(time.time(), 6), **event}), flush=True)

    tls = None
    if args.tls_listen or args.cert or args.key:
        import ssl

        if not (args.tls_listen and args.cert and args.key):
            raise UserError("TURN over TLS needs --tls-listen IP:PORT, --cert FILE and --key FILE together")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.cert, args.key)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"cannot load the TLS certificate or key: {exc}") from None
    tls_listen = parse_address(args.tls_listen) if args.tls_listen else None

    async def main() -> None:
        runner = await TurnServerRunner(config, args.relay_ip or listen[0], ports).start(tls=tls,
                                                                                          tls_listen=tls_listen)
        where = f"{runner.address[0]}:{runner.address[1]}" + (
            f", TLS {runner.tls_address[0]}:{runner.tls_address[1]}" if runner.tls_address else "")
        if args.json_log:
            log({"event": "listening", "address": where, "realm": args.realm})
        else:
            print(f"icelab TURN server on {where} (realm {args.realm}, relay {args.relay_ip or listen[0]})",
                  flush=True)
        watch = None if args.rfc5766_channels else asyncio.create_task(_hint_rfc5766_clients(runner.core.stats))
        try:
            await until_signalled()
        finally:
            if watch is not None:
                watch.cancel()
            stats = dict(runner.core.stats)
            runner.close()
            if args.json_log:
                log({"event": "stopped", "stats": stats})

    event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def add_parser(sub: Subparsers) -> None:
    sv = sub.add_parser("server", help="run an embedded server")
    svs = sv.add_subparsers(dest="kind", metavar="KIND")
    ss = svs.add_parser("stun", help="STUN Binding server, RFC 5780 with --alt")
    ss.add_argument("--listen", required=True, metavar="IP:PORT", help="primary address")
    ss.add_argument("--alt", metavar="IP:PORT", help="alternate address (other IP and port) for RFC 5780")
    ss.add_argument("--json-log", action="store_true", help="one JSON object per line on stdout")
    ss.set_defaults(func=cmd_server_stun)
    st = svs.add_parser("turn", help="TURN server (RFC 8656) that answers STUN Binding too")
    st.add_argument("--listen", required=True, metavar="IP:PORT")
    st.add_argument("--realm", default="icelab")
    st.add_argument("--user", action="append", metavar="USER:PASSWORD", help="long-term credentials (repeatable)")
    st.add_argument("--relay-ip", metavar="IP", help="address relayed transport addresses use (default: --listen's)")
    st.add_argument("--relay-ports", metavar="LOW-HIGH", help="relay port range (default: ephemeral ports)")
    st.add_argument("--allow-peer", action="append", metavar="CIDR",
                    help="allow relaying to this range although it is denied by default (loopback, multicast...)")
    st.add_argument("--rfc5766-channels", action="store_true",
                    help="accept channel numbers up to 0x7FFF (RFC 5766 clients, coturn's turnutils_uclient); "
                         "RFC 8656 allows 0x4000-0x4FFF")
    st.add_argument("--tls-listen", metavar="IP:PORT", help="also accept TURN over TLS here (with --cert/--key)")
    st.add_argument("--cert", metavar="FILE", help="TLS certificate chain (PEM)")
    st.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")
    st.add_argument("--json-log", action="store_true")
    st.set_defaults(func=cmd_server_turn)
