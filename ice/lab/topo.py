"""The older import path of the topology authoring API: the same names as :mod:`ice.topology`
(``TopologyBuilder``, ``TopologySpec``, ``behaviour``, ``conditions``, ``mn_topos``), kept so topology files
written against ``from ice.lab.topo import ...`` still load. New topology modules import ``from ice.topology``.
"""

from __future__ import annotations

from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos

__all__ = ["TopologyBuilder", "TopologySpec", "behaviour", "conditions", "mn_topos"]
