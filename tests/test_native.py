"""The compiled core (ice/native.py): the guard that keeps a stale build from loading, and the build itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ice.native import COMPILED, MANIFEST, ROOT, SourceGuard, build_is_fresh, digests, source_of


def _group(tmp_path: Path) -> tuple[list[str], Path]:
    """Two modules of a fake group under ``tmp_path``, and a manifest that records them as built."""
    modules = ["fakepkg.one", "fakepkg.two"]
    for m in modules:
        path = source_of(m, tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"NAME = {m!r}\n")
    manifest = tmp_path / "manifest.json"
    (tmp_path / "fake__mypyc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")  # the group's shared library
    manifest.write_text(json.dumps({"sources": digests(modules, tmp_path),
                                    "runtime": "fake__mypyc.cpython-311-x86_64-linux-gnu.so"}))
    return modules, manifest


@pytest.fixture
def build_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ICELAB_NATIVE", raising=False)
    monkeypatch.delenv("ICELAB_PURE_PYTHON", raising=False)


@pytest.mark.usefixtures("build_env")
def test_a_fresh_build_is_left_to_the_path_finder(tmp_path: Path) -> None:
    modules, manifest = _group(tmp_path)
    guard = SourceGuard(modules, tmp_path, manifest)
    assert guard.use_build
    assert guard.find_spec("fakepkg.one") is None  # the path finder then prefers the extension module
    runtime = guard.find_spec("fake__mypyc")  # the shared library, found from any working directory
    assert runtime is not None and runtime.origin == str(tmp_path / "fake__mypyc.cpython-311-x86_64-linux-gnu.so")
    assert guard.find_spec("other__mypyc") is None


@pytest.mark.usefixtures("build_env")
def test_an_edited_source_sends_the_whole_group_to_its_sources(tmp_path: Path) -> None:
    """One changed module makes every module of the group load from source: compiled modules of one group call each
    other directly, so a fresh module must not run beside a stale one."""
    modules, manifest = _group(tmp_path)
    source_of("fakepkg.two", tmp_path).write_text("NAME = 'edited'\n")
    guard = SourceGuard(modules, tmp_path, manifest)
    for m in modules:
        spec = guard.find_spec(m)
        assert spec is not None and spec.origin == str(source_of(m, tmp_path))


@pytest.mark.usefixtures("build_env")
@pytest.mark.parametrize("case", ["no manifest", "unreadable manifest", "no shared library", "ICELAB_NATIVE=0",
                                  "ICELAB_PURE_PYTHON=1"])
def test_sources_without_a_usable_build_or_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      case: str) -> None:
    modules, manifest = _group(tmp_path)
    if case == "no manifest":
        manifest.unlink()
    elif case == "unreadable manifest":
        manifest.write_text("{not json")
    elif case == "no shared library":  # the package copied without the group's runtime beside it
        (tmp_path / "fake__mypyc.cpython-311-x86_64-linux-gnu.so").unlink()
    else:
        name, value = case.split("=")
        monkeypatch.setenv(name, value)
    spec = SourceGuard(modules, tmp_path, manifest).find_spec("fakepkg.one")
    assert spec is not None and spec.origin == str(source_of("fakepkg.one", tmp_path))


@pytest.mark.usefixtures("build_env")
def test_modules_outside_the_group_are_not_its_business(tmp_path: Path) -> None:
    modules, manifest = _group(tmp_path)
    manifest.unlink()
    assert SourceGuard(modules, tmp_path, manifest).find_spec("fakepkg.three") is None


def test_the_guard_comes_before_the_path_finders() -> None:
    assert isinstance(sys.meta_path[0], SourceGuard)
    assert all(source_of(m).is_file() for m in COMPILED)


def _loads(env: dict[str, str]) -> str:
    """Where a fresh process imports the agent from."""
    return subprocess.run([sys.executable, "-c", "import ice.agent.agent as a; print(a.__file__)"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_the_provisioned_build_runs_the_agent_protocol() -> None:
    """scripts/provision.sh builds the compiled core (scripts/build-native): an agent from it passes the protocol's
    conformance check on every verb, and ICELAB_NATIVE=0 still gets the sources."""
    env = {k: v for k, v in os.environ.items() if k not in ("ICELAB_NATIVE", "ICELAB_PURE_PYTHON")}
    if not MANIFEST.exists():
        pytest.fail("no compiled build: scripts/provision.sh runs scripts/build-native (see build/native.log)")
    if not build_is_fresh():
        pytest.skip("the compiled build predates an edit of its sources: run scripts/build-native")
    assert _loads(env).endswith(".so")
    assert _loads({**env, "ICELAB_NATIVE": "0"}).endswith(".py")
    check = subprocess.run([sys.executable, "-m", "ice.cli", "agent", "check", "icelab"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "PASS: 14 of 14" in check.stdout
