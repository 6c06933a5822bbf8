"""``icelab bench relay``: TURN relay throughput of our server and of coturn, same run, loopback, single flow.

A load process (bench.turnload) allocates on each server, binds a channel to a local peer socket and keeps a
window of ChannelData in flight; the peer echoes, so each round trip is two relayed packets. Rounds alternate
between the servers and the median is reported. coturn relays about 126 k packets/s single-flow on a 4-vCPU
droplet (coturn's own load-test notes, docs/PerformanceIterationLog.md in coturn/coturn); here both share 2 cores
with the load process.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.server import HONESTY, _free_port, side_by_side, summary

ROUNDS = 7
WINDOW = 64
USER, PASSWORD, REALM = "bench", "bench-secret", "icelab"


def _load(port: int, packets: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.turnload", "127.0.0.1", str(port), USER, PASSWORD, str(packets), str(WINDOW)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main(args: argparse.Namespace) -> int:
    round_trips = int(getattr(args, "requests", 100_000) or 100_000) // 2
    if shutil.which("turnserver") is None:
        print("icelab bench relay: coturn (turnserver) is not installed; run ./icelab once to provision it",
              file=sys.stderr)
        return 2
    ours_port, coturn_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="icelab-bench-") as tmp:
        ours = [sys.executable, "-m", "ice.cli", "server", "turn", "--listen", f"127.0.0.1:{ours_port}",
                "--realm", REALM, "--user", f"{USER}:{PASSWORD}", "--relay-ip", "127.0.0.1",
                "--allow-peer", "127.0.0.0/8"]
        coturn = [
            "turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
            f"--listening-port={coturn_port}", f"--min-port={coturn_port + 1}", f"--max-port={coturn_port + 50}",
            "--no-tls", "--no-dtls", "--no-cli", "--lt-cred-mech", f"--realm={REALM}", f"--user={USER}:{PASSWORD}",
            "--fingerprint", f"--db={tmp}/turndb.sqlite", f"--pidfile={tmp}/turnserver.pid", "--log-file=stdout",
            "--simple-log", "--no-stdout-log", "--allow-loopback-peers",
        ]
        rounds = side_by_side(ours, ours_port, coturn, coturn_port, tmp, _load, round_trips, ROUNDS, args.json,
                              lambda r: f"{r['relayed_pps']:>10,.0f} relayed packets/s (lost {r['lost']:.0f}, server "
                                        f"CPU {r['server_cpu']:.0%}, load CPU {r['load_cpu']:.0%})")
    figures = summary(rounds, "relayed_pps", "relayed_packets", 3)
    pps: dict[str, int] = figures.pop("rates")  # type: ignore[assignment]
    ratio = float(figures["ratio"])  # type: ignore[arg-type]
    doc = {
        "benchmark": "relay",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "relayed_packets_per_round": 2 * round_trips,
        "window": WINDOW,
        "rounds": ROUNDS,
        "relayed_packets_per_second": pps,
        **figures,
        "goal": "icelab at least 1.0x coturn's relayed packets per second",
        "note": HONESTY,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        cpu: dict[str, float] = figures["server_cpu_us_per_packet"]  # type: ignore[assignment]
        print(f"icelab {pps['icelab']:,} relayed packets/s, coturn {pps['coturn']:,}: ratio {ratio:.2f}x "
              f"(goal >= 1.0x); server CPU per relayed packet {cpu['icelab']:.2f} us vs {cpu['coturn']:.2f} us")
    return 0
