"""Two peers that only offer relayed candidates (RFC 8445 §5.1.1.2), through an embedded TURN server (RFC 8656).

    python examples/relay_only.py          # TURN over UDP
    python examples/relay_only.py tcp      # TURN over TCP (RFC 8656 §3.1), as where UDP is blocked

The privacy policy of WebRTC's "relay" mode: no host or server-reflexive address is revealed to the peer, and data
flows only through the TURN server. The server runs in this process on loopback (which TURN servers deny as a peer
address by default, RFC 8656 §21.1: this one allows 127.0.0.0/8 explicitly).
"""

from __future__ import annotations

import asyncio
import sys

from ice import Connection, TurnClientConfig
from ice.aio.turn_server import TurnServerRunner
from ice.turn.server import TurnServerConfig


async def main(transport: str) -> int:
    config = TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"}, allowed_peers=("127.0.0.0/8",))
    server = await TurnServerRunner(config, "127.0.0.1").start(tcp=True)  # listens on UDP and TCP
    turn = TurnClientConfig(server.address, "alice", "secret", transport=transport)
    a = Connection(controlling=True, bind=["127.0.0.1"], turn=turn, relay_only=True)
    b = Connection(controlling=False, bind=["127.0.0.1"], turn=turn, relay_only=True)
    try:
        ca, cb = await asyncio.gather(a.gather(), b.gather())  # all at once this time (no trickle)
        print("a offers:", *(c.to_sdp() for c in ca), sep="\n  ")
        a.set_remote_credentials(b.ufrag, b.pwd)
        b.set_remote_credentials(a.ufrag, a.pwd)
        for me, them in ((a, cb), (b, ca)):
            for c in them:
                me.add_remote_candidate(c)
            me.add_remote_candidate(None)
        selected, _ = await asyncio.gather(a.connect(timeout=10), b.connect(timeout=10))
        print(f"selected: {selected.local.type.value} -> {selected.remote.type.value} (TURN over {transport})")
        a.send(b"through the relay")
        got = await asyncio.wait_for(b.recv(), 5)
        print(f"b got {got!r}")
        return 0 if got == b"through the relay" and selected.local.type.value == "relay" else 1
    finally:
        a.close()
        b.close()
        server.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "udp")))
