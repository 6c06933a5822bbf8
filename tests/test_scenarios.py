"""The scenario matrix on the sim back-end: specific cells pick the path the NAT reasoning predicts."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest

from ice.scenario.model import Path, Scenario, expect
from ice.scenario.run import load_matrix, main, run_sim


def test_default_matrix_covers_every_rfc4787_pair_and_the_special_boxes() -> None:
    cells = load_matrix()
    names = {c.name for c in cells}
    assert len(names) == len(cells)  # names are unique: they key expectations, artifacts and --scenario
    groups = {g: [c for c in cells if c.group == g] for g in {c.group for c in cells}}
    assert len(groups["rfc4787"]) == 81 and len(groups["special"]) == 4
    assert "apdm-apdfxapdm-apdf" in names and "eim-eifxeim-eif" in names and "udp-blockedxeim-apdf" in names
    assert {c.hairpin for c in groups["same-nat"]} == {True, False}
    assert {c.topology for c in groups["double-nat"]} == {"double_nat"}
    assert {c.loss for c in groups["impaired"]} >= {0.1, 0.3} and any(c.delay_ms == 50 for c in groups["impaired"])
    assert {c.nomination for c in groups["options"]} == {"regular", "aggressive"}
    assert {c.controlling for c in groups["options"]} == {"a", "b", "both"}


def test_a_double_nat_behaves_like_the_two_nats_composed() -> None:
    from ice.lab.nat import preset
    from ice.scenario.model import compose

    assert compose(preset("eim-apdf"), preset("eim-eif")).name == "eim-apdf"
    assert compose(preset("eim-eif"), preset("apdm-adf")).name == "apdm-adf"
    assert compose(preset("adm-eif"), preset("eim-apdf")).name == "adm-apdf"
    assert compose(preset("eim-apdf"), preset("none")) == preset("eim-apdf")
    cell = Scenario("x", "eim-apdf", "eim-apdf", topology="double_nat", outer="apdm-apdf")
    assert expect(cell).path is Path.RELAY  # symmetric CGN in front of a port-restricted peer
    assert expect(Scenario("y", "eim-apdf", "eim-apdf", topology="double_nat", outer="eim-eif")).path is Path.DIRECT


def test_same_nat_and_options_expectations() -> None:
    assert expect(Scenario("s", "apdm-apdf", "apdm-apdf", topology="same_nat", hairpin=False)).path is Path.DIRECT
    assert expect(Scenario("r", "eim-eif", "eim-eif", relay_only=True)).path is Path.RELAY
    assert expect(Scenario("n", "apdm-apdf", "apdm-apdf", turn=False)).path is Path.NONE
    with pytest.raises(ValueError, match="outer"):
        Scenario("d", "eim-eif", "eim-eif", topology="double_nat")


@pytest.mark.parametrize(("a", "b", "path"), [
    ("eim-eif", "eim-eif", Path.DIRECT),
    ("eim-apdf", "eim-apdf", Path.DIRECT),
    ("apdm-apdf", "eim-eif", Path.DIRECT),
    ("apdm-apdf", "eim-apdf", Path.RELAY),
    ("apdm-apdf", "apdm-apdf", Path.RELAY),
])
def test_expectation_and_sim_agree(a: str, b: str, path: Path) -> None:
    cell = Scenario(f"{a}x{b}", a, b)
    assert expect(cell).path is path
    r = run_sim(cell)
    assert r.observed is path, r.reason
    assert r.selected is not None
    assert ("relay" in r.selected) == (path is Path.RELAY)


def test_main_writes_reports_and_exit_status(tmp_path: FsPath) -> None:
    rc = main("sim", ["eim-eif", "apdm-apdf"], tmp_path, update=False, quiet=True)
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["passed"] == 4 and doc["failed"] == 0
    cells = {c["scenario"]: c for c in doc["cells"]}
    assert cells["apdm-apdfxapdm-apdf"]["observed"] == "relay"
    assert "apdm-apdf" in (tmp_path / "grid.md").read_text()


def test_unknown_backend_is_a_clear_error(tmp_path: FsPath, capsys: pytest.CaptureFixture[str]) -> None:
    assert main("nope", None, tmp_path, update=False, quiet=True) == 2
    assert "--backend sim" in capsys.readouterr().err
    assert main("sim", None, tmp_path, update=False, quiet=True, names=["eim-eifxnope"]) == 2
    assert "no scenario named eim-eifxnope" in capsys.readouterr().err


def test_a_broken_pinned_expectation_is_a_failed_cell(tmp_path: FsPath, monkeypatch: pytest.MonkeyPatch) -> None:
    import ice.scenario.run as run

    monkeypatch.setattr(run, "_pinned", lambda: {"eim-eifxeim-eif": {"path": "relay", "reason": "deliberately wrong"}})
    rc = main("sim", ["eim-eif"], tmp_path, update=False, quiet=True)
    assert rc == 1
    (cell,) = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert not cell["pass"] and cell["expected"] == "relay" and cell["observed"] == "direct"
    assert "sim selected srflx" in cell["reason"]
    assert 'failures="1"' in (tmp_path / "junit.xml").read_text()
    assert 'class="fail"' in (tmp_path / "grid.html").read_text()


def test_pinned_expectations_match_the_reasoning() -> None:
    """scenarios/expected.json is reviewed data; it must not drift from the documented RFC 4787 reasoning."""
    pinned = json.loads((FsPath(__file__).parents[1] / "scenarios" / "expected.json").read_text())
    cells = load_matrix()
    assert set(pinned) == {c.name for c in cells}
    assert {c.name: expect(c).path.value for c in cells} == {k: v["path"] for k, v in pinned.items()}


def test_report_compare_names_regressions_fixes_and_path_changes(tmp_path: FsPath) -> None:
    import subprocess
    import sys

    assert main("sim", ["eim-eif", "apdm-apdf"], tmp_path / "old", update=False, quiet=True) == 0
    doc = json.loads((tmp_path / "old" / "results.json").read_text())
    cells = {c["scenario"]: c for c in doc["cells"]}
    cells["eim-eifxeim-eif"].update({"pass": False, "reason": "made up"})
    cells["apdm-apdfxapdm-apdf"].update({"observed": "direct", "selected_types": "srflx-srflx"})
    cells["eim-eifxapdm-apdf"]["seconds_to_connect"] = 3.0
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "results.json").write_text(json.dumps(doc))
    cmd = [sys.executable, "-m", "ice.cli", "report", "compare"]
    p = subprocess.run([*cmd, str(tmp_path / "old"), str(tmp_path / "new" / "results.json"), "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert [r["scenario"] for r in out["regressed"]] == ["eim-eifxeim-eif"]
    assert [r["scenario"] for r in out["path_changed"]] == ["apdm-apdfxapdm-apdf"]
    assert [r["scenario"] for r in out["slower"]] == ["eim-eifxapdm-apdf"] and out["added"] == []
    p = subprocess.run([*cmd, str(tmp_path / "new"), str(tmp_path / "old")], capture_output=True, text=True)
    assert p.returncode == 0 and "fixed (1):" in p.stdout and "eim-eifxeim-eif" in p.stdout
    p = subprocess.run([*cmd, str(tmp_path / "old"), str(tmp_path / "missing")], capture_output=True, text=True)
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_bench_matrix_reports_the_sim_against_its_goal() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "ice.cli", "bench", "matrix", "--only", "sim", "--json"],
                       capture_output=True, text=True, cwd=FsPath(__file__).parents[1])
    assert p.returncode == 0, p.stderr
    sim = json.loads(p.stdout)["results"]["sim"]
    assert sim["cells"] == len(load_matrix()) and sim["passed"] == sim["cells"] and sim["goal_seconds"] == 10
