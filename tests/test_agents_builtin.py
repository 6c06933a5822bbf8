"""The built-in foreign agents (ice/agents/peers/, docs/agents.md), each against itself on 127.0.0.1 through the agent
protocol (docs/agent-protocol.md): a small synchronous driver starts two instances, forwards each one's credentials
and candidates to the other, waits for `selected` on both, exchanges one datagram each way and quits them."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.interop

PEERS = ROOT / "ice" / "agents" / "peers"
AGENTS = ["aioice", "libnice", "pion"]
FORWARD = {"local-credentials": "remote-credentials", "local-candidate": "remote-candidate",
           "local-end-of-candidates": "remote-end-of-candidates"}


def _pion_binary() -> str:
    """Built into the venv's bin by scripts/provision.sh; missing there is a set-up bug, not a skip."""
    path = Path(sys.executable).parent / "icelab-pion-agent"
    if path.exists():
        return str(path)
    found = shutil.which("icelab-pion-agent")
    if found is None:
        pytest.fail("icelab-pion-agent is not built: run ./icelab (scripts/provision.sh builds it from Debian's "
                    "pion sources)")
    return found


def command(name: str) -> list[str]:
    if name == "pion":
        return [_pion_binary()]
    return [sys.executable, str(PEERS / f"{name}_agent.py")]


class Agent:
    """One agent process: its report lines arrive on a queue read by a thread; standard error goes to a file."""

    def __init__(self, name: str, tag: str, tmp: Path) -> None:
        self.name, self.tag = name, tag
        self.stderr_path = tmp / f"{name}-{tag}.stderr"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        env = {**os.environ, "ICELAB_AGENT_PROTOCOL": "1"}
        with self.stderr_path.open("w") as err:
            self.p = subprocess.Popen(command(name), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                      text=True, bufsize=1, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def poll(self, timeout: float) -> str | None:
        """The next report line, or None when none came within timeout; EOF is an assertion failure."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        assert line is not None, f"{self} closed its output\n{self.transcript()}"
        self.seen.append(line)
        return line

    def next(self, timeout: float = 10.0) -> str:
        line = self.poll(timeout)
        assert line is not None, f"{self}: nothing within {timeout} s\n{self.transcript()}"
        return line

    def set(self, line: str) -> str:
        self.send(line)
        answer = self.next()
        assert answer == "ok" or answer.startswith("unsupported "), f"{self}: {line!r} answered {answer!r}"
        return answer

    def quit(self) -> int:
        self.send("quit")
        try:
            return self.p.wait(5)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def transcript(self) -> str:
        return "\n".join(f"  {self.tag}> {line}" for line in self.seen) + f"\n  stderr: {self.stderr_path.read_text()}"

    def __str__(self) -> str:
        return f"{self.name}-{self.tag}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str, str], Agent]]:
    started: list[Agent] = []

    def make(name: str, tag: str) -> Agent:
        agent = Agent(name, tag, tmp_path)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.kill()


def greet(agent: Agent) -> list[str]:
    hello = agent.next()
    assert re.fullmatch(rf"hello icelab-agent/1 {agent.name} \S+", hello), hello
    features = agent.next()
    assert features == "features" or features.startswith("features "), features
    return features.split()[1:]


def pump(agents: tuple[Agent, Agent], until: Callable[[], bool], seconds: float) -> None:
    """Read both agents' reports, forwarding credentials and candidates to the other side, until `until()`."""
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "timed out:\n" + "\n".join(a.transcript() for a in agents)
        for me, other in (agents, agents[::-1]):
            line = me.poll(0.02)
            if line is None:
                continue
            verb, _, rest = line.partition(" ")
            assert verb != "error", f"{me}: {line}\n{me.transcript()}"
            if verb in FORWARD:
                other.send(f"{FORWARD[verb]} {rest}".rstrip())


def _selected(agent: Agent) -> list[str]:
    return [line for line in agent.seen if line.startswith("selected ")]


def _received(agent: Agent, text: str) -> bool:
    return f"recv {text}" in agent.seen


def connect(a: Agent, b: Agent, settings: tuple[str, ...] = ()) -> None:
    """a controlling, b controlled, both on 127.0.0.1: start them and forward until both selected a pair."""
    for agent, role in ((a, "controlling"), (b, "controlled")):
        greet(agent)
        assert agent.set(f"set role {role}") == "ok"
        assert agent.set("set bind 127.0.0.1") == "ok"
        for line in settings:
            assert agent.set(line) == "ok", line
        agent.send("start")
    pump((a, b), lambda: bool(_selected(a) and _selected(b)), 30)


def exchange(a: Agent, b: Agent, tag: str) -> None:
    """One datagram each way: `send` on one side arrives as `recv` on the other."""
    a.send(f"send {tag}-from-{a}")
    b.send(f"send {tag}-from-{b}")
    pump((a, b), lambda: _received(b, f"{tag}-from-{a}") and _received(a, f"{tag}-from-{b}"), 10)


@pytest.mark.parametrize("name", AGENTS)
def test_two_instances_connect_and_exchange_data(name: str, spawn: Callable[[str, str], Agent]) -> None:
    a, b = spawn(name, "a"), spawn(name, "b")
    connect(a, b)
    for agent in (a, b):
        local, _, remote = _selected(agent)[0].removeprefix("selected ").partition(" | ")
        for cand in (local, remote):
            fields = cand.split()
            assert len(fields) >= 8 and fields[6] == "typ" and fields[4] == "127.0.0.1", cand
    exchange(a, b, "hello")
    assert a.quit() == 0
    assert b.quit() == 0


@pytest.mark.parametrize("name", ["libnice", "pion"])
def test_restart_gives_a_new_generation_and_a_new_selected_pair(name: str,
                                                                 spawn: Callable[[str, str], Agent]) -> None:
    """`restart` on one side only: the peer sees new remote credentials, restarts too, and both select again."""
    a, b = spawn(name, "a"), spawn(name, "b")
    connect(a, b)
    exchange(a, b, "before")
    a.send("restart")
    pump((a, b), lambda: len(_selected(a)) > 1 and len(_selected(b)) > 1, 30)
    for agent in (a, b):
        creds = [line for line in agent.seen if line.startswith("local-credentials ")]
        assert len(creds) == 2 and creds[0] != creds[1], agent.transcript()
        assert agent.seen.count("local-end-of-candidates") == 2, agent.transcript()
    exchange(a, b, "after")
    assert a.quit() == 0
    assert b.quit() == 0


def _last(agent: Agent, prefix: str) -> list[str]:
    """The words of the last line that starts with prefix (the prefix's own words left out)."""
    line = next(line for line in reversed(agent.seen) if line.startswith(prefix))
    return line.removeprefix(prefix).split()


def bulk_report(agent: Agent, other: Agent) -> list[str]:
    """`bulk-report`: the five numbers of the `bulk-received` answer."""
    before = sum(line.startswith("bulk-received ") for line in agent.seen)
    agent.send("bulk-report")
    pump((agent, other), lambda: sum(line.startswith("bulk-received ") for line in agent.seen) > before, 10)
    return _last(agent, "bulk-received ")


@pytest.mark.parametrize("name", AGENTS)
def test_bulk_is_counted_not_printed(name: str, spawn: Callable[[str, str], Agent]) -> None:
    """The bulk feature (docs/agent-protocol.md, Bulk data): a burst that fits in a socket buffer is sent whole and
    counted at the other side with no recv line; bulk-report starts the count again; bad arguments are errors."""
    a, b = spawn(name, "a"), spawn(name, "b")
    connect(a, b)
    assert bulk_report(b, a) == ["0", "0", "0.000000", "0.000000", "0"]
    for bad in ("bulk", "bulk ten 100", "bulk 10 4", "bulk 10 1473", "bulk 0 100"):
        a.send(bad)
        assert a.next().startswith("error bulk takes COUNT SIZE"), bad
    a.send("bulk 100 100")
    pump((a, b), lambda: any(line.startswith("bulk-sent ") for line in a.seen), 10)
    count, seconds = _last(a, "bulk-sent ")
    assert count == "100" and float(seconds) >= 0
    time.sleep(0.3)
    got, size, first, last, reordered = bulk_report(b, a)
    assert 90 <= int(got) <= 100 and int(size) == 100 * int(got), b.transcript()
    assert float(last) >= float(first) > 0 and 0 <= int(reordered) < int(got)
    assert not any(line.startswith("recv ") for line in b.seen), b.transcript()
    assert bulk_report(b, a)[0] == "0"
    exchange(a, b, "after-bulk")  # ordinary datagrams are still printed
    assert a.quit() == 0
    assert b.quit() == 0


def documented_features() -> dict[str, list[str]]:
    """docs/agents.md gives each agent's features line as `features ...` in a code span under its heading."""
    text = (ROOT / "docs" / "agents.md").read_text()
    found: dict[str, list[str]] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = section.split("\n", 1)[0]
        match = re.search(r"`(features(?: [a-z-]+)*)`", section)
        for name in AGENTS:
            if re.search(rf"\b{name}\b", heading) and match:
                found[name] = match.group(1).split()[1:]
    return found


@pytest.mark.parametrize("name", AGENTS)
def test_features_line_is_what_the_docs_say(name: str, spawn: Callable[[str, str], Agent]) -> None:
    agent = spawn(name, "a")
    assert greet(agent) == documented_features()[name]
    assert agent.quit() == 0


@pytest.mark.parametrize("name", AGENTS)
def test_unknown_settings_and_commands(name: str, spawn: Callable[[str, str], Agent]) -> None:
    agent = spawn(name, "a")
    greet(agent)
    assert agent.set("set frobnicate on").startswith("unsupported ")
    agent.send("frobnicate now")
    assert agent.next() == "error unknown command frobnicate"
    assert agent.set("set role controlled") == "ok"
    assert agent.quit() == 0
