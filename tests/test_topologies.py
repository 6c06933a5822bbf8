"""Topology modules as data (no root): specs, addressing rules, and the `mn --custom` Topo they export."""

from __future__ import annotations

import ipaddress

import pytest

from ice.lab.mn import interface_names
from ice.lab.mnstub import mn_names
from ice.lab.topo import TOPOLOGY_DIR, _load, registry

PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "192.168.0.0/16", "100.64.0.0/10")]


@pytest.mark.parametrize("name", sorted(registry()))
def test_public_segment_has_no_route_to_private_space(name: str) -> None:
    spec = registry()[name]()
    assert spec.node("stun").routes == ()  # the STUN/TURN host only knows its own /24
    stun_ips = [ipaddress.ip_interface(c).ip for _, end in spec.ends("stun") for c in end.addresses]
    assert len(stun_ips) == 2 and not any(ip in net for ip in stun_ips for net in PRIVATE)
    assert spec.facts["stun_primary"] == "203.0.113.10:3478" and spec.facts["stun_alternate"] == "203.0.113.11:3479"


@pytest.mark.parametrize("name", sorted(registry()))
def test_interface_names_fit_ifnamsiz(name: str) -> None:
    spec = registry()[name]()
    for prefix_len in (6,):  # Lab prefixes are "i" + 4 base-36 digits + 1 counter digit, then the node index
        names = interface_names(spec, {n.name: "x" * prefix_len + str(i) for i, n in enumerate(spec.nodes)})
        assert max(len(v) for v in names.values()) <= 15
    assert max(len(v) for v in interface_names(spec, mn_names(spec)).values()) <= 15


def test_mn_custom_loading_works_with_debians_python() -> None:
    """Exactly what `mn --custom FILE --topo two_nats,full-cone,symmetric` does: exec the file into a dict under
    Debian's /usr/bin/python3 (no venv), then call topos["two_nats"]("full-cone", "symmetric")."""
    import subprocess

    path = TOPOLOGY_DIR / "two_nats.py"
    code = (f"d = {{}}; exec(compile(open({str(path)!r}).read(), {str(path)!r}, 'exec'), d, d); "
            "t = d['topos']['two_nats']('full-cone', 'symmetric'); print(len(t.hosts()), len(t.links()))")
    p = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, cwd="/")
    assert p.returncode == 0, p.stderr
    spec = _load(path).build("full-cone", "symmetric")
    assert p.stdout.split() == [str(len(spec.nodes)), str(len(spec.links))]


def test_mn_custom_topo_mirrors_the_spec() -> None:
    module = _load(TOPOLOGY_DIR / "two_nats.py")
    topo = module.topos["two_nats"]("full-cone", "symmetric")
    spec = module.build("full-cone", "symmetric")
    assert sorted(topo.hosts()) == sorted(mn_names(spec).values())
    assert len(topo.links()) == len(spec.links)
    nat_a = spec.node("nat-a")
    assert nat_a.nat is not None and nat_a.nat.name == "eim-eif" and spec.node("nat-b").nat.name == "apdm-apdf"  # type: ignore[union-attr]
