"""The scenario matrix on the sim back-end: specific cells pick the path the NAT reasoning predicts."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

import pytest

from ice.scenario.model import Path, Scenario, expect
from ice.scenario.run import load_matrix, main, run_sim


def test_default_matrix_covers_every_rfc4787_pair_and_the_special_boxes() -> None:
    names = {c.name for c in load_matrix()}
    assert len(names) == 81 + 4
    assert "apdm-apdfxapdm-apdf" in names and "eim-eifxeim-eif" in names
    assert "udp-blockedxeim-apdf" in names


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


def test_a_broken_pinned_expectation_is_a_failed_cell(tmp_path: FsPath, monkeypatch: pytest.MonkeyPatch) -> None:
    import ice.scenario.run as run

    monkeypatch.setattr(run, "_pinned", lambda: {"eim-eifxeim-eif": {"path": "relay", "reason": "deliberately wrong"}})
    rc = main("sim", ["eim-eif"], tmp_path, update=False, quiet=True)
    assert rc == 1
    (cell,) = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert not cell["pass"] and cell["expected"] == "relay" and cell["observed"] == "direct"
    assert "the simulation selected host" in cell["reason"]
    assert 'failures="1"' in (tmp_path / "junit.xml").read_text()
    assert 'class="fail"' in (tmp_path / "grid.html").read_text()


def test_pinned_expectations_match_the_reasoning() -> None:
    """scenarios/expected.json is reviewed data; it must not drift from the documented RFC 4787 reasoning."""
    pinned = json.loads((FsPath(__file__).parents[1] / "scenarios" / "expected.json").read_text())
    cells = load_matrix()
    assert set(pinned) == {c.name for c in cells}
    assert {c.name: expect(c).path.value for c in cells} == {k: v["path"] for k, v in pinned.items()}
