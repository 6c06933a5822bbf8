"""An ICE restart (RFC 8445 §9) on a live session: new credentials, new checks, a new selected pair, and data that
keeps flowing on the old pair meanwhile.

    python examples/restart.py

Applications restart ICE when the network changed (a new interface, an address that went away) or the session
failed. The side that restarts sends a new offer with new credentials and its candidates; the peer, seeing new
credentials, restarts too and answers with its own.
"""

from __future__ import annotations

import asyncio
import sys

from ice import Connection


def signal(src: Connection, dst: Connection) -> None:
    """What an offer (or answer) carries: credentials, every candidate, end of candidates."""
    dst.set_remote_credentials(src.ufrag, src.pwd)
    for candidate in src.local_candidates:
        dst.add_remote_candidate(candidate)
    dst.add_remote_candidate(None)


async def main() -> int:
    alice = Connection(controlling=True, bind=["127.0.0.1"])
    bob = Connection(controlling=False, bind=["127.0.0.1"])
    try:
        await asyncio.gather(alice.gather(), bob.gather())
        signal(alice, bob)
        signal(bob, alice)
        await asyncio.gather(alice.connect(timeout=10), bob.connect(timeout=10))
        old = alice.ufrag
        alice.restart()            # new ufrag/pwd; the old pair still carries data
        alice.send(b"during the restart")
        print(f"bob got {await asyncio.wait_for(bob.recv(), 5)!r} on the old pair")
        bob.restart()               # the new offer has new credentials, so bob restarts too (RFC 8445 §9) ...
        signal(alice, bob)          # ... takes the offer ...
        signal(bob, alice)          # ... and answers with its own
        selected, _ = await asyncio.gather(alice.connect(timeout=10), bob.connect(timeout=10))
        print(f"restarted: ufrag {old} -> {alice.ufrag}; selected {selected.local.type.value} -> "
              f"{selected.remote.type.value}")
        bob.send(b"after the restart")
        got = await asyncio.wait_for(alice.recv(), 5)
        print(f"alice got {got!r}")
        return 0 if got == b"after the restart" and alice.ufrag != old else 1
    finally:
        alice.close()
        bob.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
