"""``mn --custom`` support for topology modules: ``topos = mn_topos(NAME, build)``.

Pure until Mininet calls it: the returned functions import the lab's Mininet glue (:mod:`ice.lab.mnstub`) only when
``mn --topo NAME,...`` builds the topology, so importing a topology module never imports the lab.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ice.topology.spec import TopologySpec


def mn_topos(name: str, build: Callable[..., TopologySpec]) -> dict[str, Callable[..., Any]]:
    """The ``topos`` dict for ``mn --custom``: ``--topo NAME,ARG,...`` calls ``build(ARG, ...)`` and turns the spec
    into a Mininet ``Topo``."""

    def topo(*args: Any, **kwargs: Any) -> Any:
        from ice.lab.mnstub import spec_topo

        return spec_topo(build(*args, **kwargs))

    return {name: topo}
