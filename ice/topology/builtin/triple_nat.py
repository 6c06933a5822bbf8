"""triple_nat: peer A behind three NAT levels (home, building, carrier-grade); peer B behind its own NAT.

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/triple_nat.py --topo triple_nat --controller none
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(home: NatBehaviour | str = "port-restricted-cone", building: NatBehaviour | str = "eim-adf",
          cgn: NatBehaviour | str = "eim-eif", nat_b: NatBehaviour | str = "port-restricted-cone",
          **link: Any) -> TopologySpec:
    """A: 192.168.1.2 -> home (WAN 172.16.0.2) -> building (WAN 100.64.0.2) -> CGN -> 203.0.113.1; B as nat_b."""
    b = TopologyBuilder("triple_nat")
    inet = b.public_segment()
    cgn_lan, cgn_gw = b.nat("cgn", behaviour(cgn), "100.64.0", inet, impairments=conditions(**link))
    bld_lan, bld_gw = b.nat("building", behaviour(building), "172.16.0", cgn_lan, wan_cidr="100.64.0.2/24",
                            gateway=cgn_gw)
    home_lan, home_gw = b.nat("home", behaviour(home), "192.168.1", bld_lan, wan_cidr="172.16.0.2/24",
                              gateway=bld_gw)
    b.private_host("a", home_lan, "192.168.1.2", home_gw)
    b.peer("b", behaviour(nat_b), inet, "10.0.2")
    return b.spec()


topos = mn_topos("triple_nat", build)
