"""``icelab vm up|run|test|ssh|destroy|box``: the Vagrant VM, a thin wrapper over ``vagrant`` and the repository's
``Vagrantfile`` (so ``vagrant up`` by hand does the same as ``icelab vm up``).

``up`` installs Vagrant, vagrant-libvirt and QEMU on demand (``scripts/provision-vm.sh``), builds the local box when
no box is installed (:mod:`ice.vm.box`), starts the libvirt daemon when nothing runs it (:mod:`ice.vm.libvirtd`),
checks whether KVM works here or the VM must be emulated (:mod:`ice.vm.accel`), then boots the VM and provisions it
with ``scripts/provision.sh``. ``run`` and ``test`` run ``./icelab run`` / ``./icelab test`` inside on the current
sources; ``run`` copies the reports back to ``results/vm/``. Long steps print progress lines to stderr.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ice.cli.common import repo_root
from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers

PUBLIC_BOX = "debian/bookworm64"
GUEST_ROOT = "/icelab"
GUEST_RESULTS = "/var/tmp/icelab-vm-results"
RESULTS = Path("results") / "vm"


def say(message: str) -> None:
    print(f"icelab vm: {message}", file=sys.stderr, flush=True)


def _vagrant() -> str:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        raise UserError("vagrant is not installed: run ./icelab vm up (it installs it with scripts/provision-vm.sh)")
    return vagrant


def _state_dir(root: Path) -> Path:
    return root / ".vagrant"


def vagrant(root: Path, *args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """``vagrant ARGS`` in the repository (its Vagrantfile); a failure is one sentence naming the command."""
    p = subprocess.run([_vagrant(), *args], cwd=root, text=True, capture_output=capture)
    if check and p.returncode != 0:
        detail = f": {p.stderr.strip().splitlines()[-1]}" if capture and p.stderr.strip() else ""
        raise UserError(f"vagrant {args[0]} failed (exit {p.returncode}){detail}")
    return p


def machine_state(root: Path) -> str:
    """The VM's state as Vagrant reports it (``not_created``, ``running``, ``shutoff``, ...)."""
    p = vagrant(root, "status", "--machine-readable", check=False, capture=True)
    for line in p.stdout.splitlines():
        fields = line.split(",")
        if len(fields) >= 4 and fields[2] == "state":
            return fields[3]
    return "unknown"


def _require_running(root: Path) -> None:
    state = machine_state(root)
    if state != "running":
        raise UserError(f"the VM is {state.replace('_', ' ')}: start it with ./icelab vm up")


def box_installed(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether Vagrant has the box ``name`` (the Vagrantfile chooses the same way)."""
    env = os.environ if environ is None else environ
    home = Path(env.get("VAGRANT_HOME") or Path(env.get("HOME", "/root")) / ".vagrant.d")
    return (home / "boxes" / name.replace("/", "-VAGRANTSLASH-")).is_dir()


def needs_local_box(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``up`` must build the local box first: no box chosen by ICELAB_VM_BOX and none installed."""
    from ice.vm.box import BOX_NAME

    env = os.environ if environ is None else environ
    if env.get("ICELAB_VM_BOX"):
        return env["ICELAB_VM_BOX"] == BOX_NAME and not box_installed(BOX_NAME, env)
    return not box_installed(PUBLIC_BOX, env) and not box_installed(BOX_NAME, env)


def provision_host(root: Path) -> None:
    """Install Vagrant, vagrant-libvirt, QEMU and the box tools when missing (``scripts/provision-vm.sh``)."""
    rc = subprocess.call(["bash", str(root / "scripts" / "provision-vm.sh")])
    if rc != 0:
        raise UserError(f"scripts/provision-vm.sh failed (exit {rc})")


POOL = Path("/var/lib/libvirt/images")
"""libvirt's ``default`` storage pool, where vagrant-libvirt keeps a copy of each box it booted."""


def build_box(root: Path) -> float:
    """Build and add the local box, then drop the previous box's copy from libvirt's pool (vagrant-libvirt names it
    after the box's date, so a rebuilt box would otherwise leave gigabytes behind)."""
    from ice.vm.box import BOX_NAME, build

    if shutil.which("vagrant") is not None and machine_state(root) != "not_created":
        raise UserError("the VM exists and boots from the current box: run ./icelab vm destroy before rebuilding it")
    say(f"building the local box {BOX_NAME} (Debian 12 from this host's mirror; several minutes)")
    t0 = time.monotonic()
    build(root, say, _vagrant())
    for stale in sorted(POOL.glob(f"{BOX_NAME}_vagrant_box_image_*")):
        say(f"removing the previous box's copy {stale} from libvirt's pool")
        stale.unlink()
    return time.monotonic() - t0


def choose_accel(root: Path) -> str:
    """The libvirt domain type for the VM (``ICELAB_VM_DRIVER``, else detected), written where the Vagrantfile reads
    it, with the reason on stderr."""
    from ice.vm.accel import detect
    from ice.vm.box import BOX_NAME

    forced = os.environ.get("ICELAB_VM_DRIVER")
    if forced:
        if forced not in ("kvm", "qemu"):
            raise UserError(f"ICELAB_VM_DRIVER={forced}: use kvm or qemu (software emulation)")
        driver = forced
        say(f"libvirt domain type {driver} (ICELAB_VM_DRIVER)")
    else:
        kernel = root / "build" / "vm" / "vmlinuz"
        if not kernel.is_file():
            home = Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
            kernel = next(iter(sorted((home / "boxes" / BOX_NAME).glob("*/libvirt/vmlinuz"))), kernel)
        say("checking whether KVM works here (booting the box's kernel under KVM, up to 30 s)")
        accel = detect(kernel if kernel.is_file() else None)
        driver = accel.driver
        say(accel.reason)
    state = _state_dir(root)
    state.mkdir(exist_ok=True)
    (state / "icelab-accel").write_text(driver + "\n")
    return driver


def cmd_up(args: argparse.Namespace) -> int:
    from ice.vm import libvirtd

    root = repo_root()
    t0 = time.monotonic()
    provision_host(root)
    times: list[str] = []
    if needs_local_box():
        times.append(f"box built in {build_box(root):.0f} s")
    libvirtd.ensure(_state_dir(root) / "icelab-libvirtd", say)
    state = machine_state(root)
    if state == "not_created":
        choose_accel(root)
    say(f"vagrant up (the VM is {state.replace('_', ' ')}); boot progress follows")
    t = time.monotonic()
    vagrant(root, "up", "--provider=libvirt", "--no-provision")
    times.append(f"booted in {time.monotonic() - t:.0f} s")
    say("provisioning inside the VM with scripts/provision.sh")
    t = time.monotonic()
    vagrant(root, "provision", "--provision-with", "provision")
    times.append(f"provisioned in {time.monotonic() - t:.0f} s")
    say(f"the VM is up: {'; '.join(times)}; {time.monotonic() - t0:.0f} s in all")
    return 0


def _ssh_config(root: Path) -> Path:
    cfg = _state_dir(root) / "icelab-ssh-config"
    p = vagrant(root, "ssh-config", capture=True)
    cfg.write_text(p.stdout)
    return cfg


def guest(root: Path, command: str, cfg: Path, stdout: int | None = None) -> int:
    """Run ``command`` (a shell line) in the VM over SSH; its exit code."""
    return subprocess.call(["ssh", "-F", str(cfg), "-o", "LogLevel=ERROR", "default", command], cwd=root,
                           stdout=stdout)


def _sync(root: Path) -> Path:
    _require_running(root)
    say("syncing the sources into the VM (vagrant rsync)")
    vagrant(root, "rsync")
    return _ssh_config(root)


def run_command(run_args: list[str]) -> str:
    """The shell line that runs ``./icelab run RUN_ARGS`` in the VM, its reports in :data:`GUEST_RESULTS`."""
    if any(a == "--out" or a.startswith("--out=") for a in run_args):
        raise UserError(f"icelab vm run writes its reports to {RESULTS}/ on this host: drop --out")
    args = " ".join(shlex.quote(a) for a in run_args)
    return (f"sudo rm -rf {GUEST_RESULTS} && cd {GUEST_ROOT} && "
            f"sudo ./icelab run {args}{' ' if args else ''}--out {GUEST_RESULTS}")


def cmd_run(args: argparse.Namespace) -> int:
    root = repo_root()
    line = run_command(args.run_args)
    cfg = _sync(root)
    say(f"running ./icelab run {' '.join(args.run_args)} in the VM")
    t = time.monotonic()
    rc = guest(root, line, cfg)
    say(f"the run took {time.monotonic() - t:.0f} s (exit {rc}); copying its reports to {RESULTS}/")
    out = root / RESULTS
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-x", "-C", str(out)], stdin=subprocess.PIPE)
    assert tar.stdin is not None
    copied = guest(root, f"sudo tar -C {GUEST_RESULTS} -cf - .", cfg, stdout=tar.stdin.fileno())
    tar.stdin.close()
    if tar.wait() != 0 or copied != 0 or not (out / "results.json").is_file():
        raise UserError(f"the VM's reports could not be copied to {RESULTS}/ (the run exited {rc})")
    return rc


def cmd_test(args: argparse.Namespace) -> int:
    root = repo_root()
    cfg = _sync(root)
    extra = " ".join(shlex.quote(a) for a in args.test_args)
    say("running ./icelab test in the VM (under emulation this takes a long time)")
    return guest(root, f"cd {GUEST_ROOT} && sudo ./icelab test {extra}".rstrip(), cfg)


def cmd_ssh(args: argparse.Namespace) -> int:
    root = repo_root()
    _require_running(root)
    extra = ["-c", " ".join(args.command)] if args.command else []
    return vagrant(root, "ssh", *extra, check=False).returncode


def cmd_destroy(args: argparse.Namespace) -> int:
    from ice.vm import libvirtd

    root = repo_root()
    if shutil.which("vagrant") is not None and machine_state(root) != "not_created":
        say("destroying the VM (vagrant destroy -f)")
        vagrant(root, "destroy", "-f")
    libvirtd.stop_ours(_state_dir(root) / "icelab-libvirtd", say)
    return 0


def cmd_box(args: argparse.Namespace) -> int:
    root = repo_root()
    provision_host(root)
    seconds = build_box(root)
    say(f"done in {seconds:.0f} s")
    return 0


def add_parser(sub: Subparsers) -> None:
    v = sub.add_parser("vm", help="the Vagrant VM: up, run, test, ssh, destroy, box (docs/ci.md)",
                       description="A thin wrapper over vagrant and the repository's Vagrantfile.")
    vsub = v.add_subparsers(dest="vm_command", metavar="VM_COMMAND", required=True)
    p = vsub.add_parser("up", help="install Vagrant and libvirt if needed, build the box if none, boot, provision")
    p.set_defaults(func=cmd_up)
    p = vsub.add_parser("run", help=f"./icelab run ARGS in the VM; its reports go to {RESULTS}/",
                        prefix_chars="\0")
    p.add_argument("run_args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for icelab run")
    p.set_defaults(func=cmd_run)
    p = vsub.add_parser("test", help="./icelab test in the VM (slow under emulation)", prefix_chars="\0")
    p.add_argument("test_args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for icelab test")
    p.set_defaults(func=cmd_test)
    p = vsub.add_parser("ssh", help="vagrant ssh (with a command: run it and exit)", prefix_chars="\0")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND")
    p.set_defaults(func=cmd_ssh)
    p = vsub.add_parser("destroy", help="vagrant destroy -f, and stop the libvirt daemon icelab vm started")
    p.set_defaults(func=cmd_destroy)
    p = vsub.add_parser("box", help="build the local Debian 12 libvirt box offline and add it to Vagrant")
    p.set_defaults(func=cmd_box)
