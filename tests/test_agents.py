"""The agent protocol's harness side: icelab's own agent passes the conformance check, broken agents are named
in one sentence, cells name agents (built-in or a command), the sim skips them, a missing agent is not-installed,
and in the kernel lab icelab-as-a-process runs the steps only that path has (lite, restart, consent)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from ice.agents.line import AgentError, AgentProcess
from ice.agents.registry import BUILTIN, resolve
from ice.errors import UserError
from ice.scenario.cell import AgentSide, Cell
from ice.scenario.suite import load_file


def test_icelab_passes_its_own_conformance_check() -> None:
    p = subprocess.run([*ICELAB, "agent", "check", "icelab", "--json"], capture_output=True, text=True, timeout=180,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-1000:]
    doc = json.loads(p.stdout)
    verdicts = {s["step"]: s["verdict"] for s in doc["steps"]}
    assert doc["pass"] is True and set(verdicts.values()) == {"ok"}, verdicts
    assert len(verdicts) == 14 and doc["features"] == sorted(
        ["trickle", "stun", "turn-udp", "turn-tcp", "relay-only", "aggressive", "lite", "restart", "consent-timeout",
         "role-conflict", "bulk", "transports"])
    assert verdicts["ICE-TCP only (set transports tcp)"] == "ok"


def test_icelab_bulk_through_the_harness() -> None:
    """The bulk feature on icelab's agent, driven by the harness (ice.agents.pair): a burst that fits in a socket
    buffer is counted whole with no recv line, each way, and ordinary datagrams still flow; a bulk before start,
    a bad one and a second one while the first runs are errors."""
    from ice.agents.pair import SideSetup, bulk, bulk_report, close, connect, exchange, prepare

    async def main() -> list[str]:
        argv = BUILTIN["icelab"].argv()
        a, b = await AgentProcess.spawn(argv, "a"), await AgentProcess.spawn(argv, "b")
        a.write("bulk 10 100")
        early = await a.next(5)
        run = await prepare(a, b, SideSetup("controlling", ("127.0.0.1",)), SideSetup("controlled", ("127.0.0.1",)))
        try:
            await connect(run, 10)
            assert run.reason == "", run.reason
            for src, dst in ((run.a, run.b), (run.b, run.a)):
                burst = await bulk(src, dst, 100, 100, grace=0.2)
                assert burst.sent.count == 100 and burst.received.count >= 90, burst
                assert burst.received.bytes == 100 * burst.received.count and burst.received.reordered == 0
                assert burst.datagrams_per_s is not None and burst.mbit_per_s is not None and burst.loss <= 0.1
                assert (await bulk_report(dst)).count == 0
            assert not run.a.received and not run.b.received
            with pytest.raises(AgentError, match=r"^agent a \(icelab\) answered 'error bulk takes COUNT SIZE .*' "
                                                 r"instead of a bulk-sent line$"):
                await bulk(run.a, run.b, 10, 4)
            run.a.agent.write("bulk 5 7")
            run.a.agent.write("bulk 100000 1000")
            run.a.agent.write("bulk 10 100")
            assert await exchange(run, 5.0) == ""
            return [early.rest, *run.a.errors]
        finally:
            await close(run)

    errors = asyncio.run(main())
    wrong = "bulk takes COUNT SIZE (COUNT at least 1, SIZE 8 to 1472 bytes)"
    assert errors == ["bulk before start", wrong, wrong, "bulk while a bulk send is still running"], errors


def test_an_agent_that_does_not_speak_the_protocol_is_named_in_one_sentence(tmp_path: Path) -> None:
    fake = tmp_path / "fake-agent"
    fake.write_text("#!/bin/sh\necho 'HELLO there'\nsleep 5\n")
    fake.chmod(0o755)
    p = subprocess.run([*ICELAB, "agent", "check", str(fake)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert "missing     hello and features: agent under-test began with 'HELLO there' instead of 'hello " \
           "icelab-agent/1 NAME VERSION'" in p.stdout
    assert p.stdout.rstrip().splitlines()[-1].startswith("FAIL: 0 of 1 steps")


def test_an_agent_of_another_version_and_one_that_dies_are_named() -> None:
    async def start(script: str) -> str:
        try:
            agent = await AgentProcess.spawn([sys.executable, "-c", script], "x", hello_timeout=5)
        except AgentError as exc:
            return str(exc)
        await agent.close(0)
        return "started"

    assert asyncio.run(start("print('hello icelab-agent/2 future 1', flush=True)")) == \
        "agent x speaks icelab-agent/2; the harness speaks icelab-agent/1"
    died = asyncio.run(start("import sys; sys.stderr.write('no libfoo here\\n'); sys.exit(2)"))
    assert died == "agent x exited (code 2) before its hello line; stderr: no libfoo here"


def test_a_missing_command_is_one_sentence() -> None:
    p = subprocess.run([*ICELAB, "agent", "check", "/nonexistent/agent --x"], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert p.returncode == 1 and "missing     installed: /nonexistent/agent is not an executable here" in p.stdout


def test_the_registry_and_cell_sides() -> None:
    assert list(BUILTIN) == ["icelab", "aioice", "libnice", "pion"]
    assert resolve("icelab").argv[1:] == ("-m", "ice.cli", "peer") and not resolve("icelab").foreign
    assert resolve({"command": "sh -c 'echo hi'"}).argv == ("sh", "-c", "echo hi")
    with pytest.raises(ValueError, match="not one of icelab, aioice, libnice, pion"):
        resolve("mystack")
    assert AgentSide.parse({"command": "./x"}).as_json() == {"command": "./x"}
    with pytest.raises(UserError, match=r"cell c: agent_b: an agent is one of icelab, aioice, libnice, pion or "
                                        r"\{ command = \"PROGRAM ARGS\" \}, not 'jitsi'"):
        Cell.from_table({"name": "c", "topology": "two_nats", "agent_b": "jitsi"})
    with pytest.raises(UserError, match="lite and kill name a side"):
        Cell.from_table({"name": "c", "topology": "two_nats", "lite": "both"})


def test_a_matrix_over_agents_names_each_cell(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text(textwrap.dedent("""
        [[matrix]]
        name = "{agent_a}-{agent_b}.{nat_a}"
        topology = "two_nats"
        nats = { nat_a = ["eim-eif", "apdm-apdf"], nat_b = "none" }
        agent_a = ["icelab", "pion"]
        agent_b = { command = "./mine" }
    """))
    cells = load_file(f)
    assert [c.name for c in cells] == ["icelab-command.eim-eif", "pion-command.eim-eif",
                                       "icelab-command.apdm-apdf", "pion-command.apdm-apdf"]
    assert cells[1].agent_a == AgentSide("pion") and cells[1].agent_b == AgentSide("command", "./mine")
    assert all(c.in_processes for c in cells)


def test_the_sim_skips_process_cells_and_a_missing_agent_is_not_installed(tmp_path: Path) -> None:
    f = tmp_path / "foreign.toml"
    f.write_text(textwrap.dedent("""
        [[cells]]
        name = "gone"
        topology = "two_nats"
        nats = { nat_a = "eim-eif", nat_b = "eim-eif" }
        agent_b = { command = "/nonexistent/agent" }
    """))
    p = subprocess.run([*ICELAB, "run", "--backend", "sim", str(f), "--out", str(tmp_path / "sim"), "-q"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    cell = json.loads((tmp_path / "sim" / "results.json").read_text())["cells"][0]
    assert cell["status"] == "skipped" and "run in the kernel lab only" in cell["reason"]
    assert cell["agent_b"] == "/nonexistent/agent" and cell["config"]["agent_b"] == {"command": "/nonexistent/agent"}

    from ice.scenario.cell import PathKind
    from ice.scenario.expect import Expected
    from ice.scenario.lab import LabBackend

    res = LabBackend(captures=False).run(load_file(f)[0], None, Expected(PathKind.DIRECT, "x"))  # type: ignore[arg-type]
    assert res.status.value == "not-installed" and res.passed
    assert res.reason == "agent_b /nonexistent/agent: /nonexistent/agent is not an executable here"


@pytest.mark.lab
def test_process_cells_in_the_kernel_lab(tmp_path: Path) -> None:
    """icelab on both sides as processes: a command side through two port-restricted NATs, a restart, a lite side,
    consent (side b killed: a reports it within the shortened consent timeout plus the slack), and a relay through
    coturn."""
    f = tmp_path / "proc.toml"
    f.write_text(textwrap.dedent(f"""
        [defaults]
        topology = "two_nats"
        [[cells]]
        name = "command-side"
        nats = {{ nat_a = "eim-apdf", nat_b = "eim-apdf" }}
        agent_b = {{ command = "{sys.executable} -m ice.cli peer" }}
        [[cells]]
        name = "restart"
        nats = {{ nat_a = "eim-apdf", nat_b = "eim-eif" }}
        restart = true
        [[cells]]
        name = "lite"
        nats = {{ nat_a = "none", nat_b = "none" }}
        lite = "b"
        [[cells]]
        name = "consent"
        nats = {{ nat_a = "none", nat_b = "none" }}
        kill = "b"
        consent_timeout = 3
        [[cells]]
        name = "coturn-relay"
        nats = {{ nat_a = "apdm-apdf", nat_b = "apdm-apdf" }}
        server = "coturn"
    """))
    out = tmp_path / "out"
    p = subprocess.run([*ICELAB, "run", "--backend", "lab", str(f), "--out", str(out), "-q", "--keep-artifacts"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    cells = {c["scenario"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert {n: (c["status"], c["observed"]) for n, c in cells.items()} == {
        "command-side": ("pass", "direct"), "restart": ("pass", "direct"), "lite": ("pass", "direct"),
        "consent": ("pass", "direct"), "coturn-relay": ("pass", "relay")}
    assert cells["command-side"]["selected_types"] == "srflx-srflx" and not cells["command-side"]["pairs_known"]
    assert 3.0 <= cells["consent"]["consent_lost_after_s"] <= 8.0
    transcript = (Path(cells["restart"]["artifacts"]) / "agent-a.transcript").read_text()
    assert transcript.count("< local-credentials ") == 2 and "> restart" in transcript
    assert cells["lite"]["agents"] == {"a": cells["lite"]["agents"]["a"], "b": cells["lite"]["agents"]["a"]}


def test_a_failed_cell_names_what_its_control_did() -> None:
    from ice.scenario.cell import PathKind
    from ice.scenario.controls import note_controls
    from ice.scenario.expect import Expected
    from ice.scenario.result import CellResult

    def result(name: str, a: str, b: str, observed: PathKind, controlling: str = "both") -> CellResult:
        cell = Cell.from_table({"name": name, "topology": "two_nats", "agent_a": a, "agent_b": b,
                                "controlling": controlling, "nats": {"nat_a": "eim-apdf", "nat_b": "eim-apdf"}})
        return CellResult(cell, "lab", PathKind.DIRECT, observed, None, None, pairs_known=False).expecting(
            Expected(PathKind.DIRECT, "both cones"))

    mixed = result("icelab-pion.both", "icelab", "pion", PathKind.NONE)
    control = result("pion-pion.both", "pion", "pion", PathKind.NONE)
    other_kind = result("pion-pion.b", "pion", "pion", PathKind.DIRECT, controlling="b")
    lone = result("icelab-aioice.both", "icelab", "aioice", PathKind.NONE)
    note_controls([mixed, control, other_kind, lone])
    assert mixed.extra["control"] == {"cell": "pion-pion.both", "status": "fail"}
    assert mixed.reason.endswith("(the control pion-pion.both, pion against itself, fails too: pion's fault)")
    assert "control" not in lone.extra and "control" not in control.extra


@pytest.mark.interop
@pytest.mark.parametrize("agent", ["aioice", "libnice", "pion"])
def test_every_builtin_foreign_agent_passes_the_conformance_check(agent: str) -> None:
    """What `icelab agent check` says of each built-in adapter: every mandatory step ok, and the features each
    lacks (docs/agents.md) reported as unsupported, never silently skipped."""
    p = subprocess.run([*ICELAB, "agent", "check", agent, "--json"], capture_output=True, text=True, timeout=240,
                       cwd=ROOT)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
    doc = json.loads(p.stdout)
    unsupported = {s["step"].split(" (")[0].split(" through")[0] for s in doc["steps"] if s["verdict"] == "unsupported"}
    assert doc["pass"] and len(doc["steps"]) == 14
    assert unsupported == {"aioice": {"lite", "ICE restart", "ICE-TCP only"}, "libnice": set(),
                           "pion": {"role conflict", "aggressive nomination", "ICE-TCP only"}}[agent]


@pytest.mark.lab
def test_the_interop_suite_passes_in_the_kernel_lab(tmp_path: Path) -> None:
    """scenarios/interop.toml: every cell passes or is a pinned known failure; each foreign stack plays both sides
    and passes at least one direct and one relayed cell; no cell is skipped or left not-installed."""
    out = tmp_path / "interop"
    p = subprocess.run([*ICELAB, "run", str(ROOT / "scenarios" / "interop.toml"), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert {c["status"] for c in cells} <= {"pass", "known-failure"}
    for stack in ("aioice", "libnice", "pion"):
        mine = [c for c in cells if stack in (c["agent_a"], c["agent_b"])]
        assert {c["observed"] for c in mine if c["status"] == "pass"} >= {"direct", "relay"}, stack
        assert {side for c in mine for side in "ab" if c[f"agent_{side}"] == stack} == {"a", "b"}, stack
    known = {c["scenario"]: c["known_failure"] for c in cells if c["known_failure"]}
    assert all("pion 2.3.1" in why for name, why in known.items() if "pion" in name)


LIBNICE_TCP = ("icelab-libnice.tcp-none-none", "libnice-icelab.tcp-none-none", "icelab-libnice.tcp-active-passive",
               "icelab-libnice.tcp-passive-active", "libnice-libnice.tcp-none-none",
               "icelab-libnice.tcp-eim-apdf-eim-apdf", "libnice-libnice.tcp-eim-apdf-eim-apdf",
               "icelab-libnice.tcp-eim-apdf-eim-apdf.turn", "libnice-icelab.tcp-eim-apdf-eim-apdf.turn")
"""scenarios/interop.toml's ICE-TCP cells (docs/tcp.md, "Interop with libnice")."""


def test_tcp_process_cells_tell_each_agent_its_transports_and_tcptypes() -> None:
    """A foreign agent in an ICE-TCP cell gets `set transports`, and `set tcp-types` only when the cell names fewer
    than all three tcptypes (otherwise it gathers what it gathers); a UDP cell gets neither, as before."""
    from types import SimpleNamespace

    from ice.scenario.processes import _setup

    fabric = SimpleNamespace(addresses=lambda side: ["10.0.1.2"])
    server = SimpleNamespace(udp_blocked={"a": False, "b": False}, address=("203.0.113.10", 3478))
    cell = Cell.from_table({"name": "c", "topology": "two_nats", "agent_b": "libnice", "transports": "tcp",
                            "udp_blocked": True, "tcp_types_a": ["active"], "tcp_types_b": ["passive", "active"]})
    a = _setup(cell, "a", fabric, server).settings()  # type: ignore[arg-type]
    b = _setup(cell, "b", fabric, server).settings()  # type: ignore[arg-type]
    assert ("transports", "tcp") in a and ("tcp-types", "active") in a
    assert ("transports", "tcp") in b and ("tcp-types", "passive,active") in b
    every = Cell.from_table({"name": "c", "topology": "two_nats", "agent_b": "libnice", "transports": "tcp"})
    assert not [s for s in _setup(every, "b", fabric, server).settings() if s[0] == "tcp-types"]  # type: ignore[arg-type]
    udp = Cell.from_table({"name": "c", "topology": "two_nats", "agent_b": "libnice"})
    assert not [s for s in _setup(udp, "b", fabric, server).settings()  # type: ignore[arg-type]
                if s[0] in ("transports", "tcp-types")]


def test_the_sim_skips_the_libnice_tcp_cells(tmp_path: Path) -> None:
    p = subprocess.run([*ICELAB, "run", "--backend", "sim", str(ROOT / "scenarios" / "interop.toml"),
                        *[w for n in LIBNICE_TCP for w in ("--scenario", n)], "--out", str(tmp_path / "sim"), "-q"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-1000:]
    cells = json.loads((tmp_path / "sim" / "results.json").read_text())["cells"]
    assert sorted(c["scenario"] for c in cells) == sorted(LIBNICE_TCP)
    assert all(c["status"] == "skipped" and "run in the kernel lab only" in c["reason"] for c in cells)


@pytest.mark.lab
def test_icelab_ice_tcp_against_libnice_in_the_kernel_lab(tmp_path: Path) -> None:
    """ICE-TCP (RFC 6544) against libnice, UDP between the peers blocked, no TURN: both public, each stack in each
    role; icelab behind a port-restricted NAT (its active candidate to libnice's passive one); libnice behind it
    (libnice's active candidate to icelab's passive one, learnt as peer-reflexive); libnice against itself. Every
    selected pair is TCP, active with passive. Through two port-restricted NATs libnice fails (it has no so
    candidates), pinned as a known failure that its control shares; with a TURN server libnice's active candidate
    connects to icelab's passive relayed TCP candidate (a TURN TCP allocation), in either role."""
    out = tmp_path / "tcp"
    p = subprocess.run([*ICELAB, "run", "--backend", "lab", str(ROOT / "scenarios" / "interop.toml"),
                        *[w for n in LIBNICE_TCP for w in ("--scenario", n)], "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
    cells = {c["scenario"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert {n: (c["status"], c["observed"]) for n, c in cells.items()} == {
        "icelab-libnice.tcp-none-none": ("pass", "direct"), "libnice-icelab.tcp-none-none": ("pass", "direct"),
        "icelab-libnice.tcp-active-passive": ("pass", "direct"),
        "icelab-libnice.tcp-passive-active": ("pass", "direct"),
        "libnice-libnice.tcp-none-none": ("pass", "direct"),
        "icelab-libnice.tcp-eim-apdf-eim-apdf": ("known-failure", "none"),
        "libnice-libnice.tcp-eim-apdf-eim-apdf": ("known-failure", "none"),
        "icelab-libnice.tcp-eim-apdf-eim-apdf.turn": ("pass", "relay"),
        "libnice-icelab.tcp-eim-apdf-eim-apdf.turn": ("pass", "relay")}
    tcptype = re.compile(r"^(\w+) tcp (active|passive) \S+ -> (\w+) tcp (active|passive) \S+$")
    for name, c in cells.items():
        if c["observed"] != "direct":
            continue
        for side in ("selected", "selected_b"):
            m = tcptype.match(c[side])
            assert m is not None and {m.group(2), m.group(4)} == {"active", "passive"}, (name, side, c[side])
    assert cells["icelab-libnice.tcp-active-passive"]["selected"].startswith("host tcp active 10.0.1.2:9 -> host tcp "
                                                                             "passive 203.0.113.")
    assert cells["icelab-libnice.tcp-active-passive"]["selected_types"] == "host-host"
    assert re.match(r"host tcp passive 203\.0\.113\.\d+:\d+ -> prflx tcp active 203\.0\.113\.\d+:\d+$",
                    cells["icelab-libnice.tcp-passive-active"]["selected"])
    assert cells["icelab-libnice.tcp-passive-active"]["selected_types"] == "host-prflx"
    # libnice's active candidate (from its NAT: peer-reflexive to icelab) to icelab's passive relayed one.
    assert re.match(r"relay tcp passive 203\.0\.113\.10:\d+ -> prflx tcp active 203\.0\.113\.2:\d+$",
                    cells["icelab-libnice.tcp-eim-apdf-eim-apdf.turn"]["selected"])
    assert re.match(r"prflx tcp active 203\.0\.113\.1:\d+ -> relay tcp passive 203\.0\.113\.10:\d+$",
                    cells["libnice-icelab.tcp-eim-apdf-eim-apdf.turn"]["selected"])
    failed = cells["icelab-libnice.tcp-eim-apdf-eim-apdf"]
    assert "so" in failed["known_failure"] and failed["agent_states"]["b"][-1] == "failed"
    assert failed["control"] == {"cell": "libnice-libnice.tcp-eim-apdf-eim-apdf", "status": "known-failure"}
