"""The ``icelab`` command line (the top layer: it may import everything, nothing imports it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ice import __version__
from ice.errors import IcelabError, StunErrorResponse, StunTimeout, UserError
from ice.stun.attributes import Address
from ice.stun.transaction import RetransmissionConfig

ICELAB_COMMAND = [sys.executable, "-m", "ice.cli"]


def isolate() -> None:
    """Re-run this very command as PID 1 of a private PID namespace (see ice.lab.isolate)."""
    from ice.lab.isolate import reexec_isolated

    reexec_isolated([*ICELAB_COMMAND, *sys.argv[1:]])


def _event_loop_policy() -> None:
    """Use uvloop when it is installed (faster datagram paths); plain asyncio otherwise."""
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def repo_root() -> Path:
    """The source checkout icelab runs from (``icelab test`` and ``icelab bench`` need it)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise UserError("this command needs the icelab source checkout: run it as ./icelab from the repository")
    return root


def _address(text: str, default_port: int | None = None) -> Address:
    from ice.aio.stun import parse_hostport

    try:
        return parse_hostport(text, default_port)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _retrans(args: argparse.Namespace, default: RetransmissionConfig) -> RetransmissionConfig:
    try:
        return RetransmissionConfig(
            rto=default.rto if args.rto is None else args.rto, rc=default.rc if args.rc is None else args.rc,
            rm=default.rm,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# ---------------------------------------------------------------------------------------------------------- stun


def cmd_stun(args: argparse.Namespace) -> int:
    from ice.aio.discovery import FAST_PROBE, discover_behaviour
    from ice.aio.stun import format_address, stun_binding

    server = _address(args.server, 3478)
    bind = _address(args.bind, 0) if args.bind else None
    if args.behaviour:
        report = asyncio.run(discover_behaviour(server, bind, _retrans(args, FAST_PROBE)))
        if args.json:
            _print_json(report.as_json())
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
    result = asyncio.run(stun_binding(server, bind, _retrans(args, RetransmissionConfig())))
    doc = {
        "server": format_address(result.server),
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
        _print_json(doc)
    else:
        print(f"mapped {doc['mapped']} (local {doc['local']}) via {doc['server']}: rtt {doc['rtt_ms']} ms, "
              f"server software {result.software or '-'}")
    return 0


# -------------------------------------------------------------------------------------------------------- server


def cmd_server_stun(args: argparse.Namespace) -> int:
    from ice.aio.stun import StunServerRunner, format_address
    from ice.stun.server import StunServerConfig

    primary = _address(args.listen)
    alt = _address(args.alt) if args.alt else None
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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            runner.close()
            if args.json_log:
                log({"event": "stopped", "stats": dict(runner.server.stats)})

    _event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def cmd_server_turn(args: argparse.Namespace) -> int:
    import ipaddress

    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.server import TurnServerConfig

    listen = _address(args.listen)
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
    tls_listen = _address(args.tls_listen) if args.tls_listen else None

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
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            stats = dict(runner.core.stats)
            runner.close()
            if args.json_log:
                log({"event": "stopped", "stats": stats})

    _event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


# ----------------------------------------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    """The NAT x NAT scenario matrix: every cell, a grid, reports in --out."""
    from pathlib import Path

    from ice.scenario.run import iter_names, main, select_cells

    if args.list:
        for line in iter_names(select_cells(args.presets, args.scenario)):
            print(line)
        return 0
    backend = args.backend
    if backend is None:
        backend = "lab" if os.geteuid() == 0 else "sim"
        if backend == "sim" and not args.quiet:
            print("icelab run: not root, so the in-memory sim back-end runs the matrix; `sudo ./icelab run` runs "
                  "it with kernel NATs.", file=sys.stderr)
    if backend == "lab" and not args.update_expectations:
        from ice.lab.mn import require_root

        require_root()
        isolate()
    jobs = args.jobs if args.jobs is not None else max(1, min(4, os.cpu_count() or 1))
    return main(backend, args.presets, Path(args.out), args.update_expectations, quiet=args.quiet,
                names=args.scenario, jobs=jobs, keep_artifacts=args.keep_artifacts,
                shell_on_failure=args.shell_on_failure)


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


# ---------------------------------------------------------------------------------------------------------- test


def cmd_test(args: argparse.Namespace) -> int:
    """ruff, mypy --strict ice/, then pytest -n auto (pytest's "no tests collected" is a failure)."""
    root = repo_root()
    py = sys.executable
    steps: list[tuple[str, list[str]]] = [
        ("ruff", [py, "-m", "ruff", "check", "."]),
        ("mypy", [py, "-m", "mypy", "--strict", "ice/"]),
        ("pytest", [py, "-m", "pytest", "-n", args.jobs, *args.pytest_args]),
    ]
    for name, cmd in steps:
        if args.only and name not in args.only:
            continue
        print(f"==> {name}: {' '.join(cmd[2:])}", flush=True)
        rc = subprocess.call(cmd, cwd=root)
        if rc != 0:
            print(f"icelab test: {name} failed (exit {rc})", file=sys.stderr)
            return rc
    return 0


# ---------------------------------------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    root = repo_root()
    sys.path.insert(0, str(root))
    module = importlib.import_module(f"bench.{args.what}")
    rc: int = module.main(args)
    return rc


def cmd_report_compare(args: argparse.Namespace) -> int:
    from ice.scenario.compare import compare, load, render

    c = compare(load(args.old), load(args.new))
    print(json.dumps(c.as_json(), indent=2) if args.json else render(c, args.old, args.new))
    return 1 if c.regressed else 0


# ----------------------------------------------------------------------------------------------------------- peer


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
        stun=[_address(s, 3478) for s in args.stun],
        lite=args.lite,
        nomination=Nomination.AGGRESSIVE if args.aggressive else Nomination.REGULAR,
        ta=args.ta / 1000,
        turn=turn,
        relay_only=args.relay_only,
    )
    if not 0 <= args.ta <= 1000:
        raise UserError("--ta is in milliseconds, 0 to 1000 (RFC 8445 default: 50)")
    _event_loop_policy()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        return asyncio.run(run_peer(opts))
    return 0


# ------------------------------------------------------------------------------------------------------------ nat


def cmd_nat_list(args: argparse.Namespace) -> int:
    from ice.lab.nat import PRESETS

    rows = [{"name": name, "rfc4787": b.name, **b.as_json()} for name, b in PRESETS.items()]
    if args.json:
        _print_json({"presets": rows})
        return 0
    width = max(len(name) for name in PRESETS)
    for name, b in PRESETS.items():
        extra = [] if b.port_preservation else ["no port preservation"]
        if b.hairpinning:
            extra.append("hairpin")
        print(f"{name:<{width}}  {b.name:<11}  {b.description}" + (f" [{', '.join(extra)}]" if extra else ""))
    return 0


def cmd_nat_rules(args: argparse.Namespace) -> int:
    from ice.lab.nat import NatInterfaces, compile_ruleset, preset

    behaviour = preset(args.preset)
    try:
        ifaces = NatInterfaces(args.wan, args.lan, args.public, args.lan_subnet)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    sys.stdout.write(compile_ruleset(behaviour, ifaces))
    return 0


def cmd_nat_probe(args: argparse.Namespace) -> int:
    from ice.lab.mn import require_root
    from ice.lab.nat import preset
    from ice.lab.probe import probe

    behaviour = preset(args.preset)
    changes: dict[str, object] = {}
    if args.outbound_refresh:
        changes["inbound_refresh"] = False
    if args.no_hairpin:
        changes["hairpinning"] = False
    if args.no_port_preservation:
        changes["port_preservation"] = False
    if changes:
        try:
            behaviour = behaviour.with_(**changes)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if args.timeout < 1:
        raise UserError("--timeout must be at least 1 second")
    require_root()
    isolate()
    result = probe(args.preset, behaviour, timeout_check=not args.no_timeout_check, timeout=args.timeout)
    if args.json:
        _print_json(result.as_json())
    else:
        from dataclasses import asdict

        print(f"{args.preset}: {'conforms' if result.ok else 'DOES NOT CONFORM'} "
              f"(lab built in {result.build_seconds * 1000:.0f} ms, probed in {result.probe_seconds:.2f} s)")
        print(f"  {'check':<22} {'measured':<28} expected from the declaration")
        want = asdict(result.expected)
        for key, got in asdict(result.measured).items():
            print(f"  {key:<22} {got!s:<28} {'(not checked)' if want[key] is None else want[key]}")
        for m in result.mismatches:
            print(f"  mismatch: {m}")
    return 0 if result.ok else 1


def cmd_nat_grid(args: argparse.Namespace) -> int:
    from ice.lab.mn import Lab, require_root
    from ice.lab.nat import preset
    from ice.lab.punch import punch
    from ice.lab.topo import topology
    from ice.nat.reach import direct_possible

    names = args.presets or ["linux-masquerade", "eim-eif", "eim-adf", "eim-apdf", "adm-adf", "adm-apdf",
                             "apdm-apdf"]
    behaviours = [preset(n) for n in names]
    require_root()
    isolate()
    cells = []
    with Lab(topology("two_nats")) as lab:
        for i, (ra, a) in enumerate(zip(names, behaviours, strict=True)):
            for j, (rb, b) in enumerate(zip(names, behaviours, strict=True)):
                lab.set_nat("nat-a", a)
                lab.set_nat("nat-b", b)
                got = asyncio.run(punch(lab, port=42000 + i * len(names) + j)).direct
                cells.append({"a": ra, "b": rb, "direct": got, "expected": direct_possible(a, b)})
    bad = [c for c in cells if c["direct"] != c["expected"]]
    if args.json:
        _print_json({"cells": cells, "mismatches": bad})
    else:
        width = max(len(n) for n in names)
        corner = "A \\ B"
        print(f"{corner:<{width}}  " + "  ".join(f"{n[:9]:>9}" for n in names))
        for ra in names:
            row = [c for c in cells if c["a"] == ra]
            marks = ["yes" if c["direct"] else "-" for c in row]
            marks = [m + ("!" if c["direct"] != c["expected"] else "") for m, c in zip(marks, row, strict=True)]
            print(f"{ra:<{width}}  " + "  ".join(f"{m:>9}" for m in marks))
        print("yes: direct UDP worked (both ways); -: it did not; !: differs from ice.nat.reach")
    return 1 if bad else 0


def cmd_topo_list(args: argparse.Namespace) -> int:
    import inspect as _inspect

    from ice.lab.topo import describe, registry

    builders = registry()
    rows = [{"name": name, "description": describe(b), "parameters": list(_inspect.signature(b).parameters)}
            for name, b in builders.items()]
    if args.json:
        _print_json({"topologies": rows})
    else:
        for r in rows:
            print(f"{r['name']:<12} {r['description']}")
    return 0


def cmd_topo_check(args: argparse.Namespace) -> int:
    from ice.lab.check import check
    from ice.lab.mn import require_root
    from ice.lab.topo import topology

    spec = topology(args.name, *args.args)
    require_root()
    isolate()
    build, paths = check(spec)
    if args.json:
        _print_json({"topology": args.name, "build_seconds": round(build, 3), "peers": [p.as_json() for p in paths]})
    else:
        print(f"{args.name}: built in {build * 1000:.0f} ms")
        for p in paths:
            if p.mapped is None:
                print(f"  {p.peer:<4} {p.address:<15} no UDP path to the STUN server")
            else:
                print(f"  {p.peer:<4} {p.address:<15} -> {p.mapped:<21} mapping {p.mapping}, filtering {p.filtering}, "
                      f"hairpin {'-' if p.hairpinning is None else p.hairpinning}")
    return 0


# --------------------------------------------------------------------------------------------------------- doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from ice.doctor import run_checks

    return run_checks(json_out=args.json, root=repo_root())


# ------------------------------------------------------------------------------------------------------- parsing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icelab",
        description="A sans-IO ICE/STUN/TURN stack and the emulated-network lab that proves it works.",
    )
    p.add_argument("--version", action="version", version=f"icelab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="the main job: the NAT x NAT scenario matrix, a grid and reports")
    r.add_argument("--backend", choices=["sim", "lab"], default=None,
                   help="lab: kernel NATs in Mininet (the default as root); sim: in-memory NATs, no root, seconds "
                        "(the default otherwise)")
    r.add_argument("--presets", nargs="+", metavar="PRESET", help="only these NAT presets against each other")
    r.add_argument("--scenario", action="append", metavar="NAME", help="only this cell (repeatable)")
    r.add_argument("-j", "--jobs", type=int, default=None,
                   help="lab workers in parallel, each with its own labs (default: CPUs, at most 4)")
    r.add_argument("--out", default="results", help="report directory (default: results/)")
    r.add_argument("--keep-artifacts", action="store_true",
                   help="keep pcaps, traces, rules and conntrack dumps of every cell, not only of failed ones")
    r.add_argument("--shell-on-failure", action="store_true",
                   help="open a shell inside the lab of each failed cell (runs the cells one at a time)")
    r.add_argument("--list", action="store_true", help="print the cells (name, group, expectation) and exit")
    r.add_argument("--update-expectations", action="store_true",
                   help="re-pin scenarios/expected.json from the RFC 4787 reasoning, then review the diff")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress or per-cell lines")
    r.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="embedded STUN server + client on loopback: a mapping and its RFC 5780 class")
    demo.set_defaults(func=cmd_demo)

    t = sub.add_parser("test", help="ruff, mypy --strict ice/, then pytest -n auto over the whole suite")
    t.add_argument("-n", "--jobs", default="auto", help="pytest-xdist workers (default: auto)")
    t.add_argument("--only", action="append", choices=["ruff", "mypy", "pytest"], help="run only this step")
    t.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    t.set_defaults(func=cmd_test)

    d = sub.add_parser("doctor", help="check root, kernel features, mininet and interop tools")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("stun", help="learn this host's external mapping from a STUN server")
    s.add_argument("server", metavar="HOST:PORT", help="STUN server (port defaults to 3478)")
    s.add_argument("--bind", metavar="IP:PORT", help="local address to send from (default: any, ephemeral port)")
    s.add_argument("--json", action="store_true", help="print a JSON document")
    s.add_argument("--behaviour", "--behavior", action="store_true",
                   help="RFC 5780 NAT mapping/filtering/hairpinning discovery (server needs --alt)")
    s.add_argument("--rto", type=float, help="initial retransmission timeout in s (default 0.5; 0.1 for --behaviour)")
    s.add_argument("--rc", type=int, help="requests before giving up (default 7 per RFC 8489; 3 for --behaviour)")
    s.set_defaults(func=cmd_stun)

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
    st.add_argument("--tls-listen", metavar="IP:PORT", help="also accept TURN over TLS here (with --cert/--key)")
    st.add_argument("--cert", metavar="FILE", help="TLS certificate chain (PEM)")
    st.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")
    st.add_argument("--json-log", action="store_true")
    st.set_defaults(func=cmd_server_turn)

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

    n = sub.add_parser("nat", help="NAT presets (RFC 4787 behaviours) and the rules the lab loads for them")
    ns = n.add_subparsers(dest="nat_command", metavar="SUBCOMMAND")
    nl = ns.add_parser("list", help="every preset with its RFC 4787 mapping and filtering")
    nl.add_argument("--json", action="store_true")
    nl.set_defaults(func=cmd_nat_list)
    nr = ns.add_parser("rules", help="print the nftables ruleset for a preset (load it with nft -f)")
    nr.add_argument("preset", help="a name from `icelab nat list`")
    nr.add_argument("--wan", required=True, metavar="IFACE", help="the NAT's outside interface")
    nr.add_argument("--lan", required=True, metavar="IFACE", help="the NAT's inside interface")
    nr.add_argument("--public", required=True, metavar="IP", help="the NAT's public IPv4 address (on --wan)")
    nr.add_argument("--lan-subnet", metavar="CIDR", help="translate only packets from this subnet")
    nr.set_defaults(func=cmd_nat_rules)
    npr = ns.add_parser("probe", help="build a minimal lab around a preset and check it behaves as declared (root)")
    npr.add_argument("preset", help="a name from `icelab nat list`")
    npr.add_argument("--json", action="store_true")
    npr.add_argument("--no-timeout-check", action="store_true", help="skip the mapping-timeout check (saves ~6 s)")
    npr.add_argument("--timeout", type=int, default=2, help="mapping timeout the NAT is built with (default 2 s)")
    npr.add_argument("--outbound-refresh", action="store_true", help="variant: only outbound packets refresh")
    npr.add_argument("--no-hairpin", action="store_true", help="variant: no hairpinning")
    npr.add_argument("--no-port-preservation", action="store_true", help="variant: random external ports")
    npr.set_defaults(func=cmd_nat_probe)

    ng = ns.add_parser("grid", help="hole-punch every pairing of NAT presets in a two-NAT lab (root)")
    ng.add_argument("presets", nargs="*", help="presets to pair (default: seven representative ones)")
    ng.add_argument("--json", action="store_true")
    ng.set_defaults(func=cmd_nat_grid)

    tp = sub.add_parser("topo", help="the lab's topologies (one module each in topologies/)")
    ts = tp.add_subparsers(dest="topo_command", metavar="SUBCOMMAND")
    tl = ts.add_parser("list", help="every topology module with its parameters")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=cmd_topo_list)
    tc = ts.add_parser("check", help="build a topology and classify each peer's path to the STUN server (root)")
    tc.add_argument("name")
    tc.add_argument("args", nargs="*", help="the topology's NAT presets, in order")
    tc.add_argument("--json", action="store_true")
    tc.set_defaults(func=cmd_topo_check)

    rep = sub.add_parser("report", help="work with matrix reports")
    rsub = rep.add_subparsers(dest="report_command", metavar="ACTION", required=True)
    cmp_ = rsub.add_parser("compare", help="what changed between two runs (exit 1 if a cell regressed)")
    cmp_.add_argument("old", help="results.json of the earlier run (or its --out directory)")
    cmp_.add_argument("new", help="results.json of the later run (or its --out directory)")
    cmp_.add_argument("--json", action="store_true", help="machine-readable output")
    cmp_.set_defaults(func=cmd_report_compare)

    b = sub.add_parser("bench", help="benchmarks against peers, side by side in one run")
    b.add_argument("what", choices=["codec", "server", "lab", "connect", "relay", "matrix"])
    b.add_argument("--json", action="store_true")
    b.add_argument("--seconds", type=float, default=0.4, help="codec: time per measurement")
    b.add_argument("--requests", type=int, default=100_000,
                   help="server: Binding requests per server; relay: relayed packets per round")
    b.add_argument("--rounds", type=int, help="lab: build/teardown rounds per topology (default 5)")
    b.add_argument("--runs", type=int, help="connect: measured connections per implementation (default 20)")
    b.add_argument("--lab", action="store_true", help="connect: through two NATs in the kernel lab (root)")
    b.add_argument("--only", choices=["sim", "lab"], help="matrix: measure only this back-end")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        print("icelab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `icelab run --list | head`: the reader has gone, which is not an error to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except StunTimeout as exc:
        print(f"icelab: no answer from the STUN server: {exc}", file=sys.stderr)
        return 1
    except StunErrorResponse as exc:
        print(f"icelab: the server answered with an error: {exc}", file=sys.stderr)
        return 1
    except (UserError, IcelabError) as exc:
        print(f"icelab: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"icelab: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
