"""``icelab run --shard I/N`` and ``icelab report merge``: a suite split by measured cost, and the shards' reports
merged into one run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ice.cli.run import run_suite
from ice.scenario.cell import Cell
from ice.scenario.shard import costs_from, parse_shard, split
from ice.scenario.suite import Suite

ROOT = Path(__file__).resolve().parents[1]


def icelab(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ice.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize("text", ["0/3", "4/3", "1", "a/b", "1/0", "-1/2", "2/3/4"])
def test_a_bad_shard_is_a_one_sentence_usage_error(text: str) -> None:
    done = icelab("run", "--backend", "sim", f"--shard={text}", "--out", "/nonexistent/never")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--shard takes I/N" in done.stderr and repr(text) in done.stderr


def test_parse_shard() -> None:
    assert parse_shard("1/1") == (1, 1) and parse_shard("3/3") == (3, 3) and parse_shard(" 2/5 ") == (2, 5)


def test_the_split_is_balanced_deterministic_and_covers_every_cell_once() -> None:
    suite = Suite.load()
    for n in (1, 2, 3, 4, 7):
        parts = [suite.shard(i, n).cells for i in range(1, n + 1)]
        names = [c.name for part in parts for c in part]
        assert sorted(names) == sorted(c.name for c in suite.cells) and len(set(names)) == len(names)
        order = {c.name: i for i, c in enumerate(suite.cells)}
        assert all([order[c.name] for c in part] == sorted(order[c.name] for c in part) for part in parts)
        loads = [sum(suite.cost(c) for c in part) for part in parts]
        assert max(loads) - min(loads) <= max(suite.cost(c) for c in suite.cells)  # LPT: within one cell
        assert [[c.name for c in p] for p in parts] == \
               [[c.name for c in Suite.load().shard(i, n).cells] for i in range(1, n + 1)]


def test_longest_first_with_ties_by_name() -> None:
    cells = [Cell.from_table({"name": n, "topology": "two_nats", "nats": {"nat_a": "eim-eif", "nat_b": "eim-eif"}})
             for n in "edcba"]
    cost = {"a": 5.0, "b": 3.0, "c": 3.0, "d": 2.0, "e": 2.0}
    parts = split(cells, lambda c: cost[c.name], 2)
    assert [[c.name for c in p] for p in parts] == [["d", "a"], ["e", "c", "b"]]  # a, b, c, d, e in turn: 7 | 8
    assert [[c.name for c in p] for p in split(cells, lambda c: 1.0, 2)] == [["e", "c", "a"], ["d", "b"]]


def test_measured_costs_go_into_the_pins_and_survive_repinning(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pins = tmp_path / "pins.json"
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(pins))
    presets = ["eim-eif", "apdm-apdf"]
    assert run_suite("sim", tmp_path / "out", presets=presets, update=True, quiet=True) == 0
    assert run_suite("sim", tmp_path / "out", presets=presets, quiet=True) == 0
    measured = costs_from([json.loads((tmp_path / "out" / "results.json").read_text())])
    assert set(measured) == {"eim-eifxeim-eif", "eim-eifxapdm-apdf", "apdm-apdfxeim-eif", "apdm-apdfxapdm-apdf"}
    assert run_suite("sim", tmp_path / "out2", presets=presets, update=True, quiet=True,
                     costs_from=[tmp_path / "out"]) == 0
    doc = json.loads(pins.read_text())
    assert {n: doc[n]["cost"] for n in measured} == measured
    suite = Suite.load(presets=presets)
    assert {c.name: suite.cost(c) for c in suite.cells} == measured
    assert run_suite("sim", tmp_path / "out", presets=presets, update=True, quiet=True) == 0  # keeps the costs
    assert {n: json.loads(pins.read_text())[n]["cost"] for n in measured} == measured


def test_three_shards_merged_are_the_single_run(tmp_path: Path) -> None:
    """The default suite in the sim: one run, and three shards merged by `icelab report merge`, hold the same
    cells with the same statuses, each cell once, in the suite's order; every report is written."""
    assert icelab("run", "--backend", "sim", "-q", "--out", str(tmp_path / "one")).returncode == 0
    for i in (1, 2, 3):
        done = icelab("run", "--backend", "sim", "-q", "--shard", f"{i}/3", "--out", str(tmp_path / f"shard-{i}"))
        assert done.returncode == 0, done.stdout + done.stderr
        part = json.loads((tmp_path / f"shard-{i}" / "results.json").read_text())
        assert part["shard"] == f"{i}/3" and part["total_cells"] == 104 and len(part["cells"]) < 104
    done = icelab("report", "merge", *(str(tmp_path / f"shard-{i}") for i in (1, 2, 3)), "--out",
                  str(tmp_path / "all"))
    assert done.returncode == 0, done.stdout + done.stderr
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    names = [c["scenario"] for c in merged["cells"]]
    assert len(names) == len(set(names)) == 104
    assert names == [c["scenario"] for c in one["cells"]]
    assert [c["status"] for c in merged["cells"]] == [c["status"] for c in one["cells"]]

    def same(c: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in c.items() if k != "repro"}  # a repro line names its own run's --out

    assert [same(c) for c in merged["cells"]] == [same(c) for c in one["cells"]]
    for key in ("backend", "passed", "failed", "statuses", "unexpectedly_passing", "sources"):
        assert merged[key] == one[key], key
    for name in ("grid.txt", "grid.md"):
        assert (tmp_path / "all" / name).read_text() == (tmp_path / "one" / name).read_text()
    assert 'tests="104"' in (tmp_path / "all" / "junit.xml").read_text()
    assert "104/104 cells as expected" in (tmp_path / "all" / "grid.html").read_text()


def _shard_doc(path: Path, backend: str, cells: list[str], shard: str = "1/2") -> Path:
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"backend": backend, "seconds": 1.0, "shard": shard,
                                                   "cells": [{"scenario": n} for n in cells]}))
    return path


@pytest.mark.parametrize(("make", "says"), [
    (lambda t: [_shard_doc(t / "a", "sim", ["x"]), _shard_doc(t / "b", "sim", ["x"], "2/2")],
     "cell x is in both"),
    (lambda t: [_shard_doc(t / "a", "sim", ["x"]), _shard_doc(t / "b", "lab", ["y"], "2/2")],
     "different back-ends"),
    (lambda t: [_shard_doc(t / "a", "sim", ["x"]), t / "missing"], "does not exist"),
    (lambda t: [_shard_doc(t / "a", "sim", ["x"]), _shard_doc(t / "b", "sim", ["y"], "2/3")],
     "split the suite differently"),
])
def test_merge_refuses_what_is_not_one_split_in_one_sentence(tmp_path: Path, make: object, says: str) -> None:
    dirs = make(tmp_path)  # type: ignore[operator]
    done = icelab("report", "merge", *map(str, dirs), "--out", str(tmp_path / "all"))
    assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "all").exists()


def test_merge_of_some_shards_only_says_which_cells_are_missing(tmp_path: Path) -> None:
    assert run_suite("sim", tmp_path / "s1", quiet=True, shard=(1, 2)) == 0
    done = icelab("report", "merge", str(tmp_path / "s1"), "--out", str(tmp_path / "all"))
    assert done.returncode == 1 and "cells of the suite are in no shard given" in done.stderr
