"""The scenario matrix on the sim back-end: specific cells pick the path the NAT reasoning predicts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace as dataclass_replace
from pathlib import Path

import pytest

from ice.cli.run import run_suite
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import compose, expect
from ice.scenario.runner import Runner
from ice.scenario.suite import DEFAULT_SUITE, Suite, pins_path


def load_matrix(presets: list[str] | None = None) -> list[Cell]:
    return Suite.load((), presets=presets).cells


def cell(name: str, nat_a: str, nat_b: str, topo: str = "two_nats", **options: object) -> Cell:
    return Cell.from_table({"name": name, "topology": topo, "nats": {"nat_a": nat_a, "nat_b": nat_b}, **options})


def reasoned(c: Cell) -> PathKind:
    return expect(c, Suite.load((), presets=["none"]).topologies.get(c.topology).spec(c.behaviours(), **c.link())
                  ).path


def run_sim(c: Cell) -> object:
    suite = Suite.load(())
    suite.cells.append(c)
    suite.source.setdefault(c.name, DEFAULT_SUITE)
    return Runner(suite).sim(c)


def test_default_matrix_covers_every_rfc4787_pair_and_the_special_boxes() -> None:
    cells = load_matrix()
    names = {c.name for c in cells}
    assert len(names) == len(cells)  # names are unique: they key expectations, artifacts and --scenario
    groups = {g: [c for c in cells if c.group == g] for g in {c.group for c in cells}}
    assert len(groups["rfc4787"]) == 81 and len(groups["special"]) == 4
    assert "apdm-apdfxapdm-apdf" in names and "eim-eifxeim-eif" in names and "udp-blockedxeim-apdf" in names
    assert {c.behaviours()["nat"].hairpinning for c in groups["same-nat"]} == {True, False}
    assert {c.topology for c in groups["double-nat"]} == {"double_nat"}
    assert {c.loss for c in groups["impaired"]} >= {0.1, 0.3} and any(c.delay_ms == 50 for c in groups["impaired"])
    assert {c.nomination_mode for c in groups["options"]} == {"regular", "aggressive"}
    assert {c.controlling for c in groups["options"]} == {"a", "b", "both"}


def test_a_double_nat_behaves_like_the_two_nats_composed() -> None:
    from ice.lab.nat import preset

    assert compose(preset("eim-apdf"), preset("eim-eif")).name == "eim-apdf"
    assert compose(preset("eim-eif"), preset("apdm-adf")).name == "apdm-adf"
    assert compose(preset("adm-eif"), preset("eim-apdf")).name == "adm-apdf"
    assert compose(preset("eim-apdf"), preset("none")) == preset("eim-apdf")

    def double(outer: str) -> Cell:
        return Cell.from_table({"name": "x", "topology": "double_nat",
                                "nats": {"inner": "eim-apdf", "outer": outer, "nat_b": "eim-apdf"}})

    assert reasoned(double("apdm-apdf")) is PathKind.RELAY  # symmetric CGN in front of a port-restricted peer
    assert reasoned(double("eim-eif")) is PathKind.DIRECT


def test_same_nat_and_options_expectations() -> None:
    same = Cell.from_table({"name": "s", "topology": "same_nat",
                            "nats": {"nat": {"preset": "apdm-apdf", "hairpinning": False}}})
    assert reasoned(same) is PathKind.DIRECT
    assert reasoned(cell("r", "eim-eif", "eim-eif", relay_only=True)) is PathKind.RELAY
    assert reasoned(cell("n", "apdm-apdf", "apdm-apdf", turn=False)) is PathKind.NONE


@pytest.mark.parametrize(("a", "b", "path"), [
    ("eim-eif", "eim-eif", PathKind.DIRECT),
    ("eim-apdf", "eim-apdf", PathKind.DIRECT),
    ("apdm-apdf", "eim-eif", PathKind.DIRECT),
    ("apdm-apdf", "eim-apdf", PathKind.RELAY),
    ("apdm-apdf", "apdm-apdf", PathKind.RELAY),
])
def test_expectation_and_sim_agree(a: str, b: str, path: PathKind) -> None:
    c = cell(f"{a}x{b}", a, b)
    assert reasoned(c) is path
    r = run_sim(c)
    assert r.observed is path, r.reason
    assert r.selected is not None
    assert ("relay" in r.selected) == (path is PathKind.RELAY)


def test_main_writes_reports_and_exit_status(tmp_path: Path) -> None:
    rc = run_suite("sim", tmp_path, presets=["eim-eif", "apdm-apdf"], quiet=True)
    assert rc == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["passed"] == 4 and doc["failed"] == 0
    assert doc["environment"]["icelab"] and doc["environment"]["python"]  # what produced it, for later compares
    cells = {c["scenario"]: c for c in doc["cells"]}
    assert cells["apdm-apdfxapdm-apdf"]["observed"] == "relay"
    assert "apdm-apdf" in (tmp_path / "grid.md").read_text()


def test_unknown_backend_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_suite("nope", tmp_path, quiet=True) == 2
    assert "--backend sim" in capsys.readouterr().err
    assert run_suite("sim", tmp_path, quiet=True, names=["eim-eifxnope"]) == 2
    assert "no cell named eim-eifxnope" in capsys.readouterr().err


def test_a_broken_pinned_expectation_is_a_failed_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _pins(tmp_path, monkeypatch, {"eim-eifxeim-eif": {"path": "relay", "reason": "deliberately wrong"}})
    rc = run_suite("sim", tmp_path, presets=["eim-eif"], quiet=True)
    assert rc == 1
    (cell,) = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert not cell["pass"] and cell["expected"] == "relay" and cell["observed"] == "direct"
    assert "sim selected srflx" in cell["reason"]
    assert 'failures="1"' in (tmp_path / "junit.xml").read_text()
    assert 'class="fail"' in (tmp_path / "grid.html").read_text()


def test_pinned_expectations_match_the_reasoning() -> None:
    """The default suite's pins (ice/suites/default.expected.json) are reviewed data; it must not drift from the
    documented RFC 4787 reasoning (every field: path, reason, selected types, never, must_succeed; known_failure is
    the only hand-written one, cost the only measured one)."""
    pinned = json.loads(pins_path(DEFAULT_SUITE).read_text())
    suite = Suite.load()
    assert set(pinned) == {c.name for c in suite.cells}
    reasoning = suite.reasoning()
    for c in suite.cells:
        doc = dict(pinned[c.name])
        doc.pop("known_failure", None)
        doc.pop("cost", None)
        assert doc == reasoning[c.name].as_json(), c.name


def test_report_compare_names_regressions_fixes_and_path_changes(tmp_path: Path) -> None:
    import subprocess
    import sys

    assert run_suite("sim", tmp_path / "old", presets=["eim-eif", "apdm-apdf"], quiet=True) == 0
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


def _doc(backend: str, *names: str) -> dict[str, object]:
    return {"backend": backend, "cells": [{"scenario": n, "pass": True, "observed": "direct",
                                           "seconds_to_connect": 0.1} for n in names]}


def test_report_compare_warns_when_the_back_ends_differ(tmp_path: Path) -> None:
    import subprocess
    import sys

    from ice.report.compare import compare, render

    c = compare(_doc("sim", "x", "y"), _doc("lab", "x", "y"))
    assert c.backends == ("sim", "lab") and c.backend_warning and "different back-ends" in c.backend_warning
    assert c.as_json()["same_backend"] is False and c.as_json()["warnings"] == [c.backend_warning]
    assert "(sim back-end) -> " in render(c, "old", "new")
    assert compare(_doc("lab", "x"), _doc("lab", "x")).as_json()["warnings"] == []
    for name, backend in (("old", "sim"), ("new", "lab")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_doc(backend, "x")))
    cmd = [sys.executable, "-m", "ice.cli", "report", "compare", str(tmp_path / "old"), str(tmp_path / "new")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0 and "warning: the runs used different back-ends (old: sim, new: lab)" in p.stderr
    p = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    assert json.loads(p.stdout)["backends"] == {"old": "sim", "new": "lab"} and "different back-ends" in p.stderr


def test_report_compare_with_no_common_cell_says_so(tmp_path: Path) -> None:
    import subprocess
    import sys

    for name, cells in (("old", ("x", "y")), ("new", ("z",))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_doc("lab", *cells)))
    cmd = [sys.executable, "-m", "ice.cli", "report", "compare", str(tmp_path / "old"), str(tmp_path / "new")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0 and "Traceback" not in p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("No cell is in both runs") and "(2 cells" not in lines[1]
    assert f"{tmp_path / 'old'} has 2, {tmp_path / 'new'} has 1" in lines[1]
    p = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    out = json.loads(p.stdout)
    assert out["common_cells"] == 0 and out["warnings"] and "no cell is in both runs" in p.stderr


def test_bench_matrix_reports_the_sim_against_its_goal() -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "ice.cli", "bench", "matrix", "--only", "sim", "--json"],
                       capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert p.returncode == 0, p.stderr
    sim = json.loads(p.stdout)["results"]["sim"]
    assert sim["cells"] == len(load_matrix()) and sim["passed"] == sim["cells"] and sim["goal_seconds"] == 5
    assert sim["within_goal"] == (sim["wall_seconds"] <= sim["goal_seconds"])  # reported, never asserted on


def _pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, doc: object) -> Path:
    path = tmp_path / "pins.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(path))
    return path


def test_known_failures_are_data_and_unexpected_passes_are_reported(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A pinned known_failure keeps a mismatching cell from failing the run; a known failure that passes is
    reported as unexpectedly passing; both survive --update-expectations."""
    relay = Suite.load(presets=["apdm-apdf"]).reasoning()["apdm-apdfxapdm-apdf"].as_json()
    path = _pins(tmp_path, monkeypatch, {
        "eim-eifxeim-eif": {"path": "relay", "reason": "r", "known_failure": "pretend the stack cannot yet"},
        "apdm-apdfxapdm-apdf": {**relay, "known_failure": "pretend it was flaky"},
    })
    assert run_suite("sim", tmp_path / "out", presets=["eim-eif", "apdm-apdf"], quiet=True) == 0
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    cells = {c["scenario"]: c for c in doc["cells"]}
    assert cells["eim-eifxeim-eif"]["status"] == "known-failure" and cells["eim-eifxeim-eif"]["pass"] is True
    assert cells["eim-eifxeim-eif"]["known_failure"] == "pretend the stack cannot yet"
    assert cells["apdm-apdfxapdm-apdf"]["status"] == "unexpected-pass"
    assert doc["unexpectedly_passing"] == ["apdm-apdfxapdm-apdf"] and doc["statuses"]["known-failure"] == 1
    assert "Known failures" in (tmp_path / "out" / "grid.md").read_text()
    assert run_suite("sim", tmp_path / "out", update=True, quiet=True) == 0
    kept = json.loads(path.read_text())
    assert kept["eim-eifxeim-eif"]["known_failure"] == "pretend the stack cannot yet"
    assert kept["eim-eifxeim-eif"]["path"] == "direct"  # the reasoning is re-pinned, the known failure kept
    assert len(kept) == len(load_matrix())


@pytest.mark.parametrize(("content", "says"), [
    ("{not json", "is not valid JSON"),
    ({"eim-eifxeim-eif": {"path": "sideways"}}, "'path' is 'sideways'"),
    ({"eim-eifxeim-eif": {"path": "direct", "selected": "srflx-srflx"}}, "'selected' must be a list"),
])
def test_a_broken_pin_file_is_one_clear_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], content: object,
                                                 says: str) -> None:
    _pins(tmp_path, monkeypatch, content)
    assert run_suite("sim", tmp_path / "out", presets=["eim-eif"], quiet=True) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_a_missing_override_file_is_an_error_not_a_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(tmp_path / "nope.json"))
    assert run_suite("sim", tmp_path / "out", presets=["eim-eif"], quiet=True) == 2
    assert "does not exist" in capsys.readouterr().err


def test_lab_and_sim_disagreeing_fails_the_cell_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    from ice.scenario.result import CellResult, Status

    suite = Suite.load(presets=["eim-eif"])
    runner = Runner(suite)
    (c,) = suite.cells
    real = runner.sim
    monkeypatch.setattr(runner, "sim", lambda c: dataclass_replace(real(c), observed=PathKind.RELAY))
    lab = CellResult(c, "lab", PathKind.DIRECT, PathKind.DIRECT, "srflx a -> srflx b", 0.05, ["srflx-srflx"],
                     selected_types="srflx-srflx").expecting(suite.expectation(c)[0])
    assert lab.status is Status.PASS
    r = runner.with_sim_check(lab)
    assert r.status is Status.FAIL and r.reason == "the lab and the sim disagree: lab direct, sim relay"


def test_presets_with_a_public_peer_and_scenario_filters_within_them(tmp_path: Path) -> None:
    assert run_suite("sim", tmp_path, presets=["eim-eif", "none"], quiet=True, names=["eim-eifxnone"]) == 0
    (doc,) = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert doc["scenario"] == "eim-eifxnone" and doc["status"] == "pass" and doc["pinned"] is False
    assert doc["repro"] == "./icelab run --presets eim-eif none --backend sim --scenario eim-eifxnone --out " \
                           f"{tmp_path}/repro/eim-eifxnone"  # beside the run's own reports


def test_a_dying_or_garbling_or_silent_worker_fails_only_its_cell(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The -j runner survives its workers: each misbehaving one fails the cell it held, says why, and is replaced;
    well-behaved answers keep flowing; every cell gets exactly one result and no worker is left running."""
    import ice.scenario.pool as pool
    from ice.scenario.result import Status
    from ice.scenario.timers import MatrixTimers

    fake = tmp_path / "worker.py"
    fake.write_text(textwrap.dedent("""
        import json, sys, time
        out = sys.stdout.buffer
        def answer(msg):
            exp = msg["expected"]
            return json.dumps({"scenario": msg["cell"]["name"], "backend": "lab", "observed": exp["path"],
                               "selected": "x", "selected_types": (exp["selected"] or [None])[0],
                               "succeeded_pairs": exp["must_succeed"]}).encode() + b"\\n"
        for line in sys.stdin:
            msg = json.loads(line)
            name = msg["cell"]["name"]
            if name == "eim-eifxapdm-apdf":
                sys.exit(3)                                   # dies
            elif name == "apdm-apdfxeim-eif":
                out.write(b"\\xff\\xfe not utf-8\\n")    # garbage bytes
            elif name == "apdm-apdfxapdm-apdf":
                out.write(b"42\\n")                          # JSON, but not a result
            elif name == "adm-eifxeim-eif":
                out.write(b'{"scenario": "adm-eifx')           # half a line, then silence
                out.flush(); time.sleep(60)
            elif name == "adm-eifxadm-eif":
                out.write(answer(msg) * 2)                    # the right answer, twice
            else:
                out.write(answer(msg))
            out.flush()
    """))
    monkeypatch.setattr(pool, "WORKER_COMMAND", [sys.executable, str(fake)])
    suite = Suite.load(presets=["eim-eif", "apdm-apdf", "adm-eif"])
    cells = suite.cells
    results = pool.run_lab_parallel(suite, 2, tmp_path / "out" / "artifacts", False, lambda r: r, None,
                                    MatrixTimers(cell_deadline=3.0, worker_stop=1.0))
    assert sorted(r.cell.name for r in results) == sorted(c.name for c in cells)  # one result per cell
    reasons = {r.cell.name: r.reason for r in results if r.status is Status.FAIL}
    assert "died (exit status 3)" in reasons.pop("eim-eifxapdm-apdf")
    assert "not JSON" in reasons.pop("apdm-apdfxeim-eif")
    assert "not a result for the cell" in reasons.pop("apdm-apdfxapdm-apdf")
    assert "no answer from its lab worker within 3 s" in reasons.pop("adm-eifxeim-eif")
    # the duplicate line of adm-eifxadm-eif is taken for the worker's next cell, which it is not: that cell fails
    duplicated = [n for n, why in reasons.items() if "not a result for the cell" in why]
    assert len(duplicated) == len(reasons) <= 1
    assert sum(r.status is Status.PASS for r in results) >= len(cells) - 5
    assert subprocess.run(["pgrep", "-f", str(fake)], capture_output=True, text=True).stdout == ""
    assert not (tmp_path / "out" / ".captures").exists()
