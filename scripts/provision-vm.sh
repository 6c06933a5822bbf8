#!/usr/bin/env bash
# scripts/provision-vm.sh: install what `./icelab vm` needs on a Debian 12 host, on demand.
#
# Vagrant with its libvirt provider, QEMU, and the tools that build the local box (debootstrap, qemu-img). Kept
# apart from scripts/provision.sh, which every fresh CI machine runs: only `./icelab vm up` and `./icelab vm box`
# call this one. Idempotent: apt only runs when a package is missing.
#
# No libvirt daemon is started and no libvirt network may start: the VM uses QEMU's user-mode networking through
# libvirt's per-user session (qemu:///session), so nothing of it appears in the host's network namespace. Debian's
# libvirt-daemon-config-network defines a `default` network (a bridge and NAT rules) marked to start with the system
# daemon; its autostart mark is removed here.
set -euo pipefail

say() { printf 'provision-vm: %s\n' "$*" >&2; }
die() { printf 'provision-vm: error: %s\n' "$*" >&2; exit 1; }

APT_PACKAGES=(
  # Vagrant and its libvirt provider (Debian's own packages, no `vagrant plugin install`).
  vagrant vagrant-libvirt
  # libvirt (its session daemon starts on demand and exits when idle) and QEMU.
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
  # The box build: a Debian root file system from the configured mirror, written into a partitioned disk image
  # with syslinux as its boot loader, without mounting anything (sfdisk, mkfs.fat/mtools, mke2fs -d), then qcow2.
  debootstrap fdisk dosfstools mtools syslinux syslinux-common e2fsprogs
  # Vagrant's rsync synced folder and `vagrant ssh`.
  rsync openssh-client
)

[ -r /etc/debian_version ] || die "this script supports Debian 12 only (no /etc/debian_version here)."
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    die "installing Debian packages needs root: run it as root or install sudo."; fi
else
  SUDO=()
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start daemons while they install (libvirtd would start the default network): a policy-rc.d
  # that refuses, unless the machine has one already.
  policy=/usr/sbin/policy-rc.d; own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"; own_policy=1
  fi
  rc=0
  "${SUDO[@]}" apt-get update -qq || rc=$?
  # --no-install-recommends: no NFS server, no libguestfs, no graphical QEMU front-ends.
  [ $rc -ne 0 ] || "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
  [ -z "$own_policy" ] || "${SUDO[@]}" rm -f "$policy"
  [ $rc -eq 0 ] || die "apt-get failed (exit $rc)."
fi

for link in /etc/libvirt/qemu/networks/autostart/*.xml; do
  [ -e "$link" ] || [ -L "$link" ] || continue
  say "removing libvirt's network autostart mark $link (the VM needs no libvirt network)"
  "${SUDO[@]}" rm -f "$link"
done
say "done"
