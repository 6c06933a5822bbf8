"""TCP allocations (RFC 6062) against coturn 4.6: coturn's turnutils_uclient -T through our server, our client
through coturn's turnserver and ours. Loopback only."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess

import pytest
from conftest import ICELAB, ROOT, Proc, free_udp_ports, need_tool, wait_stun
from test_turn_interop import _make_ca, _server, coturn_turn

from ice.aio.turn_tcp_client import TurnTcpClient
from ice.errors import TurnError
from ice.turn.client import TurnClientConfig

pytestmark = pytest.mark.interop
__all__ = ["coturn_turn"]  # the fixture, shared with test_turn_interop


@pytest.mark.parametrize("clients", [2, 4])
def test_coturn_tcp_client_relays_through_our_server_without_loss(clients: int) -> None:
    """turnutils_uclient -T: TCP control connections, TCP allocations, and every pair of clients joined by
    Connect on one side and ConnectionAttempt on the other (with -m 4, six such connections), 0 lost."""
    need_tool("turnutils_uclient")
    (port,) = free_udp_ports(1)
    proc = _server(port)
    try:
        wait_stun("127.0.0.1", port)
        out = subprocess.run(["turnutils_uclient", "-T", "-u", "alice", "-w", "secret", "-r", "icelab", "-n", "20",
                              "-m", str(clients), "-l", "1000", "-p", str(port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        proc.p.send_signal(signal.SIGTERM)
        log = proc.stop()
    sent = int(re.findall(r"tot_send_msgs=(\d+)", out)[-1])
    received = int(re.findall(r"tot_recv_msgs=(\d+)", out)[-1])
    assert sent == 20 * clients and received == sent and "Total lost packets 0 " in out, out[-2000:]
    stats = json.loads(log.strip().splitlines()[-1])["stats"]
    pairs = clients * (clients - 1) // 2
    assert stats["tcp-connect"] == stats["tcp-peer-connected"] == stats["tcp-peer-accepted"] == pairs
    assert stats["tcp-bind"] == 2 * pairs and "tcp-connect-exists" not in stats


def test_coturn_tcp_client_over_tls_through_our_server(tmp_path: object) -> None:
    """turnutils_uclient -T -S: the control and data connections over TLS (RFC 6062 §4.1: TCP or TLS), 0 lost."""
    need_tool("turnutils_uclient")
    _, cert, key = _make_ca(tmp_path)
    port, tls_port = free_udp_ports(2)
    proc = Proc([*ICELAB, "server", "turn", "--listen", f"127.0.0.1:{port}", "--user", "alice:secret", "--relay-ip",
                 "127.0.0.1", "--allow-peer", "127.0.0.0/8", "--json-log", "--tls-listen", f"127.0.0.1:{tls_port}",
                 "--cert", cert, "--key", key], cwd=ROOT)
    try:
        wait_stun("127.0.0.1", port)
        out = subprocess.run(["turnutils_uclient", "-T", "-S", "-u", "alice", "-w", "secret", "-r", "icelab", "-n",
                              "20", "-m", "2", "-l", "500", "-p", str(tls_port), "127.0.0.1"],
                             capture_output=True, text=True, timeout=60).stdout
    finally:
        proc.p.send_signal(signal.SIGTERM)
        log = proc.stop()
    assert re.findall(r"tot_recv_msgs=(\d+)", out)[-1] == "40" and "Total lost packets 0 " in out, out[-2000:]
    stats = json.loads(log.strip().splitlines()[-1])["stats"]
    assert stats["tcp-bind"] == 2 and stats["tcp-connect"] == 1


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("which", ["coturn", "icelab"])
def test_our_tcp_client_through_coturn_and_our_server(which: str, coturn_turn: tuple[str, int]) -> None:
    """Allocate TCP, Connect to a TCP echo peer (256 KiB round trip), accept a peer that connects to the relayed
    address (its first bytes sent before the bind arrive), 447 for a closed port."""
    if which == "coturn":
        server, ours = coturn_turn, None
    else:
        (port,) = free_udp_ports(1)
        ours = _server(port)
        server = ("127.0.0.1", port)
        wait_stun(*server)

    async def main() -> tuple[bool, bytes, bytes, str]:
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        peer = echo.sockets[0].getsockname()[:2]
        client = TurnTcpClient(TurnClientConfig(server, "alice", "secret", transport="tcp"), bind=("127.0.0.1", 0))
        try:
            alloc = await client.open()
            reader, writer = await client.connect(peer)
            blob = bytes(range(256)) * 1024
            writer.write(blob)
            round_trip = await asyncio.wait_for(reader.readexactly(len(blob)), 10) == blob
            pr, pw = await asyncio.open_connection(*alloc.relayed)  # the permission for 127.0.0.1 exists
            pw.write(b"early")
            _, r2, w2 = await asyncio.wait_for(client.accept(), 5)
            early = await asyncio.wait_for(r2.readexactly(5), 5)
            w2.write(b"back")
            back = await asyncio.wait_for(pr.readexactly(4), 5)
            pw.close()
            try:
                await client.connect(("127.0.0.1", 9))
                refused = "no"
            except TurnError as exc:
                refused = str(exc)
            return round_trip, early, back, refused
        finally:
            client.close()
            echo.close()

    try:
        round_trip, early, back, refused = asyncio.run(main())
    finally:
        if ours is not None:
            ours.p.send_signal(signal.SIGTERM)
            ours.stop()
    assert round_trip and (early, back) == (b"early", b"back")
    assert refused.startswith("Connect refused: 447"), refused


def test_our_tcp_client_over_tls_through_our_server(tmp_path: object) -> None:
    """The control connection and every data connection over TLS (RFC 6062 §4.1, §4.4), certificate checked."""
    import ssl

    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.server import TurnServerConfig

    ca, cert, key = _make_ca(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main() -> tuple[bytes, int]:
        runner = await TurnServerRunner(TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"},
                                                         allowed_peers=("127.0.0.0/8",)), "127.0.0.1").start(
            tls=server_ctx, tls_listen=("127.0.0.1", 0))
        assert runner.tls_address is not None
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        client = TurnTcpClient(TurnClientConfig(runner.tls_address, "alice", "secret", transport="tls"),
                               bind=("127.0.0.1", 0), ssl_context=ssl.create_default_context(cafile=ca))
        try:
            await client.open()
            reader, writer = await client.connect(echo.sockets[0].getsockname()[:2])
            assert writer.get_extra_info("ssl_object") is not None
            writer.write(b"over tls" * 1000)
            return await asyncio.wait_for(reader.readexactly(8000), 10), runner.core.stats["tcp-bind"]
        finally:
            client.close()
            echo.close()
            await asyncio.sleep(0.1)
            runner.close()

    data, binds = asyncio.run(main())
    assert data == b"over tls" * 1000 and binds == 1
