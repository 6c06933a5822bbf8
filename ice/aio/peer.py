"""``icelab peer``: an ICE agent speaking the interop harness's line protocol on stdin/stdout.

stdout: ufrag U | pwd P | candidate <value> | gathered | state <s> | connected | selected <l> | <r> | recv <text>
        | error <msg>
stdin:  candidate <value> | end-of-candidates | remote <ufrag> <pwd> | send <text> | quit (or EOF)
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ice.agent import AgentConfig, Candidate, Nomination
from ice.agent.events import Event, SelectedPairChanged, StateChanged
from ice.aio.connection import Connection, describe_pair
from ice.errors import IceError
from ice.stun.attributes import Address
from ice.turn.client import TurnClientConfig


@dataclass(frozen=True)
class PeerOptions:
    controlling: bool
    echo: bool
    bind: Sequence[str]
    stun: Sequence[Address]
    lite: bool = False
    nomination: Nomination = Nomination.REGULAR
    relay_only: bool = False
    ta: float = 0.05
    turn: TurnClientConfig | None = None


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run_peer(opts: PeerOptions) -> int:
    config = AgentConfig(nomination=opts.nomination, lite=opts.lite, software="icelab", ta=opts.ta)
    conn = Connection(opts.controlling, config, bind=opts.bind, stun_servers=opts.stun, turn=opts.turn,
                      relay_only=opts.relay_only)
    connected = asyncio.Event()

    def on_event(ev: Event) -> None:
        if isinstance(ev, SelectedPairChanged) and not connected.is_set():
            _out("connected")
            _out("selected " + describe_pair(ev))
            connected.set()
        elif isinstance(ev, SelectedPairChanged):
            _out("selected " + describe_pair(ev))
        elif isinstance(ev, StateChanged):
            _out(f"state {ev.state.value}")
            if ev.state.value == "failed":
                _out("error ICE failed: no candidate pair worked")

    conn.on_event = on_event
    _out(f"ufrag {conn.ufrag}")
    _out(f"pwd {conn.pwd}")
    try:
        candidates = await conn.gather()
    except (IceError, OSError) as exc:
        _out(f"error gathering failed: {exc}")
        return 1
    for cand in candidates:
        _out("candidate " + cand.to_sdp())
    _out("gathered")

    async def receive() -> None:
        while True:
            data = await conn.recv()
            _out("recv " + data.decode(errors="replace"))
            if opts.echo:
                conn.send(data)

    receiver = asyncio.ensure_future(receive())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode():
            cmd, _, arg = line.strip().partition(" ")
            try:
                if cmd == "candidate":
                    conn.add_remote_candidate(Candidate.from_sdp(arg))
                elif cmd == "end-of-candidates":
                    conn.add_remote_candidate(None)
                elif cmd == "remote":
                    ufrag, pwd = arg.split()[:2]
                    conn.set_remote_credentials(ufrag, pwd, lite="lite" in arg.split()[2:])
                elif cmd == "send":
                    await asyncio.wait_for(connected.wait(), 30)
                    conn.send(arg.encode())
                elif cmd == "quit":
                    break
                elif cmd:
                    _out(f"error unknown command {cmd!r}")
            except (ValueError, TimeoutError) as exc:
                _out(f"error {exc}")
    finally:
        receiver.cancel()
        if os.environ.get("ICELAB_PEER_DEBUG"):  # the agent's view at exit, for debugging a failed run
            agent = conn.agent
            pairs = [(p.remote.address, p.state.value, p.valid, p.nominated, p.remote_nominated) for p in agent.pairs]
            print(f"debug state={agent.state.value} stats={dict(agent.stats)} pairs={pairs}", file=sys.stderr)
        conn.close()
    return 0
