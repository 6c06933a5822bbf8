"""The modules that may run compiled, and the guard that never lets a stale compiled build load.

``scripts/build-native`` compiles the modules of :data:`COMPILED` with mypyc (they pass ``mypy --strict``) into
extension modules beside their sources -- one group, whose modules call each other directly in C -- and writes
:data:`MANIFEST`: each source's SHA-256 at build time. The Python sources stay the reference; a build is optional
(docs/agents.md, "Compiling the core", has what it gains and what it does not cover yet).

An extension module shadows its ``.py`` on import, so a build must never outlive an edit of its sources.
:func:`install` (run by ``ice/__init__.py`` before anything else of the package is imported) puts
:class:`SourceGuard` ahead of the path finders: when any module of the group has changed since the build, when the
manifest is missing or unreadable, when ``ICELAB_NATIVE=0`` is set, or when ``ICELAB_PURE_PYTHON`` is set (which
also turns off the C accelerator, docs/stun.md), every module of the group is loaded from its ``.py``. The decision
is taken once per process, for the whole group. Without a build the guard changes nothing. ``icelab test`` runs the
sources (``ICELAB_NATIVE=0``): some tests replace methods, which a compiled class does not allow.

Importing this module installs the guard (``ice/__init__.py`` imports it before anything else of the package).

Adding a module to the build is one entry in :data:`COMPILED` (it must compile with mypyc; docs/agents.md lists the
modules that do not yet, and why).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
"""The directory that holds the ``ice`` package."""

COMPILED: tuple[str, ...] = (
    "ice.agent.agent",
    "ice.agent.candidate",
    "ice.agent.states",
    "ice.agent.events",
    "ice.agent.config",
    "ice.stun.transaction",
    "ice.stun.integrity",
    "ice.aio.driver",
    "ice.aio.peer",
)
"""The modules ``scripts/build-native`` compiles, as one group."""

MANIFEST = ROOT / "ice" / "native-build.json"
"""Written by ``scripts/build-native`` after a successful build: ``{"sources": {module: sha256}, "runtime": file}``,
``file`` being the group's shared library beside the package (``<hash>__mypyc.cpython-*.so``, a top-level module
that the guard itself finds: it is not on ``sys.path`` from any other directory)."""


def source_of(module: str, root: Path = ROOT) -> Path:
    """The ``.py`` file of ``module`` under ``root``."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def digests(modules: Sequence[str] = COMPILED, root: Path = ROOT) -> dict[str, str]:
    """Each module's source SHA-256 (what the manifest records)."""
    return {m: hashlib.sha256(source_of(m, root).read_bytes()).hexdigest() for m in modules}


def fresh_runtime(manifest: Path = MANIFEST, modules: Sequence[str] = COMPILED, root: Path = ROOT) -> Path | None:
    """The group's shared library when the manifest records exactly the current sources of every module of the group
    and that library is there (a copy of the package without it, e.g. into another site-packages, runs the sources);
    else None."""
    try:
        built = json.loads(manifest.read_text())
        runtime = root / str(built["runtime"])
        if runtime.parent != root or not runtime.name.endswith(".so") or not runtime.is_file():
            return None
        return runtime if built["sources"] == digests(modules, root) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_is_fresh(manifest: Path = MANIFEST, modules: Sequence[str] = COMPILED, root: Path = ROOT) -> bool:
    """Whether a compiled build of the current sources is there (:func:`fresh_runtime`)."""
    return fresh_runtime(manifest, modules, root) is not None


class SourceGuard(importlib.abc.MetaPathFinder):
    """Loads the modules of the group from their sources unless the compiled build is fresh (see the module)."""

    def __init__(self, modules: Sequence[str] = COMPILED, root: Path = ROOT, manifest: Path = MANIFEST) -> None:
        self.modules = frozenset(modules)
        self.root = root
        self.manifest = manifest
        self._decided = False
        self._runtime: Path | None = None

    @property
    def use_build(self) -> bool:
        """Whether the compiled build loads (decided on first use, for the whole group)."""
        if not self._decided:
            self._decided = True
            if not os.environ.get("ICELAB_PURE_PYTHON") and os.environ.get("ICELAB_NATIVE") != "0":
                self._runtime = fresh_runtime(self.manifest, sorted(self.modules), self.root)
        return self._runtime is not None

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.modules:
            if self.use_build:
                return None  # the path finder's answer: the extension module beside the source
            return importlib.util.spec_from_file_location(fullname, source_of(fullname, self.root))
        if fullname.endswith("__mypyc") and self.use_build and self._runtime is not None \
                and self._runtime.name.split(".")[0] == fullname:
            return importlib.util.spec_from_file_location(fullname, self._runtime)  # the group's shared library
        return None


def build_in_use() -> str:
    """What the group runs from in this process and the ones it starts with its environment: ``"compiled (mypyc)"``
    or ``"source"``, with why not compiled (for benchmarks' records)."""
    guard = next((f for f in sys.meta_path if isinstance(f, SourceGuard)), None)
    if guard is not None and guard.use_build:
        return "compiled (mypyc)"
    if os.environ.get("ICELAB_PURE_PYTHON") or os.environ.get("ICELAB_NATIVE") == "0":
        return "source (ICELAB_NATIVE=0 or ICELAB_PURE_PYTHON set)"
    return "source (no fresh build: scripts/build-native)"


def install() -> None:
    """Put the guard first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, SourceGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceGuard())


install()
