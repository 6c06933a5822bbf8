r"""``mn --custom`` support: turn a topology spec into the Mininet ``Topo`` that Mininet's CLI builds.

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/two_nats.py --topo two_nats,full-cone,symmetric \
        --controller none

A topology module's ``topos = mn_topos(NAME, build)`` (:mod:`ice.topology.mn`) calls :func:`spec_topo` when
Mininet asks for the topology.

Each node becomes a host of class :class:`SpecNode`, which configures itself from the spec (addresses, routes,
bridge, NAT rules) instead of taking Mininet's default IP. icelab itself never runs ``mn``: it realises specs
with :class:`ice.lab.mn.Lab`, which avoids the host-wide sysctls ``Mininet()`` sets.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from typing import Any

from ice.topology.spec import NodeKind, TopologySpec


def mn_names(spec: TopologySpec) -> dict[str, str]:
    """Spec node name -> a Mininet node name (short: interface names must fit 15 characters)."""
    return {n.name: f"n{i}" if len(n.name) > 9 or not n.name.replace("-", "").isalnum() else n.name.replace("-", "")
            for i, n in enumerate(spec.nodes)}


def spec_topo(spec: TopologySpec) -> Any:
    """A Mininet ``Topo`` for ``spec``."""
    from mininet.node import Node
    from mininet.topo import Topo

    from ice.lab.mn import interface_names, nat_interfaces, node_commands
    from ice.lab.nat.nft import compile_ruleset, sysctls

    names = mn_names(spec)
    interfaces = interface_names(spec, names)

    class SpecNode(Node):  # type: ignore[misc]
        """A node that configures itself from the topology spec (Mininet calls config() after linking)."""

        def config(self, **params: Any) -> dict[str, Any]:
            name: str = self.params["spec_name"]
            for cmd in node_commands(spec, name, interfaces):
                self.cmd(cmd)
            node = spec.node(name)
            if node.kind is NodeKind.NAT and node.nat is not None:
                settings = " ".join(f"{k}={v}" for k, v in sysctls(node.nat).items())
                rules = compile_ruleset(node.nat, nat_interfaces(spec, name, interfaces))
                with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as f:
                    f.write(rules)
                self.cmd(f"sysctl -qw {settings}; nft -f {shlex.quote(f.name)}")
                os.unlink(f.name)
            return {}

    topo = Topo()
    for n in spec.nodes:
        topo.addHost(names[n.name], cls=SpecNode, spec_name=n.name)
    for i, link in enumerate(spec.links):
        topo.addLink(names[link.a.node], names[link.b.node],
                     intfName1=interfaces[(i, link.a.node)], intfName2=interfaces[(i, link.b.node)])
    return topo

