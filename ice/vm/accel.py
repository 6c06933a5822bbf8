"""Whether QEMU can use KVM here, or must emulate the CPU (TCG).

``/dev/kvm`` existing is not enough: nested under another hypervisor, a KVM guest can stall inside its kernel
forever without a word. So the check boots the box's kernel under KVM with no root file system and no initramfs:
a working KVM reaches the kernel's panic over the missing root within seconds (``-no-reboot`` then ends QEMU); a
stalled one prints nothing until the timeout. Without ``/dev/kvm``, without a kernel to try, or after a stall, the VM
runs under TCG (libvirt domain type ``qemu``), which works anywhere, only slower.

The decision (:func:`decide`) is separate from the boot (:func:`kvm_boots`) so that it can be tested on fake inputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BOOT_TIMEOUT = 30.0
"""Seconds a KVM guest gets to reach its root mount (a working KVM needs one or two)."""

REACHED_ROOT_MOUNT = ("VFS: Unable to mount root", "Kernel panic", "No working init found")
"""What the kernel prints once it has booted as far as mounting its root file system."""


@dataclass(frozen=True)
class Accel:
    """The libvirt domain type to use (``kvm`` or ``qemu``, which is TCG) and why, in one sentence."""

    driver: str
    reason: str

    @property
    def emulated(self) -> bool:
        return self.driver == "qemu"


@dataclass(frozen=True)
class BootTry:
    """One boot of a kernel under KVM: what its console printed, in how many seconds, and whether it timed out."""

    console: str
    seconds: float
    timed_out: bool


def decide(kvm_usable: bool, boot: BootTry | None) -> Accel:
    """The accelerator, from whether ``/dev/kvm`` opens read-write and from the boot test (``None``: no kernel to
    boot, or no QEMU to boot it with)."""
    if not kvm_usable:
        return Accel("qemu", "no usable /dev/kvm here: the VM runs under software emulation (TCG), much slower")
    if boot is None:
        return Accel("kvm", "/dev/kvm opens and there was no kernel to test it with: the VM uses KVM")
    if any(marker in boot.console for marker in REACHED_ROOT_MOUNT):
        return Accel("kvm", f"a KVM guest reached its root mount in {boot.seconds:.1f} s: the VM uses KVM")
    what = f"printed nothing in {boot.seconds:.0f} s" if not boot.console.strip() else \
        f"did not reach its root mount in {boot.seconds:.0f} s"
    return Accel("qemu", f"/dev/kvm exists but a KVM guest {what} (nested KVM stalls here): the VM runs under "
                         "software emulation (TCG), much slower")


def kvm_usable(dev: Path = Path("/dev/kvm")) -> bool:
    """Whether ``dev`` opens read-write (what QEMU needs of it)."""
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def kvm_boots(kernel: Path, timeout: float = BOOT_TIMEOUT) -> BootTry | None:
    """Boot ``kernel`` under KVM without a root file system (see the module's docstring); ``None`` when there is no
    QEMU to do it with."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None or not kernel.is_file():
        return None
    cmd = [qemu, "-accel", "kvm", "-m", "256", "-nodefaults", "-display", "none", "-serial", "stdio",
           "-no-reboot", "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
        return BootTry(p.stdout, time.monotonic() - t0, False)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return BootTry(out, time.monotonic() - t0, True)


def detect(kernel: Path | None) -> Accel:
    """KVM or TCG for this host, booting ``kernel`` under KVM when there is one."""
    usable = kvm_usable()
    return decide(usable, kvm_boots(kernel) if usable and kernel is not None else None)
