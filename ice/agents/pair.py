"""Two line-protocol agents wired to each other: the harness is their signalling channel (credentials and
candidates, trickled or all at once), then it sees both select a pair and checks data both ways on it.

Used by the lab's cells with a foreign agent, ``icelab agent check`` and ``icelab bench throughput``; :func:`bulk`
measures one burst of bulk datagrams from one side to the other (the ``bulk`` feature).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ice.agent.candidate import Candidate, CandidateType, pair_text
from ice.agents.line import AgentError, AgentProcess, Report


@dataclass(frozen=True)
class TurnSetting:
    host: str
    port: int
    user: str
    password: str
    transport: str = "udp"


@dataclass(frozen=True)
class SideSetup:
    """What one side is told before ``start`` (only what is set is sent, besides the role)."""

    role: str
    """``controlling`` or ``controlled``."""
    bind: tuple[str, ...] = ()
    stun: tuple[str, int] | None = None
    turn: TurnSetting | None = None
    nomination: str | None = None
    lite: bool = False
    relay_only: bool = False
    trickle: bool = True
    echo: bool = False
    consent_timeout: float | None = None
    transports: str | None = None
    """``udp``, ``tcp`` or ``both`` (``set transports``: ICE-TCP, RFC 6544)."""
    tcp_types: tuple[str, ...] = ()
    """The tcptypes of the TCP host candidates (``set tcp-types``, RFC 6544 §4.1); empty: the stack's own set."""

    def settings(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = [("role", self.role)]
        out += [("bind", ip) for ip in self.bind]
        if self.stun is not None:
            out.append(("stun", self.stun[0], str(self.stun[1])))
        if self.turn is not None:
            t = self.turn
            out.append(("turn", t.host, str(t.port), t.user, t.password, t.transport))
        if self.nomination is not None:
            out.append(("nomination", self.nomination))
        if self.lite:
            out.append(("lite", "on"))
        if self.relay_only:
            out.append(("relay-only", "on"))
        if not self.trickle:
            out.append(("trickle", "off"))
        if self.echo:
            out.append(("echo", "on"))
        if self.consent_timeout is not None:
            out.append(("consent-timeout", f"{self.consent_timeout:g}"))
        if self.transports is not None:
            out.append(("transports", self.transports))
        if self.tcp_types:
            out.append(("tcp-types", ",".join(self.tcp_types)))
        return out


@dataclass(frozen=True)
class Selected:
    """A side's selected pair as it reported it."""

    local: Candidate
    remote: Candidate
    at: float

    @property
    def text(self) -> str:
        return pair_text(self.local, self.remote)

    @property
    def types(self) -> str:
        return f"{self.local.type.value}-{self.remote.type.value}"

    @property
    def relayed(self) -> bool:
        return CandidateType.RELAYED in (self.local.type, self.remote.type)


def parse_selected(rest: str, at: float) -> Selected:
    """``LOCAL | REMOTE`` (two SDP candidate values); ValueError when either does not parse."""
    local, sep, remote = rest.partition("|")
    if not sep:
        raise ValueError("a selected line is 'selected LOCAL | REMOTE'")
    return Selected(Candidate.from_sdp(local.strip()), Candidate.from_sdp(remote.strip()), at)


@dataclass(frozen=True)
class BulkSent:
    """A sender's ``bulk-sent COUNT SECONDS``: datagrams its stack took, and how long sending them took."""

    count: int
    seconds: float


@dataclass(frozen=True)
class BulkReceived:
    """A receiver's ``bulk-received COUNT BYTES FIRST_AT LAST_AT REORDERED`` (its own clock, in seconds)."""

    count: int
    bytes: int
    first_at: float
    last_at: float
    reordered: int


def parse_bulk_sent(rest: str) -> BulkSent:
    """``COUNT SECONDS``; ValueError when it is not that."""
    count, seconds = rest.split()
    return BulkSent(int(count), float(seconds))


def parse_bulk_received(rest: str) -> BulkReceived:
    """``COUNT BYTES FIRST_AT LAST_AT REORDERED``; ValueError when it is not that."""
    count, size, first, last, reordered = rest.split()
    return BulkReceived(int(count), int(size), float(first), float(last), int(reordered))


@dataclass
class SideState:
    """What the harness saw of one side."""

    agent: AgentProcess
    setup: SideSetup
    credentials: tuple[str, str] | None = None
    candidates: list[str] = field(default_factory=list)
    gathered: bool = False
    selected: Selected | None = None
    first_selected: Selected | None = None
    states: list[tuple[float, str]] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    received: list[tuple[float, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    bulk_sent: list[BulkSent] = field(default_factory=list)
    bulk_received: list[BulkReceived] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def failed(self) -> bool:
        return any(s == "failed" for _, s in self.states)


@dataclass
class PairRun:
    """The outcome of :func:`connect`: both sides' views, and why it stopped early (``reason``)."""

    a: SideState
    b: SideState
    started: float | None = None
    """When both sides had the other's credentials (the start of the measurement)."""
    reason: str = ""
    unsupported: str = ""
    """The first ``set`` a side refused, with its reason (the cell is ``unsupported``)."""

    @property
    def seconds(self) -> float | None:
        """From both having credentials to both having selected a pair."""
        a, b = self.a.first_selected, self.b.first_selected
        if self.started is None or a is None or b is None:
            return None
        return max(a.at, b.at) - self.started

    @property
    def relayed(self) -> bool:
        return any(s.selected is not None and s.selected.relayed for s in (self.a, self.b))


def _wire(me: SideState, peer: SideState, run: PairRun, on_change: Callable[[], None]) -> Callable[[Report], None]:
    """Handle one side's reports: forward its signalling to the peer, record the rest."""
    held: list[str] = []
    loop = asyncio.get_running_loop()

    def on_report(r: Report) -> None:
        if r.verb == "local-credentials":
            words = r.rest.split()
            if len(words) < 2:
                me.bad_lines.append(f"local-credentials {r.rest}")
                return
            me.credentials = (words[0], words[1])
            lite = " lite" if me.setup.lite else ""
            peer.agent.write(f"remote-credentials {words[0]} {words[1]}{lite}")
            if peer.credentials is not None and run.started is None:
                run.started = loop.time()
        elif r.verb == "local-candidate":
            try:
                Candidate.from_sdp(r.rest)
            except ValueError as exc:
                me.bad_lines.append(f"local-candidate {r.rest} ({exc})")
                return
            me.candidates.append(r.rest)
            if me.setup.trickle:
                peer.agent.write(f"remote-candidate {r.rest}")
            else:
                held.append(r.rest)
        elif r.verb == "local-end-of-candidates":
            me.gathered = True
            for cand in held:
                peer.agent.write(f"remote-candidate {cand}")
            held.clear()
            peer.agent.write("remote-end-of-candidates")
        elif r.verb == "selected":
            try:
                sel = parse_selected(r.rest, r.at)
            except ValueError as exc:
                me.bad_lines.append(f"selected {r.rest} ({exc})")
                return
            me.selected = sel
            if me.first_selected is None:
                me.first_selected = sel
        elif r.verb == "state":
            me.states.append((r.at, r.rest.strip()))
        elif r.verb == "role":
            me.roles.append(r.rest.strip())
        elif r.verb == "recv":
            me.received.append((r.at, r.rest))
        elif r.verb in ("bulk-sent", "bulk-received"):
            try:
                if r.verb == "bulk-sent":
                    me.bulk_sent.append(parse_bulk_sent(r.rest))
                else:
                    me.bulk_received.append(parse_bulk_received(r.rest))
            except ValueError:
                me.bad_lines.append(f"{r.verb} {r.rest}")
                return
        elif r.verb == "error":
            me.errors.append(r.rest)
        elif r.verb != "log":
            me.bad_lines.append(f"{r.verb} {r.rest}".strip())
        me.changed.set()
        on_change()

    return on_report


async def prepare(a: AgentProcess, b: AgentProcess, setup_a: SideSetup, setup_b: SideSetup) -> PairRun:
    """Send each side its settings; the run's ``unsupported`` names the first refusal (then nothing started)."""
    run = PairRun(SideState(a, setup_a), SideState(b, setup_b))
    for side in (run.a, run.b):
        for setting in side.setup.settings():
            refused = await side.agent.set(*setting)
            if refused is not None:
                run.unsupported = f"{side.agent.hello.stack} refused 'set {setting[0]}': {refused}"
                return run
    return run


async def connect(run: PairRun, timeout: float) -> PairRun:
    """Start both sides and wait until both selected a pair (or one failed, exited, or time ran out)."""
    progress = asyncio.Event()
    run.a.agent.on_report = _wire(run.a, run.b, run, progress.set)
    run.b.agent.on_report = _wire(run.b, run.a, run, progress.set)
    for side in (run.a, run.b):
        side.agent.write("start")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if run.a.first_selected is not None and run.b.first_selected is not None:
            return run
        dead = [s for s in (run.a, run.b) if s.agent.proc.returncode is not None]
        failed = [s for s in (run.a, run.b) if s.failed]
        if dead or failed:
            who = (dead or failed)[0]
            run.reason = (f"agent {who.agent.name} ({who.agent.hello.stack}) "
                          + (f"exited with code {who.agent.proc.returncode}" if dead else "reported ICE failed"))
            return run
        left = deadline - loop.time()
        if left <= 0:
            missing = [s.agent.name for s in (run.a, run.b) if s.first_selected is None]
            run.reason = f"no pair selected within {timeout:g} s (on {' and '.join(missing)})"
            return run
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), min(left, 0.2))


async def exchange(run: PairRun, timeout: float, resend: float = 0.25) -> str:
    """One datagram each way (``send`` on one side, the same text as ``recv`` on the other), resent every
    ``resend`` until it arrives. Returns "" or why it did not."""

    async def one_way(src: SideState, dst: SideState, text: str) -> bool:
        while not any(got == text for _, got in dst.received):
            src.agent.write(f"send {text}")
            dst.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dst.changed.wait(), resend)
            if src.agent.proc.returncode is not None or dst.agent.proc.returncode is not None:
                return False
        return True

    try:
        ok = list(await asyncio.wait_for(asyncio.gather(one_way(run.a, run.b, "a-to-b"),
                                                   one_way(run.b, run.a, "b-to-a")), timeout))
    except TimeoutError:
        ok = [any(t == "a-to-b" for _, t in run.b.received), any(t == "b-to-a" for _, t in run.a.received)]
    if all(ok):
        return ""
    return "a pair was selected but data did not flow on it (" + ", ".join(
        d for d, good in zip(("a to b", "b to a"), ok, strict=True) if not good) + ")"


@dataclass(frozen=True)
class BulkRun:
    """One burst: what the sender said it sent and what the receiver counted."""

    size: int
    sent: BulkSent
    received: BulkReceived

    @property
    def seconds(self) -> float:
        """From the first bulk datagram counted to the last, on the receiver's clock."""
        return self.received.last_at - self.received.first_at

    @property
    def datagrams_per_s(self) -> float | None:
        """Datagrams counted per second at the receiver (None: fewer than two arrived)."""
        r = self.received
        return (r.count - 1) / self.seconds if r.count > 1 and self.seconds > 0 else None

    @property
    def mbit_per_s(self) -> float | None:
        """Payload (the datagrams' bytes, no UDP, IP or TURN headers) per second at the receiver, in Mbit/s."""
        rate = self.datagrams_per_s
        return None if rate is None else rate * self.size * 8 / 1e6

    @property
    def loss(self) -> float:
        """The share of the datagrams sent that were not counted (0 to 1)."""
        return 1 - min(self.received.count, self.sent.count) / self.sent.count if self.sent.count else 0.0


async def _report(side: SideState, what: str, reports: Callable[[], int], timeout: float) -> None:
    """Wait until ``reports()`` grows (a new report of kind ``what`` from ``side``); AgentError when it does not,
    at once when the side answers with an ``error`` line about ``bulk``."""
    before, errors = reports(), len(side.errors)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while reports() == before:
        refused = [e for e in side.errors[errors:] if "bulk" in e]
        if refused:
            raise AgentError(f"agent {side.agent.name} ({side.agent.hello.stack}) answered 'error {refused[0]}' "
                             f"instead of a {what}")
        if side.agent.proc.returncode is not None:
            raise AgentError(f"agent {side.agent.name} ({side.agent.hello.stack}) exited before {what}")
        left = deadline - loop.time()
        if left <= 0:
            bad = f" (it printed {side.bad_lines[-1]!r})" if side.bad_lines else ""
            raise AgentError(f"agent {side.agent.name} ({side.agent.hello.stack}) printed no {what} within "
                             f"{timeout:g} s{bad}")
        side.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(side.changed.wait(), min(left, 0.2))


async def bulk_report(side: SideState, timeout: float = 5.0) -> BulkReceived:
    """``bulk-report`` to a receiver: what it counted since its last report (its counters start again)."""
    side.agent.write("bulk-report")
    await _report(side, "bulk-received line", lambda: len(side.bulk_received), timeout)
    return side.bulk_received[-1]


async def bulk(src: SideState, dst: SideState, count: int, size: int, timeout: float = 30.0,
               grace: float = 0.25) -> BulkRun:
    """One burst from ``src`` to ``dst`` on their selected pair: ``dst``'s counters cleared first (a
    ``bulk-report`` whose answer is dropped), ``bulk COUNT SIZE`` to ``src``, its ``bulk-sent``, ``grace`` seconds
    for the last datagrams to be read, then ``dst``'s ``bulk-report``. AgentError when a report does not come."""
    await bulk_report(dst, timeout)
    src.agent.write(f"bulk {count} {size}")
    await _report(src, "bulk-sent line", lambda: len(src.bulk_sent), timeout)
    await asyncio.sleep(grace)
    return BulkRun(size, src.bulk_sent[-1], await bulk_report(dst, timeout))


async def close(run: PairRun) -> dict[str, int | None]:
    """``quit`` both sides; their exit codes."""
    codes = await asyncio.gather(run.a.agent.quit(), run.b.agent.quit())
    return {"a": codes[0], "b": codes[1]}


__all__ = ["AgentError", "BulkReceived", "BulkRun", "BulkSent", "PairRun", "Selected", "SideSetup", "SideState",
           "TurnSetting", "bulk", "bulk_report", "close", "connect", "exchange", "parse_bulk_received",
           "parse_bulk_sent", "parse_selected", "prepare"]
