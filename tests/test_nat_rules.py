"""NAT behaviours as data and their nftables compilation: golden files, kernel syntax check, user errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from conftest import ICELAB, ROOT
from golden_nat import GOLDEN, IFACES, cases

from ice.errors import UserError
from ice.lab.nat import PRESETS, Filtering, Mapping, NatInterfaces, NatKind, compile_ruleset, preset

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="loading nft rules needs root (run the suite as root)")


@pytest.mark.parametrize("name", sorted(cases()))
def test_ruleset_matches_golden_file(name: str) -> None:
    """The emitted text is pinned; after an intended change run scripts/update-golden and review the diff."""
    assert compile_ruleset(cases()[name], IFACES) == (GOLDEN / f"{name}.nft").read_text()


@root_only
@pytest.mark.parametrize("name", sorted(cases()))
def test_ruleset_loads_in_a_fresh_namespace(name: str) -> None:
    nft = shutil.which("nft")
    assert nft, "nft is not installed: scripts/provision.sh must install nftables"
    p = subprocess.run(["unshare", "--net", nft, "-f", str(GOLDEN / f"{name}.nft")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_every_rfc4787_combination_is_a_preset() -> None:
    for m in Mapping:
        for f in Filtering:
            b = preset(f"{m.short}-{f.short}")
            assert (b.mapping, b.filtering, b.kind) == (m, f, NatKind.ENGINE)
    assert preset("full-cone") == preset("eim-eif")
    assert preset("restricted-cone") == preset("eim-adf")
    assert preset("port-restricted-cone") == preset("eim-apdf")
    assert preset("symmetric") == preset("apdm-apdf")
    assert preset("linux-masquerade").kind is NatKind.MASQUERADE and not preset("linux-masquerade").hairpinning


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="unknown NAT preset 'ful-cone'; valid presets: full-cone, restricted-cone"):
        preset("ful-cone")


def test_engine_rules_follow_the_behaviour() -> None:
    text = compile_ruleset(preset("adm-adf").with_(hairpinning=False, port_preservation=False), IFACES)
    assert "snat ip to ip saddr . udp sport . ip daddr map @bind_adm" in text  # ADM reuses a binding per remote IP
    assert "dnat ip to ip saddr . udp dport map @in_adf" in text  # ADF steers by remote IP . external port
    assert "# hairpin" not in text and "ct status dnat" not in text
    assert 'meta l4proto udp snat ip to 203.0.113.1 random' in text
    assert 'iifname "nat-wan" drop' in text  # the unsolicited-WAN-input drop is always there
    apdf = compile_ruleset(preset("eim-apdf").with_(inbound_refresh=False), IFACES)
    assert 'iifname "nat-wan" ip daddr 203.0.113.1 dnat' not in apdf  # APDF: only conntrack lets replies in
    assert "udp dport != @used drop" in apdf


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("wan", "wan", "203.0.113.1"), "must differ"),
        (("a-very-long-interface", "lan", "203.0.113.1"), "not a valid interface name"),
        (("wan", "lan", "2001:db8::1"), "not an IPv4 address"),
        (("wan", "lan", "203.0.113.1", "10.0.0.0/33"), "not an IPv4 subnet"),
    ],
)
def test_interfaces_are_validated(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NatInterfaces(*args)


def test_cli_nat_list_and_rules() -> None:
    p = subprocess.run([*ICELAB, "nat", "list", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [x["name"] for x in doc["presets"]] == list(PRESETS)
    cone = next(x for x in doc["presets"] if x["name"] == "port-restricted-cone")
    assert (cone["mapping"], cone["filtering"], cone["rfc4787"]) == (
        "endpoint-independent", "address-and-port-dependent", "eim-apdf")
    p = subprocess.run([*ICELAB, "nat", "rules", "port-restricted-cone", "--wan", "nat-wan", "--lan", "nat-lan",
                        "--public", "203.0.113.1", "--lan-subnet", "10.0.0.0/24"], capture_output=True, text=True,
                       cwd=ROOT)
    assert p.returncode == 0 and p.stdout == (GOLDEN / "port-restricted-cone.nft").read_text()
    p = subprocess.run([*ICELAB, "nat", "rules", "nope", "--wan", "a", "--lan", "b", "--public", "203.0.113.1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and p.stderr.startswith("icelab: unknown NAT preset 'nope'; valid presets:")
