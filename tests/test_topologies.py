"""Topology modules as data (no root): specs, addressing rules, roles, where topologies come from, the stateless
forwarding view, and the `mn --custom` Topo they export."""

from __future__ import annotations

import ast
import ipaddress
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ice.errors import UserError
from ice.lab.mn import interface_names
from ice.lab.mnstub import mn_names
from ice.topology import builtin
from ice.topology.fabric import Fabric
from ice.topology.registry import Topologies, load_file, topology

PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]
BUILTIN_DIR = Path(builtin.__file__).parent
BUILTINS = sorted(Topologies(entry_points=False).all())


def test_the_built_in_topologies_and_their_roles() -> None:
    found = Topologies(entry_points=False).all()
    assert set(found) == {"two_nats", "same_nat", "double_nat", "one_public", "udp_blocked", "shared_cgn",
                          "triple_nat"}
    assert found["two_nats"].roles == ("nat_a", "nat_b") and found["two_nats"].takes_link
    assert found["double_nat"].roles == ("inner", "outer", "nat_b")
    assert found["shared_cgn"].roles == ("home_a", "home_b", "cgn")
    assert dict(found["shared_cgn"].defaults)["cgn"] == "eim-eif"
    assert found["triple_nat"].roles == ("home", "building", "cgn", "nat_b")
    assert all(t.origin == "built-in" and t.description for t in found.values())


def test_unknown_names_roles_presets_and_conditions_are_one_sentence() -> None:
    with pytest.raises(UserError, match="unknown topology 'two_nat'; valid topologies: double_nat"):
        topology("two_nat")
    with pytest.raises(UserError, match="unknown NAT preset 'fullcone'"):
        topology("two_nats", "fullcone")
    with pytest.raises(UserError, match="topology two_nats has no NAT role nat_c; its roles are nat_a, nat_b"):
        Topologies().get("two_nats").spec({"nat_c": "eim-eif"})
    with pytest.raises(UserError, match="unknown link condition bandwidth"):
        Topologies().get("two_nats").spec(bandwidth=3)
    with pytest.raises(UserError, match="has 2 NAT role"):
        topology("two_nats", "eim-eif", "eim-eif", "eim-eif")


@pytest.mark.parametrize("name", BUILTINS)
def test_public_segment_has_no_route_to_private_space(name: str) -> None:
    spec = topology(name)
    assert spec.node("stun").routes == ()  # the STUN/TURN host only knows its own /24
    stun_ips = [ipaddress.ip_interface(c).ip for _, end in spec.ends("stun") for c in end.addresses]
    assert len(stun_ips) == 2 and not any(ip in net for ip in stun_ips for net in PRIVATE)
    assert spec.facts["stun_primary"] == "203.0.113.10:3478" and spec.facts["stun_alternate"] == "203.0.113.11:3479"
    fabric = Fabric(spec)
    for peer in ("a", "b"):
        for ip in fabric.addresses(peer):
            if any(ipaddress.ip_address(ip) in net for net in PRIVATE):
                assert fabric.walk("stun", ip).reached is None  # nothing on the public side reaches a private host


@pytest.mark.parametrize("name", BUILTINS)
def test_interface_names_fit_ifnamsiz(name: str) -> None:
    spec = topology(name)
    for prefix_len in (6,):  # Lab prefixes are "i" + 4 base-36 digits + 1 counter digit, then the node index
        names = interface_names(spec, {n.name: "x" * prefix_len + str(i) for i, n in enumerate(spec.nodes)})
        assert max(len(v) for v in names.values()) <= 15
    assert max(len(v) for v in interface_names(spec, mn_names(spec)).values()) <= 15


@pytest.mark.parametrize(("name", "chain_a", "chain_b"), [
    ("two_nats", ("nat-a",), ("nat-b",)),
    ("same_nat", ("nat",), ("nat",)),
    ("double_nat", ("home", "cgn"), ()),
    ("shared_cgn", ("home-a", "cgn"), ("home-b", "cgn")),
    ("triple_nat", ("home", "building", "cgn"), ("nat-b",)),
])
def test_the_fabric_finds_the_nats_between_each_peer_and_the_internet(name: str, chain_a: tuple[str, ...],
                                                                       chain_b: tuple[str, ...]) -> None:
    fabric = Fabric(topology(name))
    for peer, chain in (("a", chain_a), ("b", chain_b)):
        walk = fabric.walk(peer, "203.0.113.10")
        assert walk.reached == "stun" and walk.translated_by == chain
    to_b = fabric.walk("a", fabric.addresses("b")[0])
    assert (to_b.reached == "b" and not to_b.translated_by) is (name == "same_nat")  # host to host: one LAN only


def _write(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


SHOP = """
    from ice.topology import TopologyBuilder, behaviour


    def build(shop="port-restricted-cone"):
        \"\"\"Peer A behind a shop's NAT; B public.\"\"\"
        b = TopologyBuilder("corner_shop")
        inet = b.public_segment()
        b.peer("a", behaviour(shop), inet, "10.9.0")
        b.public_host("b", inet)
        return b.spec()
"""


def test_topologies_from_a_directory_join_the_built_in_ones(tmp_path: Path) -> None:
    _write(tmp_path, "corner_shop", SHOP)
    _write(tmp_path, "_helpers", "X = 1\n")  # helpers are not topologies
    found = Topologies([tmp_path]).all()
    shop = found["corner_shop"]
    assert shop.roles == ("shop",) and not shop.takes_link and shop.origin == str(tmp_path / "corner_shop.py")
    assert "_helpers" not in found and "two_nats" in found
    spec = shop.spec({"shop": "symmetric"})
    assert spec.node("nat-a").nat is not None and spec.node("nat-a").nat.name == "apdm-apdf"
    with pytest.raises(UserError, match="takes no link conditions"):
        shop.spec(loss=0.1)


def test_a_name_defined_twice_or_a_broken_file_is_one_sentence(tmp_path: Path) -> None:
    _write(tmp_path, "two_nats", SHOP)
    with pytest.raises(UserError, match=r"topology two_nats is defined twice \(built-in and .*two_nats.py\)"):
        Topologies([tmp_path]).all()
    _write(tmp_path / "bad", "broken", "import no_such_module\n")
    with pytest.raises(UserError, match=r"broken\.py does not import: ModuleNotFoundError"):
        Topologies([tmp_path / "bad"]).all()
    with pytest.raises(UserError, match=r"--topologies .*nowhere: no such directory"):
        Topologies([tmp_path / "nowhere"]).all()


def test_an_entry_point_adds_a_topology(tmp_path: Path) -> None:
    """A distribution that declares ``[project.entry-points."icelab.topologies"] corner_shop = "mod"`` (here: a
    .dist-info on sys.path, as pip would install it) adds its topology to every run, CLI included."""
    site = tmp_path / "site"
    _write(site, "shop_topos", SHOP)
    info = site / "shoptopos-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shoptopos\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[icelab.topologies]\ncorner_shop = shop_topos\n")
    code = ("from ice.topology.registry import Topologies; t = Topologies().get('corner_shop'); "
            "print(t.roles, t.origin)")
    env = {"PYTHONPATH": f"{site}:{Path(__file__).parents[1]}"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "('shop',) entry point corner_shop (shop_topos)"


def test_mn_custom_loading_works_with_debians_python() -> None:
    """Exactly what `mn --custom FILE --topo two_nats,full-cone,symmetric` does: exec the file into a dict under
    Debian's /usr/bin/python3 (no venv; icelab importable, as docs/lab.md says), then call
    topos["two_nats"]("full-cone", "symmetric")."""
    path = BUILTIN_DIR / "two_nats.py"
    code = (f"d = {{}}; exec(compile(open({str(path)!r}).read(), {str(path)!r}, 'exec'), d, d); "
            "t = d['topos']['two_nats']('full-cone', 'symmetric'); print(len(t.hosts()), len(t.links()))")
    p = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True, cwd="/",
                       env={"PYTHONPATH": str(Path(__file__).parents[1])})
    assert p.returncode == 0, p.stderr
    spec = load_file(path).build("full-cone", "symmetric")
    assert p.stdout.split() == [str(len(spec.nodes)), str(len(spec.links))]


def test_mn_custom_topo_mirrors_the_spec() -> None:
    module = load_file(BUILTIN_DIR / "two_nats.py")
    topo = module.topos["two_nats"]("full-cone", "symmetric")
    spec = module.build("full-cone", "symmetric")
    assert sorted(topo.hosts()) == sorted(mn_names(spec).values())
    assert len(topo.links()) == len(spec.links)
    nat_a = spec.node("nat-a")
    assert nat_a.nat is not None and nat_a.nat.name == "eim-eif" and spec.node("nat-b").nat.name == "apdm-apdf"  # type: ignore[union-attr]


def test_topology_files_carry_no_path_hacks() -> None:
    for path in BUILTIN_DIR.glob("*.py"):
        assert "sys.path" not in path.read_text(), path


LOWER = ("ice/topology", "ice/sim")
HIGHER = ("ice.lab", "ice.scenario", "ice.report", "ice.cli")


def _top_level_imports(path: Path) -> list[str]:
    """Modules a file imports when it is imported: module-level statements (including ``if``/``try`` blocks), not
    the bodies of functions or classes (lazy imports are fine)."""
    found: list[str] = []
    todo: list[ast.stmt] = list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
    return found


def test_topologies_and_the_sim_never_import_the_layers_above_them() -> None:
    """``ice/topology/`` (pure data) and ``ice/sim/`` sit below the lab, the scenarios, the reports and the CLI:
    none of their modules imports those at module level (a function may import the lab lazily, as ``mn_topos``
    does when Mininet calls it), and importing them (built-in topologies included) loads none of them."""
    root = Path(__file__).parents[1]
    bad = [f"{path.relative_to(root)} imports {name}" for d in LOWER for path in sorted((root / d).rglob("*.py"))
           for name in _top_level_imports(path) if name.startswith(HIGHER)]
    assert not bad
    # The scenarios sit below the reports and the CLI, anywhere in a module (they print and write nothing).
    above = [f"{path.relative_to(root)} imports {name}" for path in sorted((root / "ice/scenario").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                          [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
             if name.startswith(("ice.report", "ice.cli"))]
    assert not above
    code = ("import sys, ice.topology, ice.topology.registry, ice.topology.fabric, ice.sim.network, ice.sim.scenario\n"
            "ice.topology.registry.Topologies(entry_points=False).all()\n"
            f"print(' '.join(sorted(m for m in sys.modules if m.startswith({HIGHER!r}))))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""


def test_the_older_import_path_names_the_same_authoring_api() -> None:
    import ice.lab.topo
    import ice.topology

    for name in ice.topology.__all__:
        assert getattr(ice.lab.topo, name) is getattr(ice.topology, name)


def test_nat_roles_are_parameters_defaulting_to_a_preset_or_without_default(tmp_path: Path) -> None:
    """A parameter is a NAT role when its default is a preset name or a NatBehaviour, or when it has none; any
    other parameter (``subnet="10.9.0"``) is the file's own option, which a cell cannot set."""
    _write(tmp_path, "options", """
        from ice.nat.behaviour import preset
        from ice.topology import TopologyBuilder, behaviour


        def build(shop, home=preset("eim-adf"), isp="symmetric", subnet="10.9.0", hairpin=True, wan=None, **link):
            \"\"\"Peer A behind home behind shop behind isp; B public.\"\"\"
            b = TopologyBuilder("options")
            inet = b.public_segment()
            isp_lan, isp_gw = b.nat("isp", behaviour(isp), "100.64.0", inet)
            shop_lan, shop_gw = b.nat("shop", behaviour(shop), "172.16.0", isp_lan, wan_cidr="100.64.0.2/24",
                                      gateway=isp_gw)
            home_lan, home_gw = b.nat("home", behaviour(home), subnet, shop_lan, wan_cidr="172.16.0.2/24",
                                      gateway=shop_gw)
            b.private_host("a", home_lan, f"{subnet}.2", home_gw)
            b.public_host("b", inet)
            b.facts["hairpin"] = str(hairpin)
            return b.spec()
    """)
    topo = Topologies([tmp_path]).get("options")
    assert topo.roles == ("shop", "home", "isp") and topo.options == ("subnet", "hairpin", "wan")
    assert topo.defaults == (("home", "eim-adf"), ("isp", "symmetric")) and topo.takes_link
    assert topo.positional(["eim-eif"]) == {"shop": "eim-eif"}
    spec = topo.spec({"shop": "eim-eif"})
    assert spec.node("a").name == "a" and "10.9.0.2" in Fabric(spec).addresses("a")
    with pytest.raises(UserError, match=r"topology options has no NAT role subnet; its roles are shop, home, isp "
                                        r"\(subnet: an option of its build\(\)"):
        topo.spec({"shop": "eim-eif", "subnet": "10.8.0"})
    for builtin_topo in Topologies(entry_points=False).all().values():  # every built-in parameter is a role
        assert builtin_topo.roles == tuple(r for r, _ in builtin_topo.defaults) and not builtin_topo.options


def test_forwarding_is_longest_prefix_match_over_connected_and_static_routes() -> None:
    """As in the kernel: a /24 static route via a gateway beats the /16 connected subnet that contains it; on an
    equal prefix the connected subnet wins. Host h sits on 10.1.0.0/16; 10.1.5.0/24 lies behind router gw."""
    from ice.topology import TopologyBuilder
    from ice.topology.spec import End, NodeKind, NodeSpec

    b = TopologyBuilder("lpm")
    lan = b.switch("lan")
    b.add(NodeSpec("h", routes=(("10.1.5.0/24", "10.1.0.1"), ("10.1.0.0/16", "10.1.0.1"))))
    b.link(End("h", ("10.1.0.2/16",)), End(lan))
    b.add(NodeSpec("neighbour"))
    b.link(End("neighbour", ("10.1.0.3/16",)), End(lan))
    b.add(NodeSpec("gw", NodeKind.ROUTER))
    b.link(End("gw", ("10.1.0.1/16",)), End(lan))
    b.add(NodeSpec("far", routes=(("default", "10.1.5.1"),)))
    b.link(End("gw", ("10.1.5.1/24",)), End("far", ("10.1.5.7/24",)))
    fabric = Fabric(b.spec())
    hop = fabric.step("h", "10.1.5.7")
    assert hop is not None and hop.next_node == "gw"  # the /24 route, not the /16 on-link delivery
    assert fabric.walk("h", "10.1.5.7").nodes == ("h", "gw", "far")
    hop = fabric.step("h", "10.1.0.3")
    assert hop is not None and hop.next_node == "neighbour"  # /16 connected beats the /16 static route
    assert fabric.walk("h", "10.1.0.3").nodes == ("h", "neighbour")
