"""Shared fixtures: free loopback ports, the repo root, a running embedded STUN server, foreign servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "tests" / "vectors"
ICELAB = [sys.executable, "-m", "ice.cli"]


def free_udp_ports(n: int = 1, host: str = "127.0.0.1") -> list[int]:
    """Ports free for UDP *and* TCP on ``host`` (coturn opens both)."""
    found: list[int] = []
    while len(found) < n:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((host, 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind((host, port))
            if port not in found:
                found.append(port)
        except OSError:
            pass
        finally:
            t.close()
            u.close()
    return found


def stun_ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """One raw Binding request: True if anything answered (used only to wait for foreign servers)."""
    req = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(req, (host, port))
        try:
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
        return data[8:20] == req[8:20]


def wait_stun(host: str, port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stun_ping(host, port):
            return
    raise RuntimeError(f"no STUN server answered on {host}:{port} within {seconds} s")


class Proc:
    """A background process owned by a test: terminated (then killed) on teardown, whatever happens."""

    def __init__(self, cmd: list[str], cwd: Path | None = None) -> None:
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> str:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        out = self.p.stdout.read() if self.p.stdout else ""
        return out


@pytest.fixture
def icelab_server() -> Iterator[tuple[str, int]]:
    """``icelab server stun`` on 127.0.0.1 (primary) with 127.0.0.2 as RFC 5780 alternate."""
    p1, p2 = free_udp_ports(2)
    proc = Proc([*ICELAB, "server", "stun", "--listen", f"127.0.0.1:{p1}", "--alt", f"127.0.0.2:{p2}"])
    try:
        wait_stun("127.0.0.1", p1)
        yield ("127.0.0.1", p1)
    finally:
        proc.stop()


def need_tool(name: str) -> str:
    """Interop peers are installed by scripts/provision.sh; a missing one is a set-up bug, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: scripts/provision.sh must install it")
    return path


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """coturn as a STUN-only RFC 5780 server on 127.0.0.1 and 127.0.0.2 (primary port, alternate port)."""
    need_tool("turnserver")
    port, alt = free_udp_ports(2)
    proc = Proc(
        [
            "turnserver", "-n", "--listening-ip=127.0.0.1", "--listening-ip=127.0.0.2", "--relay-ip=127.0.0.1",
            f"--listening-port={port}", f"--alt-listening-port={alt}", "--no-tls", "--no-dtls", "--no-cli",
            "--stun-only", f"--pidfile={tmp_path}/turnserver.pid", f"--db={tmp_path}/turndb.sqlite",
            "--log-file=stdout", "--simple-log",
        ],
        cwd=tmp_path,
    )
    try:
        wait_stun("127.0.0.1", port)
        yield ("127.0.0.1", port, alt)
    finally:
        proc.stop()


@pytest.fixture
def stund() -> Iterator[tuple[str, int]]:
    need_tool("stund")
    port, alt = free_udp_ports(2)
    proc = Proc(["stund", "-h", "127.0.0.1", "-a", "127.0.0.2", "-p", str(port), "-o", str(alt)])
    try:
        wait_stun("127.0.0.1", port)
        yield ("127.0.0.1", port)
    finally:
        proc.stop()


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def signal_both(a: Any, b: Any) -> None:
    """Gather two ice.aio Connections and signal candidates and credentials both ways (all at once)."""
    await asyncio.gather(a.gather(), b.gather())
    for x, y in ((a, b), (b, a)):
        for c in x.local_candidates:
            y.add_remote_candidate(c)
        y.add_remote_candidate(None)
        y.set_remote_credentials(x.ufrag, x.pwd)


@pytest.fixture(autouse=True)
def _agent_deadline_never_stale(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test that runs an agent in this process also checks the agent's cached ``next_timeout()`` against a
    fresh computation, on every call: a code path that moves a deadline without bumping ``pacer.changes`` fails
    whichever test reaches it (UDP, TCP, restarts, network changes, sessions). test_agent_deadline.py counts the
    fresh computations itself, so it goes without."""
    from ice.agent.agent import IceAgent

    if request.module.__name__.endswith("test_agent_deadline"):
        return

    cached = IceAgent.next_timeout

    def checked(self: IceAgent) -> float | None:
        at = cached(self)
        assert at == self._next_timeout(), "the agent's cached deadline went stale"
        return at

    monkeypatch.setattr(IceAgent, "next_timeout", checked)
