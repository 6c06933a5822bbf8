"""The system libvirt daemon vagrant-libvirt talks to (``qemu:///system``), started only while the VM needs it.

On a host without an init system that runs it (a container, a CI machine), ``icelab vm up`` starts ``virtlogd`` and
``libvirtd`` itself, records that it did in ``.vagrant/icelab-libvirtd``, and ``icelab vm destroy`` stops exactly
those processes again. A daemon that was already running is used and left alone.

libvirtd would start every network marked to autostart, and Debian's ``default`` network is a bridge with NAT rules
in the host's network namespace, which the VM must never create: :func:`ensure` refuses while any network is marked
to autostart (``scripts/provision-vm.sh`` removes the mark) and checks that no network is active once it runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ice.errors import UserError

URI = "qemu:///system"
AUTOSTART_DIR = Path("/etc/libvirt/qemu/networks/autostart")
DAEMONS = (("virtlogd", Path("/run/virtlogd.pid")), ("libvirtd", Path("/run/libvirtd.pid")))


def _virsh(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], capture_output=True, text=True, timeout=timeout)


def running() -> bool:
    """Whether the system daemon answers."""
    try:
        return _virsh("uri", timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def active_networks() -> list[str]:
    """The names of the libvirt networks that are running."""
    p = _virsh("net-list", "--name")
    return [n for n in p.stdout.split() if n] if p.returncode == 0 else []


def _pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def ensure(state: Path, say: Callable[[str], None]) -> None:
    """Make sure the system daemon runs, starting it (and recording it in ``state``) when it does not."""
    marked = sorted(p.stem for p in AUTOSTART_DIR.glob("*.xml")) if AUTOSTART_DIR.is_dir() else []
    if marked:
        raise UserError(f"libvirt would start the network(s) {', '.join(marked)} with its daemon (a bridge and NAT "
                        f"on this host): remove {AUTOSTART_DIR}/*.xml or run scripts/provision-vm.sh")
    if not running():
        if os.geteuid() != 0:
            raise UserError("the libvirt daemon is not running and starting it needs root: run sudo ./icelab vm up")
        started: dict[str, int] = {}
        for name, pidfile in DAEMONS:
            if _pid(pidfile) is None:
                say(f"starting {name} (stopped again by icelab vm destroy)")
                subprocess.run([name, "--daemon"], check=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                for _ in range(100):
                    pid = _pid(pidfile)
                    if pid is not None:
                        started[name] = pid
                        break
                    time.sleep(0.1)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(started) + "\n")
        for _ in range(100):
            if running():
                break
            time.sleep(0.2)
        else:
            raise UserError("libvirtd was started but does not answer on qemu:///system")
    nets = active_networks()
    if nets:
        raise UserError(f"libvirt network(s) {', '.join(nets)} are active (a bridge and NAT on this host); the VM "
                        "needs none: stop them with virsh net-destroy")


def stop_ours(state: Path, say: Callable[[str], None]) -> None:
    """Stop the daemons :func:`ensure` started (libvirtd first), if it started any."""
    try:
        started: dict[str, int] = json.loads(state.read_text())
    except (OSError, ValueError):
        return
    for name, pidfile in reversed(DAEMONS):
        pid = started.get(name)
        if pid is None or _pid(pidfile) != pid:
            continue
        say(f"stopping the {name} icelab vm started (pid {pid})")
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _pid(pidfile) != pid:
                break
            time.sleep(0.1)
    state.unlink()
