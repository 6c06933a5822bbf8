"""One agent on the line protocol (docs/agent-protocol.md) as an asyncio child process: its handshake, its
settings, its reports as they come, and a transcript of both directions for the artifacts."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PROTOCOL = "icelab-agent/1"
"""The protocol version the harness speaks (``hello icelab-agent/1 NAME VERSION``)."""

FEATURES = ("trickle", "stun", "turn-udp", "turn-tcp", "relay-only", "aggressive", "lite", "restart",
            "consent-timeout", "role-conflict", "bulk", "transports")
"""The optional features an agent may list (docs/agent-protocol.md, Features)."""


class AgentError(Exception):
    """The agent broke the protocol or died; the message says how, in one sentence."""


@dataclass(frozen=True)
class Report:
    """One line the agent printed: its verb, the rest of the line, and when it came (the loop's clock)."""

    verb: str
    rest: str
    at: float


@dataclass(frozen=True)
class Hello:
    """What the agent said about itself on its first two lines."""

    stack: str
    version: str
    features: frozenset[str]


@dataclass
class AgentProcess:
    """A running line-protocol agent. ``on_report`` sees every report after the handshake, in order."""

    name: str
    """The side it plays in the harness (``a``, ``b``, ``icelab``...), for messages."""
    proc: asyncio.subprocess.Process
    hello: Hello = Hello("?", "?", frozenset())
    transcript: list[str] = field(default_factory=list)
    """Both directions, ``t=SECONDS > line`` (to the agent) or ``< line`` (from it), for the artifacts."""
    on_report: Callable[[Report], None] | None = None
    _queue: asyncio.Queue[Report | None] = field(default_factory=asyncio.Queue)
    _stderr: bytearray = field(default_factory=bytearray)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _t0: float = 0.0
    _handshaken: bool = False

    @classmethod
    async def spawn(cls, argv: Sequence[str], name: str, *, prefix: Sequence[str] = (),
                    hello_timeout: float = 10.0) -> AgentProcess:
        """Start ``argv`` (after ``prefix``, e.g. nsenter into a lab host) and read its hello and features."""
        from ice.lab.netns import die_with_parent

        env = {**os.environ, "ICELAB_AGENT_PROTOCOL": "1", "PYTHONUNBUFFERED": "1"}
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env, preexec_fn=die_with_parent)
        except OSError as exc:
            raise AgentError(f"agent {name} could not start ({argv[0]}: {exc.strerror})") from None
        agent = cls(name, proc)
        agent._t0 = asyncio.get_running_loop().time()
        agent._tasks = [asyncio.ensure_future(agent._pump()), asyncio.ensure_future(agent._drain_stderr())]
        try:
            agent.hello = await agent._handshake(hello_timeout)
        except BaseException:
            await agent.close(0)
            raise
        return agent

    async def _handshake(self, timeout: float) -> Hello:
        first = await self.next(timeout, what="its hello line")
        words = f"{first.verb} {first.rest}".split()
        if first.verb != "hello" or len(words) < 2:
            raise AgentError(f"agent {self.name} began with {self._quote(first)} instead of "
                             f"'hello {PROTOCOL} NAME VERSION'")
        if words[1] != PROTOCOL:
            raise AgentError(f"agent {self.name} speaks {words[1]}; the harness speaks {PROTOCOL}")
        second = await self.next(timeout, what="its features line")
        if second.verb != "features":
            raise AgentError(f"agent {self.name}'s second line is {self._quote(second)} instead of 'features ...'")
        self._handshaken = True
        return Hello(words[2] if len(words) > 2 else "?", words[3] if len(words) > 3 else "?",
                     frozenset(second.rest.split()))

    @staticmethod
    def _quote(r: Report) -> str:
        return repr(f"{r.verb} {r.rest}".strip())

    def _stamp(self) -> str:
        return f"t={asyncio.get_running_loop().time() - self._t0:.6f}"

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                raw = await self.proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a line longer than the stream's limit
                self.transcript.append(f"{self._stamp()} < (a line over 64 KiB, dropped)")
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.transcript.append(f"{self._stamp()} < {line}")
            verb, _, rest = line.partition(" ")
            report = Report(verb, rest, loop.time())
            if self._handshaken and self.on_report is not None and verb not in ("ok", "unsupported"):
                self.on_report(report)
            else:
                self._queue.put_nowait(report)
        self._queue.put_nowait(None)

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            if len(self._stderr) < 1 << 20:
                self._stderr += chunk

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    async def next(self, timeout: float, what: str = "a line") -> Report:
        """The next report not taken by ``on_report`` (the handshake, ``set`` answers); AgentError on exit or
        silence."""
        try:
            report = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            raise AgentError(f"agent {self.name} printed no {what} within {timeout:g} s") from None
        if report is None:
            self._queue.put_nowait(None)
            code = await self._exit_code(1.0)
            tail = self.stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
            raise AgentError(f"agent {self.name} exited (code {code}) before {what}; stderr: {tail[0][:200]}")
        return report

    async def _exit_code(self, timeout: float) -> int | None:
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(self.proc.wait(), timeout)
        return None

    def write(self, line: str) -> None:
        """Send one command line (ignored once the agent has gone)."""
        if self.proc.stdin is None or self.proc.stdin.is_closing():
            return
        self.transcript.append(f"{self._stamp()} > {line}")
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.proc.stdin.write((line + "\n").encode())

    def write_lines(self, lines: Sequence[str]) -> None:
        """Send several command lines in one write: the agent reads them together, in one wake-up."""
        if self.proc.stdin is None or self.proc.stdin.is_closing() or not lines:
            return
        stamp = self._stamp()
        self.transcript.extend(f"{stamp} > {line}" for line in lines)
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.proc.stdin.write("".join(line + "\n" for line in lines).encode())

    async def set(self, name: str, *values: str, timeout: float = 5.0) -> str | None:
        """``set NAME VALUES``: None when the agent answers ``ok``, the reason when ``unsupported``."""
        self.write(" ".join(("set", name, *values)))
        while True:
            answer = await self.next(timeout, what=f"answer to 'set {name}'")
            if answer.verb == "ok":
                return None
            if answer.verb == "unsupported":
                return answer.rest or "no reason given"
            if answer.verb in ("log", "error") and self.on_report is not None:
                self.on_report(answer)
                continue
            if answer.verb in ("log", "error"):
                continue
            raise AgentError(f"agent {self.name} answered 'set {name}' with {self._quote(answer)} instead of "
                             "'ok' or 'unsupported REASON'")

    async def quit(self, timeout: float = 5.0) -> int | None:
        """``quit`` and wait for the exit code (None: it did not exit in time and was killed)."""
        self.write("quit")
        if self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.close()
        code = await self._exit_code(timeout)
        await self.close(0)
        return code

    def kill(self) -> None:
        """SIGKILL (the consent cells' "the peer dies")."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def close(self, grace: float = 1.0) -> None:
        """Make sure the process is gone and its pipes are drained."""
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    self.proc.stdin.close()
            if grace <= 0 or await self._exit_code(grace) is None:
                self.kill()
                await self.proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2.0)


__all__ = ["FEATURES", "PROTOCOL", "AgentError", "AgentProcess", "Hello", "Report"]
