"""The kernel-lab back-end of the scenario matrix: real namespaces, real netfilter NATs, our agents over sockets.

Labs are built once per shape (the cell's spec without its NAT behaviours) and reused: between cells only the NAT
rules are reloaded (which empties their binding maps) and conntrack is flushed, which costs milliseconds instead of
a rebuild. A tcpdump per interface runs for the lab's whole life (:mod:`ice.lab.capture`); a failed cell (or every
cell with ``keep_artifacts``) gets the slice of each capture covering its run, both agents' event traces as JSON
lines, each NAT's live ruleset and conntrack table (dumped before the next cell resets them), the agents' counters
and a one-line command that runs just that cell again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ice.agent import Candidate, CandidateType, IceAgent
from ice.agent.candidate import pair_text
from ice.agent.events import CandidateGathered, Event, GatheringComplete, NetworkChangeRestart, SelectedPairChanged
from ice.agent.tcp import TcpType
from ice.aio.connection import Connection
from ice.errors import NotConnected, StunErrorResponse, StunTimeout
from ice.lab.capture import Capture, start_captures
from ice.lab.mn import Lab
from ice.nat.behaviour import NatKind
from ice.scenario.bulk import BULK, BulkSettings, BulkTransfer, is_bulk
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected
from ice.scenario.result import CellResult, Status
from ice.scenario.timeline import TICK, TimelineNetwork, changes_delay, run_timeline, timeline_verdict
from ice.scenario.timers import TIMERS, MatrixTimers, agent_config
from ice.topology.fabric import Fabric
from ice.topology.spec import TopologySpec

LabKey = tuple[object, ...]


def lab_key(spec: TopologySpec, forwarders: frozenset[int] = frozenset()) -> LabKey:
    """Cells whose specs have the same shape share one built lab (only the NAT behaviours change between them);
    a lab with delay forwarders on other links (``forwarders``, for a timeline that changes a delay) is another."""
    return spec.shape() if not forwarders else (*spec.shape(), tuple(sorted(forwarders)))


def forwarded_links(cell: Cell, spec: TopologySpec) -> frozenset[int]:
    """The links whose delay the cell's timeline changes (host a's access links), which need a forwarder."""
    return frozenset(i for i, _ in spec.ends("a")) if changes_delay(cell.timeline) else frozenset()


def trace_header(peer: str, cell: Cell, wall: float) -> dict[str, object]:
    """The first record of a trace: the wall-clock time of t=0, so records line up with pcap timestamps."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1e6):06d}Z"
    return {"t": 0.0, "event": "TraceStart", "peer": peer, "cell": cell.name, "wall_clock": wall,
            "wall_clock_utc": stamp,
            "note": "t is seconds after wall_clock (time.time() at t=0); a packet's pcap timestamp is wall_clock + t"}


def event_record(ev: Event) -> dict[str, object]:
    """One agent event as a JSON-able dict (candidates as SDP candidate lines)."""
    out: dict[str, object] = {"event": type(ev).__name__}
    for name, value in vars(ev).items():
        if isinstance(value, Candidate):
            out[name] = value.to_sdp()
        elif isinstance(value, bytes):
            out[name] = len(value)
        elif hasattr(value, "value"):
            out[name] = value.value
        elif isinstance(value, tuple):
            out[name] = f"{value[0]}:{value[1]}" if len(value) == 2 else list(value)
        else:
            out[name] = value
    return out


# ------------------------------------------------------------------------------------------------ runner


@dataclass
class _Outcome:
    observed: PathKind
    selected: str | None = None
    selected_b: str | None = None
    selected_types: str | None = None
    seconds: float | None = None
    succeeded: list[str] = field(default_factory=list)
    reason: str = ""
    traces: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    """``a``/``b``: each agent's counters; ``server``: the STUN/TURN server's; ``pairs``: each agent's per pair."""
    pairs_known: bool = True
    """False for agents run as processes: they do not report their valid pairs."""
    unsupported: str = ""
    """An agent refused a setting the cell needs (the cell is ``unsupported``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More fields for the cell's results.json entry."""
    files: dict[str, str] = field(default_factory=dict)
    """More artifact files (name -> text): the agents' protocol transcripts and standard error."""


def path_of(sel_a: SelectedPairChanged, sel_b: SelectedPairChanged) -> PathKind:
    """Relayed when either side's selected pair has a relayed candidate. One side alone can be fooled: when a
    packet from a peer's relayed address reaches a NAT whose conntrack already holds the reverse tuple of
    another flow, Linux gives it a new source port, and the receiver learns the relay as a peer-reflexive
    candidate (seen in the lab with address-dependent filtering behind a port-dependent mapping)."""
    types = {sel_a.local.type, sel_a.remote.type, sel_b.local.type, sel_b.remote.type}
    return PathKind.RELAY if CandidateType.RELAYED in types else PathKind.DIRECT


def _cancel(fut: asyncio.Future[Any]) -> None:
    fut.cancel()


@dataclass
class LabBackend:
    """Runs cells in reused kernel labs (one process, one cell at a time; ``-j`` runs several of these)."""

    artifacts: Path | None = None
    """Where failed cells' artifacts go (``<artifacts>/<cell>/``); None: nowhere."""
    keep_artifacts: bool = False
    repro: Callable[[Cell], str] = lambda cell: f"sudo ./icelab run --scenario {cell.name}"
    captures: bool = True
    timers: MatrixTimers = TIMERS
    labs: dict[LabKey, Lab] = field(default_factory=dict)
    _caps: dict[LabKey, list[Capture]] = field(default_factory=dict)
    _tmp: Path | None = None

    def close(self) -> None:
        for lab in self.labs.values():
            lab.stop()
        self.labs.clear()
        self._caps.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            if self._tmp.parent.name == ".captures":
                with contextlib.suppress(OSError):  # the last worker out removes the shared parent
                    self._tmp.parent.rmdir()
            self._tmp = None

    def __enter__(self) -> LabBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lab_of(self, spec: TopologySpec, cell: Cell | None = None) -> Lab | None:
        """The built lab a cell with this spec ran in (None if it could not be built)."""
        return self.labs.get(lab_key(spec, forwarded_links(cell, spec) if cell is not None else frozenset()))

    def _capture_dir(self, lab: Lab) -> Path:
        """Whole-life captures live next to the artifacts (``<out>/.captures/<pid>/``, removed by :meth:`close`;
        a killed run leaves them in its own report directory, not in /tmp)."""
        if self._tmp is None:
            if self.artifacts is not None:
                self._tmp = self.artifacts.parent / ".captures" / str(os.getpid())
                self._tmp.mkdir(parents=True, exist_ok=True)
            else:
                self._tmp = Path(tempfile.mkdtemp(prefix="icelab-pcap-"))
        where = self._tmp / lab.prefix
        where.mkdir(exist_ok=True)
        return where

    def lab_for(self, spec: TopologySpec, forwarders: frozenset[int] = frozenset()) -> Lab:
        key = lab_key(spec, forwarders)
        lab = self.labs.get(key)
        if lab is None:
            lab = Lab(spec, forwarders=forwarders)
            lab.build()
            self.labs[key] = lab
            if self.captures:
                self._caps[key] = start_captures(lab, self._capture_dir(lab))
        for node, behaviour in spec.nat_behaviours().items():
            lab.set_nat(node, behaviour)  # reload rules (empties the binding maps) and flush conntrack
        return lab

    def run(self, cell: Cell, spec: TopologySpec, expected: Expected) -> CellResult:
        """Run ``cell`` in the lab for ``spec`` (built on first use, then reused with the cell's NAT rules)."""
        if cell.in_processes:
            from ice.scenario.processes import not_installed

            missing = not_installed(cell)
            if missing:
                res = CellResult(cell, "lab", expected.path, PathKind.NONE, None, None, reason=missing,
                                 unrunnable=Status.NOT_INSTALLED, pairs_known=False)
                res.repro = self.repro(cell)
                return res.expecting(expected)
        forwarders = forwarded_links(cell, spec)
        try:
            lab = self.lab_for(spec, forwarders)
        except Exception as exc:  # a lab that cannot be built fails its cells, not the whole run
            broken = self.labs.pop(lab_key(spec, forwarders), None)
            self._caps.pop(lab_key(spec, forwarders), None)
            if broken is not None:
                broken.stop()
            res = CellResult(cell, "lab", expected.path, PathKind.NONE, None, None,
                             reason=f"the lab could not be built: {type(exc).__name__}: {exc}")
            res.repro = self.repro(cell)
            return res.expecting(expected)
        wall0 = time.time()
        try:
            if cell.in_processes:
                from ice.scenario.processes import connect_processes

                outcome = asyncio.run(connect_processes(lab, spec, cell, self.timers))
            else:
                outcome = asyncio.run(_connect(lab, spec, cell, self.timers))
        except Exception as exc:  # a broken cell is a failed cell with its artifacts, not a dead run
            outcome = _Outcome(PathKind.NONE, reason=f"the cell crashed: {type(exc).__name__}: {exc}")
        wall1 = time.time()
        res = CellResult(cell, "lab", expected.path, outcome.observed, outcome.selected, outcome.seconds,
                         outcome.succeeded, outcome.reason, selected_types=outcome.selected_types,
                         selected_b=outcome.selected_b, pairs_known=outcome.pairs_known,
                         unrunnable=Status.UNSUPPORTED if outcome.unsupported else None)
        res.extra.update(outcome.extra)
        res.expecting(expected)
        res.repro = self.repro(cell)
        if self.artifacts is not None and (self.keep_artifacts or not res.passed):
            try:
                res.artifacts = str(self._write_artifacts(lab, cell, res, outcome, wall0, wall1))
            except OSError as exc:  # a full disk costs the artifacts, not the run
                res.reason += f" (artifacts could not be written: {exc})"
        return res

    def _write_artifacts(self, lab: Lab, cell: Cell, res: CellResult, outcome: _Outcome, wall0: float,
                         wall1: float) -> Path:
        assert self.artifacts is not None
        d = self.artifacts / cell.name
        d.mkdir(parents=True, exist_ok=True)
        for who, records in outcome.traces.items():
            (d / f"trace-{who}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        for name, text in outcome.files.items():
            (d / name).write_text(text)
        (d / "stats.json").write_text(json.dumps(outcome.stats, indent=2, sort_keys=True) + "\n")
        for node in lab.spec.nat_behaviours():
            (d / f"{node}.nft").write_text(_run_quietly(lab, node, "nft list ruleset"))
            (d / f"{node}.conntrack").write_text(_run_quietly(lab, node, "conntrack -L -p udp 2>&1; "
                                                                          "conntrack -L -p tcp 2>&1"))
        time.sleep(self.timers.capture_flush)  # tcpdump writes the cell's last packets (failure path only)
        caps = self._caps.get(lab_key(lab.spec, lab.forwarders), [])
        for cap in caps:
            cap.slice(wall0 - 0.01, wall1 + self.timers.capture_flush, d / cap.path.name)
        (d / "repro.txt").write_text(res.repro + "\n" if res.repro else "")
        res.artifacts = str(d)
        (d / "result.json").write_text(json.dumps(res.as_json(), indent=2) + "\n")
        nats = {node: lab.behaviour(node).name for node in lab.spec.nat_behaviours()}
        (d / "index.txt").write_text(artifact_index(cell, lab.spec, nats, {c.path.name: c.side for c in caps},
                                                    sorted({p.name for p in d.iterdir()} | {"index.txt"}),
                                                    res.repro or ""))
        return d


def artifact_index(cell: Cell, spec: TopologySpec, nats: dict[str, str], pcaps: dict[str, str], files: list[str],
                   repro: str) -> str:
    """``index.txt`` of a cell's artifact folder: what each file is (``pcaps``: pcap name -> the interface it was
    captured on, ``nats``: NAT node -> the behaviour it ran), how to read the pcaps, the repro line."""
    ports = sorted({spec.address(f)[1] for f in ("stun_primary", "stun_alternate", "turn") if f in spec.facts})
    listening: dict[str, list[str]] = {}
    for f in ("stun_primary", "stun_alternate", "turn"):
        if f in spec.facts:
            listening.setdefault(spec.facts[f], []).append(f)
    server = ", ".join(f"{a} ({' and '.join(fs)})" for a, fs in listening.items()) or "the stun_primary address"
    described = {
        "trace-a.jsonl": "peer a's ICE agent events, one JSON object a line; the first record (TraceStart) holds "
                         "wall_clock, the Unix time of t=0, so a record happened at wall_clock + t, the same clock "
                         "as the pcap timestamps (tcpdump -tt prints them)",
        "trace-b.jsonl": "the same for peer b",
        "agent-a.transcript": "agent a's agent-protocol conversation, both directions with times (> to the agent, "
                              "< from it; docs/agent-protocol.md)",
        "agent-b.transcript": "the same for agent b",
        "agent-a.stderr": "agent a's standard error (its own logs)",
        "agent-b.stderr": "the same for agent b",
        "stats.json": "counters: a and b (each agent's checks sent and retransmitted, responses, pairs succeeded "
                      "and failed, triggered checks, nominations, consent, data datagrams and bytes, and bad input "
                      "seen), pairs.a / pairs.b (the same per candidate pair, \"local -> remote\"), server (the "
                      "STUN or TURN server's counters)",
        "result.json": "this cell's record, the same as its entry in the run's results.json",
        "repro.txt": "one command that runs just this cell again, keeping every artifact",
        "index.txt": "this file",
    }
    for node, behaviour in nats.items():
        described[f"{node}.nft"] = (f"NAT {node}'s live nftables ruleset ({behaviour}) with the contents of its "
                                    "dynamic binding maps, dumped after the cell")
        described[f"{node}.conntrack"] = (f"NAT {node}'s conntrack table (conntrack -L), dumped after the cell and "
                                          "before the next cell flushed it")
    lines = [f"Artifacts of cell {cell.name} (topology {cell.topology}"
             + (": " + ", ".join(f"{k}={v}" for k, v in cell.labels.items()) if cell.labels else "") + ")", "",
             "FILES"]
    width = max((len(f) for f in files), default=10) + 2
    for f in files:
        what = pcaps.get(f) or described.get(f)
        if what is None and f.endswith(".pcap"):
            what = "packets captured on an interface"
        lines.append(f"  {f:<{width}}{what or ''}".rstrip())
    example = next((f for f in files if f.endswith("-wan.pcap")), next((f for f in files if f.endswith(".pcap")),
                                                                       "FILE.pcap"))
    port = ports[0] if ports else 3478
    decode = " ".join(f"-d udp.port=={p},stun" for p in ports) or "-d udp.port==3478,stun"
    lines += [
        "",
        "PCAPS",
        "  Each pcap is the slice of a whole-run tcpdump (-s 512) on one interface covering this cell's run; names",
        "  say the side: NODE-wan.pcap / NODE-lan.pcap for a NAT (public side after translation, private side",
        "  before), HOST.pcap for a host with one interface (HOST-ethK.pcap, in link order, for several).",
        f"  The STUN/TURN server listens on {server}.",
        "  The peers' own ports (host, server-reflexive and relayed candidates) are ephemeral: the connectivity",
        "  checks between them use other ports.",
        "",
        "  tcpdump (installed with the lab; it prints STUN as plain UDP):",
        f"    tcpdump -nn -r {example} udp",
        "        every UDP packet, numeric addresses and ports",
        f"    tcpdump -nn -tt -r {example} udp port {port}",
        "        the server's flows with Unix timestamps (compare with a trace's wall_clock + t)",
        f"    tcpdump -nn -X -r {example} udp",
        "        with the payload bytes (a STUN message has the magic cookie 2112a442 at offset 4)",
        "",
        "  tshark decodes STUN/TURN (not installed by icelab: apt-get install tshark; Debian 12 ships 4.0):",
        f"    tshark -r {example} {decode} -Y stun",
        "        the server's ports decoded as STUN",
        f"    tshark -r {example} --enable-heuristic stun_udp -Y stun",
        "        STUN on any port, found by its magic cookie: the connectivity checks between the peers' ephemeral",
        "        ports (the stun_udp heuristic is on by default; the option makes sure)",
        f"    tshark -r {example} --enable-heuristic stun_udp -Y stun -V -t e",
        "        every attribute (USERNAME, PRIORITY, USE-CANDIDATE, XOR-MAPPED-ADDRESS...), epoch timestamps",
        "    over TCP (TURN over TCP when UDP is blocked): --enable-heuristic stun_tcp, or -d tcp.port==PORT,stun",
        "",
        "REPRO",
        f"  {repro or '(none)'}",
        "",
    ]
    return "\n".join(lines)


def _run_quietly(lab: Lab, node: str, command: str) -> str:
    try:
        return lab.run(node, command)
    except RuntimeError as exc:
        return str(exc)


@dataclass
class LabServer:
    """The cell's STUN/TURN server (icelab's, on the host holding the spec's ``turn``/``stun_primary`` address)."""

    address: tuple[str, int]
    turn: bool
    udp_blocked: dict[str, bool]
    """Per peer: is UDP blocked on its way out (so it reaches TURN over TCP)?"""
    tcp: bool = False
    """The server listens on TCP too (a peer's UDP is blocked, or the cell gathers TCP candidates: Binding over
    TCP)."""
    runner: Any = None
    process: subprocess.Popen[bytes] | None = None
    """coturn, when the cell asks for it."""
    workdir: Path | None = None
    lab: Lab | None = None
    host: str = ""
    """The lab host the server runs in."""

    async def start_turn(self) -> None:
        """icelab's TURN server in the lab (TCP too when a peer's UDP is blocked)."""
        from ice.aio.turn_server import TurnServerRunner
        from ice.turn.server import TurnServerConfig

        lab, host = self.lab, self.host
        assert lab is not None
        self.runner = TurnServerRunner(
            TurnServerConfig(self.address, users={"alice": "secret"}, software="icelab lab"), self.address[0],
            make_socket=lambda f: lab.socket(host, f),
            make_stream_socket=lambda f: lab.socket(host, f, socket.SOCK_STREAM))
        await self.runner.start(tcp=self.tcp)

    async def restart_turn(self) -> None:
        """A new TURN server on the same address: every allocation is gone (its clients get 437)."""
        if self.runner is not None:
            self.runner.close()
        await asyncio.sleep(0)  # let the old sockets close before the new ones bind
        await self.start_turn()

    def stats(self) -> dict[str, Any]:
        from ice.aio.turn_server import TurnServerRunner

        if self.process is not None:
            return {"kind": "coturn"}
        server = self.runner.core.stats if isinstance(self.runner, TurnServerRunner) else self.runner.server.stats
        return {"kind": "turn" if self.turn else "stun", **server}

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


COTURN_DENIED_PEERS = ("10.0.0.0-10.255.255.255", "172.16.0.0-172.31.255.255", "192.168.0.0-192.168.255.255",
                       "100.64.0.0-100.127.255.255")
"""Private ranges coturn refuses as peers (403 to CreatePermission), as its operators are told to configure it.
Without them coturn relays checks towards the peers' private host candidates, gets ENETUNREACH from the lab's
public host (it has no route there) and drops the allocation's relay socket."""

COTURN_READY_S = 5.0
"""How long coturn may take to answer its first Binding request in the lab."""


async def _start_coturn(lab: Lab, host: str, server: LabServer) -> None:
    """Debian's coturn (``turnserver``) on the cell's TURN address, long-term credentials alice/secret, relaying
    on the same address; ready when it answers a Binding request from inside its own namespace."""
    if shutil.which("turnserver") is None:
        raise RuntimeError("coturn is not installed (Debian: coturn; scripts/provision.sh installs it)")
    ip, port = server.address
    work = Path(tempfile.mkdtemp(prefix="icelab-coturn-"))
    server.workdir = work
    server.process = lab.popen(host, [
        "turnserver", "-n", f"--listening-ip={ip}", f"--relay-ip={ip}", f"--listening-port={port}",
        "--min-port=49152", "--max-port=65535", "--no-tls", "--no-dtls", "--no-cli", "--lt-cred-mech",
        "--realm=icelab", "--user=alice:secret", "--fingerprint", f"--db={work}/turndb.sqlite",
        f"--pidfile={work}/turnserver.pid", "--log-file=stdout", "--simple-log", "--no-rfc5780",
        *[f"--denied-peer-ip={r}" for r in COTURN_DENIED_PEERS],
        *(["--no-tcp"] if not server.tcp else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from ice.lab.stun import LabEndpoint
    from ice.stun.transaction import RetransmissionConfig

    loop = asyncio.get_running_loop()
    deadline = loop.time() + COTURN_READY_S
    probe = await LabEndpoint(lab, host, RetransmissionConfig(rto=0.05, rc=2, rm=2)).open((ip, 0))
    try:
        while True:
            try:
                await probe.binding((ip, port))
                return
            except (StunTimeout, StunErrorResponse, OSError):
                if server.process.poll() is not None or loop.time() > deadline:
                    raise RuntimeError(f"coturn did not answer on {ip}:{port} within {COTURN_READY_S:g} s") \
                        from None
                await asyncio.sleep(0.05)
    finally:
        probe.close()


async def start_server(lab: Lab, spec: TopologySpec, cell: Cell) -> LabServer:
    """Start the cell's server in the lab (icelab's TURN server when the cell has ``turn``, else its STUN server;
    coturn when the cell says ``server = "coturn"``), listening on TCP too when a peer's UDP is blocked."""
    from ice.lab.stun import start_stun_server

    fabric = Fabric(spec)
    turn_addr = spec.address("turn" if "turn" in spec.facts else "stun_primary")
    server_host = fabric.owner(turn_addr[0])
    assert server_host is not None, f"no host holds the server address {turn_addr[0]}"
    nats = spec.nat_behaviours()
    udp_blocked = {peer: any(nats[n].kind is NatKind.UDP_BLOCKED
                             for n in fabric.walk(peer, turn_addr[0]).translated_by) for peer in "ab"}
    tcp = any(udp_blocked.values()) or cell.transports != "udp"
    server = LabServer(turn_addr, cell.turn, udp_blocked, tcp, lab=lab, host=server_host)
    if cell.server == "coturn":
        await _start_coturn(lab, server_host, server)
    elif cell.turn or tcp:  # icelab's TURN server answers Binding (over TCP too) without any allocation
        await server.start_turn()
    else:
        server.runner = await start_stun_server(lab, server_host)
    return server


UDP_BLOCK_TABLE = "icelab_udp_blocked"
"""The nftables table of a ``udp_blocked`` cell, inside the peers' hosts (removed after the cell)."""


def block_peer_udp(lab: Lab, spec: TopologySpec) -> Callable[[], None]:
    """``udp_blocked``: in hosts a and b, drop UDP sent to anything but the STUN/TURN server and UDP received from
    anything else (IPv6 UDP entirely: the servers are IPv4); returns what removes the rules."""
    servers = sorted({spec.address(f)[0] for f in ("stun_primary", "stun_alternate", "turn") if f in spec.facts})
    allowed = "{ " + ", ".join(servers) + " }"
    rules = (f"table inet {UDP_BLOCK_TABLE} {{ "
             f"chain out {{ type filter hook output priority 0; meta nfproto ipv4 meta l4proto udp ip daddr != "
             f"{allowed} drop; meta nfproto ipv6 meta l4proto udp drop; }}; "
             f"chain in {{ type filter hook input priority 0; meta nfproto ipv4 meta l4proto udp ip saddr != "
             f"{allowed} drop; meta nfproto ipv6 meta l4proto udp drop; }}; }}")
    for host in ("a", "b"):
        lab.run(host, f"nft delete table inet {UDP_BLOCK_TABLE} 2>/dev/null; echo '{rules}' | nft -f -")

    def remove() -> None:
        for host in ("a", "b"):
            _run_quietly(lab, host, f"nft delete table inet {UDP_BLOCK_TABLE} 2>/dev/null; true")

    return remove


async def _connect(lab: Lab, spec: TopologySpec, cell: Cell, timers: MatrixTimers = TIMERS) -> _Outcome:
    """Two Connections in the lab's hosts ``a`` and ``b`` (on every address each has), signalled in-process; the
    lab runs ``spec`` (the cell's NATs: a reused lab's own spec names the NATs it was built with); the
    STUN/TURN server on the host holding the spec's ``turn``/``stun_primary`` address. Measures from both having
    the other's credentials until both selected a pair, then checks that
    data flows both ways on it."""
    from ice.turn.client import TurnClientConfig

    fabric = Fabric(spec)
    loop = asyncio.get_running_loop()
    config = agent_config(cell.nomination_mode, cell.consent_timeout, cell.keepalive)
    traces: dict[str, list[dict[str, object]]] = {"a": [], "b": []}
    held: dict[str, list[Candidate]] = {"a": [], "b": []}
    out = _Outcome(PathKind.NONE, traces=traces)
    lossy = cell.lossy
    t0 = loop.time()
    server: LabServer | None = None

    def connection(name: str, controlling: bool) -> Connection:
        assert server is not None
        blocked = server.udp_blocked[name]
        tcp = blocked or cell.transports == "tcp"  # a TCP-only peer reaches its TURN server over TCP too
        turn = (TurnClientConfig(server.address, "alice", "secret", transport="tcp" if tcp else "udp")
                if cell.turn else None)
        types = cell.tcp_types_a if name == "a" else cell.tcp_types_b
        return Connection(controlling, config, bind=fabric.addresses(name),
                          stun_servers=[] if blocked else [server.address],
                          make_socket=lambda f: lab.socket(name, f),
                          make_stream_socket=lambda f: lab.socket(name, f, socket.SOCK_STREAM),
                          turn=turn, relay_only=cell.relay_only, transports=cell.transports,
                          tcp_types=[TcpType(t) for t in types])

    conns: dict[str, Connection] = {}

    def signalling(name: str, peer: Connection) -> Callable[[Event], None]:
        def on_event(ev: Event) -> None:
            traces[name].append({"t": round(loop.time() - t0, 6), **event_record(ev)})
            if isinstance(ev, CandidateGathered):
                if cell.trickle:
                    peer.add_remote_candidate(ev.candidate)
                else:
                    held[name].append(ev.candidate)
            elif isinstance(ev, GatheringComplete):
                for cand in held[name]:
                    peer.add_remote_candidate(cand)
                peer.add_remote_candidate(None)
            elif isinstance(ev, NetworkChangeRestart):
                answer_network_restart(conns[name], peer)

        return on_event

    closing: list[Callable[[], None]] = []
    try:
        server = await start_server(lab, spec, cell)
        closing.append(server.close)
        if cell.udp_blocked:
            closing.append(block_peer_udp(lab, spec))
        a = connection("a", cell.controlling in ("a", "both"))
        closing.append(a.close)
        b = connection("b", cell.controlling in ("b", "both"))
        closing.append(b.close)
        a.on_event = signalling("a", b)
        b.on_event = signalling("b", a)
        conns.update(a=a, b=b)
        t0, wall = loop.time(), time.time()
        for name in traces:
            traces[name].append(trace_header(name, cell, wall))
        a.set_remote_credentials(b.ufrag, b.pwd)
        b.set_remote_credentials(a.ufrag, a.pwd)
        gathering = asyncio.gather(a.gather(), b.gather())
        closing.append(functools.partial(_cancel, gathering))
        timeout = timers.connect_for(lossy)
        try:
            sel_a, sel_b = await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), timeout)
        except Exception as exc:
            out.reason = (f"no pair selected within {timeout:.0f} s" if isinstance(exc, TimeoutError)
                          else f"ICE failed: {exc}")
            return out
        out.seconds = loop.time() - t0
        out.selected, out.selected_b = pair_text(sel_a.local, sel_a.remote), pair_text(sel_b.local, sel_b.remote)
        over_tcp = {side: cell.transports == "tcp" or server.udp_blocked[side] for side in "ab"}
        if sel_a.local.type is CandidateType.RELAYED and over_tcp["a"]:
            out.selected += " (TURN over TCP)"  # the relayed candidate is a UDP allocation reached over TCP
        if sel_b.local.type is CandidateType.RELAYED and over_tcp["b"]:
            out.selected_b += " (TURN over TCP)"
        out.selected_types = f"{sel_a.local.type.value}-{sel_a.remote.type.value}"
        try:
            got = await asyncio.wait_for(_exchange_data(a, b, timers.data_resend), timers.data_for(lossy))
        except TimeoutError:
            out.reason = "a pair was selected but data did not flow on it"
            return out
        if list(got) != [b"a->b", b"b->a"]:
            out.reason = f"data arrived garbled: {got!r}"
            return out
        out.observed = path_of(sel_a, sel_b)
        await gathering
        if cell.bulk is not None:
            await _run_bulk(a, b, cell, out)
        if cell.timeline:
            await _run_timeline(lab, cell, server, a, b, out)
        return out
    finally:
        if len(closing) >= 3 + cell.udp_blocked:  # both connections exist: record what they saw, whatever happened
            out.succeeded = sorted(f"{x}-{y}" for x, y in a.agent.valid_pair_types())
            out.stats = {"a": dict(a.agent.stats), "b": dict(b.agent.stats),
                         "pairs": {"a": {k: dict(v) for k, v in a.agent.pair_stats.items()},
                                   "b": {k: dict(v) for k, v in b.agent.pair_stats.items()}}}
        if server is not None:
            out.stats["server"] = server.stats()
        for close in reversed(closing):
            close()
        await asyncio.sleep(0)  # let the transports' close callbacks run before the loop goes


FAULT_TABLE = "icelab_fault"
"""The nftables table a timeline's blocks live in, inside the peers' hosts (removed after the cell)."""
LINK_FAULT_TABLE = "icelab_fault_link"
"""The netdev table of a timeline's extra link loss, on both ends of host a's access link (removed after)."""


class LabTimeline(TimelineNetwork):
    """The timeline's network actions in the kernel lab: blocks as nftables rules inside the peers' hosts (output:
    what the host sends; input too for the server), a NAT reboot as the NAT's rules reloaded and its conntrack
    flushed, a renumber as ``ip addr`` inside the peer's host, the data stream on the real clock through both
    Connections."""

    def __init__(self, lab: Lab, server: LabServer, conns: dict[str, Connection], restart_on_failure: bool) -> None:
        super().__init__(restart_on_failure=restart_on_failure)
        self.lab, self.server, self.server_ip, self.conns = lab, server, server.address[0], conns
        self.blocks: set[tuple[str, str]] = set()
        self._lossy_nodes: set[str] = set()
        self._loop = asyncio.get_running_loop()
        self._receivers = [asyncio.ensure_future(self._receive(side)) for side in conns]
        self._fabric = Fabric(lab.spec)
        """Where the hosts' addresses are now (a renumber moves one)."""
        self._renumbered: list[tuple[str, str, ipaddress.IPv4Interface, ipaddress.IPv4Interface]] = []

    async def _receive(self, side: str) -> None:
        while True:
            if not is_bulk(await self.conns[side].recv()):  # a straggler of the bulk phase is not the stream's
                self.on_data(side)

    def close(self) -> None:
        for task in self._receivers:
            task.cancel()
        for host in self.conns:
            self.lab.run(host, f"nft delete table inet {FAULT_TABLE} 2>/dev/null; true")
        if self._lossy_nodes:
            self.link_loss(0.0)
        self.lab.reset_links()
        self._restore_addresses()

    def set_link(self, changes: Mapping[str, float]) -> None:
        """Host a's access link(s) get these conditions: nft loss rules and tbf qdiscs replaced on both ends, the
        delay forwarder told its new delay (the cell's lab has one there when a step changes the delay)."""
        for i, _ in self.lab.spec.ends("a"):
            self.lab.set_link(i, self.lab.link_conditions(i).changed(changes))

    def link_loss(self, loss: float) -> None:
        """nftables ingress rules on both ends of host a's access link(s), in a table of their own."""
        from ice.topology.spec import LinkConditions

        spec = self.lab.spec
        chains: dict[str, list[str]] = {}
        for i, _ in spec.ends("a"):
            link = spec.links[i]
            for end in (link.a, link.b):
                chains.setdefault(end.node, []).append(self.lab.interfaces[(i, end.node)])
        rule = LinkConditions(loss=loss).loss_rule() if loss else None
        for node, intfs in chains.items():
            cmd = f"nft delete table netdev {LINK_FAULT_TABLE} 2>/dev/null; true"
            if rule:
                body = "".join(f"chain in_{intf.replace('-', '_')} {{ type filter hook ingress device \"{intf}\" "
                               f"priority 1; {rule}; }}; " for intf in intfs)
                cmd += f"; echo '{'table netdev ' + LINK_FAULT_TABLE + ' { ' + body + '}'}' | nft -f -"
            self.lab.run(node, cmd)
        self._lossy_nodes = set(chains) if rule else set()

    def now(self) -> float:
        return self._loop.time()

    async def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        end = self.now() + seconds
        while self.now() < end:
            self.tick()
            if stop is not None and stop():
                return
            await asyncio.sleep(min(TICK, max(0.0, end - self.now())))

    def block(self, what: str, direction: str, on: bool) -> None:
        keys = {("turn", "both")} if what == "turn" else {("direct", s) for s in "ab"} if direction == "both" else \
            {("direct", direction[0])}
        self.blocks = self.blocks | keys if on else self.blocks - keys
        for host in self.conns:
            out = [f"ip daddr != {self.server_ip} meta l4proto udp drop"] if ("direct", host) in self.blocks else []
            inp = []
            if ("turn", "both") in self.blocks:
                out.append(f"ip daddr {self.server_ip} drop")
                inp.append(f"ip saddr {self.server_ip} drop")
            rules = (f"table inet {FAULT_TABLE} {{ chain out {{ type filter hook output priority 0; "
                     + "".join(f"{r}; " for r in out) + "}; chain in { type filter hook input priority 0; "
                     + "".join(f"{r}; " for r in inp) + "}; }")
            self.lab.run(host, f"nft delete table inet {FAULT_TABLE} 2>/dev/null; echo '{rules}' | nft -f -")

    def nat_reboot(self, node: str) -> None:
        self.lab.set_nat(node, self.lab.behaviour(node))

    async def turn_restart(self) -> None:
        await self.server.restart_turn()

    def restart_agents(self) -> None:
        a, b = self.conns["a"], self.conns["b"]
        a.restart()
        b.restart()
        for x, y in ((a, b), (b, a)):
            y.set_remote_credentials(x.ufrag, x.pwd)
            for cand in x.local_candidates:
                y.add_remote_candidate(cand)
            y.add_remote_candidate(None)

    def send(self, side: str, data: bytes) -> bool:
        try:
            self.conns[side].send(data)
        except NotConnected:  # no selected pair, or consent lost (RFC 7675 §5.1: stop sending)
            return False
        return True

    def renumber(self, side: str) -> str:
        """``ip addr`` in the peer's namespace: its address off the interface, a spare one of the subnet on
        (:meth:`Fabric.spare_address`, as the sim picks it), the host's routes back (they left with the old
        address). Sockets on the old address are dead from here; the peer's Connection notices on its next send
        (:class:`~ice.aio.connection.NetworkPolicy`). :meth:`close` puts the old address back."""
        fabric = self._fabric
        old = fabric.addresses(side)[0]
        _, iface = fabric.owners[old]
        held = next(a for a in iface.addresses if str(a.ip) == old)
        new = fabric.spare_address(old)
        intf = self.lab.interfaces[(iface.link, side)]
        self._renumbered.append((side, intf, held, new))
        self._move_address(side, intf, held, new)
        fabric.move_address(old, new)
        return f"{old} -> {new.ip}"

    def _move_address(self, host: str, intf: str, old: ipaddress.IPv4Interface, new: ipaddress.IPv4Interface) -> None:
        routes = "".join(f" && ip route replace {dest} via {via}" for dest, via in self.lab.spec.node(host).routes)
        self.lab.run(host, f"ip addr del {old} dev {intf} && ip addr add {new} dev {intf}{routes}")

    def _restore_addresses(self) -> None:
        """Every renumbered host back on its own address (the lab is reused by the next cell)."""
        while self._renumbered:
            host, intf, old, new = self._renumbered.pop()
            self._move_address(host, intf, new, old)

    def ufrags(self) -> tuple[str, str]:
        return self.conns["a"].ufrag, self.conns["b"].ufrag

    def network_restarts(self) -> int:
        return sum(conn.agent.stats["network-changes"] for conn in self.conns.values())

    def relayed(self, side: str) -> bool:
        sel = self.conns[side].agent.selected
        return sel is not None and CandidateType.RELAYED in (sel.local.type, sel.remote.type)

    def agent(self, side: str) -> IceAgent:
        return self.conns[side].agent


def answer_network_restart(moved: Connection, peer: Connection) -> None:
    """What the application does when ``moved``'s new credentials (it restarted ICE on a network change,
    :meth:`Connection.network_changed`) arrive over signalling: a changed ufrag is an ICE restart, so ``peer``
    restarts too unless it already did (RFC 8839 §4.4.1.1.1), each side takes the other's credentials and current
    candidates (peer-reflexive ones are never signalled, RFC 8445 §7.2.5.3.1), and ``peer``'s end-of-candidates
    goes along; ``moved``'s follows when its gathering ends. The sim's ``SimPair`` answers the same way."""
    if peer.agent.remote_ufrag is not None:
        peer.restart()
    peer.set_remote_credentials(moved.ufrag, moved.pwd)
    moved.set_remote_credentials(peer.ufrag, peer.pwd)
    for x, y in ((moved, peer), (peer, moved)):
        for cand in x.local_candidates:
            if cand.type is not CandidateType.PEER_REFLEXIVE:
                y.add_remote_candidate(cand)
    if peer.agent.gathering_complete:
        moved.add_remote_candidate(None)


async def _run_timeline(lab: Lab, cell: Cell, server: LabServer, a: Connection, b: Connection,
                        out: _Outcome) -> None:
    """The cell's timeline after it connected (:mod:`ice.scenario.timeline`); its steps and the data counts go
    into the cell's record, a step not met into its reason."""
    net = LabTimeline(lab, server, {"a": a, "b": b}, cell.restart_on_failure)
    try:
        steps = await run_timeline(cell.timeline, net)
    finally:
        net.close()
    out.extra["timeline"] = [s.as_json() for s in steps]
    out.extra["timeline_data"] = net.counts()
    out.reason = timeline_verdict(steps, cell.timeline)
    if out.reason:
        out.extra["timeline_error"] = out.reason


async def _run_bulk(a: Connection, b: Connection, cell: Cell, out: _Outcome, settings: BulkSettings = BULK) -> None:
    """The cell's bulk phase in real time (:mod:`ice.scenario.bulk`): A sends over its selected pair as the
    window allows, B counts and acknowledges; the figures go into the cell's record, a band missed into its
    reason."""
    assert cell.bulk is not None
    loop = asyncio.get_running_loop()
    transfer = BulkTransfer(cell.bulk.count(settings), loop.time(), settings)
    room = asyncio.Event()

    async def receive() -> None:
        while True:
            ack = transfer.on_receiver(loop.time(), await b.recv())
            if ack is not None:
                with contextlib.suppress(NotConnected):  # consent lost: A gives the datagram up in time
                    b.send(ack)

    async def acknowledged() -> None:
        while True:
            if transfer.on_sender(loop.time(), await a.recv()):
                room.set()

    tasks = [asyncio.ensure_future(receive()), asyncio.ensure_future(acknowledged())]
    deadline = loop.time() + settings.deadline
    try:
        while not transfer.done and loop.time() < deadline:
            transfer.on_timeout(loop.time())
            batch = transfer.to_send(loop.time())
            for i, data in enumerate(batch):
                try:
                    a.send(data)
                except NotConnected:
                    transfer.unsent(len(batch) - i)
                    break
            room.clear()
            wake = min(deadline, transfer.next_timeout() or deadline)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), max(0.0, wake - loop.time()))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.extra["bulk"] = figures = transfer.figures(out.observed.value, loop.time())
    error = cell.bulk.verdict(figures)
    if error:
        out.extra["bulk_error"] = error


async def _exchange_data(a: Connection, b: Connection, resend: float) -> list[bytes]:
    """One datagram each way on the selected pairs, sent again every ``resend`` until it arrives (links lose)."""

    async def one_way(src: Connection, dst: Connection, data: bytes) -> bytes:
        receiving = asyncio.ensure_future(dst.recv())
        try:
            while True:
                src.send(data)
                done, _ = await asyncio.wait({receiving}, timeout=resend)
                if done:
                    return receiving.result()
        finally:
            receiving.cancel()

    return list(await asyncio.gather(one_way(a, b, b"a->b"), one_way(b, a, b"b->a")))


__all__ = ["LabBackend", "event_record", "lab_key", "path_of"]
