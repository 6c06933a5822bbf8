"""The set-up a new user relies on: README quick start, .ci/run, the ./icelab bootstrap, the Vagrantfile."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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


def test_bootstrap_provisions_once_and_again_after_a_change(tmp_path: Path) -> None:
    """./icelab runs provision.sh on first use and when its inputs change, never otherwise.

    Runs a copy of the real bootstrap and stamp script against a fake provision.sh, so the test cannot
    reprovision (and rebuild) the environment it runs in.
    """
    (tmp_path / "scripts").mkdir()
    (tmp_path / "ice" / "stun").mkdir(parents=True)
    shutil.copy(ROOT / "icelab", tmp_path / "icelab")
    shutil.copy(ROOT / "scripts" / "stamp", tmp_path / "scripts" / "stamp")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "ice" / "stun" / "x.c").write_text("int x;\n")
    (tmp_path / "scripts" / "provision.sh").write_text(
        "set -e\ncd \"$(dirname \"$0\")/..\"\necho ran >> provision.log\nmkdir -p .venv/bin\n"
        "printf '#!/bin/sh\\necho real-cli \"$@\"\\n' > .venv/bin/icelab\nchmod +x .venv/bin/icelab\n"
        "bash scripts/stamp > .venv/.icelab-provisioned\n"
    )

    def bootstrap() -> str:
        p = subprocess.run([str(tmp_path / "icelab"), "--version"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    assert bootstrap() == "real-cli --version"
    assert bootstrap() == "real-cli --version"
    assert (tmp_path / "provision.log").read_text().count("ran") == 1
    (tmp_path / "ice" / "stun" / "x.c").write_text("int y;\n")  # the C accelerator changed: rebuild
    bootstrap()
    assert (tmp_path / "provision.log").read_text().count("ran") == 2


def test_real_environment_stamp_matches() -> None:
    """The environment this suite runs in was provisioned from the current sources (else run ./icelab)."""
    want = subprocess.run(["bash", str(ROOT / "scripts" / "stamp")], capture_output=True, text=True).stdout.strip()
    stamp = ROOT / ".venv" / ".icelab-provisioned"
    assert stamp.is_file() and stamp.read_text().strip() == want, "stale environment: run ./icelab once"


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
