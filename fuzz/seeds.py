"""The seed corpus: ``python -m fuzz.seeds`` writes fuzz/corpus/<target>/ afresh.

Seeds are what the fuzzer starts from and mutates, so they are the well-formed exchanges the stack really has:

* the RFC 5769 test vectors (tests/vectors/);
* datagrams captured from real runs on loopback: two :class:`~ice.aio.connection.Connection` s connecting
  directly, and two connecting relay-only through the embedded TURN server over UDP and over TCP (every datagram
  the agents, the TURN server and the TURN clients received, and the TCP streams as the server and client read
  them);
* programs for the structured targets (fuzz/targets.py reads them with :class:`~fuzz.reader.Reader`): the set-up
  flags, then the requests and responses of an allocation's life (Refresh, CreatePermission, ChannelBind, Send,
  ChannelData, deallocation), the checks and answers of an ICE session (nomination, role conflict, a
  peer-reflexive address, ICE restart), each well formed so that a mutation starts from a deep path.

Every file is named by the SHA-1 of its content (as libFuzzer names what it adds); a few dozen per target.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

from fuzz import targets as t
from fuzz.reader import Writer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "fuzz" / "corpus"
VECTORS = ROOT / "tests" / "vectors"

Capture = dict[str, list[tuple[object, object, bytes]]]


# ============================================================================================ capturing


async def _capture_async() -> Capture:
    """Run a direct and two relayed loopback connections and keep every datagram the machines were fed."""
    from ice.agent.agent import IceAgent
    from ice.aio.connection import Connection
    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.client import TurnClient, TurnClientConfig
    from ice.turn.server import TurnServer, TurnServerConfig

    got: Capture = {"agent": [], "server": [], "server-stream": [], "client": [], "client-stream": [], "sdp": []}
    originals = (IceAgent.handle_datagram, TurnServer.handle_datagram, TurnClient.handle_datagram)

    def agent_rx(self: IceAgent, now: float, local: object, remote: object, data: bytes) -> None:
        got["agent"].append((local, remote, data))
        originals[0](self, now, local, remote, data)  # type: ignore[arg-type]

    def server_rx(self: TurnServer, now: float, local: object, remote: object, data: bytes) -> None:
        stream = (local, remote) in self._stream_clients
        got["server-stream" if stream else "server"].append((local, remote, data))
        originals[1](self, now, local, remote, data)  # type: ignore[arg-type]

    def client_rx(self: TurnClient, now: float, local: object, remote: object, data: bytes) -> None:
        got["client-stream" if self.config.stream else "client"].append((local, remote, data))
        originals[2](self, now, local, remote, data)  # type: ignore[arg-type]

    IceAgent.handle_datagram = agent_rx  # type: ignore[method-assign]
    TurnServer.handle_datagram = server_rx  # type: ignore[method-assign]
    TurnClient.handle_datagram = client_rx  # type: ignore[method-assign]
    try:
        async def connect(a: Connection, b: Connection) -> None:
            ca, cb = await asyncio.gather(a.gather(), b.gather())
            got["sdp"] += [(None, None, ("a=candidate:" + c.to_sdp()).encode()) for c in ca + cb]
            a.set_remote_credentials(b.ufrag, b.pwd)
            b.set_remote_credentials(a.ufrag, a.pwd)
            for me, them in ((a, cb), (b, ca)):
                for c in them:
                    me.add_remote_candidate(c)
                me.add_remote_candidate(None)
            await asyncio.gather(a.connect(timeout=10), b.connect(timeout=10))
            a.send(b"seed from a")
            await asyncio.wait_for(b.recv(), 5)
            b.send(b"seed from b")
            await asyncio.wait_for(a.recv(), 5)
            a.close()
            b.close()
            await asyncio.sleep(0.05)

        await connect(Connection(controlling=True), Connection(controlling=False))
        config = TurnServerConfig(("127.0.0.1", 0), users={"user": "pass"}, allowed_peers=("127.0.0.0/8",))
        server = await TurnServerRunner(config, "127.0.0.1").start(tcp=True)
        try:
            for transport in ("udp", "tcp"):
                turn = TurnClientConfig(server.address, "user", "pass", transport=transport)
                await connect(Connection(controlling=True, turn=turn, relay_only=True),
                              Connection(controlling=False, turn=turn, relay_only=True))
        finally:
            server.close()
    finally:
        IceAgent.handle_datagram, TurnServer.handle_datagram, TurnClient.handle_datagram = originals  # type: ignore[method-assign]
    return got


def capture() -> Capture:
    return asyncio.run(_capture_async())


def _unique(datagrams: list[bytes], limit: int) -> list[bytes]:
    """Distinct datagrams, the first of each kind (message type and length bucket) first."""
    seen: set[bytes] = set()
    kinds: set[tuple[bytes, int]] = set()
    first: list[bytes] = []
    rest: list[bytes] = []
    for d in datagrams:
        if d in seen:
            continue
        seen.add(d)
        kind = (d[:2], len(d) // 16)
        (rest if kind in kinds else first).append(d)
        kinds.add(kind)
    return (first + rest)[:limit]


# =========================================================================================== programs


def _turn_attr_lifetime(w: Writer, seconds: int) -> None:
    w.u8(0).u8(1).u8(t._LIFETIMES.index(seconds))


def _turn_attr_channel(w: Writer, number: int) -> None:
    w.u8(1).u8(1).u8(t._CHANNELS.index(number))


def _turn_attr_peer(w: Writer, peer: int) -> None:
    w.u8(2).u8(0).u8(peer)


def _turn_attr_transport(w: Writer) -> None:
    w.u8(4).u8(0)


def _turn_attr_data(w: Writer, data: bytes) -> None:
    w.u8(10).blob(data)


def _turn_request(w: Writer, client: int, method: int, attrs: list[Callable[[Writer], None]], tid: bytes,
                  cls: int = 0, auth: int = 0) -> Writer:
    """Operation 2 of the turn-server target: a request from CLIENTS[client] (see targets.turn_request)."""
    w.u8(2).u8(client).u8(t._METHODS.index(method)).u8(cls).u8(1).raw(tid.ljust(12, b"\x00")[:12]).u8(len(attrs))
    for attr in attrs:
        attr(w)
    w.u8(auth)
    if auth < 6:
        w.u8(0).u8(1).u8(1).u8(0).u8(0).u8(1)  # user, nonce and realm valid, credentials last, SHA-1, FINGERPRINT
    else:
        w.u8(1)
    return w


def turn_server_seeds(cap: Capture) -> list[bytes]:
    from ice.stun.message import Method

    seeds: list[bytes] = []
    raw = _unique([d for _, _, d in cap["server"]], 12)
    peers = [d for local, _, d in cap["server"] if isinstance(local, tuple) and local[1] != 3478][:2]
    # Captured datagrams from clients (their nonces are another server's: these reach 401/438) and from peers.
    for d in raw:
        seeds.append(Writer().u8(0x03).u8(0).u8(0).u8(0).blob(d).data())
    for d in peers:
        seeds.append(Writer().u8(0x03).u8(1).u8(0).u8(0).u8(0).blob(d).data())
    stream = b"".join(d for _, _, d in cap["server-stream"])
    if stream:
        seeds.append(Writer().u8(0x04).u8(6).u8(0).blob(stream[:4000]).data())
    # An allocation's life, each request well formed and signed.
    life = Writer().u8(0x00)
    _turn_request(life, 0, Method.ALLOCATE, [_turn_attr_transport, lambda w: _turn_attr_lifetime(w, 600)], b"alloc")
    _turn_request(life, 0, Method.CREATE_PERMISSION, [lambda w: _turn_attr_peer(w, 0)], b"perm")
    _turn_request(life, 0, Method.CHANNEL_BIND, [lambda w: _turn_attr_channel(w, 0x4001),
                                                 lambda w: _turn_attr_peer(w, 1)], b"chan")
    _turn_request(life, 0, Method.SEND, [lambda w: _turn_attr_peer(w, 0),
                                         lambda w: _turn_attr_data(w, b"to the peer")], b"send", cls=3)
    life.u8(3).u8(1).u8(1).blob(b"channel data").u8(1).u8(0).u8(0)  # ChannelData on 0x4001
    life.u8(1).u8(0).u8(0).u8(1).blob(b"from the peer")  # the bound peer answers: ChannelData to the client
    life.u8(1).u8(0).u8(0).u8(0).blob(b"from a permitted peer")  # a Data indication
    _turn_request(life, 0, Method.REFRESH, [lambda w: _turn_attr_lifetime(w, 3600)], b"refresh")
    life.u8(4).u8(1).u8(t.DTS.index(301.0))  # the permission expires
    _turn_request(life, 0, Method.REFRESH, [lambda w: _turn_attr_lifetime(w, 0)], b"dealloc")
    seeds.append(life.data())
    for flags in (0x03, 0x07, 0x0B, 0x5F):
        w = Writer().u8(flags)
        _turn_request(w, 0, Method.CHANNEL_BIND, [lambda w: _turn_attr_channel(w, 0x4000),
                                                  lambda w: _turn_attr_peer(w, 1)], b"rebind")
        _turn_request(w, 0, Method.CHANNEL_BIND, [lambda w: _turn_attr_channel(w, 0x4001),
                                                  lambda w: _turn_attr_peer(w, 1)], b"otherchan")
        _turn_request(w, 2, Method.CREATE_PERMISSION, [lambda w: _turn_attr_peer(w, 2)], b"v6perm")
        _turn_request(w, 0, Method.ALLOCATE, [_turn_attr_transport], b"again")
        w.u8(3).u8(1).u8(0).blob(b"x" * 5).u8(1).u8(0).u8(1)  # padded ChannelData on 0x4000
        w.u8(5).u8(0).u8(0)  # the stream closes: so does the allocation
        w.u8(4).u8(0).u32(601_000)
        seeds.append(w.data())
    big = Writer().u8(0x03)
    big.u8(8).u8(0).u16(1400).u8(0).u8(0).u8(0)  # a 1,400-byte datagram from the permitted peer
    big.u8(8).u8(1).u16(1200).raw(b"big-binding.").u8(0)  # a Binding request with 1,200 bytes of PADDING
    big.u8(8).u8(2).u16(1300).raw(b"big-send-ind").u8(0).u8(0).u8(0)  # a Send indication with 1,300 bytes
    seeds.append(big.data())
    for auth in (1, 2, 3, 6, 7):
        w = Writer().u8(0x01)
        _turn_request(w, 0, Method.REFRESH, [lambda w: _turn_attr_lifetime(w, 600)], b"auth", auth=auth)
        seeds.append(w.data())
    return seeds + turn_server_tcp_seeds() + turn_server_batch_seeds()


def turn_server_tcp_seeds() -> list[bytes]:
    """TCP allocations (RFC 6062): Connect and the peer's connection coming up, ConnectionBind on a data
    connection, a peer connecting in (ConnectionAttempt) and bound, a connection closing, a Connect timing out,
    and a control connection closing with its connections; without TCP relay ports, 442."""
    seeds = []
    for flags in (0x03, 0x23):  # 0x20: Connect needs no permission
        w = Writer().u8(flags)
        w.u8(9).u8(1).u8(0).u8(1).u8(1).u8(0)  # CLIENTS[1], "user": TCP allocation, permissions for PEERS[0], [1]
        w.u8(10).u8(0).u8(1).u8(1).u8(0).u8(0)  # Connect from CLIENTS[1] to PEERS[0]
        w.u8(11).u8(0).u8(0)  # the I/O layer: connected
        w.u8(10).u8(5).u8(1).u8(0).u8(1).u8(0)  # ConnectionBind from CLIENTS[1]'s IP, port 41000: spliced
        w.u8(11).u8(3).u8(0).u8(0).u8(1)  # PEERS[1] connects to the relayed address: ConnectionAttempt
        w.u8(10).u8(5).u8(1).u8(1).u8(1).u8(1)  # ConnectionBind for it from port 41001
        w.u8(11).u8(2).u8(0)  # a connection ends
        w.u8(10).u8(0).u8(1).u8(1).u8(0).u8(0 if flags == 0x03 else 4)  # Connect again (0x23: to an unpermitted
        # peer); no answer from the I/O layer:
        w.u8(4).u8(1).u8(t.DTS.index(60.0))  # connect timeout: 447
        w.u8(5).u8(1).u8(0)  # the control connection closes: the allocation and its connections go
        seeds.append(w.data())
    seeds.append(Writer().u8(0x80).u8(9).u8(0).u8(0).u8(1).u8(0).u8(0).data())  # no TCP relay ports: 442
    return seeds


def turn_server_batch_seeds() -> list[bytes]:
    """Batches through handle_datagrams, compared with one datagram at a time: ChannelData from the client on
    its channel (the first relayed by the general path, the rest on its route), then the peer's datagrams."""
    w = Writer().u8(0x03)
    w.u8(12).u8(0).u8(5)  # six datagrams on the listening address
    w.u8(1).u8(0).blob(b"first").u8(1)
    for i in range(3):
        w.u8(1).u8(0).blob(b"on the route %d" % i).u8(1)
    w.u8(3).u8(0).blob(b"\x00\x01\x00\x00not stun")
    w.u8(0)
    w.u8(12).u8(1).u8(0).u8(4)  # five datagrams from peers on the relayed address
    for i in range(4):
        w.u8(1).u8(0).blob(b"to the client %d" % i)
    w.u8(3).u8(3).raw(bytes([203, 0, 113, 9])).u16(5000).blob(b"unpermitted")
    return [w.data()]


def _client_success(w: Writer, pending: int, relayed: bool, lifetime: int | None) -> None:
    w.u8(1).u8(1).u8(pending).u8(1).u8(0)  # op, a pending request, same method, success
    w.u8(1 if relayed else 0)
    if relayed:
        w.u8(0).u8(0)
    w.u8(1).u8(0).u8(0)  # XOR-MAPPED-ADDRESS
    w.u8(0 if lifetime is None else 1)
    if lifetime is not None:
        w.u8(1).u8(t._LIFETIMES.index(lifetime))
    w.u8(0).u8(2).u8(1)  # no extra attributes, signed, FINGERPRINT


def _client_error(w: Writer, pending: int, code: int, realm: bool, alternate: bool = False) -> None:
    w.u8(1).u8(1).u8(pending).u8(1).u8(1)  # op, a pending request, same method, error
    w.u8(1).u8(t._ERRORS.index(code)).text("reason")
    w.u8(1 if realm else 0)
    if realm:
        w.u8(1).text("nonce-2")
    w.u8(1 if alternate else 0)
    if alternate:
        w.u8(0).u8(0)
    w.u8(0).u8(0).u8(1)  # no extras, unsigned, FINGERPRINT


def turn_client_seeds(cap: Capture) -> list[bytes]:
    seeds = [Writer().u8(0x00).u8(0).blob(d).data() for d in _unique([d for _, _, d in cap["client"]], 10)]
    stream = [d for _, _, d in cap["client-stream"]]
    seeds += [Writer().u8(0x09).u8(0).blob(d).data() for d in _unique(stream, 4)]
    # From idle: allocate, 401, success.
    w = Writer().u8(0x00).u8(6).u8(4).u8(0).u8(0)  # allocate()
    _client_error(w, 0, 401, realm=True)
    _client_success(w, 1, relayed=True, lifetime=600)
    seeds.append(w.data())
    for flags in (0x01, 0x03, 0x0B):
        w = Writer().u8(flags)
        w.u8(6).u8(1).u8(0).u8(2)  # bind a channel to PEERS[2]
        _client_success(w, 0, relayed=False, lifetime=None)
        w.u8(6).u8(2).u8(0).u8(2).blob(b"over the channel")  # send
        w.u8(4).u8(0).blob(b"channel data").u8(1)  # ChannelData from the server
        w.u8(3).u8(1).u8(0).u8(0).u8(1).blob(b"indication").raw(b"dataind-tid.").u8(1)  # Data indication
        w.u8(5).u8(1).u8(t.DTS.index(540.0))  # refresh time
        _client_error(w, 0, 438, realm=True)  # stale nonce: retried with the new one
        _client_error(w, 0, 437, realm=False)  # the server forgot the allocation
        w.u8(5).u8(1).u8(t.DTS.index(60.0))
        w.u8(6).u8(3).u8(0).u8(0)  # close
        seeds.append(w.data())
    w = Writer().u8(0x00).u8(6).u8(4).u8(0).u8(0)
    _client_error(w, 0, 300, realm=False, alternate=True)
    _client_error(w, 0, 401, realm=True)
    _client_error(w, 0, 486, realm=False)
    seeds.append(w.data())
    return seeds + turn_client_tcp_seeds()


def turn_client_tcp_seeds() -> list[bytes]:
    """A TCP allocation (RFC 6062): Connect and its CONNECTION-ID, a data connection's ConnectionBind through a
    401 with a new nonce, a peer's ConnectionAttempt and its bind refused (438 without a nonce), a Connect that
    fails (447)."""
    w = Writer().u8(0x11)  # allocated through 401, REQUESTED-TRANSPORT TCP over TCP
    w.u8(6).u8(6).u8(0).u8(0)  # connect(PEERS[0]): CreatePermission and Connect
    _client_success(w, 0, relayed=False, lifetime=None)  # the permission
    w.u8(1).u8(1).u8(1).u8(1).u8(0).u8(0).u8(0).u8(0).u8(1).u32(0x1234).u8(0).u8(2).u8(1)  # Connect: CONNECTION-ID
    w.u8(9).u8(1).u8(0).u8(1)  # ConnectionBind for it with the allocation's credentials
    w.u8(1).u8(1).u8(1).u8(0).text("again").u8(1).u8(1).text("nonce-3").u8(1).u8(0).u8(1)  # 401, new nonce
    w.u8(1).u8(0).u8(1).u8(1).u8(2).u8(1)  # success: bound
    w.u8(8).u8(1).u8(0).u8(1).u8(1).u32(0x5678).u8(0).raw(b"attempt-tid.").u8(1)  # ConnectionAttempt, PEERS[1]
    w.u8(9).u8(1).u8(1).u8(1)  # its ConnectionBind
    w.u8(1).u8(1).u8(1).u8(1).text("stale").u8(0).u8(1).u8(0).u8(1)  # 438 without REALM and NONCE: failed
    w.u8(6).u8(6).u8(0).u8(2)  # connect(PEERS[2])
    _client_error(w, 3, 447, realm=False)
    return [w.data()]


def _agent_check(w: Writer, remote: int, use: bool = False, role: int = 2, tid: bytes = b"check",
                 sign: int = 0, base: int = 0) -> None:
    w.u8(1).u8(0).u8(1).u32(0x6E7F00FF)  # op, USERNAME right, PRIORITY
    w.u8(role)
    if role < 2:
        w.u64(0x10)
    w.u8(1 if use else 0).u8(0).u8(sign)
    w.raw(tid.ljust(12, b"\x00")[:12])
    if sign < 7:
        w.u8(0).u8(1)  # SHA-1, FINGERPRINT
    w.u8(base).u8(0).u8(remote)


def _agent_answer(w: Writer, pending: int, error: int | None = None, mapped_other: bool = False) -> None:
    w.u8(3).u8(1).u8(pending)
    if error is None:
        w.u8(1)
    else:
        w.u8(0).u8(t._AGENT_ERRORS.index(error))
    w.u8(1).u8(0).u8(1 if mapped_other else 0)  # XOR-MAPPED-ADDRESS: the base, or a new mapping (prflx)
    w.u8(0).u8(0).u8(1)  # no extras, signed with the remote password, symmetric


def agent_seeds(cap: Capture) -> list[bytes]:
    seeds = [Writer().u8(0x01).u64(5).u8(0).u8(0).u8(0).u8(0).blob(d).data()
             for d in _unique([d for _, _, d in cap["agent"]], 12)]
    for flags in (0x01, 0x00, 0x03, 0x05, 0x21, 0x40, 0x09):
        w = Writer().u8(flags).u64(0x1234)
        _agent_answer(w, 0)  # our first check succeeds
        _agent_check(w, 0, use=not flags & 1)  # the peer's check (nominating if we are controlled)
        _agent_check(w, 1, role=0 if flags & 1 else 1, tid=b"conflict")  # role conflict
        _agent_answer(w, 0, mapped_other=True)
        _agent_answer(w, 1, error=487)
        w.u8(5).u8(1).u8(t.DTS.index(0.05))
        w.u8(4).u8(0).u8(0).u8(0).blob(b"application data")
        w.u8(5).u8(1).u8(t.DTS.index(5.0))  # consent checks
        _agent_answer(w, 2)
        w.u8(6).u8(0).u8(1)  # ICE restart with new remote credentials
        _agent_check(w, 0, use=True, tid=b"after")
        w.u8(5).u8(1).u8(t.DTS.index(30.0))
        seeds.append(w.data())
    w = Writer().u8(0x08).u64(9)  # credentials late: checks arrive before them
    _agent_check(w, 0, use=True, tid=b"early")
    w.u8(6).u8(4).u8(0)
    _agent_check(w, 2, sign=6, tid=b"badkey")
    w.u8(6).u8(6).u8(0)  # a server-reflexive request
    _agent_answer(w, 0, mapped_other=True)
    w.u8(6).u8(2).u8(1).text("candidate:7 1 udp 1694498815 198.51.100.30 7002 typ srflx raddr 10.0.0.1 rport 9")
    w.u8(6).u8(3)
    seeds.append(w.data())
    return seeds + agent_tcp_seeds()


def _tcp_answer(w: Writer, check: int) -> None:
    """Operation 10 of the agent target: the peer answers our TCP check number ``check`` on the first connection
    up, in one frame cut in two reads."""
    w.u8(10).u8(1).u8(0).u8(1).u8(1).u8(check).u8(1).u8(1).u8(0).u8(0).u8(1).u8(0).u8(7)


def agent_tcp_seeds() -> list[bytes]:
    """ICE-TCP (RFC 6544): an active candidate connects to the peer's passive one, its checks and the nomination
    answered in RFC 4571 frames, data, the connection closing and a reconnect; a passive candidate accepting the
    peer's connection, a check on it (a peer-reflexive active candidate), data; a so pair."""
    seeds = []
    for flags in (0x01, 0x41):
        w = Writer().u8(flags).u64(0x1234)
        w.u8(8).u8(0x05).u8(1).u16(100).u8(0).u8(0).u8(0).u8(1).u16(5)  # active + passive; the peer's passive
        w.u8(5).u8(1).u8(t.DTS.index(0.05))  # the check is due: TcpConnect
        w.u8(9).u8(0).u8(0)  # connected: the check goes out in a frame
        _tcp_answer(w, 0)
        w.u8(5).u8(1).u8(t.DTS.index(0.05))
        _tcp_answer(w, 1)  # the nomination
        w.u8(10).u8(1).u8(0).u8(2).blob(b"application data").u8(1).u8(5)  # two data frames
        w.u8(9).u8(2).u8(0)  # the connection closes
        w.u8(5).u8(1).u8(t.DTS.index(1.0))  # reconnect
        w.u8(9).u8(1).u8(0)  # refused
        w.u8(5).u8(1).u8(t.DTS.index(5.0))
        seeds.append(w.data())
    w = Writer().u8(0x00).u64(0x99)  # controlled, a passive candidate: the peer connects to it
    w.u8(8).u8(0x01).u8(0).u8(1).u16(200).u8(0).u8(0).u8(0)  # the peer's active candidate
    w.u8(9).u8(3).u8(3).raw(bytes([198, 51, 100, 20])).u16(50123).u8(0)  # accepted from an ephemeral port
    w.u8(10).u8(1).u8(0).u8(0).u32(0x6E7F1EFF).u8(0).u64(7).u8(1).u8(0).u8(1).raw(b"tcp-check-01").u8(0).u8(0)
    w.u8(10).u8(1).u8(0).u8(2).blob(b"data after the check").u8(0).u8(3)
    w.u8(5).u8(1).u8(t.DTS.index(30.0))  # consent over TCP
    w.u8(9).u8(3).u8(0).u8(0).u8(0)  # a second connection on the passive base; left idle
    w.u8(5).u8(1).u8(t.DTS.index(30.0))
    seeds.append(w.data())
    w = Writer().u8(0x01).u64(0x77)  # so with so
    w.u8(8).u8(0x02).u8(0).u8(0).u8(1).u16(300).u8(0).u8(0)
    w.u8(5).u8(1).u8(t.DTS.index(0.05))
    w.u8(9).u8(0).u8(0)
    _tcp_answer(w, 0)
    w.u8(6).u8(5)  # close: every connection closed
    seeds.append(w.data())
    return seeds


def _relayed_answer(w: Writer, check: int, error: int | None = None) -> None:
    """Operation 3 of the relayed target: the remote agent answers our check number ``check`` (no channel yet)."""
    w.u8(3).u8(1).u8(check)
    if error is None:
        w.u8(1)
    else:
        w.u8(0).u8(t._AGENT_ERRORS.index(error))
    w.u8(1).u8(0).u8(0).u8(1).raw(b"answer-ind..")  # XOR-MAPPED-ADDRESS: the relayed address; signed


def _relayed_check(w: Writer, remote: int, use: bool, role: int = 2) -> None:
    """Operation 2: a check from the remote agent (no channel yet), signed with our password."""
    w.u8(2).u8(0).u8(remote).u32(0x00FFFFFF).u8(role)
    if role < 2:
        w.u64(0x99)
    w.u8(1 if use else 0).u8(0).u8(1).raw(b"peer-check..").raw(b"check-ind...")


def relayed_seeds(cap: Capture) -> list[bytes]:
    seeds = [Writer().u8(0x06).u64(5).u8(0).u8(1).blob(d).data()
             for d in _unique([d for _, _, d in cap["client"]], 8)]
    for flags in (0x05, 0x07, 0x04, 0x25, 0x45, 0x0D):
        w = Writer().u8(flags).u64(0x77)
        _relayed_answer(w, 0)
        _relayed_check(w, 0, use=not flags & 1, role=1 if flags & 1 else 0)
        w.u8(4).u8(1).u8(t.DTS.index(0.05))
        _relayed_answer(w, 1)
        _relayed_answer(w, 2, error=487)
        w.u8(4).u8(1).u8(t.DTS.index(5.0))
        w.u8(5).u8(1).blob(b"relayed application data")
        w.u8(4).u8(1).u8(t.DTS.index(30.0))
        w.u8(5).u8(2)  # close: deallocate
        seeds.append(w.data())
    return seeds


def _rt_op(w: Writer, code: int, which: int = 0) -> Writer:
    """An operation of the relayed-tcp target on the newest connection the driver was asked to open (``which``
    counts back from it)."""
    return w.u8(code).u8(1).u8(which)


def _rt_answer(w: Writer, index: int = 0, cid: int = 0x1234, error: bool = False) -> None:
    """Operation 1: the server answers the newest TURN request (``index`` back); a Connect with its CONNECTION-ID,
    or, with ``error``, an error response (447)."""
    _rt_op(w, 1).u8(1).u8(index)
    if error:
        # not a success with its id: client_response's fields (no other method, an error, 447, no REALM, no
        # ALTERNATE-SERVER, no extra attribute, signed, with FINGERPRINT)
        w.u8(0).u8(1).u8(1).u8(1).u8(t._ERRORS.index(447)).blob(b"x").u8(0).u8(0).u8(0).u8(1).u8(1)
    else:
        w.u8(1).u32(cid).u8(1)


def _rt_bind(w: Writer, code: int | None = None, extra: bytes = b"", split: int | None = None) -> None:
    """Operation 4: the ConnectionBind answer on the newest connection (success, or the error ``code``), perhaps
    with the peer's first bytes behind it, perhaps read in two parts."""
    _rt_op(w, 4)
    if code is None:
        w.u8(1)
    else:
        w.u8(0).u8((401, 438, 400, 403).index(code)).u8(1)
    w.u8(1)
    if extra:
        w.u8(0).blob(extra)
    else:
        w.u8(1)
    if split is None:
        w.u8(1)
    else:
        w.u8(0).u8(split)


def _rt_answer_check(w: Writer, index: int = 0) -> None:
    """Operation 5: the peer answers our check (``index`` back from the newest), success, signed."""
    _rt_op(w, 5).u8(1).u8(1).u8(index).u8(1).u8(0).u8(0).u8(1)


def _rt_peer_check(w: Writer, use: bool, role: int = 0) -> None:
    """Operation 5: the peer's check on the newest connection, signed with our password."""
    _rt_op(w, 5).u8(0).u32(0x6E7F1EFF).u8(role)
    if role < 2:
        w.u64(0x99)
    w.u8(1 if use else 0).u8(1).raw(b"peer-check01")


def _rt_later(w: Writer, dt: float) -> None:
    _rt_op(w, 6).u8(1).u8(t.DTS.index(dt))


def _rt_attempt(w: Writer, remote: int = 1, cid: int = 0x777) -> None:
    """Operation 2: a ConnectionAttempt indication, the peer at REMOTES[remote]."""
    _rt_op(w, 2).u32(cid).u8(0).u8(remote).u8(1).raw(b"attempt-0001")


def relayed_tcp_seeds(cap: Capture) -> list[bytes]:
    seeds = [Writer().u8(0x05).u64(5).u8(0).u8(0).u8(0).blob(d).data()
             for d in _unique([d for _, _, d in cap["client-stream"]], 6)]
    for flags in (0x05, 0x07, 0x25, 0x35):  # controlling: the active relayed candidate connects (a Connect)
        w = Writer().u8(flags).u64(0x77)
        _rt_answer(w)
        _rt_op(w, 3).u8(0)  # the data connection is up: its ConnectionBind goes
        _rt_bind(w)
        _rt_answer_check(w)
        _rt_answer_check(w)  # the nomination
        _rt_later(w, 5.0)
        _rt_later(w, 30.0)
        _rt_op(w, 7).u8(2)  # close: deallocate
        seeds.append(w.data())
    for flags in (0x14, 0x34):  # controlled: the peer connects to the passive relayed candidate
        w = Writer().u8(flags).u64(0x99)
        _rt_attempt(w)
        _rt_op(w, 3).u8(0)
        _rt_bind(w, extra=b"\x00\x04data")
        _rt_peer_check(w, use=True)
        _rt_later(w, 0.05)
        _rt_answer_check(w)
        _rt_later(w, 30.0)
        seeds.append(w.data())
    w = Writer().u8(0x14).u64(0x98)  # a ConnectionBind answered 401 first, then bound; read in two parts
    _rt_attempt(w)
    _rt_op(w, 3).u8(0)
    _rt_bind(w, code=401)
    _rt_bind(w, split=7)
    _rt_peer_check(w, use=False, role=0)
    seeds.append(w.data())
    w = Writer().u8(0x05).u64(0x76)  # the Connect refused, the data connection refused, a timeout
    _rt_answer(w, error=True)
    _rt_later(w, 0.5)
    _rt_answer(w)
    _rt_op(w, 3).u8(1)
    _rt_later(w, 5.0)
    _rt_later(w, 60.0)
    seeds.append(w.data())
    w = Writer().u8(0x05).u64(0x75)  # connected, then the network changes and an ICE restart follows
    _rt_answer(w)
    _rt_op(w, 3).u8(0)
    _rt_bind(w)
    _rt_answer_check(w)
    _rt_answer_check(w)
    _rt_op(w, 7).u8(4)
    _rt_later(w, 1.0)
    _rt_op(w, 7).u8(0)
    _rt_later(w, 1.0)
    seeds.append(w.data())
    w = Writer().u8(0x10).u64(0x74)  # no allocation yet: a ConnectionAttempt is ignored
    _rt_attempt(w)
    _rt_later(w, 5.0)
    seeds.append(w.data())
    return seeds


SDP_LINES = [
    "a=candidate:1 1 udp 2130706431 192.0.2.1 54400 typ host",
    "candidate:2 1 UDP 1694498815 203.0.113.7 61000 typ srflx raddr 192.0.2.1 rport 54400 generation 0",
    "3 2 udp 16777215 198.51.100.9 3478 typ relay raddr 203.0.113.7 rport 61000 network-id 1 network-cost 10",
    "candidate:4 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active",
    "candidate:5 1 udp 2122262783 2001:db8::1 54401 typ host generation 0 ufrag abcd",
    "candidate:6 1 udp 2113937151 3b2f8a54-1e4c-4b0a-9a3c-6d5e2f1a0b7c.local 54402 typ host",
    "candidate:7 1 udp 1845501695 198.51.100.30 7002 typ prflx raddr 0.0.0.0 rport 0",
]
SDP_BLOB = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-options:trickle ice2", "m=audio 9 UDP/TLS/RTP/SAVPF 0",
    "a=ice-ufrag:F7gI", "a=ice-pwd:x9cml/YzichV2+XlhiMu8g", "a=ice-lite", *SDP_LINES[:3], "a=end-of-candidates", ""])


def sdp_seeds(cap: Capture) -> list[bytes]:
    lines = SDP_LINES + [d.decode() for _, _, d in cap["sdp"]][:8]
    seeds = [b"\x00" + line.encode() for line in lines]
    seeds += [b"\x01" + SDP_BLOB.encode(), b"\x03" + SDP_LINES[1].encode(),
              b"\x02" + f"{SDP_LINES[0][12:]} | {SDP_LINES[2]}".encode()]
    return seeds + sdp_tcp_seeds()


SDP_TCP_LINES = [  # RFC 6544 §4.5: tcptype, an active candidate's port 9
    "candidate:tcp1 1 tcp 1518280447 192.0.2.20 9 typ host tcptype active",
    "candidate:tcp2 1 tcp 1518214911 192.0.2.20 7100 typ host tcptype passive",
    "candidate:tcp3 1 tcp 1518149375 2001:db8::20 7101 typ host tcptype so",
    "candidate:tcp4 1 tcp 1845501695 203.0.113.7 7102 typ srflx raddr 192.0.2.20 rport 7100 tcptype so",
]


def sdp_tcp_seeds() -> list[bytes]:
    blob = "a=ice-ufrag:RMTE\na=ice-pwd:remotepassword012345678\n" + "".join(f"a={line}\n" for line in SDP_TCP_LINES)
    return [b"\x00" + "\n".join(SDP_TCP_LINES).encode(), b"\x03" + SDP_TCP_LINES[1].encode(),
            b"\x03" + SDP_TCP_LINES[2].encode(), b"\x01" + blob.encode()]


def stream_seeds(cap: Capture) -> list[bytes]:
    out = []
    for key in ("server-stream", "client-stream"):
        body = b"".join(d for _, _, d in cap[key])
        if body:
            out.append(Writer().u8(0).raw(body[:8000]).data())
            out.append(Writer().u8(3).u8(1).u8(7).u8(63).raw(body[:3000]).data())
    out.append(Writer().u8(1).u8(3).raw(b"\x40\x00\x00\x05hello\x00\x00\x00" + b"\x40\x00\x00\x00").data())
    return out


def stun_seeds(cap: Capture) -> list[bytes]:
    vectors = [p.read_bytes() for p in sorted(VECTORS.glob("*.bin"))]
    captured = [d for k in ("agent", "server", "client") for _, _, d in cap[k] if d[:1] < b"\x40"]
    return vectors + _unique(captured, 30)


def stun_server_seeds(cap: Capture) -> list[bytes]:
    vectors = [p.read_bytes() for p in sorted(VECTORS.glob("*request*.bin"))]
    head = Writer().u8(1).u8(1).u8(0).u8(0).u8(0).u8(0).u16(0).data()
    requests = [d for _, _, d in cap["server"] if d[:2] == b"\x00\x01"][:3]
    legacy = Writer().u8(0).u8(0).u8(1).u8(0).u8(0).u8(0).u16(0).raw(b"\x00\x01\x00\x00" + bytes(16)).data()
    change = bytes.fromhex("000100082112a442") + bytes(12) + bytes.fromhex("0003000400000006")
    padded = Writer().u8(1).u8(1).u8(0).u8(0).u8(0).u8(1).u16(0xFFF0).data()  # PADDING of 65,280 bytes
    return [head + v for v in [*vectors, *requests, change]] + [legacy, head, padded]


SEEDS: dict[str, Callable[[Capture], list[bytes]]] = {
    "stun": stun_seeds,
    "stun-server": stun_server_seeds,
    "turn-server": turn_server_seeds,
    "turn-client": turn_client_seeds,
    "agent": agent_seeds,
    "relayed": relayed_seeds,
    "relayed-tcp": relayed_tcp_seeds,
    "sdp": sdp_seeds,
    "stream": stream_seeds,
}


def write(names: list[str]) -> None:
    cap = capture()
    for name in names:
        directory = CORPUS / name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        seeds = SEEDS[name](cap)
        for seed in seeds:
            (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        print(f"{name}: {len(seeds)} seeds, {sum(map(len, seeds)):,} bytes")


if __name__ == "__main__":
    write(sys.argv[1:] or list(SEEDS))
