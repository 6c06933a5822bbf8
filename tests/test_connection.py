"""The asyncio Connection and `icelab peer` on real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from conftest import ICELAB, ROOT, signal_both

from ice.agent import CandidateType
from ice.aio.connection import Connection

LINE_PEER = Path(__file__).resolve().parent / "line_peer.py"


def test_two_connections_on_loopback_exchange_data() -> None:
    async def main() -> tuple[bytes, bytes, CandidateType]:
        a, b = Connection(True), Connection(False)
        try:
            await signal_both(a, b)
            sel, _ = await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
            a.send(b"ping")
            got_b = await asyncio.wait_for(b.recv(), 5)
            b.send(b"pong")
            got_a = await asyncio.wait_for(a.recv(), 5)
            return got_b, got_a, sel.remote.type
        finally:
            a.close()
            b.close()

    assert asyncio.run(main()) == (b"ping", b"pong", CandidateType.HOST)


def test_icelab_peers_round_trip_over_the_line_protocol() -> None:
    """The interop harness's own driver (copied as tests/line_peer.py) wires two `icelab peer`s."""
    cmd_a = f"{sys.executable} -m ice.cli peer --controlling --bind 127.0.0.1"
    cmd_b = f"{sys.executable} -m ice.cli peer --echo --bind 127.0.0.1"
    p = subprocess.run([sys.executable, str(LINE_PEER), cmd_a, cmd_b], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert "ROUNDTRIP OK" in p.stdout, p.stdout[-800:] + p.stderr[-800:]
    assert "[A] selected host 127.0.0.1:" in p.stdout and "| host 127.0.0.1:" in p.stdout


def test_peer_relay_only_needs_a_turn_server() -> None:
    p = subprocess.run([*ICELAB, "peer", "--relay-only"], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert p.returncode == 2 and "--turn" in p.stderr and "Traceback" not in p.stderr


def test_bench_connect_reports_both_and_the_ratio() -> None:
    """Structure only: the benchmark reports speed, tests never assert it."""
    p = subprocess.run([*ICELAB, "bench", "connect", "--json", "--runs", "2"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc["results"]) == {"icelab", "aioice"}
    for r in doc["results"].values():
        assert r["completed"]["median_ms"] >= r["first_usable"]["median_ms"] > 0
    assert doc["ratio"] == round(doc["results"]["icelab"]["completed"]["median_ms"]
                                 / doc["results"]["aioice"]["completed"]["median_ms"], 4)


def test_ipv6_loopback() -> None:
    async def main() -> tuple[bytes, str]:
        a, b = Connection(True, bind=["::1"]), Connection(False, bind=["::1"])
        try:
            await signal_both(a, b)
            sel, _ = await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
            a.send(b"v6")
            return await asyncio.wait_for(b.recv(), 5), sel.remote.host
        finally:
            a.close()
            b.close()

    assert asyncio.run(main()) == (b"v6", "::1")
