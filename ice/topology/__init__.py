"""Topologies as data, below both back-ends: the spec (nodes, links, addresses, routes), the builder topology
modules use, the registry that finds them (built-in, entry points, directories) and the stateless forwarding view
(:mod:`ice.topology.fabric`) that the simulation and the expectation reasoning share. Pure: no root, no processes,
and nothing here imports the lab, the scenarios or the reports.

What a topology module imports, in one place::

    from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos

A topology module is one file with a ``build(role=preset, ..., **link) -> TopologySpec`` function and, for
``mn --custom`` users, ``topos = mn_topos(NAME, build)``. The built-in ones live in ``ice/topology/builtin/``; yours
can live anywhere (``--topologies DIR``, or an ``icelab.topologies`` entry point). See docs/lab.md, "Adding a
topology", and :mod:`ice.topology.registry` for which ``build`` parameters are NAT roles.
"""

from __future__ import annotations

from ice.topology.builder import TopologyBuilder, behaviour, conditions
from ice.topology.mn import mn_topos
from ice.topology.spec import TopologySpec

__all__ = ["TopologyBuilder", "TopologySpec", "behaviour", "conditions", "mn_topos"]
