"""What a topology module imports: the builder, NAT behaviours by preset, link conditions and ``mn --custom``
support, in one place.

A topology module is one file with a ``build(role=preset, ..., **link) -> TopologySpec`` function (its keyword
arguments name its NAT roles) and, for ``mn --custom`` users, ``topos = mn_topos(NAME, build)``. The built-in ones
live in ``ice/topology/builtin/``; yours can live anywhere (``--topologies DIR``, or an ``icelab.topologies``
entry point). See docs/lab.md, "Adding a topology".
"""

from __future__ import annotations

from ice.lab.mnstub import mn_topos
from ice.topology.builder import TopologyBuilder, behaviour, conditions
from ice.topology.spec import TopologySpec

__all__ = ["TopologyBuilder", "TopologySpec", "behaviour", "conditions", "mn_topos"]
