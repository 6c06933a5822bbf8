"""``icelab bench turnscale``: the TURN server core at scale: 1,000 allocations, 10,000 permissions and 1,000 channels
(RFC 8656 §7, §9, §12), its memory per allocation (tracemalloc), whether memory returns to where it started once
every allocation is deleted, and how long relaying one ChannelData datagram takes at that load (median, p99).

It drives the sans-IO core (:class:`ice.turn.server.TurnServer`) in this process, on a fixed clock, so the figures
are the server's own cost, without sockets or the event loop (``icelab bench relay`` measures those, against
coturn).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field

from ice.stun import Message, MessageClass, Method, long_term_key, parse
from ice.stun.attributes import (
    Address,
    Attribute,
    ChannelNumber,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)
from ice.turn.server import TurnServer, TurnServerConfig

LISTEN = ("203.0.113.10", 3478)
ALLOCATIONS = 1000
PERMISSIONS_EACH = 10
RELAYED_PACKETS = 20_000


@dataclass
class _Ports:
    next_port: int = 20000
    free: list[int] = field(default_factory=list)

    def reserve(self, family: int) -> Address | None:
        if self.free:
            return (LISTEN[0], self.free.pop())
        self.next_port += 1
        return (LISTEN[0], self.next_port)

    def release(self, relayed: Address) -> None:
        self.free.append(relayed[1])


def _client(i: int) -> Address:
    return (f"198.51.{100 + i // 250}.{1 + i % 250}", 40000)


def _peer(i: int, j: int) -> Address:
    return (f"192.0.{2 + j}.{1 + i % 250}", 50000 + i // 250)


class _Clients:
    """Authenticated requests the way a client sends them after the 401 round trip (one nonce per client)."""

    def __init__(self, server: TurnServer) -> None:
        self.server = server
        self.key = long_term_key("alice", "icelab", "secret")
        self.nonces: dict[Address, str] = {}

    def feed(self, client: Address, data: bytes) -> list[bytes]:
        self.server.handle_datagram(0.0, LISTEN, client, data)
        out = []
        while (t := self.server.poll_transmit()) is not None:
            out.append(t.data)
        return out

    def request(self, client: Address, method: int, *attrs: Attribute) -> Message:
        if client not in self.nonces:
            first = self.feed(client, Message(method, MessageClass.REQUEST, attributes=list(attrs)).encode())
            nonce = parse(first[0]).get(Nonce)
            assert nonce is not None
            self.nonces[client] = nonce.text
        msg = Message(method, MessageClass.REQUEST,
                      attributes=[*attrs, Username("alice"), Realm("icelab"), Nonce(self.nonces[client])])
        (answer,) = self.feed(client, msg.encode(self.key, fingerprint=True))
        resp = parse(answer)
        if resp.message_class is not MessageClass.SUCCESS:
            raise RuntimeError(f"{Method(method).name} failed: {resp.error}")
        return resp


def _populate(clients: _Clients) -> None:
    """Every client allocates, permits its peers and binds a channel to the first."""
    for i in range(ALLOCATIONS):
        c = _client(i)
        resp = clients.request(c, Method.ALLOCATE, RequestedTransport(17))
        if resp.get(XorRelayedAddress) is None:
            raise RuntimeError("an Allocate success without XOR-RELAYED-ADDRESS")
        for j in range(PERMISSIONS_EACH):
            clients.request(c, Method.CREATE_PERMISSION, XorPeerAddress(*_peer(i, j)))
        clients.request(c, Method.CHANNEL_BIND, ChannelNumber(0x4000), XorPeerAddress(*_peer(i, 0)))


def _deallocate(clients: _Clients) -> None:
    for i in range(ALLOCATIONS):
        clients.request(_client(i), Method.REFRESH, Lifetime(0))  # RFC 8656 §8: lifetime 0 deletes it
    clients.nonces.clear()


def measure() -> dict[str, object]:
    """Set up the load, relay through it, delete it all; then set it up and delete it again, twice, so memory
    that stays after the first cycle (hash tables keep their size) is told apart from memory that grows with every
    cycle (a leak)."""
    gc.collect()
    tracemalloc.start()
    config = TurnServerConfig(LISTEN, users={"alice": "secret"}, user_quota=ALLOCATIONS)  # one user, many clients
    server = TurnServer(config, _Ports(), secret=b"bench")
    clients = _Clients(server)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    _populate(clients)
    setup_s = time.perf_counter() - started
    clients.nonces.clear()
    gc.collect()
    loaded = tracemalloc.get_traced_memory()[0]
    # Relaying at that load: ChannelData from each client in turn to its channel's peer.
    frame = b"\x40\x00\x00\x64" + bytes(100)  # ChannelData on channel 0x4000, 100 bytes (RFC 8656 §12.4)
    latencies = []
    for n in range(RELAYED_PACKETS):
        t0 = time.perf_counter_ns()
        server.handle_datagram(0.0, LISTEN, _client(n % ALLOCATIONS), frame)
        while server.poll_transmit() is not None:
            pass
        latencies.append(time.perf_counter_ns() - t0)
    latencies.sort()
    relay = {"median": round(statistics.median(latencies) / 1000, 2),
             "p99": round(latencies[int(0.99 * (len(latencies) - 1))] / 1000, 2)}
    del latencies
    _deallocate(clients)
    gc.collect()
    after_first = tracemalloc.get_traced_memory()[0]
    for _ in range(2):
        _populate(clients)
        _deallocate(clients)
    gc.collect()
    after_more = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "allocations": ALLOCATIONS,
        "permissions": ALLOCATIONS * PERMISSIONS_EACH,
        "channels": ALLOCATIONS,
        "setup_seconds": round(setup_s, 3),
        "memory_per_allocation_bytes": round((loaded - base) / ALLOCATIONS),
        "memory_kept_after_deallocation_bytes": after_first - base,
        "leak_bytes_per_cycle": max(0, round((after_more - after_first) / 2)),
        "relay_processing_us": relay,
        "relayed_packets": server.stats.get("relayed-to-peer", 0),
        "allocations_left": len(server.allocations),
    }


def main(args: argparse.Namespace) -> int:
    doc = {"benchmark": "turnscale", "what": "the sans-IO TURN server core at scale (no sockets)", **measure()}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{doc['allocations']} allocations, {doc['permissions']} permissions, {doc['channels']} channels set up in "
          f"{doc['setup_seconds']} s")
    print(f"memory per allocation: {doc['memory_per_allocation_bytes']} bytes (tracemalloc); kept after deleting "
          f"them all: {doc['memory_kept_after_deallocation_bytes']} bytes (tables keep their size); growth per "
          f"further cycle of 1,000 allocations set up and deleted: {doc['leak_bytes_per_cycle']} bytes")
    lat = doc["relay_processing_us"]
    assert isinstance(lat, dict)
    print(f"relaying one ChannelData datagram at that load: median {lat['median']} us, p99 {lat['p99']} us "
          f"({doc['relayed_packets']} relayed)")
    return 0
