"""The local Vagrant box: Debian 12 for the libvirt provider, built offline from the Debian mirror this host uses.

No box registry is needed. As root, :func:`build` (``icelab vm box``):

1. debootstraps Debian 12 (minbase) from the host's mirror into a scratch directory under ``/var/tmp`` (outside
   the checkout: a root file system inside it would be walked by every tool that scans the tree, setuptools' package
   discovery following its symbolic links into the host's ``/proc`` among them);
2. gives it the host's route to the registries (:mod:`ice.vm.route`), then installs, in a chroot, the cloud kernel,
   systemd, ifupdown with DHCP, sshd, sudo, rsync, QEMU's guest agent, and every Debian package
   ``scripts/provision.sh`` may install (read from that script), so that provisioning inside the VM, which runs under
   emulation where the host has no working KVM, does not unpack them again at a fraction of the host's speed;
3. adds the ``vagrant`` user with Vagrant's well-known insecure key (Vagrant swaps it for a key of its own on the
   first ``vagrant up``) and passwordless sudo;
4. writes a partitioned disk image without mounting anything: a small FAT partition with syslinux, the kernel and
   its initramfs (``sfdisk``, ``mkfs.fat --offset``, ``syslinux --offset``, ``mcopy``), and the root file system as
   ext4 (``mke2fs -d``, straight from the directory); then converts it to qcow2;
5. packs ``box.img``, ``metadata.json``, a ``Vagrantfile`` and the kernel into ``icelab-bookworm.box`` and runs
   ``vagrant box add`` under the name :data:`BOX_NAME`; the scratch directory goes.

The chroot's mounts (proc, sysfs, devpts) live in a private mount namespace (``unshare --mount``), so a failed build
leaves none behind. The build's log is ``build/vm/build.log``; the kernel is kept as ``build/vm/vmlinuz`` for
:mod:`ice.vm.accel`'s check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from ice.errors import UserError
from ice.vm.route import Route, guest_files, host_route

BOX_NAME = "icelab-bookworm"
"""The name the local box is added under; the Vagrantfile uses it when the public ``debian/bookworm64`` is absent."""

VIRTUAL_SIZE_GB = 24
BOOT_MB = 128
KERNEL_CMDLINE = ("ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0 mitigations=off "
                  "systemd.show_status=0")
"""``mitigations=off``: under emulation, page-table isolation costs a TLB flush per system call, and a throwaway test
VM has nothing to protect from its own processes."""

BASE_PACKAGES = (
    "systemd-sysv", "udev", "kmod", "dbus", "linux-image-cloud-amd64", "initramfs-tools", "zstd",
    "ifupdown", "isc-dhcp-client", "netbase", "iproute2", "openssh-server", "sudo", "rsync", "ca-certificates",
    "qemu-guest-agent", "procps", "less", "apt-utils",
)
"""What a Vagrant box needs, whatever runs in it."""

INSECURE_KEY_GLOBS = (
    (Path("/usr/share/rubygems-integration/all/gems"), "vagrant-*/keys/vagrant.pub"),  # Debian's vagrant
    (Path("/opt/vagrant/embedded/gems"), "**/keys/vagrant.pub"),  # HashiCorp's package
)

Say = Callable[[str], None]


def metadata(virtual_size_gb: int = VIRTUAL_SIZE_GB) -> dict[str, object]:
    """The box's ``metadata.json`` for vagrant-libvirt: its provider, disk format and virtual disk size in GB."""
    return {"provider": "libvirt", "format": "qcow2", "virtual_size": virtual_size_gb}


def box_vagrantfile() -> str:
    """The ``Vagrantfile`` packed into the box (the defaults a machine from this box starts with)."""
    return (
        "# The icelab box: Debian 12 built offline by `icelab vm box` (virtio disk, boots with syslinux).\n"
        'Vagrant.configure("2") do |config|\n'
        '  config.vm.provider :libvirt do |lv|\n'
        '    lv.disk_bus = "virtio"\n'
        '    lv.nic_model_type = "virtio"\n'
        "  end\n"
        "end\n"
    )


def syslinux_cfg(root_uuid: str, kernel: str = "vmlinuz", initrd: str = "initrd.img") -> str:
    """syslinux's configuration: boot the one kernel at once, root file system by UUID."""
    return (f"DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /{kernel}\n  INITRD /{initrd}\n"
            f"  APPEND root=UUID={root_uuid} {KERNEL_CMDLINE}\n")


def partition_table(boot_mb: int = BOOT_MB) -> str:
    """``sfdisk`` input: a bootable FAT partition from 1 MiB, then Linux on the rest of the disk."""
    return (f"label: dos\nunit: sectors\n\nstart=2048, size={boot_mb * 2048}, type=c, bootable\n"
            f"start={2048 + boot_mb * 2048}, type=83\n")


def provision_packages(script: str) -> list[str]:
    """Every Debian package ``scripts/provision.sh`` may install: its ``APT_PACKAGES=( ... )`` list and the
    packages it adds with ``missing+=( ... )`` (comments dropped)."""
    found: list[str] = []
    inside = False
    for line in script.splitlines():
        code = line.split("#", 1)[0]
        if not inside:
            m = re.search(r"(?:\bAPT_PACKAGES=|\bmissing\+=)\((.*)", code)
            if m is None:
                continue
            inside, code = True, m.group(1)
        body, closed, _ = code.partition(")")
        found += [w for w in body.split() if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", w)]
        inside = not closed
    return list(dict.fromkeys(found))


def insecure_key() -> str:
    """Vagrant's well-known insecure public key, from the installed Vagrant."""
    for base, pattern in INSECURE_KEY_GLOBS:
        for path in sorted(base.glob(pattern)):
            return path.read_text().strip()
    raise UserError("Vagrant's insecure public key (keys/vagrant.pub) was not found: install vagrant first")


def _run(cmd: Sequence[str | os.PathLike[str]], log: Path, input: str | None = None) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        p = subprocess.run([str(c) for c in cmd], input=input, text=True, stdout=out, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise UserError(f"building the box failed at `{Path(str(cmd[0])).name}` (exit {p.returncode}); "
                        f"see {log}")


def _chroot(rootfs: Path, script: str, log: Path) -> None:
    """Run ``script`` (bash) in ``rootfs`` with proc, sysfs and devpts mounted in a private mount namespace."""
    wrapper = (
        'set -e; r="$1"; shift\n'
        'mount -t proc proc "$r/proc"; mount -t sysfs sys "$r/sys"; mkdir -p "$r/dev/pts"\n'
        'mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"\n'
        'exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 '
        'DEBIAN_FRONTEND=noninteractive bash -euc "$1"\n'
    )
    _run(["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper, "chroot", rootfs, script], log)


def _configure(rootfs: Path, route: Route, key: str) -> None:
    for rel, text in guest_files(route).items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    for conf in route.apt_conf_files:
        shutil.copy2(conf, rootfs / "etc/apt/apt.conf.d" / conf.name)
    cas = rootfs / "usr/local/share/ca-certificates"
    cas.mkdir(parents=True, exist_ok=True)
    for ca in route.ca_files:
        shutil.copy2(ca, cas / ca.name)
    (rootfs / "etc/hostname").write_text("icelab\n")
    (rootfs / "etc/network/interfaces.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/network/interfaces").write_text(
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nallow-hotplug eth0\n"
        "iface eth0 inet dhcp\n")
    (rootfs / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")  # no daemons start in the chroot
    (rootfs / "usr/sbin/policy-rc.d").chmod(0o755)
    (rootfs / "etc/sudoers.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/sudoers.d/vagrant").write_text("vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n")
    (rootfs / "etc/sudoers.d/vagrant").chmod(0o440)
    (rootfs / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/ssh/sshd_config.d/vagrant.conf").write_text("UseDNS no\nPasswordAuthentication no\n")
    (rootfs / "root/vagrant.pub").write_text(key + "\n")


def _packages_script(packages: Sequence[str]) -> str:
    return (
        "apt-get update -qq\n"
        "apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confdef "
        f"-o Dpkg::Options::=--force-confold {' '.join(packages)}\n"
        "update-ca-certificates >/dev/null\n"
        "printf 'virtio_pci\\nvirtio_blk\\nvirtio_net\\next4\\n' >> /etc/initramfs-tools/modules\n"
        "update-initramfs -u -k all\n"
        "useradd -m -s /bin/bash -G sudo vagrant\n"
        "install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh\n"
        "install -m 600 -o vagrant -g vagrant /root/vagrant.pub /home/vagrant/.ssh/authorized_keys\n"
        "rm /root/vagrant.pub\n"
        "systemctl enable qemu-guest-agent ssh >/dev/null 2>&1 || true\n"
        "systemctl mask apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer "
        "fstrim.timer >/dev/null 2>&1 || true\n"
        "apt-get clean\n"
        "rm -f /usr/sbin/policy-rc.d /etc/machine-id /var/lib/dbus/machine-id\n"
        ": > /etc/machine-id\n"
    )


def build_rootfs(root: Path, work: Path, log: Path, say: Say) -> Path:
    """Debootstrap and configure the guest's root file system in ``work/rootfs``."""
    route = host_route()
    rootfs = work / "rootfs"
    say(f"debootstrap Debian 12 from {route.mirror} (log: {log})")
    _run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
          "--include=ca-certificates", "bookworm", rootfs, route.mirror], log)
    _configure(rootfs, route, insecure_key())
    packages = list(dict.fromkeys([*BASE_PACKAGES,
                                   *provision_packages((root / "scripts/provision.sh").read_text())]))
    say(f"installing the kernel, sshd and the {len(packages) - len(BASE_PACKAGES)} packages scripts/provision.sh "
        "names, in a chroot")
    _chroot(rootfs, _packages_script(packages), log)
    return rootfs


def build_image(rootfs: Path, work: Path, log: Path, say: Say) -> Path:
    """The bootable qcow2 disk ``work/box.img`` of ``rootfs`` (see the module's docstring, step 4), and the kernel
    as ``work/vmlinuz``."""
    raw, img = work / "disk.raw", work / "box.img"
    root_uuid = str(uuid.uuid4())
    (rootfs / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n")
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise UserError(f"no kernel or initramfs in {rootfs / 'boot'}: see {log}")
    shutil.copy2(kernels[-1], work / "vmlinuz")
    size = VIRTUAL_SIZE_GB * 1024 ** 3
    raw.unlink(missing_ok=True)
    with raw.open("wb") as f:
        f.truncate(size)
    say(f"writing the disk image ({VIRTUAL_SIZE_GB} GB virtual): syslinux on FAT, the root file system as ext4")
    _run(["sfdisk", "--quiet", raw], log, input=partition_table())
    boot_off, root_off = 2048 * 512, (2048 + BOOT_MB * 2048) * 512
    _run(["mkfs.fat", "-F", "16", "-n", "BOOT", "--offset", "2048", raw, str(BOOT_MB * 1024)], log)
    cfg = work / "syslinux.cfg"
    cfg.write_text(syslinux_cfg(root_uuid))
    mtools = f"{raw}@@{boot_off}"
    _run(["mcopy", "-i", mtools, kernels[-1], "::vmlinuz"], log)
    _run(["mcopy", "-i", mtools, initrds[-1], "::initrd.img"], log)
    _run(["mcopy", "-i", mtools, cfg, "::syslinux.cfg"], log)
    _run(["syslinux", "--offset", str(boot_off), "--install", raw], log)
    mbr = Path("/usr/lib/syslinux/mbr/mbr.bin").read_bytes()
    with raw.open("r+b") as f:
        f.write(mbr[:440])
    root_mb = (size - root_off) // (1024 * 1024)
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "icelab-root", "-U", root_uuid, "-d", rootfs,
          "-E", f"offset={root_off}", raw, f"{root_mb}M"], log)
    say("converting to qcow2")
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, img], log)
    raw.unlink()
    return img


def pack(work: Path, img: Path) -> Path:
    """``work/icelab-bookworm.box``: an uncompressed tar of ``box.img``, ``metadata.json``, ``Vagrantfile`` and
    ``vmlinuz`` (a copy of the guest's kernel for :mod:`ice.vm.accel`'s check, wherever the box is installed)."""
    (work / "metadata.json").write_text(json.dumps(metadata(), indent=2) + "\n")
    (work / "Vagrantfile").write_text(box_vagrantfile())
    box = work / f"{BOX_NAME}.box"
    with tarfile.open(box, "w") as tar:
        for name in ("metadata.json", "Vagrantfile", "vmlinuz"):
            tar.add(work / name, arcname=name)
        tar.add(img, arcname="box.img")
    return box


def build(root: Path, say: Say, vagrant: str = "vagrant") -> Path:
    """Build the box from scratch and add it to Vagrant as :data:`BOX_NAME`; returns ``root/build/vm`` (the log and
    the kernel)."""
    if os.geteuid() != 0:
        raise UserError("building the box needs root (debootstrap and chroot): run sudo ./icelab vm box")
    out = root / "build" / "vm"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    log.write_text("")
    t0 = time.monotonic()

    def step(message: str) -> None:  # each step's start, in seconds since the build began
        say(f"[{time.monotonic() - t0:4.0f} s] {message}")

    work = Path(tempfile.mkdtemp(prefix="icelab-box-", dir="/var/tmp"))
    try:
        rootfs = build_rootfs(root, work, log, step)
        img = build_image(rootfs, work, log, step)
        shutil.rmtree(rootfs)
        shutil.copy2(work / "vmlinuz", out / "vmlinuz")
        step("packing the box")
        box = pack(work, img)
        img.unlink()
        step(f"adding {box.name} to Vagrant as {BOX_NAME}")
        _run([vagrant, "box", "add", "--force", "--name", BOX_NAME, box], log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"box {BOX_NAME} built and added in {time.monotonic() - t0:.0f} s")
    return out


if __name__ == "__main__":  # pragma: no cover - `python -m ice.vm.box ROOT`, for debugging the build alone
    build(Path(sys.argv[1]), lambda m: print(f"icelab vm box: {m}", file=sys.stderr))
