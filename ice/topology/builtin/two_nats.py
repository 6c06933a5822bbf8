r"""two_nats: peer A behind NAT-a, peer B behind NAT-b, the STUN/TURN host on the public segment.

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/two_nats.py --topo two_nats,full-cone,symmetric \
        --controller none
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(nat_a: NatBehaviour | str = "port-restricted-cone", nat_b: NatBehaviour | str = "port-restricted-cone",
          **link: Any) -> TopologySpec:
    """Peer A behind NAT-a and peer B behind NAT-b (10.0.1.0/24 and 10.0.2.0/24); STUN/TURN on 203.0.113.10/.11."""
    b = TopologyBuilder("two_nats")
    inet = b.public_segment()
    b.peer("a", behaviour(nat_a), inet, "10.0.1", conditions(**link))
    b.peer("b", behaviour(nat_b), inet, "10.0.2")
    return b.spec()


topos = mn_topos("two_nats", build)
