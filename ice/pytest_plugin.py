"""icelab's pytest plugin (entry point ``pytest11``): lab fixtures and markers for projects that test NAT traversal.

* ``lab_factory(topology, *presets, **roles_or_link_conditions)`` builds a lab from any topology (built-in or an
  ``icelab.topologies`` entry point) and tears it down after the test, also when the test fails (every lab process
  also dies with the test process);
* ``nat_pair(nat_a, nat_b)`` is the common case: ``two_nats`` with the two presets;
* markers ``lab`` (needs uid 0 and namespaces), ``sim``, ``interop``, ``slow``; ``lab`` tests are skipped with a
  clear reason when not uid 0 (root, or a user namespace as ``./icelab test`` makes for a normal user);
* scenario cells as parameters: ``@pytest.mark.parametrize("cell", matrix_params("lab"))`` (the default suite,
  or ``matrix_params("lab", files=[...])`` for your scenario files) with the ``matrix_lab`` fixture (one reused
  set of labs per pytest-xdist worker) runs every cell as its own test, so ``pytest -n 2`` runs them in parallel;
  ``matrix_sim`` does the same on the simulation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ice.scenario.cell import Cell
    from ice.scenario.result import CellResult

MARKERS = {
    "lab": "builds kernel-NAT labs (root or a user namespace; network namespaces)",
    "sim": "runs on the in-memory network simulation (no root)",
    "interop": "talks to a foreign implementation (coturn, stund, pion, libnice, aioice)",
    "slow": "takes more than a few seconds",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:  # root, or uid 0 in a user namespace (./icelab test as a normal user)
        return
    lab = [item for item in items if item.get_closest_marker("lab") is not None]
    if not lab:
        return
    from ice.lab.userns import cached_problem

    problem = cached_problem()
    if problem is None:
        reason = ("lab test: needs uid 0 for its namespaces; as a normal user run the suite with ./icelab test, "
                  "which enters a user namespace (or: unshare --user --map-root-user --net --mount pytest ...)")
    else:
        reason = f"lab test: not root, and {problem}"
    skip = pytest.mark.skip(reason=reason)
    for item in lab:
        item.add_marker(skip)


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., Any]]:
    """``lab_factory("two_nats", "full-cone", "symmetric", delay_ms=20)`` -> a built :class:`ice.lab.mn.Lab`."""
    from ice.lab.mn import Lab
    from ice.topology.registry import topology

    labs: list[Lab] = []

    def make(name: str, *presets: str, **link: Any) -> Lab:
        lab = Lab(topology(name, *presets, **link))
        labs.append(lab)
        lab.build()
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.stop()


@pytest.fixture
def nat_pair(lab_factory: Callable[..., Any]) -> Callable[[str, str], Any]:
    """``nat_pair("port-restricted-cone", "symmetric")`` -> a ``two_nats`` lab (peers ``a`` and ``b``)."""
    return lambda nat_a, nat_b: lab_factory("two_nats", nat_a, nat_b)


_SUITES: dict[tuple[str, ...], Any] = {}


def _suite(files: Iterable[str] = (), topologies: Iterable[str] = ()) -> Any:
    """One loaded suite per (files, topology directories), shared by the params and the fixtures."""
    from ice.scenario.suite import Suite
    from ice.topology.registry import Topologies

    key = (*files, "|", *topologies)
    if key not in _SUITES:
        _SUITES[key] = Suite.load(list(files), Topologies(list(topologies)))
    return _SUITES[key]


def matrix_params(backend: str, names: Iterable[str] | None = None, files: Iterable[str] = (),
                  topologies: Iterable[str] = ()) -> list[Any]:
    """A suite's cells (the default one, or the scenario ``files``; only ``names`` if given) as ``pytest.param``s
    with ids and markers: ``lab`` or ``sim``, plus ``slow`` for lab cells that wait on timers (relayed, lossy or
    failing ones)."""
    from ice.scenario.cell import PathKind

    suite = _suite(tuple(files), tuple(topologies))
    wanted = None if names is None else list(names)
    if wanted is not None:
        suite = suite.select(wanted)
    params = []
    for c in suite.cells:
        marks = [getattr(pytest.mark, backend)]
        if backend == "lab" and (suite.expectation(c)[0].path is not PathKind.DIRECT or c.loss):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(c, id=c.name, marks=marks))
    return params


@pytest.fixture(scope="session")
def matrix_sim() -> Callable[..., CellResult]:
    """``matrix_sim(cell)`` runs a cell of the default suite (or ``matrix_sim(cell, files=[...])``) in the
    simulation and judges it."""
    from ice.scenario.runner import Runner

    def run(cell: Cell, files: Iterable[str] = (), topologies: Iterable[str] = ()) -> CellResult:
        result: CellResult = Runner(_suite(tuple(files), tuple(topologies))).sim(cell)
        return result

    return run


@pytest.fixture(scope="session")
def matrix_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., CellResult]]:
    """Runs a cell in this worker's kernel labs (built on first use, reused by later cells, torn down at the end
    of the session) and checks it against the simulation; failed cells keep their artifacts under the session's
    temporary directory (the path is in the result's ``artifacts``)."""
    from ice.scenario.lab import LabBackend

    backend = LabBackend(tmp_path_factory.mktemp("matrix-artifacts"))

    def run(cell: Cell, files: Iterable[str] = (), topologies: Iterable[str] = ()) -> CellResult:
        from ice.scenario.runner import Runner

        runner = Runner(_suite(tuple(files), tuple(topologies)))
        backend.repro = runner.suite.repro
        spec = runner.suite.spec(cell)
        result: CellResult = runner.with_sim_check(backend.run(cell, spec, runner.suite.expectation(cell)[0]))
        return result

    try:
        yield run
    finally:
        backend.close()
