"""The modules that may run compiled, and the guard that never lets a stale compiled build load.

``scripts/build-native`` compiles the modules of :data:`COMPILED` with mypyc (they pass ``mypy --strict``) into
extension modules beside their sources -- one group, whose modules call each other directly in C and share one
runtime library beside the package -- and writes :data:`MANIFEST`. The Python sources stay the reference; a build
is optional (docs/agents.md, "Compiling the core", has what it gains and what it does not cover yet).

An extension module shadows its ``.py`` on import, so a build must never outlive an edit. :func:`install` (run when
this module is imported, which ``ice/__init__.py`` does before anything else of the package) puts
:class:`SourceGuard` ahead of the path finders. It loads the compiled group only when the build is fresh: the
manifest names the runtime library and records the size and modification time of every ``.py`` of the package as
they were when the build started (mypyc compiles against the types and constants of the modules the group imports,
so any edit counts), and every module of the group has its extension for this interpreter. Otherwise -- and with
``ICELAB_NATIVE=0``, with ``ICELAB_PURE_PYTHON`` set (which also turns off the C accelerator, docs/stun.md), or in a
pytest process unless ``ICELAB_NATIVE=1`` (some tests replace methods, which a compiled class does not allow) --
every mypyc extension module found in the package, in the group or left over from an older build, loads from its
``.py``. The decision is taken once per process, for the whole group; without any such extension module the guard
changes nothing.

Adding a module to the build is one entry in :data:`COMPILED` (it must compile with mypyc; docs/agents.md lists the
modules that do not yet, and why).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).absolute().parent.parent
"""The directory that holds the ``ice`` package."""

COMPILED: tuple[str, ...] = (
    "ice.agent.agent",
    "ice.agent.candidate",
    "ice.agent.states",
    "ice.agent.events",
    "ice.agent.config",
    "ice.stun.transaction",
    "ice.stun.message",
    "ice.stun.integrity",
    "ice.aio.driver",
    "ice.aio.peer",
)
"""The modules ``scripts/build-native`` compiles, as one group."""

MANIFEST = ROOT / "ice" / "native-build.json"
"""Written by ``scripts/build-native`` after a successful build: ``{"runtime": file, "sources": {path: [size,
mtime_ns]}}``, ``file`` being the group's runtime library beside the package (``<hash>__mypyc.cpython-*.so``, a
top-level module the guard serves itself: it is on ``sys.path`` only from the repository's root)."""

NOT_MYPYC = frozenset({"ice.stun._speedups"})
"""Extension modules of the package that are not mypyc's (the C accelerator, docs/stun.md)."""


def source_of(module: str, root: Path = ROOT) -> Path:
    """The ``.py`` file of ``module`` under ``root``."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def fingerprint(root: Path = ROOT) -> dict[str, list[int]]:
    """Size and modification time of every ``.py`` of the package under ``root`` (what the manifest records)."""
    out: dict[str, list[int]] = {}
    for path in sorted((root / "ice").rglob("*.py")):
        st = path.stat()
        out[str(path.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    return out


def extension_modules(root: Path = ROOT) -> set[str]:
    """The package's extension modules that have a ``.py`` beside them, except :data:`NOT_MYPYC`: what a build
    (this one or an older one) left."""
    found = set()
    for path in (root / "ice").rglob("*.so"):
        stem = path.name.split(".")[0]
        if path.with_name(stem + ".py").is_file():
            module = ".".join((*path.relative_to(root).parent.parts, stem))
            if module not in NOT_MYPYC:
                found.add(module)
    return found


def fresh_runtime(manifest: Path = MANIFEST, modules: Sequence[str] = COMPILED, root: Path = ROOT) -> Path | None:
    """The group's runtime library when the build is fresh (see the module); else None."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    try:
        built = json.loads(manifest.read_text())
        runtime = root / str(built["runtime"])
        if runtime.parent != root or not runtime.name.endswith(suffix) or not runtime.is_file():
            return None
        if not all(source_of(m, root).with_suffix(suffix).is_file() for m in modules):
            return None
        return runtime if built["sources"] == fingerprint(root) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_is_fresh(manifest: Path = MANIFEST, modules: Sequence[str] = COMPILED, root: Path = ROOT) -> bool:
    """Whether a compiled build of the current sources is there (:func:`fresh_runtime`)."""
    return fresh_runtime(manifest, modules, root) is not None


def wanted() -> bool:
    """Whether this process may run a build at all: not with ``ICELAB_NATIVE=0`` or ``ICELAB_PURE_PYTHON``, and in a
    pytest process only with ``ICELAB_NATIVE=1``."""
    setting = os.environ.get("ICELAB_NATIVE")
    if setting == "0" or os.environ.get("ICELAB_PURE_PYTHON"):
        return False
    return setting == "1" or "_pytest" not in sys.modules


class SourceGuard(importlib.abc.MetaPathFinder):
    """Loads mypyc extension modules of the package from their sources unless the group's build is fresh and wanted
    (see the module)."""

    def __init__(self, modules: Sequence[str] = COMPILED, root: Path = ROOT, manifest: Path = MANIFEST) -> None:
        self.modules = frozenset(modules)
        self.root = root
        self.manifest = manifest
        self._decided = False
        self._runtime: Path | None = None
        self._extensions: set[str] | None = None

    @property
    def use_build(self) -> bool:
        """Whether the compiled group loads (decided on first use, for the whole group)."""
        if not self._decided:
            self._decided = True
            if wanted():
                self._runtime = fresh_runtime(self.manifest, sorted(self.modules), self.root)
        return self._runtime is not None

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.endswith("__mypyc") and "." not in fullname:
            if self.use_build and self._runtime is not None and self._runtime.name.split(".")[0] == fullname:
                return importlib.util.spec_from_file_location(fullname, self._runtime)
            return None
        if not fullname.startswith("ice."):
            return None
        if self._extensions is None:
            self._extensions = extension_modules(self.root)
        if fullname not in self._extensions or (fullname in self.modules and self.use_build):
            return None  # the path finder's answer: the source, or the fresh build's extension module
        return importlib.util.spec_from_file_location(fullname, source_of(fullname, self.root))


def build_in_use() -> str:
    """What the group runs from in this process: ``"compiled (mypyc)"`` or ``"source"``, with why not compiled (for
    benchmarks' records; the processes they start decide the same way unless their environment differs)."""
    guard = next((f for f in sys.meta_path if isinstance(f, SourceGuard)), None)
    if guard is not None and guard.use_build:
        return "compiled (mypyc)"
    if not wanted():
        return "source (ICELAB_NATIVE=0, ICELAB_PURE_PYTHON, or a pytest process)"
    return "source (no fresh build: scripts/build-native)"


def install() -> None:
    """Put the guard first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, SourceGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceGuard())


install()
