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

``--tcp`` measures ICE-TCP (RFC 6544) instead: each stack gathers TCP candidates only (``set transports tcp``), on
loopback and through the same two NATs with UDP between the peers dropped (nftables rules inside the peers' hosts,
as a ``udp_blocked`` scenario cell has them), the server-reflexive TCP candidates from icelab's TURN server (which
answers Binding over TCP). A stack that cannot take part is listed under ``not_supported`` with the reason; one
that fails is reported failed with the time it took to say so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bench.stacks import choose, cpu_seconds, ratio
from ice.agents.line import AgentError, AgentProcess
from ice.agents.registry import BUILTIN
from ice.native import build_in_use

if TYPE_CHECKING:
    from ice.lab.mn import Lab
    from ice.topology.spec import TopologySpec

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


class RunFailed(AgentError):
    """A connection that did not complete, and how long after the start of checks that was known."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


async def _selected(agent: AgentProcess, timeout: float) -> tuple[float, str]:
    """When the agent printed ``selected`` (and the pair it printed)."""
    while True:
        r = await agent.next(timeout, what="selected")
        if r.verb == "selected":
            return r.at, r.rest
        if r.verb == "state" and r.rest.strip() == "failed":
            raise AgentError(f"{agent.hello.stack} reported ICE failed")


async def one_run(argv: Sequence[str], prefix_a: Sequence[str], prefix_b: Sequence[str],
                  settings_a: list[tuple[str, ...]], settings_b: list[tuple[str, ...]]) -> dict[str, Any]:
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
            me.write_lines([f"remote-credentials {creds}", *(f"remote-candidate {c}" for c in cands),
                            "remote-end-of-candidates"])
        try:
            (ta, pair), (tb, _) = await asyncio.gather(_selected(a, CONNECT_TIMEOUT), _selected(b, CONNECT_TIMEOUT))
        except (AgentError, TimeoutError) as exc:
            raise RunFailed(str(exc) or "no pair selected", asyncio.get_running_loop().time() - t0) from None
        cpu = cpu_seconds(a.proc.pid) + cpu_seconds(b.proc.pid) - cpu0
        return {"first_usable": min(ta, tb) - t0, "completed": max(ta, tb) - t0, "cpu": cpu, "pair": pair}
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
    """Each stack against itself, ``runs`` times (after warm-up), interleaved so drift hits all alike. A stack's
    first failure ends its runs; it is reported with the time the failure took."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in stacks}
    failures: dict[str, str] = {}
    failed_after: dict[str, float] = {}
    for i in range(WARMUP + runs):
        for name in stacks:
            if name in failures:
                continue
            if between is not None:
                between()  # fresh NAT state for every connection
            try:
                r = await one_run(BUILTIN[name].argv(), prefix["a"], prefix["b"], settings["a"], settings["b"])
            except RunFailed as exc:
                failures[name], failed_after[name] = str(exc), exc.seconds
                continue
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
            if name in failed_after:
                out[name]["failed_after_ms"] = round(failed_after[name] * 1000, 1)  # type: ignore[index]
            continue
        out[name] = {"completed": _stats([r["completed"] for r in rs]),
                     "first_usable": _stats([r["first_usable"] for r in rs]),
                     "median_ms": _stats([r["completed"] for r in rs])["median_ms"],
                     "p95_ms": _stats([r["completed"] for r in rs])["p95_ms"],
                     "cpu_ms_per_connection": round(statistics.median(r["cpu"] for r in rs) * 1000, 3),
                     "selected": rs[0]["pair"]}
    return out


LOOPBACK_SETTINGS: dict[str, list[tuple[str, ...]]] = {"a": [("role", "controlling"), ("bind", "127.0.0.1")],
                                                       "b": [("role", "controlled"), ("bind", "127.0.0.1")]}
"""What each side of a loopback measurement is told."""


def _loopback(stacks: list[str], runs: int, quiet: bool) -> dict[str, object]:
    results = asyncio.run(measure(stacks, runs, quiet, "loopback", {"a": [], "b": []}, LOOPBACK_SETTINGS))
    return {"topology": "loopback, host candidates", "results": results, **ratio(results, "median_ms")}


@contextlib.contextmanager
def _two_nats(server: list[str]) -> Iterator[tuple[Lab, TopologySpec, dict[str, list[str]]]]:
    """The kernel lab of both NAT measurements: two ``linux-masquerade`` NATs, ``server`` (the arguments of an
    ``icelab server`` command) on the public segment's STUN address. Yields the lab, its spec and each side's
    prefix that runs a command in its host."""
    import subprocess

    from ice.cli import isolate
    from ice.lab.mn import Lab, require_lab
    from ice.lab.netns import nsenter
    from ice.topology.registry import topology

    require_lab()
    isolate()
    spec = topology("two_nats", "linux-masquerade", "linux-masquerade")
    with Lab(spec) as lab:
        lab.popen("stun", [sys.executable, "-m", "ice.cli", "server", *server, "--listen", spec.facts["stun_primary"]],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield lab, spec, {s: nsenter(lab.pid(s)) for s in "ab"}


def _nat_settings(spec: TopologySpec, extra: Sequence[tuple[str, ...]] = ()) -> dict[str, list[tuple[str, ...]]]:
    """What each side is told through the NATs: its role, its address, the STUN server (and ``extra``)."""
    host, port = spec.address("stun_primary")
    return {side: [("role", "controlling" if side == "a" else "controlled"), ("bind", spec.facts[side]),
                   ("stun", host, str(port)), *extra] for side in "ab"}


def _nat(stacks: list[str], runs: int, quiet: bool) -> dict[str, object]:
    with _two_nats(["stun"]) as (lab, spec, prefix):
        results = asyncio.run(measure(stacks, runs, quiet, "nat", prefix, _nat_settings(spec), between=lab.reset))
    return {"topology": "two linux-masquerade NATs (port-restricted, WAN input dropped), srflx from icelab's "
                        "STUN server", "results": results, **ratio(results, "median_ms")}


TCP_STACKS: dict[str, list[tuple[str, ...]]] = {"icelab": [("transports", "tcp")], "libnice": [("transports", "tcp")]}
"""The stacks ``--tcp`` runs, with what they are told (libnice gathers active and passive TCP candidates)."""
TCP_NOT_SUPPORTED = {
    "aioice": "aioice has no ICE-TCP (RFC 6544): it gathers UDP candidates only",
    "pion": "pion gathers passive TCP candidates only (its TCP mux), and a passive candidate pairs only with an "
            "active one (RFC 6544 §6.2), so pion against itself never forms a TCP pair",
}


def _tcp_loopback(stacks: list[str], runs: int, quiet: bool) -> dict[str, object]:
    results: dict[str, object] = {}
    for name in stacks:
        extra = TCP_STACKS[name]
        results.update(asyncio.run(measure([name], runs, quiet, "loopback", {"a": [], "b": []},
                                           {s: [*LOOPBACK_SETTINGS[s], *extra] for s in "ab"})))
    return {"topology": "loopback, TCP host candidates", "results": results, **ratio(results, "median_ms")}


def _tcp_nat(stacks: list[str], runs: int, quiet: bool) -> dict[str, object]:
    from ice.scenario.lab import block_peer_udp

    with _two_nats(["turn", "--user", "alice:secret"]) as (lab, spec, prefix):

        def between() -> None:
            lab.reset()
            block_peer_udp(lab, spec)

        results: dict[str, object] = {}
        for name in stacks:
            results.update(asyncio.run(measure([name], runs, quiet, "nat", prefix,
                                               _nat_settings(spec, TCP_STACKS[name]), between=between)))
    return {"topology": "two linux-masquerade NATs (port-restricted, unsolicited SYNs dropped), UDP between the "
                        "peers dropped, srflx TCP candidates from icelab's server (Binding over TCP)",
            "results": results, **ratio(results, "median_ms")}


def _main_tcp(args: argparse.Namespace, stacks: list[str], runs: int, where: str) -> int:
    runnable = [s for s in stacks if s in TCP_STACKS]
    doc: dict[str, object] = {
        "benchmark": "connect --tcp",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "runs": runs,
        "measured": "ICE-TCP only (RFC 6544): start of checks (both sides given the other's credentials and "
                    "candidates) to a selected pair on both sides",
        "goal": "through the NATs: icelab connected over TCP in at most 200 ms median",
    }
    unsupported = {s: TCP_NOT_SUPPORTED[s] for s in stacks if s in TCP_NOT_SUPPORTED}
    doc["not_supported"] = unsupported
    if where in ("both", "loopback"):
        doc["loopback"] = _tcp_loopback(runnable, runs, bool(args.json))
    if where in ("both", "nat"):
        doc["nat"] = _tcp_nat(runnable, runs, bool(args.json))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    _print(doc)
    for name, why in unsupported.items():
        print(f"  {name:<8} not supported: {why}")
    return 0


def main(args: argparse.Namespace) -> int:
    stacks = choose(getattr(args, "peers", None) or "all")
    runs = int(getattr(args, "runs", None) or RUNS)
    where = getattr(args, "where", None) or "both"
    if getattr(args, "tcp", False):
        return _main_tcp(args, stacks, runs, where)
    doc: dict[str, object] = {
        "benchmark": "connect",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "icelab_build": build_in_use(),
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
    _print(doc)
    return 0


def _print(doc: dict[str, object]) -> None:
    if "icelab_build" in doc:
        print(f"icelab runs {doc['icelab_build']}")
    for place in ("loopback", "nat"):
        part = doc.get(place)
        if not isinstance(part, dict):
            continue
        print(f"{place}: {part['topology']}")
        for name, r in part["results"].items():
            if "error" in r:
                after = f" after {r['failed_after_ms']:.0f} ms" if "failed_after_ms" in r else ""
                print(f"  {name:<8} failed{after}: {r['error']}")
                continue
            print(f"  {name:<8} median {r['median_ms']:9.3f} ms, p95 {r['p95_ms']:9.3f} ms; "
                  f"cpu {r['cpu_ms_per_connection']} ms per connection")
        if part["ratio"] is not None:
            print(f"  ratio icelab / {part['fastest_foreign']} (median, lower is better): {part['ratio']:.4f}")
