"""icelab's pytest plugin (entry point ``pytest11``): lab fixtures and markers for projects that test NAT traversal.

* ``lab_factory(topology, *presets, **link_conditions)`` builds a lab from any module in ``topologies/`` and
  tears it down after the test, also when the test fails (every lab process also dies with the test process);
* ``nat_pair(nat_a, nat_b)`` is the common case: ``two_nats`` with the two presets;
* markers ``lab`` (needs root and namespaces), ``sim``, ``interop``, ``slow``; ``lab`` tests are skipped with a
  clear reason when not running as root.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MARKERS = {
    "lab": "builds kernel-NAT labs (root, network namespaces)",
    "sim": "runs on the in-memory network simulation (no root)",
    "interop": "talks to a foreign implementation (coturn, stund, pion, libnice, aioice)",
    "slow": "takes more than a few seconds",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab test: needs root for network namespaces and netfilter (run as root)")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., Any]]:
    """``lab_factory("two_nats", "full-cone", "symmetric", delay_ms=20)`` -> a built :class:`ice.lab.mn.Lab`."""
    from ice.lab.mn import Lab
    from ice.lab.topo import topology

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
