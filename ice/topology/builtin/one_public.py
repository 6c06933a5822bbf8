"""one_public: peer A behind a NAT, peer B with a public address on the public segment.

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/one_public.py --topo one_public,symmetric --controller none
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(nat: NatBehaviour | str = "port-restricted-cone", **link: Any) -> TopologySpec:
    """Peer A (10.0.1.2) behind a NAT; peer B on 203.0.113.101 with no NAT."""
    b = TopologyBuilder("one_public")
    inet = b.public_segment()
    b.peer("a", behaviour(nat), inet, "10.0.1", conditions(**link))
    b.public_host("b", inet)
    return b.spec()


topos = mn_topos("one_public", build)
