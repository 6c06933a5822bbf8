"""``icelab bench throughput``: datagrams per second over the selected pair of icelab, aioice, libnice and pion, each
against itself, side by side in one run, on loopback: direct (host candidates) and relayed (both sides relay-only
through icelab's TURN server, running in this process on the same event loop kind as ``icelab server turn``).

Every stack runs as a process on the agent protocol (docs/agent-protocol.md, the ``bulk`` feature), A controlling
and B controlled. All pairs of one path are connected first; then bursts go from A to B, one stack after the other
and round after round (a warm-up round first, not counted), so drift on a loaded machine hits every stack alike.
A burst is ``--count`` datagrams of ``--size`` bytes sent as fast as the sender's stack takes them, with no pacing:
what the receiver counts per second from its first to its last datagram is the pair's throughput, and what it
misses is loss (the sender outran it, or the relay). Mbit/s counts the datagrams' payload only (no UDP, IP or TURN
headers). CPU time per datagram (each agent process's threads, from /proc, over the burst: the sender's per
datagram sent, the receiver's per datagram received; relayed, also this process's, which is mostly the TURN
server's, per datagram received) says what each datagram costs; it depends far less than the rates on what else
the machine runs. Each figure is the median of the rounds.

The ratio is icelab's median Mbit/s over the best foreign stack's (higher is better).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from bench.stacks import choose, cpu_seconds, ratio
from ice.agents.line import AgentError, AgentProcess
from ice.agents.pair import BulkRun, PairRun, SideSetup, SideState, TurnSetting, bulk, close, connect, prepare
from ice.agents.registry import BUILTIN

COUNT = 50_000
SIZE = 1200
"""A typical WebRTC payload size: it fits a 1280-byte IPv6 minimum MTU with headers to spare."""
RUNS = 7
WARMUP = 1
GRACE = 0.25
"""Seconds after ``bulk-sent`` for the receiver to read what is still queued, before ``bulk-report``."""
CONNECT_TIMEOUT = 20.0
LOOPBACK = ("127.0.0.1",)
PATHS = {"direct": "loopback, host candidates",
         "relayed": "loopback, both sides relay-only through icelab's TURN server (UDP, in the benchmark's process)"}


@contextlib.asynccontextmanager
async def _turn_server() -> AsyncIterator[TurnSetting]:
    """icelab's TURN server on an ephemeral loopback port, loopback peers allowed."""
    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.server import TurnServerConfig

    runner = TurnServerRunner(TurnServerConfig(("127.0.0.1", 0), users={"bench": "bench-secret"},
                                               allowed_peers=("127.0.0.0/8",)), "127.0.0.1")
    await runner.start(tcp=False)
    try:
        yield TurnSetting("127.0.0.1", runner.address[1], "bench", "bench-secret", "udp")
    finally:
        runner.close()


async def _open(name: str, turn: TurnSetting | None) -> PairRun:
    """Two agents of one stack, connected (relay-only through ``turn`` when given); AgentError when they cannot."""
    argv = BUILTIN[name].argv()
    a = await AgentProcess.spawn(argv, "a")
    try:
        b = await AgentProcess.spawn(argv, "b")
    except BaseException:
        await a.close(0)
        raise
    relay_only = turn is not None
    run = PairRun(SideState(a, SideSetup("controlling", LOOPBACK)), SideState(b, SideSetup("controlled", LOOPBACK)))
    try:
        if "bulk" not in a.hello.features:
            raise AgentError(f"{name} does not list the bulk feature")
        run = await prepare(a, b, SideSetup("controlling", LOOPBACK, turn=turn, relay_only=relay_only),
                            SideSetup("controlled", LOOPBACK, turn=turn, relay_only=relay_only))
        if run.unsupported:
            raise AgentError(run.unsupported)
        await connect(run, CONNECT_TIMEOUT)
        if run.reason:
            raise AgentError(run.reason)
        if relay_only and not run.relayed:
            raise AgentError(f"{name} relay-only selected {run.a.selected.text if run.a.selected else 'nothing'}")
    except BaseException:
        await close(run)
        raise
    return run


@dataclass(frozen=True)
class Burst:
    """One measured burst and the CPU seconds the sender and the receiver spent on it."""

    run: BulkRun
    sender_cpu: float
    receiver_cpu: float
    relay_cpu: float
    """This process's (the TURN server's, relayed; the harness's own share is small)."""


async def _burst(run: PairRun, count: int, size: int, timeout: float) -> Burst:
    a, b = run.a.agent.proc.pid, run.b.agent.proc.pid
    cpu_a, cpu_b, cpu_here = cpu_seconds(a), cpu_seconds(b), time.process_time()
    burst = await bulk(run.a, run.b, count, size, timeout=timeout, grace=GRACE)
    return Burst(burst, cpu_seconds(a) - cpu_a, cpu_seconds(b) - cpu_b, time.process_time() - cpu_here)


def _us_per(seconds: float, datagrams: int) -> float | None:
    return round(seconds / datagrams * 1e6, 2) if datagrams else None


def _summary(measured: list[Burst], relayed: bool) -> dict[str, object]:
    """Medians over the measured bursts (a burst with fewer than two datagrams received counts as 0/s)."""
    bursts = [m.run for m in measured]
    mbit = [b.mbit_per_s or 0.0 for b in bursts]
    sender = [us for m in measured if (us := _us_per(m.sender_cpu, m.run.sent.count)) is not None]
    receiver = [us for m in measured if (us := _us_per(m.receiver_cpu, m.run.received.count)) is not None]
    relay = [us for m in measured if (us := _us_per(m.relay_cpu, m.run.received.count)) is not None]
    out: dict[str, object] = {
        "mbit_per_s": round(statistics.median(mbit), 1),
        "datagrams_per_s": round(statistics.median(b.datagrams_per_s or 0.0 for b in bursts)),
        "loss_pct": round(statistics.median(b.loss for b in bursts) * 100, 1),
        "reordered": sum(b.received.reordered for b in bursts),
        "sent_per_s": round(statistics.median(b.sent.count / b.sent.seconds if b.sent.seconds > 0 else 0.0
                                              for b in bursts)),
        "sender_cpu_us_per_datagram": round(statistics.median(sender), 2) if sender else None,
        "receiver_cpu_us_per_datagram": round(statistics.median(receiver), 2) if receiver else None,
        "runs": len(bursts),
        "mbit_per_s_runs": [round(m, 1) for m in mbit],
    }
    if relayed:
        out["relay_cpu_us_per_datagram"] = round(statistics.median(relay), 2) if relay else None
    return out


async def measure(stacks: list[str], path: str, count: int, size: int, runs: int, quiet: bool) -> dict[str, object]:
    """Every stack against itself on one path: connect all, then interleaved bursts; the results and the ratio."""
    failures: dict[str, str] = {}
    pairs: dict[str, PairRun] = {}
    bursts: dict[str, list[Burst]] = {name: [] for name in stacks}
    timeout = max(30.0, count / 2000)
    async with contextlib.AsyncExitStack() as stack:
        turn = await stack.enter_async_context(_turn_server()) if path == "relayed" else None
        try:
            for name in stacks:
                try:
                    pairs[name] = await _open(name, turn)
                except AgentError as exc:
                    failures[name] = str(exc)
            for i in range(WARMUP + runs):
                for name, run in list(pairs.items()):
                    try:
                        measured = await _burst(run, count, size, timeout)
                    except AgentError as exc:
                        failures[name] = str(exc)
                        await close(pairs.pop(name))
                        continue
                    if i < WARMUP:
                        continue
                    bursts[name].append(measured)
                    burst = measured.run
                    if not quiet:
                        print(f"  {path:<8} run {i - WARMUP + 1:>2} {name:<8} {burst.mbit_per_s or 0:8.1f} Mbit/s "
                              f"{burst.datagrams_per_s or 0:>9,.0f} datagrams/s, loss {burst.loss:6.1%}",
                              file=sys.stderr, flush=True)
        finally:
            await asyncio.gather(*(close(run) for run in pairs.values()))
    results: dict[str, object] = {
        name: {"error": failures.get(name, "no bursts")} if name in failures or not bursts[name]
        else _summary(bursts[name], relayed=path == "relayed") for name in stacks}
    return {"topology": PATHS[path], "results": results, **ratio(results, "mbit_per_s", higher_is_better=True)}


def _settings(args: argparse.Namespace) -> tuple[list[str], int, int, int]:
    from ice.errors import UserError

    stacks = choose(getattr(args, "peers", None) or "all")
    count = getattr(args, "count", None) or COUNT
    size = getattr(args, "size", None) or SIZE
    runs = getattr(args, "runs", None) or RUNS
    if count < 2:
        raise UserError("--count is the datagrams per burst: at least 2")
    if not 8 <= size <= 1472:
        raise UserError("--size is a bulk datagram's size in bytes: 8 to 1472 (docs/agent-protocol.md, Bulk data)")
    if runs < 1:
        raise UserError("--runs is the measured bursts per stack and path: at least 1")
    return stacks, count, size, runs


def main(args: argparse.Namespace) -> int:
    from ice.cli.common import event_loop_policy

    stacks, count, size, runs = _settings(args)
    event_loop_policy()  # uvloop when installed: the TURN server runs as `icelab server turn` does
    quiet = bool(args.json)
    doc: dict[str, object] = {
        "benchmark": "throughput",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "count": count,
        "size": size,
        "runs": runs,
        "warmup": WARMUP,
        "measured": "datagrams counted by the receiving agent per second from its first to its last bulk datagram "
                    "(median of the runs); Mbit/s of payload; loss = 1 - received / sent",
    }
    for path in PATHS:
        doc[path] = asyncio.run(measure(stacks, path, count, size, runs, quiet))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{count:,} datagrams of {size} bytes per burst, A to B, median of {runs} bursts")
    for path in PATHS:
        part = doc[path]
        assert isinstance(part, dict)
        print(f"{path}: {part['topology']}")
        for name, r in part["results"].items():
            if "error" in r:
                print(f"  {name:<8} failed: {r['error']}")
                continue
            print(f"  {name:<8} {r['mbit_per_s']:8.1f} Mbit/s {r['datagrams_per_s']:>9,} datagrams/s, loss "
                  f"{r['loss_pct']:5.1f} %; sender {r['sent_per_s']:>9,}/s; CPU per datagram: sender "
                  f"{r['sender_cpu_us_per_datagram']} µs, receiver {r['receiver_cpu_us_per_datagram']} µs"
                  + (f", relay {r['relay_cpu_us_per_datagram']} µs" if "relay_cpu_us_per_datagram" in r else ""))
        if part["ratio"] is not None:
            print(f"  ratio icelab / {part['fastest_foreign']} (Mbit/s, higher is better): {part['ratio']:.3f}")
    return 0
