"""TCP allocations (RFC 6062) end to end on loopback: our asyncio client through our asyncio server to TCP peers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from ice.aio.turn_server import TurnServerRunner
from ice.aio.turn_tcp_client import TurnTcpClient
from ice.errors import TurnError
from ice.turn.client import TurnClientConfig
from ice.turn.server import TurnServerConfig
from ice.turn.tcp_allocation import TcpAllocationConfig


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _server(**tcp: object) -> TurnServerRunner:
    config = TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"}, allowed_peers=("127.0.0.0/8",),
                              tcp=TcpAllocationConfig(**tcp))  # type: ignore[arg-type]
    return await TurnServerRunner(config, "127.0.0.1").start()


def _client(runner: TurnServerRunner) -> TurnTcpClient:
    return TurnTcpClient(TurnClientConfig(runner.address, "alice", "secret", transport="tcp"), bind=("127.0.0.1", 0))


def test_connect_to_a_peer_and_round_trip_bytes() -> None:
    async def main() -> None:
        runner = await _server()
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        peer = echo.sockets[0].getsockname()[:2]
        client = _client(runner)
        try:
            alloc = await client.open()
            assert alloc.relayed[0] == "127.0.0.1" and alloc.relayed in runner.tcp.listeners
            reader, writer = await client.connect(peer)
            blob = bytes(range(256)) * 1024  # 256 KiB: more than every buffer on the way (backpressure)
            writer.write(blob)
            got = await asyncio.wait_for(reader.readexactly(len(blob)), 10)
            assert got == blob
            with pytest.raises(TurnError, match="446"):  # RFC 6062 §5.2: one connection per peer
                await client.connect(peer)
            writer.close()  # the client data connection ends: the server closes the peer connection (§5.5)
            for _ in range(100):
                if not runner.tcp.links:
                    break
                await asyncio.sleep(0.02)
            assert not runner.tcp.links and runner.core.stats["tcp-connection-closed"] == 1
            reader2, writer2 = await client.connect(peer)  # and the peer can be connected again
            writer2.write(b"again")
            assert await asyncio.wait_for(reader2.readexactly(5), 5) == b"again"
        finally:
            client.close()
            echo.close()
            await asyncio.sleep(0.1)
            runner.close()
        assert runner.core.stats["tcp-bind"] == 2 and runner.core.stats["tcp-peer-connected"] == 2

    asyncio.run(main())


def test_a_peer_connecting_to_the_relayed_address_is_accepted_with_a_permission_only() -> None:
    async def main() -> None:
        runner = await _server()
        client = _client(runner)
        try:
            alloc = await client.open()
            r0, w0 = await asyncio.open_connection(*alloc.relayed)  # no permission yet: closed at once (§5.3)
            assert await asyncio.wait_for(r0.read(), 5) == b""
            w0.close()
            assert runner.core.stats["tcp-accept-no-permission"] == 1
            client.permit(("127.0.0.1", 0))
            await asyncio.sleep(0.1)
            pr, pw = await asyncio.open_connection(*alloc.relayed)
            pw.write(b"sent before the bind")  # buffered by the server until ConnectionBind (§5.3)
            peer, reader, writer = await asyncio.wait_for(client.accept(), 5)
            assert peer == pw.get_extra_info("sockname")[:2]
            assert await asyncio.wait_for(reader.readexactly(20), 5) == b"sent before the bind"
            writer.write(b"hello peer")
            assert await asyncio.wait_for(pr.readexactly(10), 5) == b"hello peer"
            pw.close()  # the peer closes: the client data connection is closed too (§5.5)
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            client.close()
            await asyncio.sleep(0.1)
            runner.close()

    asyncio.run(main())


def test_connect_to_a_closed_port_is_447_and_deallocation_closes_everything() -> None:
    async def main() -> None:
        runner = await _server()
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        peer = echo.sockets[0].getsockname()[:2]
        closed_port = ("127.0.0.1", 9)  # discard: nothing listens on loopback
        client = _client(runner)
        try:
            alloc = await client.open()
            with pytest.raises(TurnError, match="447"):
                await client.connect(closed_port)
            reader, writer = await client.connect(peer)
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        finally:
            client.close()  # Refresh 0 over the control connection, then it closes: allocation gone
            echo.close()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.sleep(0.1)
        assert alloc.relayed not in runner.tcp.listeners and not runner.tcp.links
        runner.close()

    asyncio.run(main())


def test_a_tcp_client_needs_a_stream_to_the_server() -> None:
    cfg = TurnClientConfig(("127.0.0.1", 3478), "alice", "secret")
    with pytest.raises(TurnError, match="RFC 6062"):
        TurnTcpClient(cfg)
    assert dataclasses.replace(cfg, transport="tls").stream


def test_garbage_on_the_listener_is_counted_and_bytes_right_after_the_bind_reach_the_peer() -> None:
    """The server's TCP listener: garbage closes that connection (counted); a client that sends data in the same
    segment as its ConnectionBind has it relayed (RFC 6062 §5.4: everything after the bind is the peer's)."""
    from ice.turn.tcp_client import BindState, ConnectionBinder

    async def main() -> None:
        runner = await _server()
        echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        peer = echo.sockets[0].getsockname()[:2]
        client = _client(runner)
        try:
            gr, gw = await asyncio.open_connection(*runner.address)
            gw.write(b"\xff" * 64)
            assert await asyncio.wait_for(gr.read(), 5) == b""
            assert runner.driver.stats["stream-garbage"] == 1
            await client.open()
            captured: asyncio.Future[int] = asyncio.get_running_loop().create_future()

            async def capture(cid: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                captured.set_result(cid)
                raise TurnError("bound by the test")

            client._bind = capture  # type: ignore[method-assign]
            with pytest.raises(TurnError, match="bound by the test"):
                await client.connect(peer)
            creds = client.client.bind_credentials()
            assert creds is not None
            binder = ConnectionBinder("alice", "secret", captured.result(), *creds)
            reader, writer = await asyncio.open_connection(*runner.address)
            writer.write(binder.request() + b"right after the bind")
            head = await asyncio.wait_for(reader.readexactly(20), 5)
            body = await reader.readexactly(int.from_bytes(head[2:4], "big"))
            assert binder.receive(head + body) is BindState.BOUND
            assert await asyncio.wait_for(reader.readexactly(20), 5) == b"right after the bind"
            writer.close()
        finally:
            client.close()
            echo.close()
            await asyncio.sleep(0.1)
            runner.close()

    asyncio.run(main())


def test_a_half_close_is_passed_on_and_the_other_direction_goes_on() -> None:
    """The client shuts down its sending side (FIN): the peer sees the end of the stream and can still answer
    (RFC 6062 §5.5 relays TCP as is); once both directions ended the pair is closed. 8 MiB one way first."""
    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while data := await reader.read(65536):
            n += len(data)
        writer.write(str(n).encode())
        await writer.drain()
        writer.close()

    async def main() -> None:
        runner = await _server()
        peer_server = await asyncio.start_server(sink, "127.0.0.1", 0)
        client = _client(runner)
        try:
            await client.open()
            reader, writer = await client.connect(peer_server.sockets[0].getsockname()[:2])
            for _ in range(8):
                writer.write(b"x" * (1 << 20))
                await writer.drain()
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 10) == str(8 << 20).encode()
            for _ in range(100):
                if not runner.tcp.links:
                    break
                await asyncio.sleep(0.02)
            assert not runner.tcp.links and runner.core.stats["tcp-connection-closed"] == 1
        finally:
            client.close()
            peer_server.close()
            await asyncio.sleep(0.1)
            runner.close()

    asyncio.run(main())
