"""Timelines in cells: the steps parse (a mistake is one sentence naming the step), run the same in the sim and
the kernel lab, and scenarios/faults.toml passes in both with the two agreeing step by step."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from ice.errors import UserError
from ice.scenario.cell import Cell
from ice.scenario.suite import Suite
from ice.scenario.timeline import Step, parse_timeline

FAULTS = ROOT / "scenarios" / "faults.toml"


def test_steps_parse_and_echo() -> None:
    steps = parse_timeline([{"after": 1, "block": "direct", "direction": "a-to-b"}, {"expect": "relay", "within": 20},
                            {"restart": True}, {"nat_reboot": "nat-a"}])
    assert steps[0] == Step("block", "direct", 1.0, "a-to-b")
    assert [s.as_json() for s in steps] == [{"after": 1.0, "block": "direct", "direction": "a-to-b"},
                                            {"expect": "relay", "within": 20.0}, {"restart": True},
                                            {"nat_reboot": "nat-a"}]
    assert steps[1].label == "expect relay within 20 s" and steps[0].label == "after 1 s: block direct (a-to-b)"
    moved = parse_timeline([{"after": 1, "renumber": "a"}, {"expect": "direct", "within": 10, "restarted": True}])
    assert moved == (Step("renumber", "a", 1.0), Step("expect", "direct", within=10.0, restarted=True))
    assert [s.as_json() for s in moved] == [{"after": 1.0, "renumber": "a"},
                                            {"expect": "direct", "within": 10.0, "restarted": True}]
    assert moved[1].label == "expect direct after an ICE restart within 10 s"
    waits = parse_timeline([{"on": "failed", "within": 8}, {"on": "connected", "within": 6, "side": "b"}])
    assert waits == (Step("on", "failed", within=8.0), Step("on", "connected", within=6.0, side="b"))
    assert [s.as_json() for s in waits] == [{"on": "failed", "within": 8.0},
                                            {"on": "connected", "within": 6.0, "side": "b"}]
    assert [s.label for s in waits] == ["on failed within 8 s", "on connected (b) within 6 s"]


@pytest.mark.parametrize(("timeline", "says"), [
    ([], "timeline is a non-empty list of steps"),
    ([{"block": "direct", "restart": True}], "timeline step 1: a timeline step does exactly one of"),
    ([{"expect": "relay"}], "timeline step 1: an expect step needs within = SECONDS"),
    ([{"block": "everything"}], "timeline step 1: block is one of direct, turn, not 'everything'"),
    ([{"restart": True}, {"after": -1, "restart": True}], "timeline step 2: after is a number of seconds >= 0"),
    ([{"block": "turn", "direction": "a-to-b"}], "the server is blocked both ways"),
    ([{"pause": 3}], "not pause"),
    ([{"stream": "paused"}], "stream is on or off, not 'paused'"),
    ([{"link_loss": 1.5}], "link_loss is a fraction in"),
    ([{"renumber": "nat-a"}], "renumber names a peer, \"a\" or \"b\", not 'nat-a'"),
    ([{"renumber": "a", "restarted": True}], "restarted = true goes with expect"),
    ([{"expect": "direct", "within": 5, "restarted": 1}], "restarted = true goes with expect"),
    ([{"on": "failed"}], "an on step needs within = SECONDS"),
    ([{"on": "gone", "within": 5}], "on is one of checking, connected, completed, disconnected, failed, selected"),
    ([{"on": "failed", "within": 5, "side": "c"}], "side is a or b and goes with on, not 'c'"),
    ([{"block": "direct", "side": "a"}], "side is a or b and goes with on, not 'a'"),
    ([{"block": "direct", "within": 5}], "within goes with expect and on"),
])
def test_a_bad_step_is_one_sentence_naming_the_cell_and_step(timeline: list[object], says: str) -> None:
    with pytest.raises(UserError, match="cell c: .*" + says.replace("(", r"\(").replace(")", r"\)")):
        Cell.from_table({"name": "c", "topology": "two_nats", "timeline": timeline})


def test_nat_reboot_names_a_nat_node_of_the_topology(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text(textwrap.dedent("""
        [[cells]]
        name = "c"
        topology = "two_nats"
        timeline = [{ nat_reboot = "nat_a" }, { expect = "direct", within = 5 }]
    """))
    with pytest.raises(UserError, match=r"cell c: nat_reboot names a NAT node of topology two_nats \(nat-a, nat-b\), "
                                        r"not 'nat_a'"):
        suite = Suite.load([f])
        suite.spec(suite.cells[0])


@pytest.mark.parametrize("backend", ["sim", pytest.param("lab", marks=pytest.mark.lab)])
def test_the_faults_suite(backend: str, tmp_path: Path) -> None:
    """Blocked paths fall back to the relay and come back, NAT reboots are survived (or recovered by a restart for
    a symmetric NAT), a blocked TURN server stops a relayed session until a restart, consent checks keep an idle
    pair's short-lived mapping alive and without them it breaks; on the lab every cell's steps agree with the
    sim's."""
    out = tmp_path / backend
    p = subprocess.run([*ICELAB, "run", "--backend", backend, str(FAULTS), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
    cells = {c["scenario"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert len(cells) >= 11 and all(c["status"] == "pass" and c["pinned"] for c in cells.values())
    blocked = cells["direct-blocked-relay-then-direct"]
    assert [s.get("observed") for s in blocked["timeline"] if "observed" in s] == ["relay", "direct"]
    late, lost = (s for s in blocked["timeline"] if "seen_by" in s)
    # The agents notice at their consent checks (every 2 s +/- 20 % with a 6 s consent timeout): disconnected once
    # 3 s passed without a success, failed once 6 s did (RFC 7675 §5.1). The last success came up to one interval
    # before the block, and a check up to one interval after the threshold; a second for a loaded machine.
    interval = 2.0 * 1.2
    assert late["took_s"] <= 3.0 + interval + 1.0 and late["took_s"] < lost["took_s"] <= 6.0 + interval + 1.0
    relay_after = next(s for s in blocked["timeline"] if "observed" in s)["took_s"]
    assert 6.0 <= relay_after <= 6.0 + 3.0  # the 6 s consent timeout, then a restart that finds the relay
    # unblocked as soon as an agent reported disconnected: consent recovers on the same pair, no restart
    back = cells["direct-blocked-until-disconnected"]
    assert [s.get("seen_by") is not None for s in back["timeline"] if "seen_by" in s] == [True, True]
    assert back["timeline_data"]["restarts"] == 0 and back["timeline"][-1]["observed"] == "direct"
    assert blocked["timeline_data"]["restarts"] >= 2 and blocked["timeline_data"]["lost"]["a-to-b"] > 0
    assert cells["nat-a-reboot"]["timeline_data"]["restarts"] == 0
    assert cells["symmetric-nat-reboot"]["timeline_data"]["restarts"] == 1
    assert [s.get("observed") for s in cells["turn-blocked-while-relayed"]["timeline"] if "observed" in s] == [
        "none", "relay"]
    quiet = cells["idle-without-keepalives"]
    assert quiet["timeline"][-1]["observed"] == "none" and quiet["timeline_data"]["restarts"] == 0
    assert cells["idle-with-keepalives"]["timeline"][-1]["observed"] == "direct"
    assert cells["turn-restart-while-relayed"]["timeline"][-1]["observed"] == "relay"
    lossy = cells["lossy-then-dead-then-clean"]
    assert [s.get("observed") for s in lossy["timeline"] if "observed" in s] == ["direct", "none", "direct"]
    assert lossy["timeline_data"]["restarts"] == 0 and lossy["timeline_data"]["lost"]["a-to-b"] > 0
    changed = cells["link-slow-lossy-dead-clean"]
    assert [s.get("observed") for s in changed["timeline"] if "observed" in s] == ["direct", "direct", "none", "direct"]
    assert changed["timeline_data"]["restarts"] == 0 and changed["timeline_data"]["lost"]["a-to-b"] > 0
    # A renumbered peer: back on the same kind of path after both sides restarted (the moved side on its own, the
    # other when signalled; the harness's restart policy had nothing to do); the peer's datagrams to the old
    # address were lost meanwhile.
    for name, path in (("renumber-behind-nat", "direct"), ("renumber-public-peer", "direct"),
                       ("renumber-while-relayed", "relay")):
        cell = cells[name]
        expects = [s for s in cell["timeline"] if "observed" in s]
        assert [s["observed"] for s in expects] == [path] * len(expects) and all(s["restarted"] for s in expects)
        assert cell["timeline_data"]["network_restarts"] == len(expects) and cell["timeline_data"]["restarts"] == 0
        assert expects[0]["lost"]["b-to-a"] > 0 and expects[0]["took_s"] < 5
    assert [s.get("detail") for s in cells["renumber-behind-nat"]["timeline"] if "detail" in s] == [
        "10.0.1.2 -> 10.0.1.254", "10.0.2.2 -> 10.0.2.254"]
    assert cells["renumber-public-peer"]["timeline"][0]["detail"] == "203.0.113.101 -> 203.0.113.254"
