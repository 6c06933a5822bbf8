"""The example application: a file sent between two peers behind NATs in the kernel lab, through the public API."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "p2p_send.py"


def _line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    """The next line a process prints, or a failure naming what it said on stderr."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        pytest.fail("no signalling line in time")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read().decode() if proc.stderr is not None else ""
        pytest.fail(f"the example ended without a signalling line: {err[-2000:]}")
    return line


@pytest.mark.lab
@pytest.mark.parametrize(("nat_a", "nat_b", "turn"), [("port-restricted-cone", "symmetric", True),
                                                      ("port-restricted-cone", "port-restricted-cone", False)])
def test_p2p_send_moves_a_file_intact_across_two_nats(tmp_path: Path, nat_a: str, nat_b: str, turn: bool) -> None:
    """Copy-paste signalling relayed between the two processes; port-restricted x symmetric needs the embedded
    TURN server (RFC 4787: no direct pair), port-restricted x port-restricted punches directly."""
    from ice.lab.mn import Lab
    from ice.topology.registry import topology

    data = os.urandom(300_000)
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(data)
    spec = topology("two_nats", nat_a=nat_a, nat_b=nat_b)
    stun = ["--stun", spec.facts["stun_primary"]]
    relay = ["--turn", "203.0.113.10", "3478", "alice", "secret"] if turn else []
    with Lab(spec) as lab:
        server = lab.popen("stun", [sys.executable, "-m", "ice.cli", "server", "turn", "--listen",
                                    "203.0.113.10:3478", "--user", "alice:secret"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        assert b"TURN server on" in _line(server, deadline)
        peers = {}
        for node, mode, path in (("b", "receive", dst), ("a", "send", src)):
            peers[node] = lab.popen(node, [sys.executable, str(EXAMPLE), mode, str(path), "--bind", spec.facts[node],
                                           "--timeout", "30", *stun, *relay],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = {node: _line(p, deadline) for node, p in peers.items()}
        for node, other in (("a", "b"), ("b", "a")):  # the copy-paste, done by the test
            stdin = peers[node].stdin
            assert stdin is not None
            stdin.write(lines[other])
            stdin.close()
            peers[node].stdin = None  # communicate() below must not flush it again
        outcome = {}
        for node, p in peers.items():
            _, err = p.communicate(timeout=60)
            outcome[node] = (p.returncode, err.decode())
    assert outcome["a"][0] == 0 and outcome["b"][0] == 0, outcome
    assert dst.read_bytes() == data
    assert ("relay" in outcome["a"][1]) is turn, outcome["a"][1]  # the path it said it took


@pytest.mark.parametrize(("script", "says"), [
    ("two_peers.py", "bob got b'hello bob', alice got b'hello alice'"),
    ("relay_only.py", "selected: relay -> relay (TURN over udp)"),
    ("relay_only.py tcp", "selected: relay -> relay (TURN over tcp)"),
    ("restart.py", "alice got b'after the restart'"),
])
def test_the_documented_examples_run(script: str, says: str) -> None:
    """docs/library.md's examples, exactly as a reader runs them (loopback only)."""
    name, *args = script.split()
    p = subprocess.run([sys.executable, str(ROOT / "examples" / name), *args], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert p.returncode == 0, p.stdout + p.stderr
    assert says in p.stdout
