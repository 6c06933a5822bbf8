r"""double_nat: peer A behind a home NAT behind a carrier-grade NAT (100.64.0.0/10); peer B behind its own NAT.

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/double_nat.py \
        --topo double_nat,port-restricted-cone,symmetric --controller none
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(inner: NatBehaviour | str = "port-restricted-cone", outer: NatBehaviour | str = "symmetric",
          nat_b: NatBehaviour | str = "none", **link: Any) -> TopologySpec:
    """A: 192.168.1.2 -> home NAT (WAN 100.64.0.2) -> CGN (LAN 100.64.0.1) -> 203.0.113.1; B as nat_b says."""
    b = TopologyBuilder("double_nat")
    inet = b.public_segment()
    cgn_lan, cgn_gw = b.nat("cgn", behaviour(outer), "100.64.0", inet, impairments=conditions(**link))
    # The home NAT's WAN sits on the carrier's shared address space (RFC 6598), its LAN is a home subnet.
    home_lan, home_gw = b.nat("home", behaviour(inner), "192.168.1", cgn_lan, wan_cidr="100.64.0.2/24",
                              gateway=cgn_gw)
    b.private_host("a", home_lan, "192.168.1.2", home_gw)
    b.peer("b", behaviour(nat_b), inet, "10.0.2")
    return b.spec()


topos = mn_topos("double_nat", build)
