"""The asyncio Connection and `icelab peer` on real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from conftest import ICELAB, ROOT, signal_both

from ice.agent import CandidateType
from ice.aio.connection import Connection


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


def test_peer_relay_only_needs_a_turn_server() -> None:
    p = subprocess.run([*ICELAB, "peer"], input="set relay-only on\nstart\n", capture_output=True, text=True,
                       cwd=ROOT, timeout=30)
    assert p.returncode == 2 and p.stdout.splitlines()[-1] == "error relay_only needs a TURN server"


def test_bench_connect_reports_every_stack_and_the_ratio() -> None:
    """Structure only: the benchmark reports speed, tests never assert it."""
    p = subprocess.run([*ICELAB, "bench", "connect", "--json", "--runs", "2", "--where", "loopback"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    part = json.loads(p.stdout)["loopback"]
    assert set(part["results"]) == {"icelab", "aioice", "libnice", "pion"}
    for r in part["results"].values():
        assert "error" not in r, r
        assert r["completed"]["median_ms"] >= r["first_usable"]["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"]
    fastest = part["fastest_foreign"]
    foreign = {n: r["median_ms"] for n, r in part["results"].items() if n != "icelab"}
    assert fastest == min(foreign, key=foreign.__getitem__)
    assert part["ratio"] == round(part["results"]["icelab"]["median_ms"] / foreign[fastest], 4)


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


def test_a_wrong_remote_password_fails_both_sides_with_the_reason() -> None:
    """The controlling side's checks draw 401s: it fails within a round trip naming the password; the controlled
    side (its own checks fine) fails after ``nomination_timeout`` (shortened here; 40 s by default)."""
    from ice import AgentConfig, IceFailed

    async def main() -> tuple[BaseException | object, BaseException | object, float]:
        loop = asyncio.get_running_loop()
        a, b = Connection(True), Connection(False, AgentConfig(nomination_timeout=0.5))
        try:
            await asyncio.gather(a.gather(), b.gather())
            a.set_remote_credentials(b.ufrag, b.pwd + "x")
            b.set_remote_credentials(a.ufrag, a.pwd)
            for x, y in ((a, b), (b, a)):
                for c in x.local_candidates:
                    y.add_remote_candidate(c)
                y.add_remote_candidate(None)
            t0 = loop.time()
            ra, rb = await asyncio.gather(a.connect(), b.connect(), return_exceptions=True)
            return ra, rb, loop.time() - t0
        finally:
            a.close()
            b.close()

    ra, rb, took = asyncio.run(main())
    assert isinstance(ra, IceFailed) and "401" in str(ra) and "password" in str(ra)
    assert isinstance(rb, IceFailed) and "nomination" in str(rb)
    assert took < 5


def test_a_stun_server_answering_with_icmp_is_reported_and_does_not_hold_up_gathering(
        caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from ice import CandidateType, StunServerUnreachable

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()
    s.close()

    async def main() -> tuple[list[CandidateType], list[object], float]:
        loop = asyncio.get_running_loop()
        c = Connection(True, stun_servers=[closed])
        seen: list[object] = []
        c.on_event = seen.append
        try:
            t0 = loop.time()
            cands = await c.gather()
            return [x.type for x in cands], seen, loop.time() - t0
        finally:
            c.close()

    with caplog.at_level("WARNING", logger="ice.aio.connection"):
        types, seen, took = asyncio.run(main())
    assert types == [CandidateType.HOST]
    if sys.platform == "linux":  # IP_RECVERR: the ICMP error names the server at once
        lost = [e for e in seen if isinstance(e, StunServerUnreachable)]
        assert len(lost) == 1 and lost[0].server == closed and "refused" in lost[0].reason.lower()
        assert took < 1
        assert any(f"127.0.0.1:{closed[1]}" in r.getMessage() and "unreachable" in r.getMessage()
                   for r in caplog.records)


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_sockets_keep_working_after_an_icmp_error(loop_kind: str) -> None:
    """A host socket that drew an ICMP error (IP_RECVERR: a STUN server on a closed port) still sends and receives
    afterwards: the pending error a later send reports is not a lost datagram, and under uvloop (which the CLI and
    the interop peers use) the socket is watched again after libuv saw the error."""
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()
    s.close()

    async def main() -> bytes:
        a = Connection(True, stun_servers=[closed])
        b = Connection(False, stun_servers=[closed])
        try:
            await signal_both(a, b)
            await asyncio.gather(a.connect(timeout=5), b.connect(timeout=5))
            a.send(b"after the ICMP error")
            return await asyncio.wait_for(b.recv(), 2)
        finally:
            a.close()
            b.close()

    if loop_kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
        try:
            got = loop.run_until_complete(main())
        finally:
            loop.close()
    else:
        got = asyncio.run(main())
    assert got == b"after the ICMP error"


def test_connect_has_a_deadline_that_names_the_state() -> None:
    from ice import ConnectTimeout

    async def main() -> BaseException | None:
        a = Connection(True)
        try:
            await a.gather()
            a.set_remote_credentials("ufrag", "p" * 22)  # no remote candidates, no end-of-candidates: no end
            try:
                await a.connect(timeout=0.05)
            except ConnectTimeout as exc:
                return exc
            return None
        finally:
            a.close()

    exc = asyncio.run(main())
    assert isinstance(exc, TimeoutError) and "end-of-candidates not received" in str(exc)
