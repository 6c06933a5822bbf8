"""Scenario files: where a run's cells come from, and the pins (expectations) kept beside each file.

A scenario file is TOML (``[[matrix]]`` tables expanded to the product of their NATs, then ``[[cells]]`` tables,
an optional ``[defaults]`` table for every cell of the file) or a Python module whose ``cells()`` returns
:class:`Cell` values or tables of the same shape. Without a file, the default suite shipped in the package runs
(``ice/suites/default.toml``). Each file's pins live beside it, ``NAME.expected.json`` for ``NAME.toml`` or
``NAME.py``; a cell without a pin is judged by the reasoning's answer and reported as unpinned. The format is
documented in docs/scenarios.md.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ice.errors import UserError
from ice.nat.behaviour import NatKind
from ice.scenario.cell import CELL_OPTIONS, Cell, NatChoice
from ice.scenario.expect import Expected, expect
from ice.topology.builder import NoNatHere, server_problem
from ice.topology.registry import Topologies, load_module
from ice.topology.spec import TopologySpec

SUITES = Path(__file__).resolve().parents[1] / "suites"
DEFAULT_SUITE = SUITES / "default.toml"
PRESETS_MATRIX = SUITES / "presets.toml"
"""The matrix ``--presets A B ...`` runs, with every role's NATs replaced by the presets given (its cells are
judged against the default suite's pins)."""


def icelab_command() -> str:
    """How a repro line starts: ``./icelab`` in the source checkout holding the running package (``pyproject.toml``
    and the ``icelab`` script beside ``ice/``), that script's absolute path from elsewhere, ``icelab`` when the
    package is installed without a checkout."""
    root = Path(__file__).resolve().parents[2]
    script = root / "icelab"
    if not ((root / "pyproject.toml").is_file() and script.is_file()):
        return "icelab"
    try:
        here = Path.cwd().resolve()
    except OSError:  # the cwd was removed
        return str(script)
    return "./icelab" if here == root else str(script)


def pins_path(source: Path) -> Path:
    """Where a scenario file's pins live (ICELAB_EXPECTATIONS overrides it for every file of a run)."""
    override = os.environ.get("ICELAB_EXPECTATIONS")
    return Path(override) if override else source.with_name(f"{source.stem}.expected.json")


def _load_toml(path: Path) -> list[Cell]:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"cells", "matrix", "defaults"})
    if unknown:
        raise UserError(f"{path}: unknown table {', '.join(unknown)}; a scenario file has [[cells]], [[matrix]] "
                        "and [defaults]")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - {"topology", *CELL_OPTIONS}:
        raise UserError(f"{path}: [defaults] may set topology and {', '.join(CELL_OPTIONS)}")
    defaults = {"group": path.stem, **defaults}
    tables = doc.get("cells", [])
    matrices = doc.get("matrix", [])
    if not isinstance(tables, list) or not isinstance(matrices, list):
        raise UserError(f"{path}: cells and matrix are arrays of tables ([[cells]], [[matrix]])")
    for key, entries in (("matrix", matrices), ("cells", tables)):
        for i, entry in enumerate(entries, 1):
            if not isinstance(entry, dict):
                raise UserError(f"{path}: {key} entry {i} is {entry!r}, not a table; write [[{key}]] tables")
    cells = []
    for i, m in enumerate(matrices, 1):  # matrices first: TOML keeps no order between the two arrays
        cells += expand_matrix({**defaults, **m}, f"{path}, matrix {i}")
    return cells + [Cell.from_table({**defaults, **t}, str(path)) for t in tables]


class _NamePart:
    """A role in a matrix's name template: ``{nat_a}`` is its slug (``eim-eif+hairpinning=false``),
    ``{nat_a.preset}`` only the preset."""

    def __init__(self, choice: NatChoice) -> None:
        self.preset = choice.preset
        self._slug = choice.slug

    def __format__(self, spec: str) -> str:
        return format(self._slug, spec)


def expand_matrix(table: Mapping[str, Any], where: str) -> list[Cell]:
    """A ``[[matrix]]`` table: every combination of its roles' NATs (a role with one NAT may give it alone), and of
    its agents when ``agent_a``/``agent_b`` are lists, named by ``name`` (a template over the roles and agents,
    e.g. ``"loss10-{nat_a}x{nat_b}"``, ``"{agent_a}-{agent_b}.{nat_a}"``, ``{role.preset}`` for the preset alone;
    default: the roles joined by x)."""
    table = dict(table)
    agent_lists = {side: table.pop(side) for side in ("agent_a", "agent_b") if isinstance(table.get(side), list)}
    for side, values in agent_lists.items():
        if not values:
            raise UserError(f"{where}: {side} is an empty list, so the matrix has no cells")
    nats = table.pop("nats", None)
    if not isinstance(nats, Mapping) or not nats:
        raise UserError(f"{where}: a matrix needs nats = {{ role = [preset, ...], ... }}")
    roles = list(nats)
    template = table.pop("name", "x".join(f"{{{r}}}" for r in roles))
    if not isinstance(template, str):
        raise UserError(f"{where}: name is a template such as \"{{nat_a}}x{{nat_b}}\"")
    choices: list[list[tuple[str, NatChoice]]] = []
    for role in roles:
        values = nats[role] if isinstance(nats[role], list) else [nats[role]]
        if not values:
            raise UserError(f"{where}: NAT role {role} is an empty list, so the matrix has no cells; give it at least "
                            "one NAT")
        try:
            choices.append([(role, NatChoice.parse(v)) for v in values])
        except ValueError as exc:
            raise UserError(f"{where}: NAT role {role}: {exc}") from None
    agent_combos: list[dict[str, Any]] = [dict(zip(agent_lists, values, strict=True))
                                           for values in itertools.product(*agent_lists.values())]
    cells = []
    for combo in itertools.product(*choices):
        for agents in agent_combos:
            fields: dict[str, Any] = {role: _NamePart(choice) for role, choice in combo}
            for side in ("agent_a", "agent_b"):
                chosen = agents.get(side, table.get(side, "icelab"))
                fields[side] = chosen if isinstance(chosen, str) else "command"
            try:
                name = template.format(**fields)
            except (KeyError, IndexError, ValueError, AttributeError) as exc:
                raise UserError(f"{where}: the name template {template!r} names {exc}, which is not a role or agent "
                                f"of this matrix ({', '.join([*roles, 'agent_a', 'agent_b'])})") from None
            cells.append(Cell.from_table({**table, **agents, "name": name,
                                          "nats": {r: c.as_json() for r, c in combo}}, where))
    return cells


def _load_python(path: Path) -> list[Cell]:
    module = load_module(path, "scenario")
    try:
        made = list(module.cells())
    except UserError:
        raise
    except Exception as exc:  # a user's module: one sentence, not a traceback
        raise UserError(f"{path}: cells() failed: {type(exc).__name__}: {exc}") from None
    cells = []
    for item in made:
        if isinstance(item, Cell):
            cell = item
        elif isinstance(item, Mapping):
            cell = Cell.from_table(item, str(path))
        else:
            raise UserError(f"{path}: cells() must return Cell values or tables, not {type(item).__name__}")
        cells.append(cell if cell.group else dataclasses.replace(cell, group=path.stem))  # as a TOML file's
    return cells


def load_file(path: Path) -> list[Cell]:
    """The cells of one scenario file (TOML or Python)."""
    if not path.is_file():
        raise UserError(f"scenario file {path} does not exist")
    if path.suffix == ".toml":
        cells = _load_toml(path)
        if not cells:
            raise UserError(f"{path} has no cells: a scenario file holds [[cells]] or [[matrix]] tables")
        return cells
    if path.suffix == ".py":
        cells = _load_python(path)
        if not cells:
            raise UserError(f"{path} has no cells: its cells() returned none")
        return cells
    raise UserError(f"{path}: a scenario file is .toml or .py")


def presets_matrix(presets: list[str]) -> list[Cell]:
    """``--presets A B ...``: the matrices of ``ice/suites/presets.toml`` with those presets in every role."""
    doc = tomllib.loads(PRESETS_MATRIX.read_text())
    cells = []
    for m in doc["matrix"]:
        cells += expand_matrix({**m, "nats": {role: list(presets) for role in m["nats"]}}, "--presets")
    return cells


@dataclass
class Suite:
    """The cells of one run, the files they came from, their topologies and their pins."""

    topologies: Topologies
    cells: list[Cell] = field(default_factory=list)
    presets: tuple[str, ...] = ()
    """The ``--presets`` this run's sub-matrix was made of, if any."""
    source: dict[str, Path] = field(default_factory=dict)
    """Cell name -> the scenario file whose pins judge it."""
    _pins: dict[Path, dict[str, Any]] = field(default_factory=dict)
    _specs: dict[str, TopologySpec] = field(default_factory=dict)
    out: Path | None = None
    """The run's report directory (``--out``; None: ``results``): repro lines write under ``<out>/repro/``."""

    @classmethod
    def load(cls, files: Iterable[Path | str] = (), topologies: Topologies | None = None,
             presets: list[str] | None = None) -> Suite:
        """The cells of ``files`` (the default suite when there are none; ``presets`` replaces it by a sub-matrix),
        every cell checked against its topology's roles now, so a mistake is one sentence before anything runs."""
        suite = cls(topologies or Topologies(), presets=tuple(presets or ()))
        suite.topologies.all()  # a bad --topologies directory is its own sentence, not blamed on the first cell
        paths = [Path(f) for f in files]
        if presets:
            suite._add(presets_matrix(presets), DEFAULT_SUITE)
        if not os.environ.get("ICELAB_EXPECTATIONS"):
            sharing: dict[Path, Path] = {}
            for path in paths:
                other = sharing.setdefault(pins_path(path).resolve(), path)
                if other.resolve() != path.resolve():
                    raise UserError(f"{other} and {path} would share the pins {pins_path(path)}; rename one")
        for path in paths or ([] if presets else [DEFAULT_SUITE]):
            suite._add(load_file(path), path)
        for cell in suite.cells:
            suite.spec(cell)
        return suite

    def _add(self, cells: list[Cell], source: Path) -> None:
        for c in cells:
            if c.name in self.source:
                raise UserError(f"cell {c.name} is defined twice ({self.source[c.name]} and {source}); names key "
                                "pins, artifacts and --scenario, so they must be unique")
            self.cells.append(c)
            self.source[c.name] = source

    def select(self, names: list[str] | None) -> Suite:
        if not names:
            return self
        unknown = sorted(set(names) - set(self.source))
        if unknown:
            raise UserError(f"no cell named {', '.join(unknown)} in this run; names look like 'eim-eifxapdm-apdf' "
                            "or 'same-nat-eim-apdf-hairpin' (`icelab run --list` prints them all)")
        chosen = [c for c in self.cells if c.name in names]
        return Suite(self.topologies, chosen, self.presets, {c.name: self.source[c.name] for c in chosen},
                     self._pins, self._specs, self.out)

    def repro(self, cell: Cell, backend: str = "lab") -> str:
        """One line that runs just this cell again (in the lab with every artifact kept), pasteable in a shell
        anywhere: scenario files and topology directories as absolute paths, every word quoted. Its reports go
        to ``<out>/repro/<cell>`` beside the run's own (relative only in a ``./icelab`` line, which is pasted in
        the checkout where the run ran; absolute otherwise), never into whatever directory it is pasted in."""
        command = icelab_command()
        words = [command, "run"]
        source = self.source.get(cell.name, DEFAULT_SUITE)
        if self.presets and source == DEFAULT_SUITE:
            words += ["--presets", *sorted({ch.preset for _, ch in cell.nats})]
        elif source != DEFAULT_SUITE:
            words.append(os.path.abspath(source))
        for d in self.topologies.directories:
            words += ["--topologies", os.path.abspath(d)]
        words += ["--backend", backend, "--scenario", cell.name]
        if backend == "lab":
            words.append("--keep-artifacts")
        target = (self.out or Path("results")) / "repro" / cell.name
        words += ["--out", str(target) if command == "./icelab" and not target.is_absolute()
                  else os.path.abspath(target)]
        pins = os.environ.get("ICELAB_EXPECTATIONS")
        line = [*(["sudo"] if backend == "lab" else []),  # the assignment's name stays unquoted: a shell sees it
                *([f"ICELAB_EXPECTATIONS={shlex.quote(os.path.abspath(pins))}"] if pins else []),
                *(shlex.quote(w) for w in words)]
        return " ".join(line)

    def spec(self, cell: Cell) -> TopologySpec:
        """The cell's topology built with its NATs and link conditions (a wrong role is a UserError naming it)."""
        if cell.name not in self._specs:
            where = f"{self.source.get(cell.name, 'a scenario')}, cell {cell.name}"
            try:
                topo = self.topologies.get(cell.topology)
                spec = topo.spec(cell.behaviours(), **cell.link())
                problem = runnable(spec)
            except NoNatHere as exc:
                roles = [r for r, b in cell.behaviours().items() if b.kind is NatKind.NONE]
                said = f" (the cell sets {', '.join(roles)} to none)" if roles else ""
                raise UserError(f"{where}: {exc}{said}") from None
            except (UserError, ValueError) as exc:
                raise UserError(f"{where}: {exc}") from None
            except Exception as exc:  # a user's build(): one sentence, not a traceback
                raise UserError(f"{where}: topology {cell.topology}'s build() failed: {type(exc).__name__}: "
                                f"{exc}") from None
            if problem:
                raise UserError(f"{where}: topology {cell.topology} {problem}")
            nat_nodes = sorted(spec.nat_behaviours())
            for step in cell.timeline:
                if step.action == "nat_reboot" and step.target not in nat_nodes:
                    raise UserError(f"{where}: nat_reboot names a NAT node of topology {cell.topology} "
                                    f"({', '.join(nat_nodes) or 'it has none'}), not {step.target!r}")
            self._specs[cell.name] = spec
        return self._specs[cell.name]

    # ------------------------------------------------------------------------------------------------ pins

    def pins(self, source: Path) -> dict[str, Any]:
        path = pins_path(source)
        if path not in self._pins:
            self._pins[path] = read_pins(path)
        return self._pins[path]

    def expectation(self, cell: Cell) -> tuple[Expected, bool]:
        """(expectation, pinned): the pinned one, or the reasoning's answer for a cell not pinned yet."""
        source = self.source[cell.name]
        doc = self.pins(source).get(cell.name)
        if doc is None:
            return expect(cell, self.spec(cell)), False
        try:
            return Expected.from_json(doc), True
        except ValueError as exc:
            raise UserError(f"{pins_path(source)}: the entry for {cell.name} is wrong: {exc}") from None

    def cost(self, cell: Cell) -> float:
        """Seconds the cell takes in the lab, for ``--shard``: the ``cost`` in its pin entry (measured by a run,
        ``icelab report costs``), else a default for its expected path."""
        from ice.scenario.shard import default_cost

        doc = self.pins(self.source[cell.name]).get(cell.name)
        cost = doc.get("cost") if isinstance(doc, dict) else None
        if isinstance(cost, (int, float)) and not isinstance(cost, bool) and cost >= 0:
            return float(cost)
        return default_cost(cell, self.expectation(cell)[0].path)

    def shard(self, index: int, count: int) -> Suite:
        """Part ``index`` (1-based) of ``count``, split by cost (:func:`ice.scenario.shard.split`)."""
        from ice.scenario.shard import split

        chosen = split(self.cells, self.cost, count)[index - 1]
        return Suite(self.topologies, chosen, self.presets, {c.name: self.source[c.name] for c in chosen},
                     self._pins, self._specs, self.out)

    def update_costs(self, costs: Mapping[str, float]) -> list[tuple[Path, int]]:
        """Write measured costs into the pin entries of this suite's cells (entries stay as they are otherwise;
        a cell without a pin entry gets none: pin it first); returns (pin file, costs written) per pin file."""
        out = []
        for path in dict.fromkeys(pins_path(s) for s in self.source.values()):
            doc = read_pins(path)
            count = 0
            for c in self.cells:
                entry = doc.get(c.name)
                if pins_path(self.source[c.name]) == path and isinstance(entry, dict) and c.name in costs:
                    entry["cost"] = round(float(costs[c.name]), 2)
                    count += 1
            if count:
                try:
                    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
                except OSError as exc:
                    raise UserError(f"cannot write the pins {path}: {exc.strerror or exc}") from None
                self._pins.pop(path, None)
            out.append((path, count))
        return out

    def reasoning(self) -> dict[str, Expected]:
        return {c.name: expect(c, self.spec(c)) for c in self.cells}

    def update_pins(self) -> list[tuple[Path, int, list[str], int]]:
        """Re-pin every file's cells from the reasoning, keeping hand-written ``known_failure`` entries and measured
        ``cost`` entries; returns (pin file, cells, changed or new names, known failures kept) per pin file. Files
        sharing a pin file (ICELAB_EXPECTATIONS) write it once, with all their cells."""
        groups: dict[Path, list[Path]] = {}
        for source in dict.fromkeys(self.source.values()):
            groups.setdefault(pins_path(source), []).append(source)
        out = []
        for path, sources in groups.items():
            keep = read_pins(path) if path.exists() else {}
            doc = {}
            for c in self.cells:
                if self.source[c.name] not in sources:
                    continue
                entry = expect(c, self.spec(c)).as_json()
                kept = keep.get(c.name)
                if kept is not None and not isinstance(kept, dict):
                    raise UserError(f"{path}: the entry for {c.name} is {kept!r}, not an object; fix or delete it, "
                                    "then re-pin")
                known = (kept or {}).get("known_failure")
                if known is not None:
                    entry["known_failure"] = known
                    if (kept or {}).get("intermittent"):
                        entry["intermittent"] = True
                cost = (kept or {}).get("cost")
                if cost is not None:
                    entry["cost"] = cost
                doc[c.name] = entry
            if DEFAULT_SUITE in sources and path == pins_path(DEFAULT_SUITE):
                doc = {**{k: v for k, v in keep.items() if k not in doc}, **doc}  # a --presets run keeps the rest
            try:
                path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            except OSError as exc:
                raise UserError(f"cannot write the pins {path}: {exc.strerror or exc}") from None
            self._pins.pop(path, None)
            changed = sorted(n for n in doc if keep.get(n) != doc[n])
            out.append((path, len(doc), changed,
                        sum(isinstance(v, dict) and "known_failure" in v for v in doc.values())))
        return out


def runnable(spec: TopologySpec) -> str:
    """What keeps a cell from running in ``spec`` ("" when nothing does): the agents run on hosts ``a`` and ``b``,
    the STUN/TURN server on the host holding the ``stun_primary`` address (``TopologyBuilder.public_segment``)."""
    from ice.topology.fabric import Fabric
    from ice.topology.spec import NodeKind

    for host in ("a", "b"):
        if not spec.has_node(host) or spec.node(host).kind is not NodeKind.HOST:
            return f"has no host named {host!r} (the two ICE agents run on hosts a and b)"
    problem = server_problem(spec)
    if problem:
        return problem
    fabric = Fabric(spec)
    for host in ("a", "b"):
        if not fabric.addresses(host):
            return f"gives host {host} no address"
    return ""


def read_pins(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        if os.environ.get("ICELAB_EXPECTATIONS"):
            raise UserError(f"ICELAB_EXPECTATIONS names {path}, which does not exist") from None
        return {}
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); fix it or re-pin with --update-expectations") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} must map cell names to expectations")
    return doc
