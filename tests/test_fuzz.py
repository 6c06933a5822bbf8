"""The fuzzing harness (fuzz/, ``icelab fuzz``, docs/robustness.md): every target fuzzed for a bounded time with no
exception, the seed corpus replayed cleanly and reaching the deep paths it was written for, and the command's
user-facing behaviour."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from fuzz import targets as t
from ice.agent.states import AgentState
from ice.turn.client import TurnState

CORPUS = ROOT / "fuzz" / "corpus"
SECONDS = 2.0
"""Per target in the bounded run: nine targets, about 35 s of CPU in all with the child processes' start."""


def _corpus(name: str) -> list[Path]:
    return sorted(p for p in (CORPUS / name).iterdir() if p.is_file())


@pytest.mark.parametrize("name", list(t.TARGETS))
def test_corpus_replays_cleanly(name: str) -> None:
    """Every seed through its target: no exception (the seeds are also libFuzzer's starting points)."""
    files = _corpus(name)
    assert 5 <= len(files) <= 100, f"fuzz/corpus/{name}: keep a few dozen seeds"
    for path in files:
        data = path.read_bytes()
        assert len(data) <= 16384, f"{path}: seeds stay small"
        t.TARGETS[name](data)


def _stats(name: str) -> tuple[Counter[str], Counter[object]]:
    stats: Counter[str] = Counter()
    states: Counter[object] = Counter()
    for path in _corpus(name):
        t.TARGETS[name](path.read_bytes())
        machine = t.LAST[name]
        stats.update(machine.stats)
        states[getattr(machine, "state", None)] += 1
    return stats, states


def test_turn_server_corpus_reaches_every_request_and_both_relay_directions() -> None:
    stats, _ = _stats("turn-server")
    for counter in ("allocate", "refresh", "deallocate", "create-permission", "channel-bind", "relayed-to-peer",
                    "relayed-to-client", "allocation-expired", "auth-401", "auth-438"):
        assert stats[counter] > 0, counter


def test_corpora_reach_tcp_allocations_ice_tcp_and_the_batch_paths() -> None:
    """The paths added after the first campaign: RFC 6062 on both TURN sides, RFC 6544 in the agent, the servers'
    batches (the STUN server's batch is in every input of its target)."""
    t.REACHED.clear()
    stats, _ = _stats("turn-server")
    for counter in ("tcp-allocate", "tcp-connect", "tcp-peer-connected", "tcp-bind", "tcp-peer-accepted",
                    "tcp-connection-closed", "tcp-connect-timeout", "relayed-to-peer", "relayed-to-client"):
        assert stats[counter] > 0, counter
    assert t.REACHED["turn-server-batch"] > 0
    _stats("turn-client")
    assert t.REACHED["turn-client-bind-sent"] > 0 and t.REACHED["turn-client-bind-bound"] > 0
    assert t.REACHED["turn-client-bind-failed"] > 0
    stats, _ = _stats("agent")
    for counter in ("tcp-connects", "tcp-connected", "tcp-accepted", "tcp-frames", "tcp-closed", "tcp-prflx-remote"):
        assert stats[counter] > 0, counter


def test_turn_client_agent_and_relayed_corpora_reach_their_working_states() -> None:
    _, states = _stats("turn-client")
    assert states[TurnState.ALLOCATED] > 0
    stats, states = _stats("agent")
    assert states[AgentState.COMPLETED] + states[AgentState.CONNECTED] > 0
    for counter in ("check-responses-success", "triggered-checks", "role-switch", "data-received"):
        assert stats[counter] > 0, counter
    stats, states = _stats("relayed")  # the agent, through the TURN allocation
    assert states[AgentState.COMPLETED] + states[AgentState.CONNECTED] > 0
    assert stats["check-responses-success"] > 0 and stats["nominations-sent"] > 0


def test_relayed_tcp_corpus_connects_both_ways_through_the_tcp_allocation() -> None:
    """Relayed TCP candidates (RFC 6544 §5.3, RFC 6062): a Connect bound and nominated, a ConnectionAttempt bound and
    accepted, a ConnectionBind retried after 401, an attempt ignored without an allocation."""
    t.REACHED.clear()
    stats, states = _stats("relayed-tcp")
    assert states[AgentState.COMPLETED] + states[AgentState.CLOSED] > 0
    for counter in ("tcp-relay-bound", "tcp-connected", "tcp-accepted", "nominations-sent", "tcp-prflx-remote",
                    "tcp-relay-attempt-ignored", "tcp-connect-failed"):
        assert stats[counter] > 0, counter
    assert t.REACHED["relayed-tcp-bind-sent"] > 0


@pytest.mark.parametrize("name", list(t.TARGETS))
def test_bounded_fuzzing_finds_nothing(name: str, tmp_path: Path) -> None:
    """A short campaign per target under ``icelab test``; the long ones are in docs/robustness.md."""
    p = subprocess.run([*ICELAB, "fuzz", name, "--seconds", str(SECONDS), "--json", "--work", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(p.stdout)
    crashes = "".join(Path(f).with_suffix(".txt").read_text() for f in result["crash_files"]
                      if Path(f).with_suffix(".txt").exists())
    assert (result["exceptions"], result["hangs"], result["out_of_memory"]) == (0, 0, 0), crashes or p.stderr
    assert p.returncode == 0 and result["completed"], p.stderr
    assert result["inputs"] > 100 and result["rss_start_kb"] > 0 and result["rss_end_kb"] > 0
    # Memory flat: a leak of a few KB per input (as the stream target's own harness once had) shows within 2 s.
    assert result["rss_end_kb"] - result["rss_start_kb"] < 8192, result


def test_fuzz_lists_its_targets_and_refuses_an_unknown_one_in_a_sentence() -> None:
    listed = subprocess.run([*ICELAB, "fuzz", "--list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.split() == list(t.TARGETS)
    bad = subprocess.run([*ICELAB, "fuzz", "stunn", "--seconds", "1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "stunn" in bad.stderr and "turn-server" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_replay_runs_saved_inputs_through_the_target() -> None:
    p = subprocess.run([*ICELAB, "fuzz", "sdp", "--replay", str(CORPUS / "sdp")], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and f"replayed {len(_corpus('sdp'))} inputs through sdp: 0 raised" in p.stdout


def test_a_target_that_raises_is_reported_with_its_input_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """The harness itself: an exception in a target is caught in the child, saved and counted; fuzzing goes on."""
    broken = tmp_path / "fuzz"
    broken.mkdir()
    (broken / "__init__.py").write_text("")
    for module in ("reader.py", "run.py"):
        (broken / module).write_text((ROOT / "fuzz" / module).read_text())
    (broken / "targets.py").write_text(
        "def boom(data: bytes) -> None:\n"
        "    if data[:1] == b'!':\n"
        "        raise KeyError('found it')\n\n\n"
        "TARGETS = {'boom': boom}\nMAX_LEN = {}\n")
    (broken / "corpus" / "boom").mkdir(parents=True)
    (broken / "corpus" / "boom" / "seed").write_bytes(b"!")
    (tmp_path / "pyproject.toml").write_text("")
    from ice.cli import fuzz as cli

    monkeypatch.setattr(cli, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(cli, "_targets", lambda root: (["boom"], {}))
    result = cli.run_campaign(tmp_path, "boom", 1.0, 2**62, tmp_path / "work", 64, 10, 2048, progress=False)
    assert result["exceptions"] >= 1 and result["completed"]
    saved = Path(result["crash_files"][0])
    assert saved.read_bytes()[:1] == b"!" and "KeyError: 'found it'" in saved.with_suffix(".txt").read_text()
