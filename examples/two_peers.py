"""Two ICE agents in one process on loopback, with trickle signalling: the smallest complete use of the API.

    python examples/two_peers.py

Each side's candidates go to the other as they are gathered (RFC 8838 trickle ICE), end-of-candidates follows, and
``connect()`` returns the selected pair (RFC 8445 §8). Then a datagram crosses each way. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from ice import Connection
from ice.agent.events import CandidateGathered, Event, GatheringComplete


def trickle_to(peer: Connection) -> Callable[[Event], None]:
    """An ``on_event`` callback that signals our candidates to ``peer`` as soon as we have them. In a real
    application this sends them over your signalling channel instead."""

    def on_event(ev: Event) -> None:
        if isinstance(ev, CandidateGathered):
            peer.add_remote_candidate(ev.candidate)
        elif isinstance(ev, GatheringComplete):
            peer.add_remote_candidate(None)  # end of candidates (RFC 8838 §8.2)

    return on_event


async def main() -> int:
    alice = Connection(controlling=True, bind=["127.0.0.1"])
    bob = Connection(controlling=False, bind=["127.0.0.1"])
    try:
        alice.on_event = trickle_to(bob)
        bob.on_event = trickle_to(alice)
        alice.set_remote_credentials(bob.ufrag, bob.pwd)  # credentials travel with the offer and the answer
        bob.set_remote_credentials(alice.ufrag, alice.pwd)
        await asyncio.gather(alice.gather(), bob.gather())
        selected, _ = await asyncio.gather(alice.connect(timeout=10), bob.connect(timeout=10))
        print(f"selected: {selected.local.to_sdp()}  ->  {selected.remote.to_sdp()}")
        alice.send(b"hello bob")
        bob.send(b"hello alice")
        got = await asyncio.wait_for(asyncio.gather(bob.recv(), alice.recv()), 5)
        print(f"bob got {got[0]!r}, alice got {got[1]!r}")
        return 0 if got == [b"hello bob", b"hello alice"] else 1
    finally:
        alice.close()
        bob.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
