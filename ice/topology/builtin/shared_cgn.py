r"""shared_cgn: two subscribers, each behind a home NAT, both behind one carrier-grade NAT (RFC 6598 space).

    sudo PYTHONPATH=$PWD mn --custom ice/topology/builtin/shared_cgn.py --topo shared_cgn,eim-apdf,eim-apdf,eim-eif \
        --controller none

The peers' server-reflexive addresses are both on the CGN's public address: a check from one to the other reaches
it only if the CGN hairpins (RFC 4787 REQ-9), and then carries the sender's external address.
"""

from __future__ import annotations

from typing import Any

from ice.nat.behaviour import NatBehaviour
from ice.topology import TopologyBuilder, TopologySpec, behaviour, conditions, mn_topos


def build(home_a: NatBehaviour | str = "port-restricted-cone", home_b: NatBehaviour | str = "port-restricted-cone",
          cgn: NatBehaviour | str = "eim-eif", **link: Any) -> TopologySpec:
    """A (192.168.1.2) and B (192.168.2.2) behind home NATs on the CGN's LAN 100.64.0.0/24, one CGN to 203.0.113.1."""
    b = TopologyBuilder("shared_cgn")
    inet = b.public_segment()
    cgn_lan, cgn_gw = b.nat("cgn", behaviour(cgn), "100.64.0", inet)
    for peer, home, subnet, wan in (("a", home_a, "192.168.1", "100.64.0.2"), ("b", home_b, "192.168.2", "100.64.0.3")):
        # Link conditions apply to A's home uplink, as in the other topologies (A's access link).
        lan, gw = b.nat(f"home-{peer}", behaviour(home), subnet, cgn_lan, wan_cidr=f"{wan}/24", gateway=cgn_gw,
                        impairments=conditions(**link) if peer == "a" else None)
        b.private_host(peer, lan, f"{subnet}.2", gw)
    return b.spec()


topos = mn_topos("shared_cgn", build)
