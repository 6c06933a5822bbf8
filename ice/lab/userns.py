"""Whether the kernel lab can run here: as root, or as a normal user inside a user namespace the command creates.

A normal user's lab command re-runs itself under ``unshare --user --map-root-user --net --mount --pid --fork``
(:mod:`ice.lab.isolate`): inside, it is uid 0 of a fresh user namespace, and Mininet's node namespaces, veth
pairs, bridges, nftables rules, conntrack tables, tcpdump and the per-namespace sysctls all work as they do for
root, confined to namespaces nobody else sees. :func:`problem` says, in one sentence, why that cannot work on this
host (and which sysctl allows it), or ``None``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

USERNS_FLAGS = ("--user", "--map-root-user", "--net", "--mount")
"""What ``unshare`` adds for a normal user: a user namespace (uid 0 inside), with its own network and mounts."""

_PROC_SYS = Path("/proc/sys")


def real_root() -> bool:
    """Root of the initial user namespace (``sudo``), not uid 0 inside a user namespace."""
    if os.geteuid() != 0:
        return False
    try:
        fields = Path("/proc/self/uid_map").read_text().split()
    except OSError:
        return True
    return fields[:3] == ["0", "0", "4294967295"]


def _read_int(name: str, proc_sys: Path) -> int | None:
    try:
        return int((proc_sys / name).read_text().strip())
    except (OSError, ValueError):
        return None


def problem(proc_sys: Path = _PROC_SYS, unshare: str | None = "") -> str | None:
    """``None`` if this process can create a user namespace (user + net + mount + pid, root mapped), else one
    clause saying why not and which sysctl allows it. ``unshare`` (tests) replaces the probe's binary; ``None``
    means it is missing."""
    if _read_int("kernel/unprivileged_userns_clone", proc_sys) == 0:  # Debian's and Arch's kernel knob
        return ("this host forbids unprivileged user namespaces (kernel.unprivileged_userns_clone = 0; "
                "`sudo sysctl -w kernel.unprivileged_userns_clone=1` allows them)")
    if _read_int("user/max_user_namespaces", proc_sys) == 0:
        return ("this host forbids user namespaces (user.max_user_namespaces = 0; "
                "`sudo sysctl -w user.max_user_namespaces=10000` allows them)")
    binary = shutil.which("unshare") if unshare == "" else unshare
    if binary is None:
        return "unshare (util-linux) is not installed, so no user namespace can be made"
    try:
        done = subprocess.run([binary, *USERNS_FLAGS, "--pid", "--fork", "true"], capture_output=True, text=True,
                              timeout=10)
        failed, said = done.returncode != 0, (done.stderr.strip().splitlines() or [""])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, said = True, str(exc)
    if not failed:
        return None
    if _read_int("kernel/apparmor_restrict_unprivileged_userns", proc_sys) == 1:  # Ubuntu 23.10 and later
        return ("AppArmor restricts unprivileged user namespaces on this host (kernel.apparmor_restrict_"
                "unprivileged_userns = 1; `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` allows "
                f"them){'; unshare said: ' + said if said else ''}")
    return ("this host does not let a normal user create user namespaces"
            f"{' (unshare said: ' + said + ')' if said else ''}; kernel.unprivileged_userns_clone=1 and "
            "user.max_user_namespaces > 0 allow them")


@functools.cache
def cached_problem() -> str | None:
    """:func:`problem`, probed once per process."""
    return problem()


def lab_problem() -> str | None:
    """``None`` if the lab can run (root, uid 0 inside a user namespace, or one can be made), else why not."""
    return None if os.geteuid() == 0 else cached_problem()
