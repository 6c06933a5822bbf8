"""The harness used from outside the repository: scenario files (TOML and Python) and topology directories anywhere,
NATs as data in cells, pins beside each file, and an installed wheel that works without the source checkout."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ice.errors import UserError
from ice.scenario.cell import Cell, NatChoice
from ice.scenario.suite import Suite, load_file
from ice.topology.registry import Topologies

ROOT = Path(__file__).resolve().parents[1]
ICELAB = [sys.executable, "-m", "ice.cli"]

SHOP_TOPOLOGY = '''
"""corner_shop: peer A behind a shop's NAT; peer B on a public address."""
from ice.lab.topo import TopologyBuilder, behaviour


def build(shop="port-restricted-cone"):
    """Peer A (10.9.0.2) behind the shop NAT; peer B public."""
    b = TopologyBuilder("corner_shop")
    inet = b.public_segment()
    b.peer("a", behaviour(shop), inet, "10.9.0")
    b.public_host("b", inet)
    return b.spec()
'''

SHOP_CELLS = '''
[[cells]]
name = "shop-cone"
topology = "corner_shop"
nats = { shop = "eim-apdf" }

[[cells]]
name = "shop-symmetric-nohairpin"
topology = "corner_shop"
nats = { shop = { preset = "apdm-apdf", hairpinning = false } }
'''


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A user's project: a topology directory and a scenario file, nowhere near the repository."""
    (tmp_path / "topos").mkdir()
    (tmp_path / "topos" / "corner_shop.py").write_text(SHOP_TOPOLOGY)
    (tmp_path / "shop.toml").write_text(SHOP_CELLS)
    return tmp_path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ICELAB, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_scenario_file_and_topologies_from_elsewhere_run_unpinned_then_pinned(user_dir: Path) -> None:
    out = user_dir / "out"
    p = run_cli("run", "--backend", "sim", "--topologies", "topos", "shop.toml", "--out", str(out), cwd=user_dir)
    assert p.returncode == 0, p.stderr + p.stdout
    cells = {c["scenario"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert set(cells) == {"shop-cone", "shop-symmetric-nohairpin"}
    for c in cells.values():  # judged by the reasoning, reported as unpinned
        assert c["status"] == "pass" and c["observed"] == "direct" and c["pinned"] is False
        assert c["topology"] == "corner_shop" and c["source"] == "shop.toml"
    assert cells["shop-symmetric-nohairpin"]["nats"] == {"shop": "apdm-apdf (hairpinning=false)"}
    assert cells["shop-symmetric-nohairpin"]["config"]["nats"] == {"shop": {"preset": "apdm-apdf",
                                                                           "hairpinning": False}}
    assert "unpinned (judged by the reasoning" in p.stdout
    assert cells["shop-cone"]["repro"] == (f"{ROOT / 'icelab'} run {user_dir / 'shop.toml'} --topologies "
                                           f"{user_dir / 'topos'} --backend sim --scenario shop-cone --out "
                                           f"{out / 'repro' / 'shop-cone'}")  # run from elsewhere: absolute paths
    # --update-expectations writes the pins beside the file; the next run is pinned
    p = run_cli("run", "--topologies", "topos", "shop.toml", "--update-expectations", cwd=user_dir)
    assert p.returncode == 0 and "wrote 2 expectations to shop.expected.json" in p.stdout, p.stderr
    pins = json.loads((user_dir / "shop.expected.json").read_text())
    assert pins["shop-cone"]["path"] == "direct" and pins["shop-cone"]["never"] == ["host-host"]
    p = run_cli("run", "--backend", "sim", "--topologies", "topos", "shop.toml", "--out", str(out), "-q",
                cwd=user_dir)
    assert p.returncode == 0 and "unpinned" not in p.stdout
    assert all(c["pinned"] for c in json.loads((out / "results.json").read_text())["cells"])


def test_a_python_scenario_module_and_the_matrix_form(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(textwrap.dedent('''
        from ice.scenario.cell import Cell, NatChoice

        def cells():
            yield {"name": "table-cell", "topology": "two_nats", "nats": {"nat_a": "eim-eif", "nat_b": "apdm-apdf"}}
            yield Cell("object-cell", "same_nat", (("nat", NatChoice("eim-apdf")),), group="mine")
    '''))
    (tmp_path / "grid.toml").write_text(textwrap.dedent('''
        [defaults]
        turn = false

        [[matrix]]
        topology = "double_nat"
        name = "dn-{inner}-{outer.preset}x{nat_b}"
        nats.inner = ["eim-apdf"]
        nats.outer = ["eim-eif", { preset = "apdm-apdf", port_preservation = false }]
        nats.nat_b = "eim-adf"
    '''))
    suite = Suite.load([tmp_path / "mine.py", tmp_path / "grid.toml"])
    names = [c.name for c in suite.cells]
    assert names == ["table-cell", "object-cell", "dn-eim-apdf-eim-eifxeim-adf", "dn-eim-apdf-apdm-apdfxeim-adf"]
    by = {c.name: c for c in suite.cells}
    assert by["table-cell"].group == "mine" and by["object-cell"].topology == "same_nat"
    grid = by["dn-eim-apdf-apdm-apdfxeim-adf"]
    assert grid.turn is False and grid.group == "grid" and not grid.behaviours()["outer"].port_preservation
    assert suite.expectation(grid)[1] is False  # no pins beside the file yet


@pytest.mark.parametrize(("table", "says"), [
    ({"name": "c", "nats": {"nat_a": {"preset": "eim-eif", "hairpining": False}}},
     "cell c: NAT role nat_a: hairpining is not a NAT field; valid fields: mapping, filtering"),
    ({"name": "c", "nats": {"nat_a": {"preset": "eim-eif", "hairpinning": "no"}}},
     "cell c: NAT role nat_a: hairpinning is true or false, not 'no'"),
    ({"name": "c", "nats": {"nat_a": {"preset": "eim-eif", "mapping_timeout": 0}}},
     "cell c: NAT role nat_a: eim-eif with mapping_timeout=0: mapping_timeout must be at least 1 second"),
    ({"name": "c", "nats": {"nat_a": {"hairpinning": False}}}, "cell c: NAT role nat_a: a NAT table needs preset"),
    ({"name": "c", "nats": {"nat_a": "fullcone"}}, "cell c: NAT role nat_a: unknown NAT preset 'fullcone'"),
    ({"name": "c", "topology": "two_nats", "turn": "yes"}, "cell c: turn is 'yes'; expected a bool"),
    ({"name": "c", "controling": "b"}, "cell c: unknown key controling"),
    ({"name": "c", "topology": "two_nats", "nomination": "eager"}, "cell c: nomination is 'regular' or 'aggressive'"),
    ({"name": "c", "nats": {"nat_a": "eim-eif"}}, "cell c: topology = \"NAME\" is missing"),
])
def test_bad_cells_are_one_sentence_naming_the_cell(table: dict[str, object], says: str) -> None:
    with pytest.raises(UserError) as err:
        Cell.from_table(table, "f.toml")
    assert str(err.value).startswith("f.toml: ") and says in str(err.value) and "\n" not in str(err.value)


def test_a_nat_table_overrides_fields_by_name() -> None:
    choice = NatChoice.parse({"preset": "eim-apdf", "hairpinning": False, "mapping_timeout": 30,
                              "filtering": "address-dependent", "port_range": [40000, 40999]})
    nat = choice.behaviour()
    assert (nat.hairpinning, nat.mapping_timeout, nat.filtering.short if nat.filtering else None) == (False, 30, "adf")
    assert nat.port_range == (40000, 40999) and choice.preset == "eim-apdf"
    assert choice.slug == "eim-apdf+hairpinning=false+mapping_timeout=30+filtering=address-dependent+" \
                          "port_range=40000-40999"
    assert NatChoice.parse(choice.as_json()) == choice  # JSON round trip, as workers receive cells


def test_roles_and_hosts_are_checked_when_the_file_loads(tmp_path: Path, user_dir: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[cells]]\nname = "x"\ntopology = "two_nats"\nnats = { nat_c = "eim-eif" }\n')
    with pytest.raises(UserError, match=r"bad\.toml, cell x: topology two_nats has no NAT role nat_c; its roles are "
                                        "nat_a, nat_b"):
        Suite.load([bad])
    bad.write_text('[[cells]]\nname = "x"\ntopology = "corner_shop"\nloss = 0.1\n')
    with pytest.raises(UserError, match="cell x: topology corner_shop takes no link conditions"):
        Suite.load([bad], Topologies([user_dir / "topos"]))
    bad.write_text('[[cells]]\nname = "x"\ntopology = "corner_shop"\n')
    with pytest.raises(UserError, match=r"unknown topology 'corner_shop'.*need --topologies DIR"):
        Suite.load([bad])
    bad.write_text('[[matrix]]\ntopology = "two_nats"\nname = "{nat_c}"\nnats.nat_a = ["eim-eif"]\n')
    with pytest.raises(UserError, match=r"the name template '\{nat_c\}' names 'nat_c', which is not a role"):
        Suite.load([bad])
    bad.write_text('[defaults]\ntopology = "two_nats"\n[[cells]]\nname = "x"\n[[cells]]\nname = "x"\n')
    with pytest.raises(UserError, match="cell x is defined twice"):
        Suite.load([bad])
    bad.write_text("[[cells]\n")
    with pytest.raises(UserError, match="is not valid TOML"):
        Suite.load([bad])
    with pytest.raises(UserError, match=r"scenario file .*nope\.toml does not exist"):
        load_file(tmp_path / "nope.toml")


def test_the_cli_says_what_is_wrong_in_one_sentence(user_dir: Path) -> None:
    (user_dir / "typo.toml").write_text('[[cells]]\nname = "x"\ntopology = "two_nats"\nnats = { nat_a = { '
                                        'preset = "eim-eif", hairpin = false } }\n')
    p = run_cli("run", "--backend", "sim", "typo.toml", cwd=user_dir)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == ("icelab: typo.toml: cell x: NAT role nat_a: hairpin is not a NAT field; valid "
                                "fields: mapping, filtering, kind, port_preservation, hairpinning, "
                                "mapping_timeout, inbound_refresh, port_range, allowed_tcp_ports, tcp")


def test_topo_list_shows_roles_and_outside_topologies(user_dir: Path) -> None:
    p = run_cli("topo", "list", "--json", "--topologies", "topos", cwd=user_dir)
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)["topologies"]}
    assert rows["corner_shop"]["roles"] == ["shop"] and rows["corner_shop"]["origin"].endswith("corner_shop.py")
    assert rows["shared_cgn"]["roles"] == ["home_a", "home_b", "cgn"] and rows["two_nats"]["link_conditions"]


@pytest.mark.parametrize("backend", ["sim", pytest.param("lab", marks=pytest.mark.lab)])
def test_the_new_topologies_agree_across_backends(backend: str, tmp_path: Path) -> None:
    """scenarios/cgn.toml: a shared carrier-grade NAT with and without hairpinning, and three NAT levels; on the
    lab every cell is also run in the sim and the two must agree."""
    p = run_cli("run", "--backend", backend, "-j", "2", str(ROOT / "scenarios" / "cgn.toml"), "--out",
                str(tmp_path), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    cells = {c["scenario"]: c for c in json.loads((tmp_path / "results.json").read_text())["cells"]}
    assert all(c["pinned"] and c["status"] == "pass" for c in cells.values())
    assert cells["shared-cgn-eim-eif-eim-apdfxeim-apdf"]["observed"] == "direct"
    assert cells["shared-cgn-eim-eif-nohairpin-eim-apdfxeim-apdf"]["observed"] == "relay"
    assert cells["shared-cgn-nohairpin-no-turn"]["observed"] == "none"
    if backend == "lab":
        assert all(c["sim_observed"] == c["observed"] for c in cells.values())


@pytest.mark.lab
def test_a_scenario_file_from_elsewhere_in_the_kernel_lab(user_dir: Path) -> None:
    out = user_dir / "lab"
    p = run_cli("run", "--backend", "lab", "--topologies", "topos", "shop.toml", "--out", str(out), "-q",
                cwd=user_dir)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    cells = json.loads((out / "results.json").read_text())["cells"]
    assert [(c["scenario"], c["observed"], c["sim_observed"]) for c in cells] == [
        ("shop-cone", "direct", "direct"), ("shop-symmetric-nohairpin", "direct", "direct")]


@pytest.mark.slow
def test_the_built_wheel_works_installed_outside_the_repository(tmp_path: Path, user_dir: Path) -> None:
    """pip wheel, a fresh venv (Debian's python, as provisioning makes it) in a temporary directory, pip install;
    then, from a directory with no icelab source in sight: topo list, the default suite in the sim, and a user's
    scenario file with its own topologies."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ice", src / "ice", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    p = subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        *map(str, wheels.glob("*.whl"))], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    elsewhere = user_dir
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    icelab = str(venv / "bin" / "icelab")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([icelab, *args], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import ice; print(ice.__file__)"],
                           capture_output=True, text=True, cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed package, not the checkout
    p = run("topo", "list")
    assert p.returncode == 0, p.stderr
    for name in ("two_nats", "same_nat", "double_nat", "shared_cgn", "triple_nat"):
        assert name in p.stdout
    p = run("run", "--backend", "sim", "-q", "--out", "default")
    assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-1000:]
    doc = json.loads((elsewhere / "default" / "results.json").read_text())
    assert len(doc["cells"]) == 104 and all(c["pinned"] for c in doc["cells"]) and doc["failed"] == 0
    p = run("run", "--backend", "sim", "--topologies", "topos", "shop.toml", "-q", "--out", "shop")
    assert p.returncode == 0, p.stdout[-1000:] + p.stderr[-1000:]
    assert json.loads((elsewhere / "shop" / "results.json").read_text())["passed"] == 2


@pytest.mark.parametrize(("body", "says"), [
    ("from ice.lab.topo import TopologyBuilder\n\ndef build(x='eim-eif'):\n    b = TopologyBuilder('t')\n"
     "    b.public_segment()\n    return b.spec()\n", "has no host named 'a'"),
    ("from ice.lab.topo import TopologyBuilder\n\ndef build(x='eim-eif'):\n    b = TopologyBuilder('t')\n"
     "    b.switch('inet')\n    b.public_host('a', 'inet')\n    b.public_host('b', 'inet')\n    return b.spec()\n",
     "has no stun_primary fact"),
    ("def build(x='eim-eif'):\n    return 1 / 0\n", "build() failed: ZeroDivisionError"),
])
def test_a_topology_a_cell_cannot_run_in_is_one_sentence(tmp_path: Path, body: str, says: str) -> None:
    (tmp_path / "topos").mkdir()
    (tmp_path / "topos" / "t.py").write_text(body)
    (tmp_path / "c.toml").write_text('[[cells]]\nname = "x"\ntopology = "t"\n')
    with pytest.raises(UserError) as err:
        Suite.load([tmp_path / "c.toml"], Topologies([tmp_path / "topos"]))
    assert "c.toml, cell x: " in str(err.value) and says in str(err.value)


@pytest.mark.parametrize(("topology", "nats", "node", "role"), [
    ("double_nat", '{ outer = "none" }', "cgn", "outer"),
    ("shared_cgn", '{ cgn = "none" }', "cgn", "cgn"),
    ("shared_cgn", '{ home_a = "none" }', "home-a", "home_a"),
    ("triple_nat", '{ building = "none" }', "building", "building"),
    ("double_nat", '{ outer = { preset = "eim-eif", kind = "none" } }', "cgn", "outer"),
])
def test_none_where_the_topology_places_a_nat_box_is_one_sentence(tmp_path: Path, topology: str, nats: str,
                                                                  node: str, role: str) -> None:
    (tmp_path / "c.toml").write_text(f'[[cells]]\nname = "x"\ntopology = "{topology}"\nnats = {nats}\n')
    with pytest.raises(UserError) as err:
        Suite.load([tmp_path / "c.toml"])
    assert str(err.value) == (f"{tmp_path / 'c.toml'}, cell x: NAT {node}: 'none' (no NAT) cannot stand here; only "
                              f"roles that place a peer (TopologyBuilder.peer) take it (the cell sets {role} to none)")


def test_none_in_a_nat_box_role_is_exit_2_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('[[cells]]\nname = "x"\ntopology = "shared_cgn"\nnats = { cgn = "none" }\n')
    p = run_cli("run", "c.toml", "--backend", "sim", "--out", "out", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("icelab: c.toml, cell x: NAT cgn: 'none' (no NAT) cannot stand here")


@pytest.mark.parametrize(("text", "says"), [
    ('cells = ["x"]\n', "cells entry 1 is 'x', not a table; write [[cells]] tables"),
    ("matrix = [1]\n", "matrix entry 1 is 1, not a table; write [[matrix]] tables"),
    ('[[cells]]\nname = "x"\ntopology = "two_nats"\nnats = { nat_a = { preset = "eim-eif", mapping = [1] } }\n',
     "cell x: NAT role nat_a: mapping is [1], not one of"),
    ('[[cells]]\nname = "x"\ntopology = "two_nats"\nnats = { nat_a = { preset = "eim-eif", filtering = { a = 1 } } '
     "}\n", "cell x: NAT role nat_a: filtering is {'a': 1}, not one of"),
])
def test_malformed_scenario_files_are_one_sentence(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(UserError) as err:
        Suite.load([tmp_path / "c.toml"])
    assert str(err.value).startswith(f"{tmp_path / 'c.toml'}: ") and says in str(err.value), str(err.value)


def test_update_pins_with_an_entry_that_is_not_an_object_is_one_sentence(user_dir: Path) -> None:
    (user_dir / "shop.expected.json").write_text('{"shop-cone": "direct"}\n')
    suite = Suite.load([user_dir / "shop.toml"], Topologies([user_dir / "topos"]))
    with pytest.raises(UserError, match=r"shop\.expected\.json: the entry for shop-cone is 'direct', not an object"):
        suite.update_pins()


def test_a_missing_topologies_directory_is_not_blamed_on_a_cell(user_dir: Path) -> None:
    p = run_cli("run", "--backend", "sim", "--topologies", "nonexist", "shop.toml", cwd=user_dir)
    assert p.returncode == 2 and p.stderr == "icelab: --topologies nonexist: no such directory\n", p.stderr


@pytest.mark.parametrize(("body", "args", "says"), [
    ("def build(x='eim-eif'):\n    return 1 / 0\n", [], "topology t's build() failed: ZeroDivisionError: division by "
     "zero"),
    ("from ice.topology import TopologyBuilder\n\ndef build(x='eim-eif'):\n    b = TopologyBuilder('t')\n"
     "    b.switch('inet')\n    b.public_host('a', 'inet')\n    return b.spec()\n", [],
     "topology t has no stun_primary fact: give it a public segment (TopologyBuilder.public_segment())"),
    ("", ["double_nat", "eim-eif", "none"], "topology double_nat: NAT cgn: 'none' (no NAT) cannot stand here"),
])
def test_topo_check_of_a_topology_that_cannot_build_is_one_sentence(tmp_path: Path, body: str, args: list[str],
                                                                    says: str) -> None:
    (tmp_path / "topos").mkdir()
    (tmp_path / "topos" / "t.py").write_text(body or "def build(x='eim-eif'):\n    return 1 / 0\n")
    p = run_cli("topo", "check", *(args or ["t"]), "--topologies", "topos", cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"icelab: {says}"), p.stderr


@pytest.mark.parametrize(("name", "text", "says"), [
    ("c.toml", '[[matrix]]\ntopology = "two_nats"\nnats.nat_a = []\nnats.nat_b = ["eim-eif"]\n',
     ", matrix 1: NAT role nat_a is an empty list, so the matrix has no cells"),
    ("c.toml", '[defaults]\ntopology = "two_nats"\n', " has no cells: a scenario file holds [[cells]] or [[matrix]] "
     "tables"),
    ("c.toml", "", " has no cells: a scenario file holds [[cells]] or [[matrix]] tables"),
    ("c.py", "def cells():\n    return []\n", " has no cells: its cells() returned none"),
])
def test_a_file_or_matrix_without_cells_is_one_sentence(tmp_path: Path, name: str, text: str, says: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError) as err:
        Suite.load([tmp_path / name])
    assert str(err.value).startswith(f"{tmp_path / name}{says}"), str(err.value)
    p = run_cli("run", "--backend", "sim", name, "--out", "out", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith(f"icelab: {name}{says}"), p.stderr


def test_presets_still_fill_the_empty_roles_of_the_presets_matrix() -> None:
    suite = Suite.load(presets=["eim-eif", "apdm-apdf"])
    assert [c.name for c in suite.cells] == ["eim-eifxeim-eif", "eim-eifxapdm-apdf", "apdm-apdfxeim-eif",
                                             "apdm-apdfxapdm-apdf"]


def test_two_files_sharing_a_pin_file_are_refused(user_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (user_dir / "shop.py").write_text('def cells():\n    return [{"name": "py", "topology": "two_nats"}]\n')
    monkeypatch.delenv("ICELAB_EXPECTATIONS", raising=False)
    with pytest.raises(UserError) as err:
        Suite.load([user_dir / "shop.toml", user_dir / "shop.py"], Topologies([user_dir / "topos"]))
    assert str(err.value) == (f"{user_dir / 'shop.toml'} and {user_dir / 'shop.py'} would share the pins "
                              f"{user_dir / 'shop.expected.json'}; rename one")


def test_update_pins_writes_a_shared_pin_file_once_with_every_files_cells(user_dir: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (user_dir / "other.py").write_text('def cells():\n    return [{"name": "py", "topology": "two_nats"}]\n')
    pins = user_dir / "all.json"
    pins.write_text('{"py": {"path": "direct", "known_failure": "kept"}}\n')
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(pins))
    suite = Suite.load([user_dir / "shop.toml", user_dir / "other.py"], Topologies([user_dir / "topos"]))
    ((path, count, _, kept),) = suite.update_pins()
    assert path == pins and count == 3 and kept == 1
    doc = json.loads(pins.read_text())
    assert set(doc) == {"shop-cone", "shop-symmetric-nohairpin", "py"} and doc["py"]["known_failure"] == "kept"


def test_python_cells_default_to_their_files_group_and_a_taken_grid_position_is_listed(tmp_path: Path) -> None:
    from ice.report.html import html_grid
    from ice.report.markdown import markdown_grid
    from ice.report.text import grid, others, terminal_grid
    from ice.scenario.cell import PathKind
    from ice.scenario.result import CellResult

    (tmp_path / "mine.py").write_text(textwrap.dedent('''
        from ice.scenario.cell import Cell, NatChoice

        def cells():
            yield Cell("obj", "two_nats", (("nat_a", NatChoice("eim-eif")), ("nat_b", NatChoice("eim-eif"))))
            yield {"name": "table", "topology": "two_nats", "nats": {"nat_a": "eim-eif"}}
    '''))
    suite = Suite.load([tmp_path / "mine.py"])
    assert [c.group for c in suite.cells] == ["mine", "mine"]
    assert Cell("c", "two_nats").group == ""
    one = dataclasses.replace(suite.cells[0], group="rfc4787")  # two cells at one grid position
    two = Cell("second", one.topology, one.nats, group="rfc4787")
    results = [CellResult(c, "sim", PathKind.DIRECT, PathKind.DIRECT, None, 0.1) for c in (one, two)]
    rows, cols, cells = grid(results)
    assert (rows, cols, [r.cell.name for r in cells.values()]) == (["eim-eif"], ["eim-eif"], ["obj"])
    assert [r.cell.name for r in others(results)] == ["second"]
    assert "second" in terminal_grid(results) and "second" in markdown_grid(results)
    page = html_grid(results, "sim", 0.1)
    assert 'data-cell="obj"' in page and 'data-cell="second"' in page


@pytest.mark.parametrize("name", ["..", ".hidden", "a b", "x;rm", "a/b", "$(id)", "é", ""])
def test_cell_names_are_safe_words(name: str) -> None:
    with pytest.raises(ValueError, match="may hold only letters, digits and"):
        Cell(name, "two_nats")


def test_matrix_slugs_are_valid_cell_names() -> None:
    choice = NatChoice.parse({"preset": "eim-apdf", "hairpinning": False, "port_range": [40000, 40999],
                              "allowed_tcp_ports": [443, 3478], "filtering": "adf"})
    assert choice.slug == "eim-apdf+hairpinning=false+port_range=40000-40999+allowed_tcp_ports=443.3478+" \
                          "filtering=address-dependent"
    assert Cell(f"x-{choice.slug}", "two_nats").name.endswith("allowed_tcp_ports=443.3478+filtering=address-dependent")


def test_the_repro_line_pastes_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    import ice.scenario.suite as suite_module

    odd = tmp_path / "my cells"
    (odd / "topos dir").mkdir(parents=True)
    (odd / "topos dir" / "corner_shop.py").write_text(SHOP_TOPOLOGY)
    (odd / "shop's.toml").write_text(SHOP_CELLS)
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(odd / "pins file.json"))
    (odd / "pins file.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    suite = Suite.load([Path("my cells/shop's.toml")], Topologies([Path("my cells/topos dir")]))
    line = suite.repro(suite.cells[0])
    assert shlex.split(line) == ["sudo", f"ICELAB_EXPECTATIONS={odd / 'pins file.json'}", str(ROOT / "icelab"),
                                 "run", str(odd / "shop's.toml"), "--topologies", str(odd / "topos dir"), "--backend",
                                 "lab", "--scenario", "shop-cone", "--keep-artifacts", "--out",
                                 str(tmp_path / "results" / "repro" / "shop-cone")]  # not wherever it is pasted
    suite.out = Path("elsewhere/reports")
    assert shlex.split(suite.repro(suite.cells[0]))[-1] == str(tmp_path / "elsewhere" / "reports" / "repro" /
                                                              "shop-cone")
    monkeypatch.delenv("ICELAB_EXPECTATIONS")
    monkeypatch.chdir(ROOT)
    assert suite.repro(suite.cells[0], "sim").startswith("./icelab run ")
    assert suite.repro(suite.cells[0], "sim").endswith(" --out elsewhere/reports/repro/shop-cone")  # in the root
    monkeypatch.chdir(tmp_path)  # the scenario file was named relative to it
    monkeypatch.setattr(suite_module, "__file__", str(tmp_path / "site-packages" / "ice" / "scenario" / "suite.py"))
    installed = suite.repro(suite.cells[0], "sim")  # no checkout around the package: the installed command
    assert shlex.split(installed)[:3] == ["icelab", "run", str(odd / "shop's.toml")]
