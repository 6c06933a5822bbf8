"""``icelab peer``: icelab's agent on the agent protocol, version 1 (docs/agent-protocol.md), over stdin/stdout.

It is the reference implementation of the protocol: every feature, every report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from ice.agent import AgentConfig, Candidate, Nomination
from ice.agent.events import CandidateGathered, Event, GatheringComplete, RoleChanged, SelectedPairChanged, StateChanged
from ice.agent.tcp import TcpType
from ice.aio.connection import Connection
from ice.errors import IceError, NotConnected
from ice.stun.attributes import Address
from ice.turn.client import TurnClientConfig

PROTOCOL = "icelab-agent/1"
FEATURES = ("trickle stun turn-udp turn-tcp relay-only aggressive lite restart consent-timeout role-conflict bulk "
            "transports")

BULK_MAGIC = b"\x7fblk"
"""The first four bytes of a bulk datagram (docs/agent-protocol.md, Bulk data); a sequence number follows."""
BULK_SEQ = struct.Struct("!I")
BULK_SIZES = range(8, 1473)
"""A bulk datagram's size: the header (magic, sequence number) up to one IPv4 datagram in a 1500-byte MTU."""
BULK_YIELD = 64
"""The sender lets the loop run (consent checks, commands) after this many datagrams."""


def _version() -> str:
    try:
        return version("icelab")
    except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
        return "0"


@dataclass
class PeerSettings:
    """What the harness set before ``start``."""

    controlling: bool = False
    bind: list[str] = field(default_factory=list)
    stun: list[Address] = field(default_factory=list)
    turn: TurnClientConfig | None = None
    nomination: Nomination = Nomination.REGULAR
    lite: bool = False
    relay_only: bool = False
    trickle: bool = True
    echo: bool = False
    consent_timeout: float | None = None
    ta: float = 0.05
    transports: str = "udp"
    """"udp", "tcp" or "both" (ICE-TCP, RFC 6544)."""
    tcp_types: tuple[TcpType, ...] = (TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO)

    def apply(self, name: str, values: list[str]) -> str | None:
        """One ``set``: None when applied, else why not (the ``unsupported`` reason)."""
        one = values[0] if len(values) == 1 else None
        if name == "role" and one in ("controlling", "controlled"):
            self.controlling = one == "controlling"
        elif name == "bind" and one:
            self.bind.append(one)
        elif name == "stun" and len(values) == 2 and values[1].isdigit():
            self.stun.append((values[0], int(values[1])))
        elif name == "turn" and len(values) == 5 and values[1].isdigit() and values[4] in ("udp", "tcp"):
            self.turn = TurnClientConfig((values[0], int(values[1])), values[2], values[3], transport=values[4])
        elif name == "nomination" and one in ("regular", "aggressive"):
            self.nomination = Nomination(one)
        elif name in ("lite", "relay-only", "trickle", "echo") and one in ("on", "off"):
            setattr(self, name.replace("-", "_"), one == "on")
        elif name == "transports" and one in ("udp", "tcp", "both"):
            self.transports = one
        elif name == "tcp-types" and one and set(one.split(",")) <= {t.value for t in TcpType}:
            self.tcp_types = tuple(TcpType(t) for t in dict.fromkeys(one.split(",")))
        elif name == "consent-timeout" and one is not None:
            try:
                seconds = float(one)
            except ValueError:
                return f"consent-timeout takes seconds, not {one!r}"
            if not 1 <= seconds <= 30:
                return "consent-timeout is 1 to 30 seconds (RFC 7675 §5.1 allows at most 30)"
            self.consent_timeout = seconds
        elif name in ("role", "bind", "stun", "turn", "nomination", "lite", "relay-only", "trickle", "echo",
                      "consent-timeout", "transports", "tcp-types"):
            return f"bad value {' '.join(values) or '(none)'} for {name} (docs/agent-protocol.md)"
        else:
            return f"icelab knows no setting {name}"
        return None

    def config(self) -> AgentConfig:
        config = AgentConfig(nomination=self.nomination, lite=self.lite, software="icelab", ta=self.ta)
        return config if self.consent_timeout is None else config.with_consent_timeout(self.consent_timeout)


class Reports:
    """The report lines on standard output. A line waits for the end of the loop's current callback, and the lines
    of one callback go out in one write: a datagram that changes the state twice costs one system call (and one
    wake-up of the harness reading them), not two. :meth:`flush` writes what waits at once (the peer does so for
    ``selected``: the harness times it). Order is kept; outside a running loop every line is written at once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: list[str] = []
        self._scheduled = False

    def __call__(self, line: str) -> None:
        self._lines.append(line)
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self._end_of_callback)

    def _end_of_callback(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ConnectionError):  # the harness has gone: end of input follows
            pass


@dataclass
class BulkCounter:
    """The receiving side of ``bulk``: bulk datagrams counted since the last ``bulk-report``."""

    count: int = 0
    size: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    reordered: int = 0
    highest: int = -1

    def add(self, data: bytes, now: float) -> None:
        (seq,) = BULK_SEQ.unpack_from(data, 4)
        if not self.count:
            self.first_at = now
        self.count += 1
        self.size += len(data)
        self.last_at = now
        if seq < self.highest:
            self.reordered += 1
        else:
            self.highest = seq

    def line(self) -> str:
        """The ``bulk-received`` report."""
        return f"bulk-received {self.count} {self.size} {self.first_at:.6f} {self.last_at:.6f} {self.reordered}"


class _Peer:
    """The running agent: one Connection and the protocol around it."""

    def __init__(self, settings: PeerSettings, out: Reports) -> None:
        self.settings = settings
        self.out = out
        self.conn = Connection(settings.controlling, settings.config(), bind=settings.bind or ["127.0.0.1"],
                               stun_servers=settings.stun, turn=settings.turn, relay_only=settings.relay_only,
                               queue_events=False, transports=settings.transports, tcp_types=settings.tcp_types)
        self.conn.on_event = self.on_event
        self.held: list[Candidate] = []
        if self.conn.agent.controlling != settings.controlling:  # a lite agent is always controlled (RFC 8445 §6.1.1)
            out("role " + ("controlling" if self.conn.agent.controlling else "controlled"))
        self.bulk_in = BulkCounter()
        self.bulk_out: asyncio.Task[None] | None = None

    def on_event(self, ev: Event) -> None:
        report = _REPORTS.get(type(ev))  # pair states and the rest have no line of their own
        if report is not None:
            report(self, ev)

    def _gathered(self, ev: CandidateGathered) -> None:
        if self.settings.trickle:
            self.out("local-candidate " + ev.candidate.to_sdp())
        else:
            self.held.append(ev.candidate)

    def _gathering_complete(self, ev: GatheringComplete) -> None:
        for cand in self.held:
            self.out("local-candidate " + cand.to_sdp())
        self.held.clear()
        self.out("local-end-of-candidates")

    def _selected(self, ev: SelectedPairChanged) -> None:
        self.out(f"selected {ev.local.to_sdp()} | {ev.remote.to_sdp()}")
        self.out.flush()  # the moment a pair is selected, not after the rest of the callback (the state lines follow)

    def _state(self, ev: StateChanged) -> None:
        self.out(f"state {ev.state._value_}")

    def _role(self, ev: RoleChanged) -> None:
        self.out("role " + ("controlling" if ev.controlling else "controlled"))

    async def gather(self) -> None:
        self.out(f"local-credentials {self.conn.ufrag} {self.conn.pwd}")
        try:
            await self.conn.gather()
        except (IceError, OSError) as exc:
            self.out(f"error gathering failed: {exc}")
            self.out("local-end-of-candidates")

    def restart(self) -> None:
        self.conn.restart()
        self.out(f"local-credentials {self.conn.ufrag} {self.conn.pwd}")
        for cand in self.conn.local_candidates:
            self.out("local-candidate " + cand.to_sdp())
        self.out("local-end-of-candidates")

    async def receive(self) -> None:
        while True:
            data = await self.conn.recv()
            if data[:4] == BULK_MAGIC and len(data) >= 8:
                self.bulk_in.add(data, time.monotonic())
                continue
            self.out("recv " + data.decode(errors="replace"))
            if self.settings.echo:
                self.conn.send(data)

    async def bulk(self, count: int, size: int) -> None:
        """Send ``count`` bulk datagrams of ``size`` bytes as fast as the connection takes them, then report."""
        payload = bytearray(size)
        payload[:4] = BULK_MAGIC
        sent = 0
        start = time.monotonic()
        try:
            for seq in range(count):
                BULK_SEQ.pack_into(payload, 4, seq)
                self.conn.send(bytes(payload))
                sent += 1
                if sent % BULK_YIELD == 0:
                    await asyncio.sleep(0)
        except NotConnected:
            self.out(f"error bulk stopped after {sent} datagrams: no selected pair")
        self.out(f"bulk-sent {sent} {time.monotonic() - start:.6f}")

    def start_bulk(self, arg: str) -> None:
        words = arg.split()
        if len(words) != 2 or not all(w.isdigit() for w in words) or int(words[0]) < 1 \
                or int(words[1]) not in BULK_SIZES:
            raise ValueError(f"bulk takes COUNT SIZE (COUNT at least 1, SIZE {BULK_SIZES.start} to "
                             f"{BULK_SIZES.stop - 1} bytes)")
        if self.conn.selected is None:
            raise ValueError("bulk before a pair is selected")
        if self.bulk_out is not None and not self.bulk_out.done():
            raise ValueError("bulk while a bulk send is still running")
        self.bulk_out = asyncio.ensure_future(self.bulk(int(words[0]), int(words[1])))

    def command(self, cmd: str, arg: str) -> None:
        """One command after ``start`` (ValueError: a line it could not use)."""
        if cmd == "remote-credentials":
            words = arg.split()
            if len(words) < 2:
                raise ValueError("remote-credentials takes UFRAG PWD [lite]")
            self.conn.set_remote_credentials(words[0], words[1], lite="lite" in words[2:])
        elif cmd == "remote-candidate":
            self.conn.add_remote_candidate(Candidate.from_sdp(arg))
        elif cmd == "remote-end-of-candidates":
            self.conn.add_remote_candidate(None)
        elif cmd == "send":
            if self.conn.selected is None:
                raise ValueError("not connected")
            self.conn.send(arg.encode())
        elif cmd == "restart":
            self.restart()
        elif cmd == "bulk":
            self.start_bulk(arg)
        elif cmd == "bulk-report":
            self.out(self.bulk_in.line())
            self.bulk_in = BulkCounter()
        else:
            raise ValueError(f"unknown command {cmd}")


_REPORTS: dict[type, Callable[[_Peer, Any], None]] = {
    CandidateGathered: _Peer._gathered,
    GatheringComplete: _Peer._gathering_complete,
    SelectedPairChanged: _Peer._selected,
    StateChanged: _Peer._state,
    RoleChanged: _Peer._role,
}
"""The report line (docs/agent-protocol.md, Reports) each kind of event makes, by its type."""


class _Lines(asyncio.Protocol):
    """Standard input as command lines, each handed to ``handle`` in the read callback itself: a command that
    starts the checks sends the first one without a task switch per line. ``done`` ends with the input, with
    ``quit`` (``handle`` returns False), or with the exception a command raised."""

    def __init__(self, handle: Callable[[str], bool], done: asyncio.Future[None], out: Reports,
                 batch: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
                 limit: int = 1 << 20) -> None:
        self.handle = handle
        self.batch = batch
        """The lines of one read are applied inside ``batch()``: the running peer's :meth:`Connection.held`, so
        one read's credentials and candidates pump the agent once."""
        self.done = done
        self.out = out
        self.limit = limit
        """A longer line without its end is dropped (with an ``error`` report), not buffered for ever."""
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buffer += data
        with self.batch():
            while (end := self.buffer.find(b"\n")) >= 0:
                line = self.buffer[:end + 1].decode(errors="replace")
                del self.buffer[:end + 1]
                if not self._handle(line):
                    return
        if len(self.buffer) > self.limit:
            self.buffer.clear()
            self.out(f"error a line over {self.limit} bytes, dropped")

    def _handle(self, line: str) -> bool:
        try:
            if self.handle(line):
                return True
        except BaseException as exc:  # a bug: run_peer raises it, as it would have from its own loop
            self.done.set_exception(exc)
            return False
        self._finish()
        return False

    def eof_received(self) -> bool | None:
        if self.buffer and not self.done.done():
            line, self.buffer = self.buffer.decode(errors="replace"), bytearray()
            if not self._handle(line):
                return None
        self._finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Commands:
    """What each command line does (docs/agent-protocol.md): settings until ``start``, then the running peer."""

    def __init__(self, settings: PeerSettings, out: Reports) -> None:
        self.settings = settings
        self.out = out
        self.peer: _Peer | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.code = 0

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Where the lines of one read are applied: inside the running peer's :meth:`Connection.held`."""
        return self.peer.conn.held() if self.peer is not None else contextlib.nullcontext()

    def handle(self, line: str) -> bool:
        """One line; False: stop reading (``quit``, or a peer that cannot start: ``code`` says which)."""
        out, peer = self.out, self.peer
        cmd, _, arg = line.strip().partition(" ")
        if not cmd:
            return True
        if cmd == "quit":
            return False
        if peer is None and cmd == "set":
            name, *values = arg.split() or [""]
            refused = self.settings.apply(name, values)
            out("ok" if refused is None else f"unsupported {refused}")
        elif peer is None and cmd == "start":
            try:
                peer = self.peer = _Peer(self.settings, out)
            except ValueError as exc:
                out(f"error {exc}")
                self.code = 2
                return False
            self.tasks = [asyncio.ensure_future(peer.gather()), asyncio.ensure_future(peer.receive())]
        elif peer is None:
            out(f"error {cmd} before start" if cmd.startswith(("remote", "bulk")) or cmd in ("send", "restart")
                else f"error unknown command {cmd}")
        elif cmd in ("set", "start"):
            out(f"error {cmd} after start")
        else:
            try:
                peer.command(cmd, arg)
            except ValueError as exc:
                out(f"error {exc}")
        return True


async def run_peer(ta: float = 0.05) -> int:
    """Speak the protocol until ``quit`` or end of input."""
    out = Reports(sys.stdout)
    out(f"hello {PROTOCOL} icelab {_version()}")
    out(f"features {FEATURES}")
    loop = asyncio.get_running_loop()
    commands = _Commands(PeerSettings(ta=ta), out)
    done: asyncio.Future[None] = loop.create_future()
    await loop.connect_read_pipe(lambda: _Lines(commands.handle, done, out, commands.batch), sys.stdin)
    try:
        await done
    finally:
        peer, tasks = commands.peer, commands.tasks
        if peer is not None and peer.bulk_out is not None:
            tasks.append(peer.bulk_out)
        for task in tasks:
            task.cancel()
        if peer is not None:
            if os.environ.get("ICELAB_PEER_DEBUG"):  # the agent's view at exit, for debugging a failed run
                agent = peer.conn.agent
                pairs = [(p.remote.address, p.state.value, p.valid, p.nominated) for p in agent.pairs]
                print(f"debug state={agent.state.value} stats={dict(agent.stats)} pairs={pairs}", file=sys.stderr)
            peer.conn.close()
            await asyncio.sleep(0)
        out.flush()
    return commands.code
