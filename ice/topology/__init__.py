"""Topologies as data, below both back-ends: the spec (nodes, links, addresses, routes), the builder topology
modules use, the registry that finds them (built-in, entry points, directories) and the stateless forwarding view
(:mod:`ice.topology.fabric`) that the simulation and the expectation reasoning share. Pure: no root, no processes."""
