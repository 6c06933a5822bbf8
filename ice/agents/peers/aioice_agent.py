#!/usr/bin/env python3
"""aioice behind the icelab agent protocol, version 1 (docs/agent-protocol.md; the mapping is in docs/agents.md).

Run as ``python aioice_agent.py``: commands on standard input, reports on standard output, aioice's logs on standard
error (``ICELAB_AGENT_DEBUG=1`` for its debug level). Needs only aioice (``pip install aioice``), nothing of icelab.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from adapter_lines import (  # type: ignore[import-not-found]  # a sibling of this script
    BULK_MAGIC,
    BULK_SEQ,
    BULK_SIZES,
    BulkCounter,
    bindable,
    candidate_problem,
    out,
)

try:
    import aioice
    import aioice.ice
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"error aioice is not installed ({exc}): pip install aioice", flush=True)
    sys.exit(2)

FEATURES = "trickle stun turn-udp turn-tcp relay-only aggressive consent-timeout role-conflict bulk"
REGULAR_WHEN_CONTROLLING = "aioice 0.13 always nominates aggressively when controlling (USE-CANDIDATE on every check)"
BULK_YIELD = 64  # datagrams sent before the loop gets a turn (consent checks, commands)


@dataclass
class Settings:
    role: str = ""
    binds: list[str] = field(default_factory=list)
    stun: tuple[str, int] | None = None
    turn: tuple[str, int, str, str, str] | None = None
    nomination: str = ""
    relay_only: bool = False
    echo: bool = False
    consent_timeout: float | None = None


class ReportingConnection(aioice.Connection):
    """An aioice Connection that reports role switches and every change of the nominated (selected) pair."""

    def __init__(self, adapter: Adapter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter

    def switch_role(self, ice_controlling: bool) -> None:
        super().switch_role(ice_controlling)
        out(f"role {'controlling' if ice_controlling else 'controlled'}")

    def check_complete(self, pair: aioice.ice.CandidatePair) -> None:
        super().check_complete(pair)
        self.adapter.nominated_changed()

    def check_incoming(self, message: Any, addr: tuple[str, int], protocol: aioice.ice.StunProtocol) -> None:
        super().check_incoming(message, addr, protocol)
        self.adapter.nominated_changed()


class Adapter:
    def __init__(self) -> None:
        self.s = Settings()
        self.conn: ReportingConnection | None = None
        self.gathered = asyncio.Event()
        self.pending: list[str] = []  # remote-* lines received before start
        self.remote_credentials: tuple[str, str] | None = None
        self.remote_end = False
        self.selected: aioice.ice.CandidatePair | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.bulk_in = BulkCounter()
        self.bulk_sending = False

    # -- settings -------------------------------------------------------------------------------------------------

    def set(self, words: list[str]) -> str:
        if self.conn is not None:
            return "unsupported settings are taken before start"
        if not words:
            return "unsupported set needs a name"
        name, args = words[0], words[1:]
        value = args[0] if len(args) == 1 else None
        s = self.s
        if name == "role":
            if value not in ("controlling", "controlled"):
                return "unsupported role must be controlling or controlled"
            if value == "controlling" and s.nomination == "regular":
                return f"unsupported {REGULAR_WHEN_CONTROLLING}"
            s.role = value
        elif name == "bind":
            try:
                s.binds.append(str(ipaddress.ip_address(value or "")))
            except ValueError:
                return "unsupported bind needs one IP address"
        elif name == "stun":
            if len(args) != 2 or not args[1].isdigit():
                return "unsupported stun needs HOST PORT"
            if s.stun is not None:
                return "unsupported aioice takes one STUN server"
            s.stun = (args[0], int(args[1]))
        elif name == "turn":
            if len(args) != 5 or not args[1].isdigit() or args[4] not in ("udp", "tcp"):
                return "unsupported turn needs HOST PORT USER PASSWORD udp|tcp"
            if s.turn is not None:
                return "unsupported aioice takes one TURN server"
            s.turn = (args[0], int(args[1]), args[2], args[3], args[4])
        elif name == "nomination":
            if value not in ("regular", "aggressive"):
                return "unsupported nomination must be regular or aggressive"
            if value == "regular" and s.role == "controlling":
                return f"unsupported {REGULAR_WHEN_CONTROLLING}"
            s.nomination = value
        elif name == "lite":
            if value not in ("on", "off"):
                return "unsupported lite must be on or off"
            if value == "on":
                return "unsupported aioice 0.13 has no ICE-lite mode"
        elif name in ("relay-only", "trickle", "echo"):
            if value not in ("on", "off"):
                return f"unsupported {name} must be on or off"
            if name == "relay-only":
                s.relay_only = value == "on"
            elif name == "echo":
                s.echo = value == "on"
            # trickle off: aioice gathers everything before it reports any candidate, so there is nothing to hold
        elif name == "consent-timeout":
            try:
                seconds = float(value or "")
            except ValueError:
                seconds = 0.0
            if not seconds > 0:
                return "unsupported consent-timeout needs a positive number of seconds"
            s.consent_timeout = seconds
        else:
            return f"unsupported unknown setting {name}"
        return "ok"

    # -- start ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.conn is not None:
            out("error start was already sent")
            return
        s = self.s
        if not s.role:
            out("error start before set role: taking controlled")
            s.role = "controlled"
        for ip in s.binds:
            if not bindable(ip):
                out(f"error cannot bind to {ip}: no such address here")
                sys.exit(2)
        if s.binds:
            binds = list(s.binds)
            aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: binds
        if s.consent_timeout is not None:
            # aioice sends a consent check every CONSENT_INTERVAL (x0.8-1.2), waits 0.5 s for each answer (one
            # transmission) and gives up after CONSENT_FAILURES misses in a row: 6 x (5 + 0.5) s by default.
            interval = max(0.1, s.consent_timeout / aioice.ice.CONSENT_FAILURES - 0.5)
            aioice.ice.CONSENT_INTERVAL = interval  # type: ignore[assignment]  # an int in aioice, read as seconds
        kwargs: dict[str, Any] = {"ice_controlling": s.role == "controlling"}
        if s.stun is not None:
            kwargs["stun_server"] = s.stun
        if s.turn is not None:
            host, port, user, password, transport = s.turn
            kwargs.update(turn_server=(host, port), turn_username=user, turn_password=password,
                          turn_transport=transport)
            if s.stun is None and transport == "udp" and not s.relay_only:
                kwargs["stun_server"] = (host, port)  # a TURN server answers Binding requests too (RFC 8656)
        if s.relay_only:
            kwargs["transport_policy"] = aioice.TransportPolicy.RELAY
        conn = ReportingConnection(self, **kwargs)
        self.conn = conn
        out(f"local-credentials {conn.local_username} {conn.local_password}")
        self.spawn(self.gather())

    async def gather(self) -> None:
        assert self.conn is not None
        await self.conn.gather_candidates()
        for candidate in self.conn.local_candidates:
            out(f"local-candidate {candidate.to_sdp()}")
        out("local-end-of-candidates")
        self.gathered.set()

    # -- remote side ----------------------------------------------------------------------------------------------

    async def remote(self, verb: str, rest: str) -> None:
        conn = self.conn
        assert conn is not None
        if verb == "remote-credentials":
            words = rest.split()
            if len(words) not in (2, 3) or (len(words) == 3 and words[2] != "lite"):
                out("error remote-credentials needs UFRAG PWD [lite]")
                return
            creds = (words[0], words[1])
            if self.remote_credentials is None:
                self.remote_credentials = creds
                conn.remote_username, conn.remote_password = creds
                conn.remote_is_lite = len(words) == 3
                self.spawn(self.connect())
            elif creds != self.remote_credentials:
                out("error aioice 0.13 cannot restart ICE: new remote credentials ignored")
        elif verb == "remote-candidate":
            rest = rest.removeprefix("candidate:")
            problem = candidate_problem(rest)
            if problem:
                out(f"error bad remote candidate: {problem}")
                return
            try:
                candidate = aioice.Candidate.from_sdp(rest)
            except (ValueError, IndexError) as exc:
                out(f"error bad remote candidate: {exc}")
                return
            if self.remote_end:
                out("error remote-candidate after remote-end-of-candidates ignored")
                return
            await conn.add_remote_candidate(candidate)
        elif not self.remote_end:  # remote-end-of-candidates
            self.remote_end = True
            await conn.add_remote_candidate(None)

    async def connect(self) -> None:
        assert self.conn is not None
        await self.gathered.wait()
        out("state checking")
        try:
            await self.conn.connect()
        except ConnectionError:
            if not self.closing:
                out("state failed")
        except Exception as exc:
            out(f"error connect: {exc!r}")
            out("state failed")

    def nominated_changed(self) -> None:
        """Called after every check: reports the selected pair when aioice nominated a new one."""
        conn = self.conn
        if conn is None or self.closing:
            return
        pair = conn._nominated.get(1)
        if pair is None or pair is self.selected:
            return
        first = self.selected is None
        self.selected = pair
        out(f"selected {pair.local_candidate.to_sdp()} | {pair.remote_candidate.to_sdp()}")
        if first:
            out("state connected")
            self.spawn(self.receive())

    async def receive(self) -> None:
        assert self.conn is not None
        while True:
            try:
                data = await self.conn.recv()
            except ConnectionError:
                if not self.closing:
                    out("state failed")  # consent lost (RFC 7675): aioice closed the connection
                return
            if data[:4] == BULK_MAGIC and len(data) >= 8:
                self.bulk_in.add(data, len(data))
                continue
            out("recv " + data.decode(errors="replace").replace("\n", " "))
            if self.s.echo:
                await self.conn.send(data)

    async def send(self, text: str) -> None:
        if self.conn is None or self.selected is None:
            out("error send before a pair is selected")
            return
        await self.conn.send(text.encode())

    def start_bulk(self, rest: str) -> None:
        words = rest.split()
        if len(words) != 2 or not all(w.isdigit() for w in words) or int(words[0]) < 1 \
                or int(words[1]) not in BULK_SIZES:
            out("error bulk takes COUNT SIZE (COUNT at least 1, SIZE 8 to 1472 bytes)")
        elif self.conn is None or self.selected is None:
            out("error bulk before a pair is selected")
        elif self.bulk_sending:
            out("error bulk while a bulk send is still running")
        else:
            self.bulk_sending = True
            self.spawn(self.bulk(int(words[0]), int(words[1])))

    async def bulk(self, count: int, size: int) -> None:
        """COUNT datagrams as fast as aioice takes them, then bulk-sent."""
        assert self.conn is not None
        payload = bytearray(size)
        payload[:4] = BULK_MAGIC
        sent = 0
        start = time.monotonic()
        try:
            for seq in range(count):
                BULK_SEQ.pack_into(payload, 4, seq)
                await self.conn.send(bytes(payload))
                sent += 1
                if sent % BULK_YIELD == 0:
                    await asyncio.sleep(0)
        except ConnectionError as exc:
            out(f"error bulk stopped after {sent} datagrams: {exc}")
        finally:
            self.bulk_sending = False
        out(f"bulk-sent {sent} {time.monotonic() - start:.6f}")

    # -- plumbing -------------------------------------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.closing:
            out(f"error {task.exception()!r}")

    async def handle(self, line: str) -> bool:
        """Runs one command line; True on quit."""
        verb, _, rest = line.partition(" ")
        if verb == "set":
            out(self.set(rest.split()))
        elif verb == "start":
            self.start()
        elif verb in ("remote-credentials", "remote-candidate", "remote-end-of-candidates"):
            if self.conn is None:
                self.pending.append(line)
            else:
                await self.remote(verb, rest)
        elif verb == "send":
            await self.send(rest)
        elif verb == "bulk":
            self.start_bulk(rest)
        elif verb == "bulk-report":
            out(self.bulk_in.line())
            self.bulk_in = BulkCounter()
        elif verb == "restart":
            out("error restart is not supported: aioice 0.13 has no ICE restart")
        elif verb == "quit":
            return True
        elif not line:
            out("error empty line")
        else:
            out(f"error unknown command {verb}")
        if self.conn is not None and self.pending:
            pending, self.pending = self.pending, []
            for old in pending:
                await self.handle(old)
        return False

    async def close(self) -> None:
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
        if self.conn is not None:
            await self.conn.close()


async def main() -> None:
    out(f"hello icelab-agent/1 aioice {metadata.version('aioice')}")
    out(f"features {FEATURES}")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    adapter = Adapter()
    while raw := await reader.readline():
        line = raw.decode(errors="replace").rstrip("\r\n")
        try:
            if await adapter.handle(line):
                break
        except Exception as exc:
            out(f"error {exc!r}")
    await adapter.close()


if __name__ == "__main__":
    if os.environ.get("ICELAB_AGENT_DEBUG"):
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    asyncio.run(main())
