"""The compiled core (ice/native.py): the guard that keeps a stale build from loading, and the build itself."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ice.native import COMPILED, MANIFEST, SourceGuard, build_is_fresh, fingerprint, source_of

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
RUNTIME = f"fake__mypyc{SUFFIX}"


def _build(tmp_path: Path, group: tuple[str, ...] = ("ice.one", "ice.two"), extra: tuple[str, ...] = ()
           ) -> tuple[list[str], Path]:
    """A fake package under ``tmp_path``: ``group`` built (a stand-in extension beside each source, the runtime
    library, a manifest recording the sources), and ``extra`` modules with an extension but outside the group."""
    for m in (*group, *extra):
        path = source_of(m, tmp_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"NAME = {m!r}\n")
        path.with_suffix(SUFFIX).write_bytes(b"")
    (tmp_path / RUNTIME).write_bytes(b"")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"runtime": RUNTIME, "sources": fingerprint(tmp_path)}))
    return list(group), manifest


@pytest.fixture
def build_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that may run a build (this is a pytest process: without ICELAB_NATIVE=1 it would not)."""
    monkeypatch.setenv("ICELAB_NATIVE", "1")
    monkeypatch.delenv("ICELAB_PURE_PYTHON", raising=False)


def _is_source(spec: importlib.machinery.ModuleSpec | None, module: str, root: Path) -> bool:
    return spec is not None and spec.origin == str(source_of(module, root))


@pytest.mark.usefixtures("build_env")
def test_a_fresh_build_is_left_to_the_path_finder(tmp_path: Path) -> None:
    group, manifest = _build(tmp_path)
    guard = SourceGuard(group, tmp_path, manifest)
    assert guard.use_build
    assert guard.find_spec("ice.one") is None  # the path finder then prefers the extension module
    runtime = guard.find_spec("fake__mypyc")  # the runtime library, from any working directory
    assert runtime is not None and runtime.origin == str(tmp_path / RUNTIME)
    assert guard.find_spec("other__mypyc") is None


@pytest.mark.usefixtures("build_env")
def test_any_edit_of_the_package_sends_the_whole_group_to_its_sources(tmp_path: Path) -> None:
    """mypyc compiles against the types and constants of what the group imports: an edit of any module of the
    package makes every module of the group load from source (the group's modules call each other directly, so a
    fresh one must not run beside a stale one either)."""
    group, manifest = _build(tmp_path)
    other = tmp_path / "ice" / "elsewhere.py"
    other.write_text("X = 2\n")
    guard = SourceGuard(group, tmp_path, manifest)
    assert not guard.use_build
    assert all(_is_source(guard.find_spec(m), m, tmp_path) for m in group)
    assert guard.find_spec("fake__mypyc") is None


@pytest.mark.usefixtures("build_env")
@pytest.mark.parametrize("case", ["no manifest", "unreadable manifest", "no runtime library", "a module not built",
                                  "ICELAB_NATIVE=0", "ICELAB_PURE_PYTHON=1", "pytest process"])
def test_sources_without_a_usable_build_or_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      case: str) -> None:
    group, manifest = _build(tmp_path)
    if case == "no manifest":
        manifest.unlink()
    elif case == "unreadable manifest":
        manifest.write_text("{not json")
    elif case == "no runtime library":  # e.g. the package copied into another site-packages without it
        (tmp_path / RUNTIME).unlink()
    elif case == "a module not built":  # e.g. built by another Python version
        source_of("ice.two", tmp_path).with_suffix(SUFFIX).unlink()
    elif case == "pytest process":
        monkeypatch.delenv("ICELAB_NATIVE")
    else:
        name, value = case.split("=")
        monkeypatch.setenv(name, value)
    spec = SourceGuard(group, tmp_path, manifest).find_spec("ice.one")
    assert _is_source(spec, "ice.one", tmp_path)


@pytest.mark.usefixtures("build_env")
def test_a_leftover_extension_outside_the_group_loads_its_source(tmp_path: Path) -> None:
    """An extension module from an older build whose module has left the group never loads; modules without one
    are not the guard's business."""
    group, manifest = _build(tmp_path, extra=("ice.retired",))
    guard = SourceGuard(group, tmp_path, manifest)
    assert guard.use_build
    assert _is_source(guard.find_spec("ice.retired"), "ice.retired", tmp_path)
    assert guard.find_spec("ice.plain") is None and guard.find_spec("json") is None


def test_the_guard_comes_before_the_path_finder() -> None:
    guard = next(i for i, f in enumerate(sys.meta_path) if isinstance(f, SourceGuard))
    assert guard < sys.meta_path.index(importlib.machinery.PathFinder)  # the class itself is the path finder
    assert all(source_of(m).is_file() for m in COMPILED)


def _loaded_from(env: dict[str, str], cwd: Path, module: str = "ice.agent.agent") -> str:
    """Where a fresh process started in ``cwd`` imports ``module`` from."""
    code = f"import {module} as m; print(m.__file__)"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_provisioned_build_runs_the_agent_protocol(tmp_path: Path) -> None:
    """scripts/provision.sh builds the compiled core (scripts/build-native): every module of the group loads from
    it in a process started anywhere, ICELAB_NATIVE=0 gets the sources, and an agent from the build passes the
    protocol's conformance check on every verb."""
    env = {k: v for k, v in os.environ.items() if k not in ("ICELAB_NATIVE", "ICELAB_PURE_PYTHON")}
    if not MANIFEST.exists():
        pytest.fail("no compiled build: scripts/provision.sh runs scripts/build-native (see build/native.log)")
    if not build_is_fresh():
        pytest.skip("a source of the package changed since the compiled build: run scripts/build-native")
    for module in COMPILED:
        assert _loaded_from(env, tmp_path, module).endswith(SUFFIX), module
    assert _loaded_from({**env, "ICELAB_NATIVE": "0"}, tmp_path).endswith(".py")
    check = subprocess.run([sys.executable, "-m", "ice.cli", "agent", "check", "icelab"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert "PASS:" in check.stdout
