"""``icelab bench connect``: ICE connect latency of icelab, aioice, libnice and pion, each against itself, side by
side in one run: on loopback (host candidates) and through two port-restricted NATs in the kernel lab (the
``linux-masquerade`` preset on both sides: MASQUERADE with WAN input dropped; srflx candidates from icelab's STUN
server on the public side; conntrack flushed between connections).

Every stack runs as a process on the agent protocol (docs/agent-protocol.md), A controlling and B controlled.
Both gather completely first; then the harness hands each the other's credentials and candidates, and the clock
runs from that moment (the start of checks) until both have printed ``selected`` ("completed"; "first_usable" is
the earlier of the two). Process start-up and gathering are outside the measurement. CPU time is what the two
processes spent in between (user + system, from /proc).

The ratio is icelab's median over the fastest foreign stack's median (lower is better).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
from collections.abc import Callable, Sequence

from bench.stacks import choose, cpu_seconds, ratio
from ice.agents.line import AgentError, AgentProcess
from ice.agents.registry import BUILTIN

RUNS = 30
WARMUP = 2
CONNECT_TIMEOUT = 20.0


async def _gathered(agent: AgentProcess, timeout: float) -> tuple[str, list[str]]:
    """Read until ``local-end-of-candidates``: the credentials line and the candidates."""
    creds, cands = "", []
    while True:
        r = await agent.next(timeout, what="local-end-of-candidates")
        if r.verb == "local-credentials":
            creds = r.rest
        elif r.verb == "local-candidate":
            cands.append(r.rest)
        elif r.verb == "local-end-of-candidates":
            return creds, cands


async def _selected(agent: AgentProcess, timeout: float) -> float:
    while True:
        r = await agent.next(timeout, what="selected")
        if r.verb == "selected":
            return r.at
        if r.verb == "state" and r.rest.strip() == "failed":
            raise AgentError(f"{agent.hello.stack} reported ICE failed")


async def one_run(argv: Sequence[str], prefix_a: Sequence[str], prefix_b: Sequence[str],
                  settings_a: list[tuple[str, ...]], settings_b: list[tuple[str, ...]]) -> dict[str, float]:
    a = await AgentProcess.spawn(argv, "a", prefix=prefix_a)
    try:
        b = await AgentProcess.spawn(argv, "b", prefix=prefix_b)
    except BaseException:
        await a.close(0)
        raise
    try:
        for agent, settings in ((a, settings_a), (b, settings_b)):
            for setting in settings:
                refused = await agent.set(*setting)
                if refused:
                    raise AgentError(f"{agent.hello.stack} refused 'set {setting[0]}': {refused}")
            agent.write("start")
        (ca, la), (cb, lb) = await asyncio.gather(_gathered(a, CONNECT_TIMEOUT), _gathered(b, CONNECT_TIMEOUT))
        cpu0 = cpu_seconds(a.proc.pid) + cpu_seconds(b.proc.pid)
        t0 = asyncio.get_running_loop().time()
        for me, creds, cands in ((a, cb, lb), (b, ca, la)):
            me.write(f"remote-credentials {creds}")
            for cand in cands:
                me.write(f"remote-candidate {cand}")
            me.write("remote-end-of-candidates")
        ta, tb = await asyncio.gather(_selected(a, CONNECT_TIMEOUT), _selected(b, CONNECT_TIMEOUT))
        cpu = cpu_seconds(a.proc.pid) + cpu_seconds(b.proc.pid) - cpu0
        return {"first_usable": min(ta, tb) - t0, "completed": max(ta, tb) - t0, "cpu": cpu}
    finally:
        await asyncio.gather(a.close(0), b.close(0))


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 3), "p95_ms": round(p95 * 1000, 3),
            "min_ms": round(ordered[0] * 1000, 3)}


async def measure(stacks: list[str], runs: int, quiet: bool, where: str, prefix: dict[str, list[str]],
                  settings: dict[str, list[tuple[str, ...]]], between: Callable[[], None] | None = None
                  ) -> dict[str, object]:
    """Each stack against itself, ``runs`` times (after warm-up), interleaved so drift hits all alike."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in stacks}
    failures: dict[str, str] = {}
    for i in range(WARMUP + runs):
        for name in stacks:
            if name in failures:
                continue
            if between is not None:
                between()  # fresh NAT state for every connection
            try:
                r = await one_run(BUILTIN[name].argv(), prefix["a"], prefix["b"], settings["a"], settings["b"])
            except (AgentError, TimeoutError) as exc:
                failures[name] = str(exc)
                continue
            if i >= WARMUP:
                results[name].append(r)
                if not quiet:
                    print(f"  {where:<8} run {i - WARMUP + 1:>2} {name:<8} completed {r['completed'] * 1000:9.3f} ms",
                          file=sys.stderr, flush=True)
    out: dict[str, object] = {}
    for name, rs in results.items():
        if name in failures or not rs:
            out[name] = {"error": failures.get(name, "no runs")}
            continue
        out[name] = {"completed": _stats([r["completed"] for r in rs]),
                     "first_usable": _stats([r["first_usable"] for r in rs]),
                     "median_ms": _stats([r["completed"] for r in rs])["median_ms"],
                     "p95_ms": _stats([r["completed"] for r in rs])["p95_ms"],
                     "cpu_ms_per_connection": round(statistics.median(r["cpu"] for r in rs) * 1000, 3)}
    return out


def _loopback(stacks: list[str], runs: int, quiet: bool) -> dict[str, object]:
    settings = {"a": [("role", "controlling"), ("bind", "127.0.0.1")],
                "b": [("role", "controlled"), ("bind", "127.0.0.1")]}
    results = asyncio.run(measure(stacks, runs, quiet, "loopback", {"a": [], "b": []}, settings))
    return {"topology": "loopback, host candidates", "results": results, **ratio(results, "median_ms")}


def _nat(stacks: list[str], runs: int, quiet: bool) -> dict[str, object]:
    import subprocess

    from ice.cli import isolate
    from ice.lab.mn import Lab, require_lab
    from ice.lab.netns import nsenter
    from ice.topology.registry import topology

    require_lab()
    isolate()
    spec = topology("two_nats", "linux-masquerade", "linux-masquerade")
    with Lab(spec) as lab:
        stun = spec.facts["stun_primary"]
        host, port = spec.address("stun_primary")
        lab.popen("stun", [sys.executable, "-m", "ice.cli", "server", "stun", "--listen", stun],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        settings = {side: [("role", "controlling" if side == "a" else "controlled"), ("bind", spec.facts[side]),
                           ("stun", host, str(port))] for side in "ab"}
        results = asyncio.run(measure(stacks, runs, quiet, "nat", {s: nsenter(lab.pid(s)) for s in "ab"},
                                      settings, between=lab.reset))
    return {"topology": "two linux-masquerade NATs (port-restricted, WAN input dropped), srflx from icelab's "
                        "STUN server", "results": results, **ratio(results, "median_ms")}


def main(args: argparse.Namespace) -> int:
    stacks = choose(getattr(args, "peers", None) or "all")
    runs = int(getattr(args, "runs", None) or RUNS)
    where = getattr(args, "where", None) or "both"
    doc: dict[str, object] = {
        "benchmark": "connect",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "runs": runs,
        "measured": "start of checks (both sides given the other's credentials and candidates) to a selected pair "
                    "on both sides",
        "goal": "loopback: icelab's median at most the fastest foreign stack's (ratio <= 1); through the NATs: at "
                "most 0.15 of it",
    }
    if where in ("both", "loopback"):
        doc["loopback"] = _loopback(stacks, runs, bool(args.json))
    if where in ("both", "nat"):
        doc["nat"] = _nat(stacks, runs, bool(args.json))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    for place in ("loopback", "nat"):
        part = doc.get(place)
        if not isinstance(part, dict):
            continue
        print(f"{place}: {part['topology']}")
        for name, r in part["results"].items():
            if "error" in r:
                print(f"  {name:<8} failed: {r['error']}")
                continue
            print(f"  {name:<8} median {r['median_ms']:9.3f} ms, p95 {r['p95_ms']:9.3f} ms; "
                  f"cpu {r['cpu_ms_per_connection']} ms per connection")
        if part["ratio"] is not None:
            print(f"  ratio icelab / {part['fastest_foreign']} (median, lower is better): {part['ratio']:.4f}")
    return 0
