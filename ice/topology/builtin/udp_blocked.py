r"""udp_blocked: peer A behind a firewall that drops all outbound UDP (TURN over TCP is its only way out).

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/udp_blocked.py --topo udp_blocked,port-restricted-cone \
        --controller none
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(nat_b: NatBehaviour | str = "port-restricted-cone", **link: Any) -> TopologySpec:
    """Peer A (10.0.1.2) behind the udp-blocked firewall; peer B behind nat_b (default port-restricted cone)."""
    b = TopologyBuilder("udp_blocked")
    inet = b.public_segment()
    b.peer("a", behaviour("udp-blocked"), inet, "10.0.1", conditions(**link))
    b.peer("b", behaviour(nat_b), inet, "10.0.2")
    return b.spec()


topos = mn_topos("udp_blocked", build)
