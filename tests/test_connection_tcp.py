"""ICE-TCP (RFC 6544) through the asyncio Connection on real loopback sockets."""

from __future__ import annotations

import asyncio

from conftest import signal_both

from ice.agent import AgentConfig, CandidateType
from ice.agent.tcp import TcpConfig, TcpType
from ice.aio.connection import Connection


async def _connect(a: Connection, b: Connection) -> tuple[object, object, bytes, bytes]:
    try:
        await signal_both(a, b)
        sel_a, sel_b = await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
        a.send(b"ping")
        got_b = await asyncio.wait_for(b.recv(), 5)
        b.send(b"pong" * 1000)
        got_a = await asyncio.wait_for(a.recv(), 5)
        return sel_a, sel_b, got_b, got_a
    finally:
        a.close()
        b.close()


def test_tcp_only_active_to_passive() -> None:
    async def main() -> tuple[object, object, bytes, bytes]:
        a = Connection(True, transports="tcp", tcp_types=[TcpType.ACTIVE])
        b = Connection(False, transports="tcp", tcp_types=[TcpType.PASSIVE])
        return await _connect(a, b)

    sel_a, sel_b, got_b, got_a = asyncio.run(main())
    assert (got_b, got_a) == (b"ping", b"pong" * 1000)
    assert sel_a.local.tcptype == "active" and sel_a.remote.tcptype == "passive"  # type: ignore[attr-defined]
    assert sel_b.remote.type is CandidateType.PEER_REFLEXIVE  # type: ignore[attr-defined]
    assert sel_b.remote.tcptype == "active"  # type: ignore[attr-defined]


def test_tcp_only_simultaneous_open() -> None:
    async def main() -> tuple[object, object, bytes, bytes]:
        a = Connection(True, transports="tcp", tcp_types=[TcpType.SO])
        b = Connection(False, transports="tcp", tcp_types=[TcpType.SO])
        return await _connect(a, b)

    sel_a, sel_b, got_b, got_a = asyncio.run(main())
    assert (got_b, got_a) == (b"ping", b"pong" * 1000)
    assert sel_a.local.tcptype == sel_a.remote.tcptype == "so"  # type: ignore[attr-defined]
    assert sel_b.local.tcptype == "so"  # type: ignore[attr-defined]


def test_udp_and_tcp_selects_udp() -> None:
    async def main() -> tuple[object, object, bytes, bytes, list[str]]:
        a, b = Connection(True, transports="both"), Connection(False, transports="both")
        out = await _connect(a, b)
        kinds = sorted({f"{c.transport}/{c.tcptype}" for c in a.local_candidates})
        return (*out, kinds)

    sel_a, sel_b, got_b, got_a, kinds = asyncio.run(main())
    assert kinds == ["tcp/active", "tcp/passive", "tcp/so", "udp/None"]
    assert (got_b, got_a) == (b"ping", b"pong" * 1000)
    assert sel_a.local.transport == "udp" and sel_b.local.transport == "udp"  # type: ignore[attr-defined]


def test_default_stays_udp_only() -> None:
    async def main() -> list[str]:
        a = Connection(True)
        try:
            await a.gather()
            return [c.transport for c in a.local_candidates]
        finally:
            a.close()

    assert asyncio.run(main()) == ["udp"]
    assert Connection(True).tcp is None and not Connection(True).agent.config.tcp.enabled
    assert Connection(True, AgentConfig(tcp=TcpConfig(max_frame=100)), transports="tcp").agent.config.tcp.max_frame \
        == 100


def test_tcp_server_reflexive_from_a_tcp_binding() -> None:
    """A STUN Binding over TCP from the so/passive port itself, beside its listener (the embedded STUN/TURN server
    listens on TCP): on loopback the mapping is the base, so the binding is answered and no srflx is added."""
    import socket

    from ice.aio.tcp import tcp_stun_binding
    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.server import TurnServerConfig

    async def main() -> tuple[tuple[str, int], tuple[str, int], int, int]:
        server = await TurnServerRunner(TurnServerConfig(listen=("127.0.0.1", 0)), "127.0.0.1").start(tcp=True)
        a = Connection(True, transports="tcp", tcp_types=[TcpType.SO, TcpType.PASSIVE],
                       stun_servers=[server.address])
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await a.gather()
            probe.bind(("127.0.0.1", 0))
            local = probe.getsockname()
            probe.close()
            mapped = await tcp_stun_binding(local, server.address)
            return local, mapped, a.agent.stats["tcp-srflx-redundant"], a.agent.stats["tcp-srflx-failed"]
        finally:
            a.close()
            server.close()

    local, mapped, redundant, failed = asyncio.run(main())
    assert mapped == local and redundant == 2 and failed == 0


def test_tcp_server_reflexive_without_a_tcp_server_fails_quietly() -> None:
    import socket

    async def main() -> tuple[list[str], int]:
        closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there: connection refused
        a = Connection(True, transports="tcp", tcp_types=[TcpType.SO], stun_servers=[("127.0.0.1", port)])
        try:
            await a.gather()
            return [f"{c.type.value}/{c.tcptype}" for c in a.local_candidates], a.agent.stats["tcp-srflx-failed"]
        finally:
            a.close()

    assert asyncio.run(main()) == (["host/so"], 1)


def test_connections_disable_nagle() -> None:
    """TCP_NODELAY on both ends (opened and accepted): with Nagle's algorithm a check written right after another
    small write waits for the peer's delayed ACK (about 40 ms on Linux)."""
    import socket

    async def main() -> list[int]:
        a = Connection(True, transports="tcp", tcp_types=[TcpType.SO])
        b = Connection(False, transports="tcp", tcp_types=[TcpType.SO])
        try:
            await signal_both(a, b)
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
            writers = [*a.tcp._writers.values(), *b.tcp._writers.values()]  # type: ignore[union-attr]
            return [w.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for w in writers]
        finally:
            a.close()
            b.close()

    flags = asyncio.run(main())
    assert len(flags) == 2 and all(flags)


def test_so_syn_ttl_only_for_the_syn() -> None:
    """``TcpConfig.so_syn_ttl``: the controlled agent's simultaneous-open SYN leaves with that TTL (on loopback any
    TTL arrives), and the connection carries on with the default TTL."""
    import socket

    async def main() -> tuple[int, int, bool]:
        cfg = AgentConfig(tcp=TcpConfig(so_syn_ttl=1))
        a = Connection(True, cfg, transports="tcp", tcp_types=[TcpType.SO])
        b = Connection(False, cfg, transports="tcp", tcp_types=[TcpType.SO])
        sent: list[object] = []
        poll = b.agent.poll_tcp

        def spy() -> object:
            i = poll()
            if i is not None:
                sent.append(i)
            return i

        b.agent.poll_tcp = spy  # type: ignore[method-assign,assignment]
        try:
            await signal_both(a, b)
            await asyncio.wait_for(asyncio.gather(a.connect(), b.connect()), 5)
            b.send(b"x")
            await asyncio.wait_for(a.recv(), 5)
            ttls = {w.get_extra_info("socket").getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
                    for w in b.tcp._writers.values()}  # type: ignore[union-attr]
            connects = [i for i in sent if type(i).__name__ == "TcpConnect"]
            return len(ttls), ttls.pop(), all(getattr(i, "syn_ttl", None) == 1 for i in connects) and bool(connects)
        finally:
            a.close()
            b.close()

    n, ttl, marked = asyncio.run(main())
    assert n == 1 and ttl > 1 and marked


def test_tcp_on_ipv6_loopback() -> None:
    async def main() -> tuple[object, object, bytes, bytes]:
        a = Connection(True, bind=["::1"], transports="tcp", tcp_types=[TcpType.SO, TcpType.ACTIVE])
        b = Connection(False, bind=["::1"], transports="tcp", tcp_types=[TcpType.SO, TcpType.PASSIVE])
        return await _connect(a, b)

    sel_a, _, got_b, got_a = asyncio.run(main())
    assert (got_b, got_a) == (b"ping", b"pong" * 1000)
    assert sel_a.local.host == "::1" and sel_a.local.transport == "tcp"  # type: ignore[attr-defined]


def test_closed_connections_leave_nothing_behind_in_the_plumbing() -> None:
    """Every connection the agent closed is forgotten once its task ends (no per-connection bookkeeping grows
    over a long session's reconnects)."""

    async def main() -> tuple[int, int, int]:
        a = Connection(True, transports="tcp", tcp_types=[TcpType.SO])
        b = Connection(False, transports="tcp", tcp_types=[TcpType.SO])
        await _connect(a, b)  # closes both at the end
        assert a.tcp is not None and b.tcp is not None
        for _ in range(100):  # the cancelled connection tasks end within a few turns of the loop
            if not (a.tcp._tasks or b.tcp._tasks or a.tcp._closing or b.tcp._closing):
                break
            await asyncio.sleep(0)
        return len(a.tcp._closing) + len(b.tcp._closing), len(a.tcp._tasks), len(b.tcp._tasks)

    assert asyncio.run(main()) == (0, 0, 0)
