"""``icelab bench connect``: ICE connect latency, icelab vs aioice 0.13, side by side in one run (loopback).

Each run starts two line-protocol peers (A controlling, B controlled), waits until both have gathered, exchanges
candidates, writes both ``remote`` lines and measures until each prints ``connected`` ("first usable" = the first
of the two, "completed" = both). Process start-up is outside the measurement. CPU time is what the two peer
processes spent from the ``remote`` lines to completion (user + system, from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = 20
WARMUP = 2


def _cpu(pid: int) -> float:
    """Seconds on CPU of all the process's threads (schedstat is in ns; /proc/PID/stat ticks are 10 ms)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return total / 1e9


async def _peer(argv: list[str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)


async def _lines_until(proc: asyncio.subprocess.Process, stop: str) -> list[str]:
    assert proc.stdout is not None
    out = []
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not raw:
            raise RuntimeError(f"peer exited early; saw {out}")
        line = raw.decode().rstrip("\n")
        out.append(line)
        if line.startswith(stop):
            return out


async def one_run(cmd_a: list[str], cmd_b: list[str]) -> dict[str, float]:
    a, b = await asyncio.gather(_peer(cmd_a), _peer(cmd_b))
    try:
        la, lb = await asyncio.gather(_lines_until(a, "gathered"), _lines_until(b, "gathered"))
        assert a.stdin is not None and b.stdin is not None

        def creds(lines: list[str]) -> str:
            return next(x for x in lines if x.startswith("ufrag ")).split()[1] + " " + next(
                x for x in lines if x.startswith("pwd ")).split()[1]

        for line in la:
            if line.startswith("candidate "):
                b.stdin.write((line + "\n").encode())
        for line in lb:
            if line.startswith("candidate "):
                a.stdin.write((line + "\n").encode())
        await a.stdin.drain()
        await b.stdin.drain()
        cpu0 = _cpu(a.pid) + _cpu(b.pid)
        b.stdin.write(f"remote {creds(la)}\n".encode())
        a.stdin.write(f"remote {creds(lb)}\n".encode())
        await asyncio.gather(a.stdin.drain(), b.stdin.drain())
        t0 = time.perf_counter()
        done: list[float] = []

        async def wait(p: asyncio.subprocess.Process) -> None:
            await _lines_until(p, "connected")
            done.append(time.perf_counter() - t0)

        await asyncio.gather(wait(a), wait(b))
        cpu = _cpu(a.pid) + _cpu(b.pid) - cpu0
        return {"first_usable": min(done), "completed": max(done), "cpu": cpu}
    finally:
        for p in (a, b):
            if p.returncode is None:
                p.kill()
            await p.wait()


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 3), "p95_ms": round(p95 * 1000, 3),
            "min_ms": round(ordered[0] * 1000, 3)}


def _impls(ip_a: str, ip_b: str, stun: str | None, wrap_a: list[str], wrap_b: list[str]
           ) -> dict[str, tuple[list[str], list[str]]]:
    py = sys.executable
    ours = [py, "-m", "ice.cli", "peer"] + (["--stun", stun] if stun else [])
    theirs = [py, str(HERE / "peers" / "aioice_peer.py")] + (["--stun", stun] if stun else [])
    return {
        "icelab": ([*wrap_a, *ours, "--controlling", "--bind", ip_a], [*wrap_b, *ours, "--echo", "--bind", ip_b]),
        "aioice": ([*wrap_a, *theirs, "--controlling", "--ip", ip_a], [*wrap_b, *theirs, "--echo", "--ip", ip_b]),
    }


async def measure(runs: int, quiet: bool, impls: dict[str, tuple[list[str], list[str]]] | None = None,
                  between: object = None) -> dict[str, object]:
    impls = impls or _impls("127.0.0.1", "127.0.0.1", None, [], [])
    results: dict[str, list[dict[str, float]]] = {name: [] for name in impls}
    for i in range(WARMUP + runs):
        for name, (ca, cb) in impls.items():
            if callable(between):
                between()  # fresh NAT state for every connection
            r = await one_run(ca, cb)
            if i >= WARMUP:
                results[name].append(r)
                if not quiet:
                    print(f"  run {i - WARMUP + 1:>2} {name:<7} completed {r['completed'] * 1000:8.3f} ms",
                          file=sys.stderr, flush=True)
    summary: dict[str, object] = {}
    for name, rs in results.items():
        summary[name] = {
            "completed": _stats([r["completed"] for r in rs]),
            "first_usable": _stats([r["first_usable"] for r in rs]),
            "cpu_ms_per_connection": round(statistics.median(r["cpu"] for r in rs) * 1000, 3),
        }
    return summary


def _main_lab(args: argparse.Namespace, runs: int) -> int:
    """The same measurement through two Linux-router NATs (MASQUERADE + WAN input drop, the `linux-masquerade`
    preset), srflx candidates from the embedded STUN server on the public side."""
    from ice.cli import isolate
    from ice.lab.mn import Lab, require_lab
    from ice.lab.netns import nsenter
    from ice.topology.registry import topology

    require_lab()
    isolate()
    spec = topology("two_nats", "linux-masquerade", "linux-masquerade")
    with Lab(spec) as lab:
        stun = spec.facts["stun_primary"]
        lab.popen("stun", [sys.executable, "-m", "ice.cli", "server", "stun", "--listen", stun],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        impls = _impls(spec.facts["a"], spec.facts["b"], stun, nsenter(lab.pid("a")), nsenter(lab.pid("b")))
        summary = asyncio.run(measure(runs, quiet=bool(args.json), impls=impls, between=lab.reset))
    return _report(args, runs, summary, "two linux-masquerade NATs, srflx from the embedded STUN server")


def main(args: argparse.Namespace) -> int:
    try:
        import aioice  # noqa: F401
    except ImportError:
        print("icelab bench connect: aioice is not installed; run ./icelab once to provision the dev extras",
              file=sys.stderr)
        return 2
    runs = int(getattr(args, "runs", None) or RUNS)
    if getattr(args, "lab", False):
        return _main_lab(args, runs)
    summary = asyncio.run(measure(runs, quiet=bool(args.json)))
    return _report(args, runs, summary, "loopback, host candidates")


def _report(args: argparse.Namespace, runs: int, summary: dict[str, object], topology: str) -> int:
    ours = summary["icelab"]["completed"]["median_ms"]  # type: ignore[index]
    theirs = summary["aioice"]["completed"]["median_ms"]  # type: ignore[index]
    ratio = round(ours / theirs, 4) if theirs else 0.0
    doc = {
        "benchmark": "connect",
        "topology": topology,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "runs": runs,
        "results": summary,
        "ratio": ratio,
        "goal": "icelab median at most a quarter of aioice's (lower is better)",
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for name, s in summary.items():
            c = s["completed"]  # type: ignore[index]
            print(f"{name:<7} completed median {c['median_ms']:.3f} ms, p95 {c['p95_ms']:.3f} ms; "
                  f"cpu {s['cpu_ms_per_connection']} ms per connection")  # type: ignore[index]
        print(f"ratio icelab/aioice (median, lower is better): {ratio:.3f}")
    return 0
