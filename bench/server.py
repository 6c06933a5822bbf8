"""``icelab bench server``: Binding requests/s answered by our embedded server and by coturn, same run, loopback.

Each server runs in its own process on 127.0.0.1; the load comes from a separate process (bench.stunload) with a
window of outstanding requests. Rounds alternate between the servers and the median is reported, with each
server's and the load process's CPU use, so the JSON says which side was the limit (docs/turn.md, Performance).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

WINDOW = 64
ROUNDS = 7


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        u.bind(("127.0.0.1", 0))
        port = int(u.getsockname()[1])
        t.bind(("127.0.0.1", port))  # coturn also opens TCP on the port
        return port


def _wait(port: int, proc: subprocess.Popen[bytes], seconds: float = 10.0) -> None:
    req = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"benchbenchbe"
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early with {proc.returncode}")
            s.sendto(req, ("127.0.0.1", port))
            try:
                s.recvfrom(2048)
                return
            except OSError:
                continue
    raise RuntimeError(f"no STUN answer on 127.0.0.1:{port} within {seconds} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc/PID/stat), 0.0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _server(cmd: list[str], port: int, cwd: str | None = None) -> Iterator[int]:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(port, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load(port: int, requests: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.stunload", "127.0.0.1", str(port), str(requests), str(WINDOW)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def side_by_side(ours: list[str], ours_port: int, coturn: list[str], coturn_port: int, tmp: str,
                 load: Callable[[int, int], dict[str, float]], amount: int, rounds: int, quiet: bool,
                 describe: Callable[[dict[str, float]], str]) -> dict[str, list[dict[str, float]]]:
    """Start our server and coturn, warm both up, then alternate ``rounds`` measurements of ``load(port,
    amount)`` between them (so drift in the machine hits both alike); one progress line per measurement. Each
    result gains ``server_cpu``: the server process's CPU seconds (all threads) over the round's wall seconds."""
    results: dict[str, list[dict[str, float]]] = {"icelab": [], "coturn": []}
    with _server(ours, ours_port) as ours_pid, _server(coturn, coturn_port, cwd=tmp) as coturn_pid:
        load(ours_port, 2000)  # warm-up
        load(coturn_port, 2000)
        for i in range(rounds):
            for name, port, pid in (("icelab", ours_port, ours_pid), ("coturn", coturn_port, coturn_pid)):
                cpu = cpu_seconds(pid)
                r = load(port, amount)
                r["server_cpu"] = (cpu_seconds(pid) - cpu) / r["seconds"] if r["seconds"] else 0.0
                results[name].append(r)
                if not quiet:
                    print(f"  round {i + 1}: {name:<7} {describe(r)}", file=sys.stderr, flush=True)
    return results


def summary(rounds: dict[str, list[dict[str, float]]], rate: str, count: str, digits: int) -> dict[str, object]:
    """The medians over the rounds, per server: the rate, its ``server_cpu`` and ``load_cpu`` (CPU seconds over
    wall seconds of the server, all its threads, and of the load process) and the server's and the load's CPU
    microseconds per datagram answered or relayed; ``ratio`` is icelab's median rate over coturn's (``digits``
    after the point), ``per_round`` every round's rate (the rounds alternate, so a slow moment of the shared
    machine shows in one pair)."""
    names = ("icelab", "coturn")

    def med(f: Callable[[dict[str, float]], float]) -> dict[str, float]:
        return {n: statistics.median(f(r) for r in rounds[n]) for n in names}

    rates = med(lambda r: r[rate])
    cpu_us = med(lambda r: 1e6 * r["server_cpu"] * r["seconds"] / r[count] if r[count] else 0.0)
    server_cpu, load_cpu = med(lambda r: r["server_cpu"]), med(lambda r: r["load_cpu"])

    def limit(n: str) -> str:
        if server_cpu[n] >= SATURATED:
            return "server" + (" (and load)" if load_cpu[n] >= SATURATED else "")
        if load_cpu[n] >= SATURATED:
            return "load"
        if server_cpu[n] + load_cpu[n] >= SATURATED:
            return "server and load took turns on about one core between them"
        return "neither: both waited (a busy machine's scheduling)"

    faster, slower = sorted(names, key=lambda n: -rates[n])
    evidence = (f"the same load process drove {faster} at {rates[faster]:,.0f}/s, so it was not what held {slower} "
                f"at {rates[slower]:,.0f}/s") if rates[faster] > rates[slower] else ""
    rounded = {n: round(v) for n, v in rates.items()}
    return {
        "rates": rounded,
        "ratio": round(rounded["icelab"] / rounded["coturn"], digits) if rounded["coturn"] else 0.0,
        "per_round": {n: [round(r[rate]) for r in rounds[n]] for n in names},
        "server_cpu": {n: round(v, 2) for n, v in server_cpu.items()},
        "load_cpu": {n: round(v, 2) for n, v in load_cpu.items()},
        "limited_by": {n: limit(n) for n in names},
        "load_evidence": evidence,
        "server_cpu_us_per_packet": {n: round(v, 2) for n, v in cpu_us.items()},
        "load_cpu_us_per_packet": {n: round(v, 2) for n, v in med(
            lambda r: 1e6 * r["load_cpu"] * r["seconds"] / r[count] if r[count] else 0.0).items()},
        "lost": {n: int(sum(r["lost"] for r in rounds[n])) for n in names},
    }


SATURATED = 0.9
"""CPU seconds over wall seconds from which a process counts as the limit of a round (a whole core is 1.0)."""

HONESTY = ("load_cpu and server_cpu are the medians of CPU seconds over wall seconds (1.0: a whole core); "
           "limited_by reads them: a server at 0.9 or more was its own limit (coturn's figure is then its "
           "capacity, not the load's), a load process at 0.9 or more beside a server below it was the limit (the "
           "server's figure is then a lower bound). The load process batches (UDP GSO sends, recvmmsg) and "
           "yields the CPU after each read so that it costs less per datagram than either server "
           "(load_cpu_us_per_packet); server_cpu_us_per_packet compares the servers' own cost "
           "(the kernel's softirq time, counted to no process, is left out for both), whatever limited the rate.")


def main(args: argparse.Namespace) -> int:
    requests = int(getattr(args, "requests", 100_000))
    if shutil.which("turnserver") is None:
        print("icelab bench server: coturn (turnserver) is not installed; run ./icelab once to provision it",
              file=sys.stderr)
        return 2
    ours_port, coturn_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="icelab-bench-") as tmp:
        ours = [sys.executable, "-m", "ice.cli", "server", "stun", "--listen", f"127.0.0.1:{ours_port}"]
        coturn = [
            "turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={coturn_port}", "--no-tls",
            "--no-dtls", "--no-cli", "--stun-only", f"--pidfile={tmp}/turnserver.pid", f"--db={tmp}/turndb.sqlite",
            "--log-file=stdout", "--simple-log", "--no-stdout-log",
        ]
        rounds = side_by_side(ours, ours_port, coturn, coturn_port, tmp, _load, requests, ROUNDS, args.json,
                              lambda r: f"{r['rps']:>10,.0f} req/s  (lost {r['lost']:.0f}, server CPU "
                                        f"{r['server_cpu']:.0%}, load CPU {r['load_cpu']:.0%})")
    figures = summary(rounds, "rps", "answered", 2)
    rps: dict[str, int] = figures.pop("rates")  # type: ignore[assignment]
    ratio = float(figures["ratio"])  # type: ignore[arg-type]
    doc = {
        "benchmark": "server",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "requests_per_round": requests,
        "window": WINDOW,
        "rounds": ROUNDS,
        "requests_per_second": rps,
        **figures,
        "goal": "icelab at least 1.0x coturn",
        "note": HONESTY,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        cpu: dict[str, float] = figures["server_cpu_us_per_packet"]  # type: ignore[assignment]
        print(f"icelab {rps['icelab']:,} req/s, coturn {rps['coturn']:,} req/s: ratio {ratio:.2f}x (goal >= 1.0x); "
              f"server CPU per request {cpu['icelab']:.2f} us vs {cpu['coturn']:.2f} us")
    return 0
