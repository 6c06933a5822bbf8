"""``icelab agent check``: an agent against icelab's own on loopback, through every step of the agent protocol
(docs/agent-protocol.md, "icelab agent check"), one verdict per step."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from ice.agents.line import FEATURES, PROTOCOL, AgentError, AgentProcess
from ice.agents.pair import PairRun, SideSetup, SideState, TurnSetting, bulk, close, connect, exchange, prepare
from ice.agents.registry import BUILTIN, AgentSpec

CONNECT_SECONDS = 15.0
LOOPBACK = ("127.0.0.1",)
BULK_BURSTS, BULK_COUNT, BULK_SIZE = 10, 100, 200
"""The bulk step: 1,000 datagrams each way in bursts a default socket buffer holds (docs/agent-protocol.md)."""
BULK_ARRIVED = 0.9
"""The share of them that must be counted."""


class Verdict(enum.Enum):
    OK = "ok"
    MISSING = "missing"
    """A mandatory step failed (or a listed feature did not work)."""
    UNSUPPORTED = "unsupported"
    """A feature the agent does not list (not a failure)."""


@dataclass(frozen=True)
class Step:
    name: str
    verdict: Verdict
    detail: str = ""

    def line(self) -> str:
        return f"{self.verdict.value:<12}{self.name}" + (f": {self.detail}" if self.detail else "")


@contextlib.asynccontextmanager
async def _turn_server() -> AsyncIterator[TurnSetting]:
    """icelab's TURN server on an ephemeral loopback port (loopback peers allowed)."""
    from ice.aio.turn_server import TurnServerRunner
    from ice.turn.server import TurnServerConfig

    runner = TurnServerRunner(TurnServerConfig(("127.0.0.1", 0), users={"alice": "secret"},
                                               allowed_peers=("127.0.0.0/8",)), "127.0.0.1")
    await runner.start(tcp=True)
    try:
        yield TurnSetting("127.0.0.1", runner.address[1], "alice", "secret", "udp")
    finally:
        runner.close()


@dataclass
class Checker:
    """Runs the steps; ``spec`` is the agent under test, icelab's own agent is the other side."""

    spec: AgentSpec
    progress: Callable[[Step], None] = lambda step: None

    def __post_init__(self) -> None:
        self.steps: list[Step] = []
        self.features: frozenset[str] = frozenset()

    def record(self, name: str, verdict: Verdict, detail: str = "") -> Step:
        step = Step(name, verdict, detail)
        self.steps.append(step)
        self.progress(step)
        return step

    async def _pair(self, mine: SideSetup, icelab: SideSetup) -> tuple[PairRun, str]:
        """The agent as side a, icelab as side b, connected; the run and "" or why it did not connect."""
        a = await AgentProcess.spawn(self.spec.argv, "under-test")
        try:
            b = await AgentProcess.spawn(BUILTIN["icelab"].argv(), "icelab")
        except BaseException:
            await a.close(0)
            raise
        run = await prepare(a, b, mine, icelab)
        if run.unsupported:
            return run, run.unsupported
        await connect(run, CONNECT_SECONDS)
        return run, run.reason

    async def step(self, name: str, body: Callable[[], Awaitable[str]]) -> bool:
        """Run one step: its body returns "" (ok) or what was missing."""
        try:
            missing = await body()
        except AgentError as exc:
            missing = str(exc)
        except (OSError, ValueError) as exc:
            missing = f"{type(exc).__name__}: {exc}"
        self.record(name, Verdict.MISSING if missing else Verdict.OK, missing)
        return not missing

    async def run(self) -> list[Step]:
        if self.spec.missing:
            self.record("installed", Verdict.MISSING, self.spec.missing)
            return self.steps
        if not await self.step("hello and features", self._hello):
            return self.steps
        await self.step("set answered in order (ok / unsupported)", self._set_answers)
        await self.step("connect as controlled: credentials, candidates, selected", self._controlled)
        await self.step("connect as controlling", self._controlling)
        await self.step("data both ways, and echo", self._data)
        for feature, name, body in (("role-conflict", "role conflict (both controlling)", self._conflict),
                                    ("aggressive", "aggressive nomination", self._aggressive),
                                    ("lite", "lite (icelab full, controlling)", self._lite),
                                    ("relay-only", "relay-only through icelab's TURN server", self._relay_only),
                                    ("trickle", "trickle off (candidates at the end)", self._no_trickle),
                                    ("restart", "ICE restart", self._restart),
                                    ("bulk", "bulk data both ways", self._bulk),
                                    ("transports", "ICE-TCP only (set transports tcp)", self._tcp)):
            if feature in self.features:
                await self.step(name, body)
            else:
                self.record(name, Verdict.UNSUPPORTED, f"'{feature}' is not in the features line")
        await self.step("quit: exit code 0 within 5 s", self._quit)
        return self.steps

    # ------------------------------------------------------------------------------------------- steps

    async def _hello(self) -> str:
        agent = await AgentProcess.spawn(self.spec.argv, "under-test")
        self.features = agent.hello.features
        await agent.close(0)
        unknown = sorted(self.features - set(FEATURES))
        self.hello = f"{agent.hello.stack} {agent.hello.version} ({PROTOCOL}), features: " + (
            " ".join(sorted(self.features)) or "(none)")
        return f"unknown feature words: {', '.join(unknown)}" if unknown else ""

    async def _set_answers(self) -> str:
        agent = await AgentProcess.spawn(self.spec.argv, "under-test")
        try:
            if (refused := await agent.set("role", "controlled")) is not None:
                return f"'set role controlled' refused: {refused}"
            if (refused := await agent.set("bind", "127.0.0.1")) is not None:
                return f"'set bind 127.0.0.1' refused: {refused}"
            if await agent.set("icelab-check-no-such-setting", "on") is None:
                return "'set icelab-check-no-such-setting on' answered ok (expected unsupported REASON)"
            agent.write("icelab-check-no-such-verb")
            agent.write("start")
            first = await agent.next(5.0, what="a line after an unknown command")
            if first.verb != "error" or "unknown" not in first.rest:
                return f"an unknown command got {first.verb} {first.rest!r} (expected 'error unknown command ...')"
            return ""
        finally:
            await agent.close(0)

    async def _connect_roles(self, mine: SideSetup, icelab: SideSetup) -> str:
        run, why = await self._pair(mine, icelab)
        try:
            if why:
                return why
            issues = [f"{s.agent.name}: unparsable line {bad!r}" for s in (run.a, run.b) for bad in s.bad_lines]
            if run.a.credentials is None or not run.a.candidates or not run.a.gathered:
                issues.append("local-credentials, local-candidate and local-end-of-candidates were not all seen")
            sa, sb = run.a.selected, run.b.selected
            if sa is not None and sb is not None and (sa.local.address != sb.remote.address
                                                      or sa.remote.address != sb.local.address):
                issues.append(f"the agent selected {sa.text}, icelab {sb.text}: not the same pair")
            return "; ".join(issues)
        finally:
            await close(run)

    async def _controlled(self) -> str:
        return await self._connect_roles(SideSetup("controlled", LOOPBACK), SideSetup("controlling", LOOPBACK))

    async def _controlling(self) -> str:
        return await self._connect_roles(SideSetup("controlling", LOOPBACK), SideSetup("controlled", LOOPBACK))

    async def _data(self) -> str:
        run, why = await self._pair(SideSetup("controlled", LOOPBACK, echo=True), SideSetup("controlling", LOOPBACK))
        try:
            if why:
                return why
            missing = await exchange(run, 5.0)
            if missing:
                return missing
            run.b.agent.write("send echo-me")
            for _ in range(50):
                if sum(text == "echo-me" for _, text in run.b.received):
                    return ""
                await asyncio.sleep(0.1)
            return "with 'set echo on' a datagram did not come back"
        finally:
            await close(run)

    async def _conflict(self) -> str:
        run, why = await self._pair(SideSetup("controlling", LOOPBACK), SideSetup("controlling", LOOPBACK))
        try:
            return why or await exchange(run, 5.0)
        finally:
            await close(run)

    async def _aggressive(self) -> str:
        run, why = await self._pair(SideSetup("controlling", LOOPBACK, nomination="aggressive"),
                                    SideSetup("controlled", LOOPBACK))
        try:
            return why or await exchange(run, 5.0)
        finally:
            await close(run)

    async def _lite(self) -> str:
        run, why = await self._pair(SideSetup("controlled", LOOPBACK, lite=True), SideSetup("controlling", LOOPBACK))
        try:
            return why or await exchange(run, 5.0)
        finally:
            await close(run)

    async def _relay_only(self) -> str:
        async with _turn_server() as turn:
            run, why = await self._pair(SideSetup("controlling", LOOPBACK, turn=turn, relay_only=True),
                                        SideSetup("controlled", LOOPBACK))
            try:
                if why:
                    return why
                if not run.relayed:
                    sel = run.a.selected
                    return f"relay-only selected {sel.text if sel else 'nothing'}: no relayed candidate"
                return await exchange(run, 5.0)
            finally:
                await close(run)

    async def _no_trickle(self) -> str:
        run, why = await self._pair(SideSetup("controlled", LOOPBACK, trickle=False),
                                    SideSetup("controlling", LOOPBACK))
        try:
            return why or await exchange(run, 5.0)
        finally:
            await close(run)

    async def _tcp(self) -> str:
        """Both sides gather TCP candidates only (RFC 6544): the selected pair is a TCP one, data flows on it."""
        run, why = await self._pair(SideSetup("controlled", LOOPBACK, transports="tcp"),
                                    SideSetup("controlling", LOOPBACK, transports="tcp"))
        try:
            if why:
                return why
            sel = run.a.selected
            if sel is None or sel.local.transport != "tcp" or sel.remote.transport != "tcp":
                return f"the selected pair is not a TCP one: {sel.text if sel else 'none'}"
            return await exchange(run, 5.0)
        finally:
            await close(run)

    async def _restart(self) -> str:
        run, why = await self._pair(SideSetup("controlled", LOOPBACK), SideSetup("controlling", LOOPBACK))
        try:
            if why:
                return why
            old = run.a.credentials
            run.a.first_selected = run.b.first_selected = None
            run.a.selected = run.b.selected = None
            for side in (run.a, run.b):
                side.agent.write("restart")
            loop = asyncio.get_running_loop()
            end = loop.time() + CONNECT_SECONDS
            while loop.time() < end and (run.a.selected is None or run.b.selected is None):
                await asyncio.sleep(0.05)
            if run.a.credentials == old:
                return "no new local-credentials after restart"
            if run.a.selected is None or run.b.selected is None:
                return f"no new selected pair within {CONNECT_SECONDS:g} s of the restart"
            return await exchange(run, 5.0)
        finally:
            await close(run)

    async def _bulk(self) -> str:
        run, why = await self._pair(SideSetup("controlled", LOOPBACK), SideSetup("controlling", LOOPBACK))
        try:
            if why:
                return why
            issues = [await self._bulk_way(run.a, run.b, "from the agent"),
                      await self._bulk_way(run.b, run.a, "to the agent")]
            return "; ".join(i for i in issues if i)
        finally:
            await close(run)

    @staticmethod
    async def _bulk_way(src: SideState, dst: SideState, way: str) -> str:
        """BULK_BURSTS bursts from ``src`` to ``dst``: "" or what went wrong."""
        printed = len(dst.received)
        sent = counted = 0
        for _ in range(BULK_BURSTS):
            burst = await bulk(src, dst, BULK_COUNT, BULK_SIZE, timeout=10.0, grace=0.1)
            sent += burst.sent.count
            counted += burst.received.count
            if burst.received.count and burst.received.bytes != burst.received.count * BULK_SIZE:
                return f"{way}: bulk-received counted {burst.received.bytes} bytes for {burst.received.count} " \
                       f"datagrams of {BULK_SIZE}"
        total = BULK_BURSTS * BULK_COUNT
        bad = [line for line in (*src.bad_lines, *dst.bad_lines) if line.startswith("bulk")]
        if bad:
            return f"{way}: unparsable line {bad[0]!r}"
        if sent != total:
            return f"{way}: bulk-sent counted {sent} of {total} datagrams"
        if counted < BULK_ARRIVED * total:
            return f"{way}: bulk-received counted {counted} of {total} datagrams (at least {BULK_ARRIVED:.0%} expected)"
        if len(dst.received) != printed:
            return f"{way}: bulk datagrams were printed as recv lines"
        return ""

    async def _quit(self) -> str:
        agent = await AgentProcess.spawn(self.spec.argv, "under-test")
        code = await agent.quit(5.0)
        if code is None:
            return "still running 5 s after quit"
        return "" if code == 0 else f"exit code {code} after quit"


async def check(spec: AgentSpec, progress: Callable[[Step], None] = lambda s: None) -> Checker:
    checker = Checker(spec, progress)
    await checker.run()
    return checker


__all__ = ["Checker", "Step", "Verdict", "check"]
