"""Our TURN server used by coturn's turnutils_uclient (installed by scripts/provision.sh). Loopback only."""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest
from conftest import ICELAB, ROOT, Proc, free_udp_ports, need_tool, wait_stun

pytestmark = pytest.mark.interop


def _server(port: int) -> Proc:
    return Proc([*ICELAB, "server", "turn", "--listen", f"127.0.0.1:{port}", "--realm", "icelab",
                 "--user", "alice:secret", "--relay-ip", "127.0.0.1", "--allow-peer", "127.0.0.0/8", "--json-log"],
                cwd=ROOT)


def test_coturn_client_relays_through_our_server_without_loss() -> None:
    need_tool("turnutils_uclient")
    (port,) = free_udp_ports(1)
    proc = _server(port)
    try:
        wait_stun("127.0.0.1", port)
        out = subprocess.run(["turnutils_uclient", "-y", "-u", "alice", "-w", "secret", "-r", "icelab", "-n", "20",
                              "-m", "1", "-l", "120", "-p", str(port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=60).stdout
        sent = int(re.findall(r"tot_send_msgs=(\d+)", out)[-1])
        received = int(re.findall(r"tot_recv_msgs=(\d+)", out)[-1])
        assert sent > 0 and received == sent and "Total lost packets 0 " in out
        wrong = subprocess.run(["turnutils_uclient", "-y", "-u", "alice", "-w", "wrong", "-r", "icelab", "-n", "2",
                                "-m", "1", "-p", str(port), "127.0.0.1"], capture_output=True, text=True,
                               timeout=60).stdout
        assert "Cannot complete Allocation" in wrong
    finally:
        proc.p.send_signal(signal.SIGTERM)
        log = proc.stop()
    stats = json.loads(log.strip().splitlines()[-1])["stats"]
    assert stats["relayed-to-peer"] == stats["relayed-to-client"] == sent
    assert stats["auth-401"] >= 2 and stats["allocate"] >= 1 and stats.get("deallocate", 0) >= 1
