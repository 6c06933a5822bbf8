"""Where topologies come from, and what a topology offers: its NAT roles.

A topology is one Python module with a ``build(...) -> TopologySpec`` function. Its parameters name the
topology's NAT roles (``nat_a``, ``nat_b``, ``inner``, ``outer``, ...), and a ``**link`` catch-all, when present,
takes link conditions (``loss``, ``delay_ms``, ``bandwidth_mbit``, ...). The rule for which parameters are NAT roles:

- a parameter whose default is a preset name (a key of :data:`ice.nat.behaviour.PRESETS`, e.g.
  ``"port-restricted-cone"``) or a :class:`~ice.nat.behaviour.NatBehaviour` is a NAT role;
- so is a parameter with no default (a cell must then name its NAT);
- any other parameter (``subnet="10.9.0"``, ``hairpin=True``, ``wan=None``, ...) is an option of ``build``
  for the topology's own use: a cell cannot set it, and a cell that names it gets "has no NAT role".

Modules are found in three places, all equal:

- the built-in modules in ``ice/topology/builtin/`` (shipped inside the package);
- modules named by the ``icelab.topologies`` entry-point group of any installed distribution (the entry point's
  name is the topology's name; its value is a module with ``build`` or the build function itself);
- every ``*.py`` file in the directories given with ``--topologies DIR`` (files starting with ``_`` are helpers).

A name defined twice is an error naming both places: a topology means one thing in a run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ice.errors import UserError
from ice.nat.behaviour import PRESETS, NatBehaviour
from ice.topology.spec import TopologySpec

Builder = Callable[..., TopologySpec]
ENTRY_POINT_GROUP = "icelab.topologies"
LINK_KEYWORDS = ("delay_ms", "jitter_ms", "loss", "loss_mode", "seed", "bandwidth_mbit")
"""What a builder's ``**link`` takes (see :func:`ice.topology.builder.conditions`)."""


@dataclass(frozen=True)
class Topology:
    """One topology module: its builder, where it came from and the NAT roles a cell fills."""

    name: str
    build: Builder
    origin: str
    """``built-in``, the file it was loaded from, or ``entry point NAME``."""
    roles: tuple[str, ...]
    """The builder's NAT roles (see the module docstring for the rule), in order: one NAT per role."""
    defaults: tuple[tuple[str, str], ...]
    """Each role's default preset (as the builder declares it)."""
    takes_link: bool
    """Does the builder take link conditions (a ``**link`` argument)?"""
    options: tuple[str, ...] = ()
    """The builder's other parameters (not NAT roles): its own, which cells do not set."""

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.build) or ""
        return doc.splitlines()[0] if doc else ""

    def spec(self, nats: Mapping[str, NatBehaviour | str] | None = None, **link: Any) -> TopologySpec:
        """Build the spec with a NAT per role (missing roles keep their defaults) and link conditions; a role or
        condition the topology does not have is a :class:`UserError` naming the valid ones."""
        nats = dict(nats or {})
        unknown = sorted(set(nats) - set(self.roles))
        if unknown:
            options = [u for u in unknown if u in self.options]
            hint = (f" ({', '.join(options)}: an option of its build() whose default is not a NAT preset, which "
                    "cells do not set)") if options else ""
            raise UserError(f"topology {self.name} has no NAT role {', '.join(unknown)}; its roles are "
                            f"{', '.join(self.roles) or '(none)'}{hint}")
        if link and not self.takes_link:
            raise UserError(f"topology {self.name} takes no link conditions ({', '.join(sorted(link))}); give its "
                            "build() a **link argument to accept them")
        bad = sorted(set(link) - set(LINK_KEYWORDS))
        if bad:
            raise UserError(f"unknown link condition {', '.join(bad)}; valid: {', '.join(LINK_KEYWORDS)}")
        return self.build(**nats, **link)

    def positional(self, presets: Iterable[NatBehaviour | str]) -> dict[str, NatBehaviour | str]:
        """Presets given in role order (``icelab topo check two_nats full-cone symmetric``) as a role table."""
        given = list(presets)
        if len(given) > len(self.roles):
            raise UserError(f"topology {self.name} has {len(self.roles)} NAT role(s) "
                            f"({', '.join(self.roles) or 'none'}), not {len(given)}")
        return dict(zip(self.roles, given, strict=False))


def describe_builder(name: str, build: Builder, origin: str) -> Topology:
    """Read a builder's NAT roles from its signature: a parameter whose default is a preset name or a
    :class:`NatBehaviour`, or that has no default (see the module docstring); the others are options."""
    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):
        raise UserError(f"topology {name} ({origin}): build is not a function with a signature") from None
    roles, defaults, options, link = [], [], [], False
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            link = True
        elif p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        elif isinstance(p.default, str) and p.default in PRESETS:
            roles.append(p.name)
            defaults.append((p.name, p.default))
        elif isinstance(p.default, NatBehaviour):
            roles.append(p.name)
            defaults.append((p.name, p.default.name))
        elif p.default is p.empty:
            roles.append(p.name)
        else:
            options.append(p.name)
    return Topology(name, build, origin, tuple(roles), tuple(defaults), link, tuple(options))


def load_module(path: Path, kind: str = "topology") -> ModuleType:
    """Import a user's Python file by path (a topology or a scenario file); whatever it raises is one sentence."""
    spec = importlib.util.spec_from_file_location(f"icelab_{kind}.{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot load {kind} file {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as exc:  # a user's file: one sentence, not a traceback
        raise UserError(f"{kind} file {path} does not import: {type(exc).__name__}: {exc}") from None
    return module


def load_file(path: Path) -> ModuleType:
    """Import a topology file by path (its name must not clash with an installed module)."""
    return load_module(path, "topology")


class Topologies:
    """Every topology a run can use (built-ins, entry points, ``--topologies`` directories), found once."""

    def __init__(self, directories: Iterable[Path | str] = (), entry_points: bool = True) -> None:
        self.directories = tuple(Path(d) for d in directories)
        self.entry_points = entry_points
        self._found: dict[str, Topology] | None = None

    def _add(self, found: dict[str, Topology], topo: Topology) -> None:
        earlier = found.get(topo.name)
        if earlier is not None:
            raise UserError(f"topology {topo.name} is defined twice ({earlier.origin} and {topo.origin}); rename "
                            "one of them")
        found[topo.name] = topo

    def all(self) -> dict[str, Topology]:
        if self._found is not None:
            return self._found
        found: dict[str, Topology] = {}
        from ice.topology import builtin

        for info in sorted(pkgutil.iter_modules(builtin.__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{builtin.__name__}.{info.name}")
            if callable(getattr(module, "build", None)):
                self._add(found, describe_builder(info.name, module.build, "built-in"))
        if self.entry_points:
            for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                origin = f"entry point {ep.name} ({ep.value})"
                try:
                    target = ep.load()
                except Exception as exc:
                    raise UserError(f"topology {origin} does not load: {type(exc).__name__}: {exc}") from None
                build = getattr(target, "build", target)
                if not callable(build):
                    raise UserError(f"topology {origin} is neither a build function nor a module with one")
                self._add(found, describe_builder(ep.name, build, origin))
        for directory in self.directories:
            if not directory.is_dir():
                raise UserError(f"--topologies {directory}: no such directory")
            for path in sorted(directory.glob("*.py")):
                if path.name.startswith("_"):
                    continue
                build = getattr(load_file(path), "build", None)
                if callable(build):
                    self._add(found, describe_builder(path.stem, build, str(path)))
        self._found = found
        return found

    def get(self, name: str) -> Topology:
        found = self.all()
        if name not in found:
            hint = "" if self.directories else " (topologies outside the package need --topologies DIR)"
            raise UserError(f"unknown topology {name!r}; valid topologies: {', '.join(found)}{hint}")
        return found[name]

    def build(self, name: str, *presets: NatBehaviour | str, **kwargs: Any) -> TopologySpec:
        """``build("two_nats", "full-cone", "symmetric", delay_ms=20)``: presets in role order, or by role name
        among the keyword arguments (the others are link conditions)."""
        topo = self.get(name)
        nats = topo.positional(presets)
        link = {}
        for key, value in kwargs.items():
            if key in topo.roles:
                nats[key] = value
            else:
                link[key] = value
        return topo.spec(nats, **link)


BUILTIN = Topologies(entry_points=False)
"""Only the built-in topologies (what tests and ``mn --custom`` users start from)."""


def topology(name: str, *presets: NatBehaviour | str, **kwargs: Any) -> TopologySpec:
    """A built-in or entry-point topology's spec: ``topology("two_nats", "full-cone", "symmetric")``."""
    return Topologies().build(name, *presets, **kwargs)
