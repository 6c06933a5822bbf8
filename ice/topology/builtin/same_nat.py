r"""same_nat: two peers on one LAN behind one NAT (host pairs win; with hairpinning, srflx pairs work too).

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/same_nat.py --topo same_nat,port-restricted-cone \
        --controller none
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(nat: NatBehaviour | str = "port-restricted-cone", **link: Any) -> TopologySpec:
    """Peers A (10.0.0.2) and B (10.0.0.3) on one LAN behind one NAT; STUN/TURN on the public segment."""
    b = TopologyBuilder("same_nat")
    inet = b.public_segment()
    lan, gw = b.nat("nat", behaviour(nat), "10.0.0", inet, impairments=conditions(**link))
    b.private_host("a", lan, "10.0.0.2", gw)
    b.private_host("b", lan, "10.0.0.3", gw)
    return b.spec()


topos = mn_topos("same_nat", build)
