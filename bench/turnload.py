"""A TURN relay load generator: allocate, bind a channel to a peer socket, then push ChannelData through the relay.

``python -m bench.turnload HOST PORT USER PASS COUNT WINDOW`` (its own process). The peer echoes every datagram
back to the relayed address, so each round trip is two relayed packets (client->peer and peer->client). Prints one
JSON line: packets relayed, seconds, relayed packets/s, lost.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

from ice.stun import Message, MessageClass, Method, long_term_key, parse
from ice.stun.attributes import (
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
    client.setblocking(False)
    peer.setblocking(False)
    payload = os.urandom(100)
    frame = struct.pack("!HH", CHANNEL, len(payload)) + payload
    sent = echoed = 0
    start = time.perf_counter()
    for _ in range(min(window, count)):
        client.sendto(frame, server)
        sent += 1
    deadline = time.monotonic() + 30
    while echoed < count and time.monotonic() < deadline:
        readable, _, _ = select.select([client, peer], [], [], 1.0)
        if not readable:
            break  # lost packets: stop waiting for them
        for s in readable:
            while True:
                try:
                    data, addr = s.recvfrom(2048)
                except BlockingIOError:
                    break
                if s is peer:
                    peer.sendto(data, addr)  # echo back through the relay
                else:
                    echoed += 1
                    if sent < count:
                        client.sendto(frame, server)
                        sent += 1
    elapsed = time.perf_counter() - start
    try:
        client.setblocking(True)
        _request(client, server, Method.REFRESH, [Lifetime(0)], user, password, creds)
    except (OSError, RuntimeError):
        pass
    relayed_packets = 2 * echoed
    return {"round_trips": echoed, "relayed_packets": relayed_packets, "lost": sent - echoed,
            "seconds": elapsed, "relayed_pps": relayed_packets / elapsed if elapsed else 0.0}


if __name__ == "__main__":
    h, p, u, pw, n, w = sys.argv[1:7]
    print(json.dumps(run(h, int(p), u, pw, int(n), int(w))))
