"""The set-up a new user relies on: README quick start, .ci/run, the ./icelab bootstrap, the Vagrantfile."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import ROOT


def test_readme_quick_start_is_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["./icelab run", "./icelab test"]


def test_ci_runs_the_readme_test_command() -> None:
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "./icelab test" in lines
    assert not [ln for ln in lines if ln and not ln.startswith("#") and ("pip " in ln or "apt" in ln)]


def test_bootstrap_does_not_reprovision_when_stamp_matches() -> None:
    p = subprocess.run([str(ROOT / "icelab"), "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("icelab ")
    assert "provision" not in p.stderr


def test_provision_script_is_valid_bash_and_installs_what_tests_use() -> None:
    script = (ROOT / "scripts" / "provision.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "provision.sh")], check=True)
    for pkg in ("coturn", "stun-server", "stun-client", "mininet", "nftables", "iptables", "conntrack",
                "python3-venv", "ruby", "vagrant"):
        assert re.search(rf"\b{re.escape(pkg)}\b", script), pkg
    assert "--system-site-packages" in script and "/usr/bin/python3" in script


def test_vagrantfile_parses_and_uses_provision_sh() -> None:
    vf = ROOT / "Vagrantfile"
    text = vf.read_text()
    assert "scripts/provision.sh" in text and "./icelab test" in text and "debian/bookworm64" in text
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.fail("ruby is not installed: scripts/provision.sh must install it")
    subprocess.run([ruby, "-c", str(vf)], check=True, capture_output=True)
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        pytest.fail("vagrant is not installed: scripts/provision.sh must install it")
    p = subprocess.run([vagrant, "validate", "--ignore-provider"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr
