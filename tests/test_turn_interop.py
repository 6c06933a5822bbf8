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
                 "--user", "alice:secret", "--relay-ip", "127.0.0.1", "--allow-peer", "127.0.0.0/8", "--json-log",
                 "--rfc5766-channels"],
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


def test_bench_relay_compares_with_coturn() -> None:
    """Structure only: both servers relay every packet of a small run; the ratio is what the JSON says."""
    p = subprocess.run([*ICELAB, "bench", "relay", "--json", "--requests", "4000"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["lost"] == {"icelab": 0, "coturn": 0}
    pps = doc["relayed_packets_per_second"]
    assert doc["ratio"] == round(pps["icelab"] / pps["coturn"], 3)


def test_server_turn_usage_errors_are_one_sentence() -> None:
    for args in (["--listen", "127.0.0.1:0"], ["--listen", "127.0.0.1:0", "--user", "nopassword"],
                 ["--listen", "127.0.0.1:0", "--user", "a:b", "--relay-ports", "9-1"],
                 ["--listen", "127.0.0.1:0", "--user", "a:b", "--allow-peer", "nonsense"],
                 ["--listen", "127.0.0.1:0", "--user", "a:b", "--tls-listen", "127.0.0.1:0"],
                 ["--listen", "127.0.0.1:0", "--user", "a:b", "--tls-listen", "127.0.0.1:0", "--cert", "/nonexistent",
                  "--key", "/nonexistent"]):
        p = subprocess.run([*ICELAB, "server", "turn", *args], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert p.returncode == 2 and p.stderr.startswith("icelab: ") and "Traceback" not in p.stderr, args


@pytest.fixture
def coturn_turn(tmp_path: object) -> object:
    need_tool("turnserver")
    (port,) = free_udp_ports(1)
    proc = Proc(["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
                 f"--min-port={port + 1}", f"--max-port={port + 40}", "--no-tls", "--no-dtls", "--no-cli",
                 "--lt-cred-mech", "--realm=icelab", "--user=alice:secret", "--fingerprint",
                 f"--db={tmp_path}/turndb.sqlite", f"--pidfile={tmp_path}/turnserver.pid", "--log-file=stdout",
                 "--simple-log", "--allow-loopback-peers"], cwd=tmp_path)  # type: ignore[arg-type]
    try:
        wait_stun("127.0.0.1", port)
        yield ("127.0.0.1", port)
    finally:
        proc.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("which", ["coturn", "icelab"])
def test_our_turn_client_relays_through_coturn_and_our_server(which: str, transport: str,
                                                               coturn_turn: tuple[str, int]) -> None:
    import asyncio
    import socket

    from ice.aio.turn_client import TurnEndpoint
    from ice.errors import TurnError
    from ice.turn.client import TurnClientConfig

    if which == "coturn":
        server, ours = coturn_turn, None
    else:
        (port,) = free_udp_ports(1)
        ours = _server(port)
        server = ("127.0.0.1", port)
        wait_stun(*server)

    async def main() -> tuple[bytes, bytes, str]:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        ep = TurnEndpoint(TurnClientConfig(server, "alice", "secret", transport=transport), bind=("127.0.0.1", 0))
        got: asyncio.Future[bytes] = loop.create_future()
        ep.on_data = lambda src, data: got.done() or got.set_result(data)
        try:
            alloc = await ep.open()
            assert alloc.relayed[0] == "127.0.0.1"
            ep.send(peer.getsockname(), b"to-peer")  # permission first, then a Send indication
            data, relayed = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 5)
            assert await ep.bind_channel(peer.getsockname()) == 0x4000
            ep.send(peer.getsockname(), b"over-the-channel")  # ChannelData now
            assert (await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 5))[0] == b"over-the-channel"
            await loop.sock_sendto(peer, b"to-client", relayed)
            back = await asyncio.wait_for(got, 5)
            bad = TurnEndpoint(TurnClientConfig(server, "alice", "wrong", transport=transport), bind=("127.0.0.1", 0))
            try:
                await bad.open()
                refused = "no"
            except TurnError as exc:
                refused = str(exc)
            finally:
                bad.close()
            return data, back, refused
        finally:
            ep.close()
            peer.close()

    try:
        data, back, refused = asyncio.run(main())
    finally:
        if ours is not None:
            ours.stop()
    assert (data, back) == (b"to-peer", b"to-client")
    assert refused.startswith("allocation refused: 401")


def _relay_only(agent: str, b_relay_only: bool = False) -> tuple[tuple[str, str, str], str]:
    """Our TURN server on loopback; ``agent`` (a built-in agent on the agent protocol) as the controlling side,
    relay-only through it, against an icelab agent (relay-only too with ``b_relay_only``). Returns (data check,
    A's selected pair, B's) and the server's JSON log."""
    import asyncio

    from ice.agents.line import AgentProcess
    from ice.agents.pair import SideSetup, TurnSetting, close, connect, exchange, prepare
    from ice.agents.registry import resolve

    (port,) = free_udp_ports(1)
    proc = _server(port)
    turn = TurnSetting("127.0.0.1", port, "alice", "secret")

    async def run() -> tuple[str, str, str]:
        a = await AgentProcess.spawn(resolve(agent).argv, "a")
        b = await AgentProcess.spawn(resolve("icelab").argv, "b")
        pair = await prepare(a, b, SideSetup("controlling", ("127.0.0.1",), turn=turn, relay_only=True),
                             SideSetup("controlled", ("127.0.0.1",), turn=turn if b_relay_only else None,
                                       relay_only=b_relay_only))
        try:
            await connect(pair, 20)
            assert not pair.reason and pair.a.selected and pair.b.selected, pair.reason
            return await exchange(pair, 10), pair.a.selected.text, pair.b.selected.text
        finally:
            await close(pair)

    try:
        wait_stun("127.0.0.1", port)
        result = asyncio.run(run())
    finally:
        proc.p.send_signal(signal.SIGTERM)
        log = proc.stop()
    return result, log


def test_icelab_agents_relay_only_through_our_turn_server() -> None:
    """ICE with relayed candidates only (RFC 8445 §5.1.1.2): the selected pair is relay on both sides."""
    (missing, sel_a, _), log = _relay_only("icelab", b_relay_only=True)
    assert missing == "" and re.fullmatch(r"relay 127\.0\.0\.1:\d+ -> relay 127\.0\.0\.1:\d+", sel_a), sel_a
    stats = json.loads(log.strip().splitlines()[-1])["stats"]
    assert stats["allocate"] == 2 and stats["relayed-to-peer"] > 0


@pytest.mark.parametrize("agent", ["aioice", "libnice", "pion"])
def test_foreign_stacks_relay_through_our_turn_server_with_an_icelab_peer(agent: str) -> None:
    """aioice 0.13, libnice 0.1.21 and pion 2.3.1, relay only, use our server as their TURN server and connect to
    an icelab agent: icelab's selected pair ends on the foreign stack's relayed candidate."""
    (missing, _, sel_b), log = _relay_only(agent)
    assert missing == "" and re.fullmatch(r"host 127\.0\.0\.1:\d+ -> relay 127\.0\.0\.1:\d+", sel_b), sel_b
    stats = json.loads(log.strip().splitlines()[-1])["stats"]
    assert stats["allocate"] >= 1 and stats["relayed-to-peer"] > 0 and stats["relayed-to-client"] > 0


def _make_ca(tmp: object) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl is installed by provision.sh)."""
    from pathlib import Path

    d = Path(str(tmp))
    need_tool("openssl")

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=icelab test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
         "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
         "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key")


def test_turn_over_tls_with_a_test_ca(tmp_path: object) -> None:
    """TURN over TLS (RFC 8656 §3.1): our client verifies our server's certificate against a CA the test made."""
    import asyncio
    import socket
    import ssl

    from ice.aio.turn_client import TurnEndpoint
    from ice.aio.turn_server import TurnServerRunner
    from ice.errors import TurnError
    from ice.turn.client import TurnClientConfig
    from ice.turn.server import TurnServerConfig

    ca, cert, key = _make_ca(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main() -> tuple[bytes, str]:
        runner = await TurnServerRunner(TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"},
                                                         allowed_peers=("127.0.0.0/8",)), "127.0.0.1").start(
            tls=server_ctx, tls_listen=("127.0.0.1", 0))
        assert runner.tls_address is not None
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        good = TurnEndpoint(TurnClientConfig(runner.tls_address, "alice", "secret", transport="tls"),
                            bind=("127.0.0.1", 0), ssl_context=ssl.create_default_context(cafile=ca))
        untrusted = TurnEndpoint(TurnClientConfig(runner.tls_address, "alice", "secret", transport="tls"),
                                 bind=("127.0.0.1", 0))  # the system trust store does not know our test CA
        try:
            await good.open()
            good.send(peer.getsockname(), b"over tls")
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 5)
            try:
                await untrusted.open()
                refused = "no"
            except TurnError as exc:
                refused = str(exc)
            return data, refused
        finally:
            good.close()
            untrusted.close()
            peer.close()
            runner.close()

    data, refused = asyncio.run(main())
    assert data == b"over tls"
    assert "CERTIFICATE_VERIFY_FAILED" in refused


def _venv_tool(name: str) -> str:
    """The Go interop peers are built into .venv/bin by scripts/provision.sh."""
    import shutil
    import sys
    from pathlib import Path

    path = Path(sys.executable).parent / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not built: scripts/provision.sh builds it from Debian's pion sources")
        return found
    return str(path)


def test_pion_turn_client_relays_through_our_server() -> None:
    client = _venv_tool("pionturnclient")
    (port,) = free_udp_ports(1)
    proc = _server(port)
    try:
        wait_stun("127.0.0.1", port)
        p = subprocess.run([client, "-server", f"127.0.0.1:{port}", "-user", "alice", "-pass", "secret",
                            "-realm", "icelab", "-n", "20"], capture_output=True, text=True, timeout=60)
        bad = subprocess.run([client, "-server", f"127.0.0.1:{port}", "-user", "alice", "-pass", "wrong",
                              "-realm", "icelab", "-n", "1"], capture_output=True, text=True, timeout=60)
    finally:
        proc.p.send_signal(signal.SIGTERM)
        proc.stop()
    assert p.returncode == 0 and "OK 20 echoes through relay" in p.stdout, p.stdout + p.stderr
    assert bad.returncode == 1 and "401" in bad.stdout


def test_our_turn_client_relays_through_pion_turn_server() -> None:
    import asyncio
    import socket

    from ice.aio.turn_client import TurnEndpoint
    from ice.turn.client import TurnClientConfig

    server_bin = _venv_tool("pionturn")
    (port,) = free_udp_ports(1)
    proc = Proc([server_bin, "-listen", f"127.0.0.1:{port}", "-user", "alice", "-pass", "secret", "-realm", "icelab"])

    async def main() -> tuple[bytes, bytes]:
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        ep = TurnEndpoint(TurnClientConfig(("127.0.0.1", port), "alice", "secret"), bind=("127.0.0.1", 0))
        got: asyncio.Future[bytes] = loop.create_future()
        ep.on_data = lambda src, data: got.done() or got.set_result(data)
        try:
            await ep.open()
            await ep.bind_channel(peer.getsockname())
            ep.send(peer.getsockname(), b"to-peer")
            data, relayed = await asyncio.wait_for(loop.sock_recvfrom(peer, 100), 5)
            await loop.sock_sendto(peer, b"to-client", relayed)
            return data, await asyncio.wait_for(got, 5)
        finally:
            ep.close()
            peer.close()

    try:
        wait_stun("127.0.0.1", port)
        assert asyncio.run(main()) == (b"to-peer", b"to-client")
    finally:
        proc.stop()

