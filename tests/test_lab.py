"""Lab tier (root): the conformance probe for every preset, isolation and cleanup of killed runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from ice.lab.nat import PRESETS

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, netfilter): run the suite as root"),
]

# The mapping-timeout check takes ~4 s of real kernel time per preset; run it where the engine's timeout
# handling differs (each filtering kind, outbound-only refresh is covered by the golden rules), skip it elsewhere.
TIMEOUT_CHECKED = {"full-cone", "restricted-cone", "port-restricted-cone", "symmetric"}


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", list(PRESETS))
def test_probe_measures_what_the_preset_declares(name: str) -> None:
    args = ["nat", "probe", name, "--json"] + ([] if name in TIMEOUT_CHECKED else ["--no-timeout-check"])
    p = subprocess.run([*ICELAB, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    doc = json.loads(p.stdout)
    assert doc["mismatches"] == [] and p.returncode == 0, (doc["mismatches"], p.stderr)
    behaviour = PRESETS[name]
    measured = doc["measured"]
    if behaviour.mapping is not None:
        assert measured["mapping"] == behaviour.mapping.value
        assert measured["filtering"] == behaviour.filtering.value  # type: ignore[union-attr]
        assert measured["hairpinning"] is behaviour.hairpinning
        assert measured["port_preservation"] is behaviour.port_preservation
    if name in TIMEOUT_CHECKED:
        assert measured["alive_before_timeout"] is True and measured["expired_after_timeout"] is True
    if name == "udp-blocked":
        assert measured["udp"] is False
    if name == "none":
        assert measured["behind_nat"] is False


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_lab_leaves_nothing_behind(sig: signal.Signals) -> None:
    """Kill a probe while its lab is up: its processes, namespaces and links must all be gone."""
    links_before, netns_before = root_links(), netns_list()
    proc = subprocess.Popen([*ICELAB, "nat", "probe", "full-cone", "--json"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    shells: set[int] = set()
    while time.monotonic() < deadline and len(shells) < 3:  # client, nat and server node shells (+ forks)
        shells = {p for p in _descendants(proc.pid) if "mininet:" in _cmdline(p)}
        time.sleep(0.02)  # polling the process table: there is no event to wait on from outside the lab
    assert len(shells) >= 3, "the lab never came up"
    tree = _descendants(proc.pid)
    os.kill(proc.pid, sig)
    proc.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree):
        time.sleep(0.02)
    assert not [p for p in tree if Path(f"/proc/{p}").exists()], "lab processes survived"
    assert root_links() == links_before and netns_list() == netns_before
