"""A TURN relay load generator: allocate, bind a channel to a peer socket, then push ChannelData through the relay.

``python -m bench.turnload HOST PORT USER PASS COUNT WINDOW`` (its own process). The peer echoes every datagram
back to the relayed address, so each round trip is two relayed packets (client->peer and peer->client). Datagrams
move in batches (UDP GSO sends, :func:`bench.stunload.segmenter`, else ``sendmmsg``; ``recvmmsg`` with the C
accelerator, :mod:`ice.aio.udp`) on connected sockets, and it yields the CPU after each read
(:func:`bench.stunload.fair_wait`), so the load process stays cheap beside either server; its own CPU use is
reported (``load_cpu``: CPU seconds over wall seconds). Prints one JSON line: packets relayed, seconds,
relayed packets/s, lost, load_cpu.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

from bench.stunload import UDP_SEGMENT, fair_wait, segmenter
from ice.aio.udp import recv_batch, send_batch
from ice.stun import Message, MessageClass, Method, long_term_key, parse
from ice.stun.attributes import (
    Address,
    ChannelNumber,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)

CHANNEL = 0x4001


def _request(sock: socket.socket, server: tuple[str, int], method: int, attrs: list[object], user: str,
             password: str, realm_nonce: tuple[str, str] | None) -> tuple[Message, tuple[str, str] | None]:
    for _ in range(3):
        if realm_nonce is None:
            msg = Message(method, MessageClass.REQUEST, attributes=attrs).encode()  # type: ignore[arg-type]
        else:
            realm, nonce = realm_nonce
            key = long_term_key(user, realm, password)
            msg = Message(method, MessageClass.REQUEST, attributes=[*attrs, Username(user), Realm(realm),
                                                                    Nonce(nonce)]).encode(key, fingerprint=True)  # type: ignore[list-item]
        sock.sendto(msg, server)
        resp = parse(sock.recv(4096))
        err = resp.error
        if err is not None and err.code in (401, 438):
            realm_attr, nonce_attr = resp.get(Realm), resp.get(Nonce)
            assert realm_attr is not None and nonce_attr is not None
            realm_nonce = (realm_attr.text, nonce_attr.text)
            continue
        return resp, realm_nonce
    raise RuntimeError(f"TURN request {method} failed: {resp.error}")


def run(host: str, port: int, user: str, password: str, count: int, window: int) -> dict[str, float]:
    server = (host, port)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(3)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    for s in (client, peer):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    resp, creds = _request(client, server, Method.ALLOCATE, [RequestedTransport(17)], user, password, None)
    relayed = resp.get(XorRelayedAddress)
    assert relayed is not None, resp.error
    peer_addr = peer.getsockname()
    _request(client, server, Method.CHANNEL_BIND, [ChannelNumber(CHANNEL), XorPeerAddress(*peer_addr)], user,
             password, creds)
    client.connect(server)  # connected sockets: the kernel keeps the route, sends are cheaper than sendto
    peer.connect(relayed.address)
    client.setblocking(False)
    peer.setblocking(False)
    payload = os.urandom(100)
    item = (None, struct.pack("!HH", CHANNEL, len(payload)) + payload)
    poller = select.poll()
    poller.register(client.fileno(), select.POLLIN)
    poller.register(peer.fileno(), select.POLLIN)
    fds = {client.fileno(): client, peer.fileno(): peer}

    to_server = segmenter(client, len(item[1]))
    echo = segmenter(peer, len(payload))

    def push(sock: socket.socket, items: list[tuple[Address | None, bytes]]) -> int:
        """Send the items in sendmmsg batches; how many went (a full buffer stops it: as if lost)."""
        done = 0
        while done < len(items) and (k := send_batch(sock, items, done, True)) > done:
            done = k
        return done

    sent = echoed = 0
    cpu0, start = time.process_time(), time.perf_counter()
    sent += to_server([item[1]] * min(window, count)) if to_server else push(client, [item] * min(window, count))
    deadline = time.monotonic() + 30
    while echoed < count and time.monotonic() < deadline:
        ready = poller.poll(1000)
        if not ready:
            break  # lost packets: stop waiting for them
        for fd, _ in ready:
            s = fds[fd]
            got = recv_batch(s, 1024, 2048)
            if s is peer:
                if echo is not None and all(len(data) == len(payload) for _, data in got):
                    echo([data for _, data in got])  # echo each back through the relayed address
                else:
                    push(peer, [(None, data) for _, data in got])
            else:
                echoed += len(got)
                if sent < count:
                    more = min(len(got), count - sent)
                    sent += to_server([item[1]] * more) if to_server else push(client, [item] * more)
            fair_wait()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    try:
        if to_server is not None:
            client.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 0)  # a Refresh is not cut in segments
        client.settimeout(3)
        _request(client, server, Method.REFRESH, [Lifetime(0)], user, password, creds)
    except (OSError, RuntimeError):
        pass
    relayed_packets = 2 * echoed
    return {"round_trips": echoed, "relayed_packets": relayed_packets, "lost": sent - echoed,
            "seconds": elapsed, "relayed_pps": relayed_packets / elapsed if elapsed else 0.0,
            "load_cpu": cpu / elapsed if elapsed else 0.0}


if __name__ == "__main__":
    h, p, u, pw, n, w = sys.argv[1:7]
    print(json.dumps(run(h, int(p), u, pw, int(n), int(w))))
