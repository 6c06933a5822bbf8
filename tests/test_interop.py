"""Interop with real peers installed by scripts/provision.sh: coturn and stund, both directions. Loopback only."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from conftest import need_tool

from ice.aio.discovery import Behaviour, discover_behaviour
from ice.aio.stun import stun_binding

pytestmark = pytest.mark.interop


def test_our_client_against_coturn(coturn: tuple[str, int, int]) -> None:
    host, port, alt = coturn
    res = asyncio.run(stun_binding((host, port), ("127.0.0.1", 0)))
    assert res.mapped == res.local
    assert res.software is not None and "Coturn" in res.software
    assert res.response_origin == (host, port)
    assert res.other_address == ("127.0.0.2", alt)


def test_our_behaviour_discovery_against_coturn(coturn: tuple[str, int, int]) -> None:
    host, port, _ = coturn
    rep = asyncio.run(discover_behaviour((host, port), ("127.0.0.1", 0)))
    assert rep.behind_nat is False
    assert rep.mapping is Behaviour.ENDPOINT_INDEPENDENT and rep.filtering is Behaviour.ENDPOINT_INDEPENDENT


def test_our_client_against_stund(stund: tuple[str, int]) -> None:
    host, port = stund
    res = asyncio.run(stun_binding((host, port), ("127.0.0.1", 0)))
    assert res.mapped == res.local
    assert res.software is not None and "Vovida" in res.software
    assert res.other_address is not None and res.other_address[0] == "127.0.0.2"  # from CHANGED-ADDRESS


def test_our_behaviour_discovery_against_stund(stund: tuple[str, int]) -> None:
    rep = asyncio.run(discover_behaviour(stund, ("127.0.0.1", 0)))
    assert rep.behind_nat is False and rep.filtering is Behaviour.ENDPOINT_INDEPENDENT


def test_coturn_client_against_our_server(icelab_server: tuple[str, int]) -> None:
    need_tool("turnutils_stunclient")
    host, port = icelab_server
    out = subprocess.run(
        ["turnutils_stunclient", "-f", "-p", str(port), "-L", "127.0.0.1", host],
        capture_output=True, text=True, timeout=20,
    ).stdout
    # RFC 5780 mode: three responses, the 2nd and 3rd from the alternate address after CHANGE-REQUEST.
    assert out.count("UDP reflexive addr: 127.0.0.1:") == 3
    assert f"Response origin: : 127.0.0.1:{port}" in out
    assert "Response origin: : 127.0.0.2:" in out
    assert "Other addr: : 127.0.0.2:" in out


def test_stund_client_against_our_server(icelab_server: tuple[str, int]) -> None:
    """stund's `stun` is an RFC 3489 client (no magic cookie): our server must answer it the old way."""
    need_tool("stun")
    host, port = icelab_server
    p = subprocess.run(["stun", f"{host}:{port}", "-v", "-i", "127.0.0.1"], capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert "test I = 1" in out and "test II = 1" in out and "test III = 1" in out
    assert "Primary: Open" in out
