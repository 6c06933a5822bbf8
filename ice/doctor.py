"""``icelab doctor``: can this machine run the lab? One row per requirement, one sentence per problem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

DEBIAN_PYTHON = "/usr/bin/python3"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _run(cmd: list[str], timeout: float = 10) -> tuple[int, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]}: timed out"
    return p.returncode, (p.stdout + p.stderr).strip()


def _in_netns(script: str) -> tuple[int, str]:
    """Run a shell snippet in a throwaway network namespace (nothing touches the root namespace)."""
    return _run(["unshare", "--net", "sh", "-c", script])


def gather(root: Path | None = None) -> list[Check]:
    checks: list[Check] = []
    is_root = os.geteuid() == 0
    checks.append(Check("root", is_root, "running as root" if is_root else f"uid {os.geteuid()}",
                        "the lab creates namespaces and netfilter rules: run it as root (sudo ./icelab ...)"))

    rc, out = _in_netns("ip link set lo up && ip -o link show lo") if is_root else (1, "needs root")
    checks.append(Check("netns", rc == 0, "unshare --net + iproute2 work" if rc == 0 else out,
                        "network namespaces are needed: install iproute2 and util-linux, run as root"))

    rc, out = _in_netns("nft add table inet t && nft add chain inet t c && nft list ruleset >/dev/null") \
        if is_root else (1, "needs root")
    checks.append(Check("nftables", rc == 0, "nft rules load in a namespace" if rc == 0 else out,
                        "the NAT lab compiles to nftables: apt-get install nftables (a kernel with nf_tables)"))

    rc, out = _in_netns("test -e /proc/sys/net/netfilter/nf_conntrack_udp_timeout && conntrack -L >/dev/null 2>&1") \
        if is_root else (1, "needs root")
    checks.append(Check("conntrack-kernel", rc == 0, "per-namespace conntrack and its UDP timeouts" if rc == 0 else
                        (out or "conntrack not usable"),
                        "NAT needs connection tracking: apt-get install conntrack (kernel with nf_conntrack)"))

    rc, out = _in_netns("ip link set lo up && tc qdisc add dev lo root netem delay 1ms") \
        if is_root else (1, "needs root")
    checks.append(Check("netem", rc == 0, "available" if rc == 0 else
                        "not available: link delay and jitter use the userspace forwarder instead",
                        required=False))

    rc, out = _run([DEBIAN_PYTHON, "-c", "import mininet.net, mininet.nodelib; print(mininet.net.VERSION)"])
    checks.append(Check("mininet", rc == 0, f"Debian mininet {out}" if rc == 0 else out.splitlines()[-1:][0]
                        if out else "missing",
                        "apt-get install mininet (it imports only with Debian's /usr/bin/python3)"))

    for tool, pkg, why in [
        ("turnserver", "coturn", "coturn is the reference STUN/TURN peer in the interop tests"),
        ("turnutils_stunclient", "coturn", "coturn's STUN client is an interop peer"),
        ("stund", "stun-server", "stund is a classic RFC 3489/5780 interop server"),
        ("stun", "stun-client", "stund's client is an interop peer"),
        ("nft", "nftables", "the NAT lab loads nftables rulesets"),
        ("iptables", "iptables", "some NAT presets use iptables"),
        ("conntrack", "conntrack", "the lab flushes and dumps conntrack"),
        ("tcpdump", "tcpdump", "failed cells keep a pcap per interface"),
        ("chromium", "chromium", "a test renders the matrix's grid.html in a headless browser"),
    ]:
        path = shutil.which(tool)
        checks.append(Check(tool, path is not None, path or "not found",
                            f"apt-get install {pkg} ({why}); ./icelab provisions it on first run"))
    if root is not None:
        venv = root / ".venv" / "bin" / "python"
        checks.append(Check("venv", venv.exists(), str(venv) if venv.exists() else "missing",
                            "run ./icelab once: it creates .venv from Debian's python with system site-packages"))
    return checks


def run_checks(json_out: bool = False, root: Path | None = None) -> int:
    checks = gather(root)
    failed = [c for c in checks if c.required and not c.ok]
    if json_out:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = "ok" if c.ok else ("MISSING" if c.required else "note")
            print(f"  {c.name:<{width}}  {mark:<7}  {c.detail}")
        if failed:
            print()
            for c in failed:
                print(f"{c.name}: {c.fix}.")
    return 1 if failed else 0
