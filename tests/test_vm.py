"""``icelab vm`` without booting a VM: the Vagrantfile, the command's usage errors, the box's metadata and contents,
the host's route the box copies, and the KVM/TCG decision on fake inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import ROOT

from ice.cli import main
from ice.cli import vm as vm_cli
from ice.errors import UserError
from ice.vm import accel, box, route

VAGRANT_MISSING = ("vagrant is not installed: `./icelab vm up` installs it on demand (scripts/provision-vm.sh); "
                   "scripts/provision.sh does not have to")


# ------------------------------------------------------------------------------------------------ the Vagrantfile


def _validate(**env: str) -> subprocess.CompletedProcess[str]:
    vagrant = shutil.which("vagrant")
    if vagrant is None:
        pytest.skip(VAGRANT_MISSING)
    args = [vagrant, "validate"] if env.get("VAGRANT_DEFAULT_PROVIDER") else [vagrant, "validate", "--ignore-provider"]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1", **env})


@pytest.mark.parametrize("box_name", ["debian/bookworm64", box.BOX_NAME])
def test_vagrant_validates_the_vagrantfile_with_either_box(box_name: str) -> None:
    p = _validate(ICELAB_VM_BOX=box_name, ICELAB_VM_DRIVER="qemu")
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr


def test_vagrant_validates_the_libvirt_settings_where_vagrant_libvirt_is_installed() -> None:
    if shutil.which("vagrant") is None:
        pytest.skip(VAGRANT_MISSING)
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True, timeout=120).stdout
    if "vagrant-libvirt" not in plugins:
        pytest.skip("vagrant-libvirt is not installed: `./icelab vm up` installs it on demand "
                    "(scripts/provision-vm.sh)")
    p = _validate(ICELAB_VM_BOX=box.BOX_NAME, ICELAB_VM_DRIVER="qemu", VAGRANT_DEFAULT_PROVIDER="libvirt")
    assert p.returncode == 0 and "validated successfully" in p.stdout, p.stdout + p.stderr


def test_vagrantfile_provisions_with_provision_sh_and_creates_no_host_network() -> None:
    text = (ROOT / "Vagrantfile").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert 'inline: "bash /icelab/scripts/provision.sh"' in code
    assert re.search(r'provision "test".*run: "never"', code), "the suite in the VM is opt-in, never part of `up`"
    assert "lv.mgmt_attach = false" in code and "hostfwd=tcp:127.0.0.1:" in code
    assert "private_network" not in code and "public_network" not in code
    assert '"build/"' in code, "the box build directory (gigabytes) must not be synced into the VM"
    assert 'LOCAL_BOX = "icelab-bookworm"' in code and box.BOX_NAME == "icelab-bookworm"


def test_provision_vm_script_is_valid_bash_and_provision_sh_stays_lean() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "provision-vm.sh")], check=True)
    vm_script = (ROOT / "scripts" / "provision-vm.sh").read_text()
    for pkg in ("vagrant-libvirt", "libvirt-daemon-system", "qemu-system-x86", "qemu-utils", "debootstrap"):
        assert re.search(rf"\b{re.escape(pkg)}\b", vm_script), pkg
        assert not re.search(rf"\b{re.escape(pkg)}\b", (ROOT / "scripts" / "provision.sh").read_text()), pkg


# ------------------------------------------------------------------------------------------ the command's errors


def _one_sentence(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("icelab: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_vm_run_refuses_out_in_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_sentence(capsys, ["vm", "run", "--presets", "eim-apdf", "--out", "elsewhere"])
    assert "results/vm/" in err and "--out" in err


def test_vm_commands_without_vagrant_say_how_to_get_it(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(vm_cli.shutil, "which", lambda name, *a, **k: None if name == "vagrant" else
                        real_which(name, *a, **k))
    assert "./icelab vm up" in _one_sentence(capsys, ["vm", "ssh"])
    assert "./icelab vm up" in _one_sentence(capsys, ["vm", "test"])


def test_vm_run_on_a_machine_not_up_says_so(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm_cli, "machine_state", lambda root: "not_created")
    err = _one_sentence(capsys, ["vm", "run", "--presets", "eim-apdf"])
    assert err == "icelab: the VM is not created: start it with ./icelab vm up"


def test_vm_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["vm"])
    assert exc.value.code == 2 and "VM_COMMAND" in capsys.readouterr().err


def test_a_bad_icelab_vm_driver_is_one_sentence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ICELAB_VM_DRIVER", "xen")
    with pytest.raises(UserError, match=r"^ICELAB_VM_DRIVER=xen: use kvm or qemu"):
        vm_cli.choose_accel(tmp_path)


def test_run_command_appends_the_guest_out_and_quotes() -> None:
    line = vm_cli.run_command(["--presets", "eim-apdf", "apdm-apdf", "--scenario", "a b"])
    assert line.endswith(f"sudo ./icelab run --presets eim-apdf apdm-apdf --scenario 'a b' --out "
                         f"{vm_cli.GUEST_RESULTS}")
    assert vm_cli.run_command([]).endswith(f"sudo ./icelab run --out {vm_cli.GUEST_RESULTS}")


def test_the_local_box_is_built_only_when_no_box_is_installed(tmp_path: Path) -> None:
    env = {"VAGRANT_HOME": str(tmp_path)}
    assert vm_cli.needs_local_box(env)
    (tmp_path / "boxes" / box.BOX_NAME).mkdir(parents=True)
    assert not vm_cli.needs_local_box(env)
    shutil.rmtree(tmp_path / "boxes" / box.BOX_NAME)
    (tmp_path / "boxes" / "debian-VAGRANTSLASH-bookworm64").mkdir(parents=True)
    assert not vm_cli.needs_local_box(env)
    assert vm_cli.needs_local_box({**env, "ICELAB_VM_BOX": box.BOX_NAME})
    assert not vm_cli.needs_local_box({**env, "ICELAB_VM_BOX": "someone/else"})


# ------------------------------------------------------------------------------------------------------- the box


def test_box_metadata_is_what_vagrant_libvirt_reads() -> None:
    assert json.loads(json.dumps(box.metadata(24))) == {"provider": "libvirt", "format": "qcow2", "virtual_size": 24}


def test_pack_makes_a_libvirt_box(tmp_path: Path) -> None:
    (tmp_path / "box.img").write_bytes(b"QFI\xfb")
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    packed = box.pack(tmp_path, tmp_path / "box.img")
    assert packed.name == f"{box.BOX_NAME}.box"
    with tarfile.open(packed) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json", "vmlinuz"]
        meta = tar.extractfile("metadata.json")
        assert meta is not None and json.load(meta)["provider"] == "libvirt"
        vf = tar.extractfile("Vagrantfile")
        assert vf is not None and b'Vagrant.configure("2")' in vf.read()


def test_the_box_gets_every_package_provision_sh_may_install() -> None:
    pkgs = box.provision_packages((ROOT / "scripts" / "provision.sh").read_text())
    for pkg in ("mininet", "nftables", "coturn", "golang-go", "chromium", "python3-venv", "nodejs", "npm"):
        assert pkg in pkgs
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", p) for p in pkgs)
    assert len(pkgs) == len(set(pkgs))


def test_provision_packages_reads_multi_line_lists_and_drops_comments() -> None:
    script = ("APT_PACKAGES=(\n  # Tools (the lab's): a, b\n  iproute2 nftables  # netfilter (nft)\n  git\n)\n"
              "if x; then missing+=(nodejs npm); fi\nOTHER=(not-this)\n")
    assert box.provision_packages(script) == ["iproute2", "nftables", "git", "nodejs", "npm"]


def test_the_disk_layout_and_boot_configuration() -> None:
    table = box.partition_table(128)
    assert "start=2048, size=262144, type=c, bootable" in table and "start=264192, type=83" in table
    cfg = box.syslinux_cfg("1234")
    assert "root=UUID=1234" in cfg and "console=ttyS0" in cfg and "KERNEL /vmlinuz" in cfg


def test_the_insecure_key_is_vagrants_when_vagrant_is_installed() -> None:
    if shutil.which("vagrant") is None:
        pytest.skip(VAGRANT_MISSING)
    assert box.insecure_key().startswith("ssh-rsa ") and box.insecure_key().endswith("vagrant insecure public key")


# -------------------------------------------------------------------------------------------- the host's route


def test_apt_mirrors_from_deb822_and_one_line_sources() -> None:
    deb822 = ("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
              "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
              "Suites: bookworm-security\nComponents: main\n")
    assert route.apt_mirrors([("debian.sources", deb822)]) == ("http://mirror.example/debian",
                                                               "http://mirror.example/debian-security")
    one_line = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert route.apt_mirrors([("sources.list", one_line)]) == ("http://m.example/debian", route.DEFAULT_SECURITY)
    disabled = "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n"
    assert route.apt_mirrors([("x.sources", disabled)]) == (route.DEFAULT_MIRROR, route.DEFAULT_SECURITY)


def test_registry_hosts_keeps_pinned_names_only() -> None:
    hosts = ("127.0.0.1 localhost\n::1 localhost ip6-localhost\nfe00::0 ip6-localnet\nff02::1 ip6-allnodes\n"
             "192.0.2.9 myhost\n203.0.113.80 deb.debian.org pypi.org # the mirror\n")
    assert route.registry_hosts(hosts, own_names=["myhost"]) == ("203.0.113.80 deb.debian.org pypi.org",)


def test_guest_files_carry_the_route(tmp_path: Path) -> None:
    r = route.Route(mirror="http://m.example/debian", hosts_lines=("203.0.113.80 pypi.org",),
                    proxy_env={"https_proxy": "http://proxy.example:3128"}, pip_index="https://pypi.example/simple")
    files = route.guest_files(r)
    assert "URIs: http://m.example/debian" in files["etc/apt/sources.list.d/debian.sources"]
    assert "203.0.113.80 pypi.org" in files["etc/hosts"]
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in files["etc/pip.conf"]
    assert "index-url = https://pypi.example/simple" in files["etc/pip.conf"]
    assert files["etc/environment"] == 'https_proxy="http://proxy.example:3128"\n'
    assert route.http_setting("file:///opt/pypi/simple") is None


def test_host_route_reads_a_fake_etc(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "apt" / "sources.list.d").mkdir(parents=True)
    (etc / "apt" / "apt.conf.d").mkdir()
    (etc / "apt" / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://snap.example/debian\nSuites: bookworm\n")
    (etc / "apt" / "apt.conf.d" / "99snapshot").write_text('Acquire::Check-Valid-Until "false";\n')
    (etc / "apt" / "apt.conf.d" / "01other").write_text('APT::Install-Recommends "0";\n')
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    (etc / "pip.conf").write_text("[global]\nextra-index-url = file:///opt/x\nindex-url = https://p.example/s\n")
    cas = tmp_path / "ca"
    cas.mkdir()
    (cas / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    r = route.host_route(etc, cas, environ={"HOME": str(tmp_path), "http_proxy": "http://px:8080"})
    assert r.mirror == "http://snap.example/debian" and r.security == route.DEFAULT_SECURITY
    assert [p.name for p in r.apt_conf_files] == ["99snapshot"] and [p.name for p in r.ca_files] == ["proxy.crt"]
    assert r.pip_index == "https://p.example/s" and dict(r.proxy_env) == {"http_proxy": "http://px:8080"}


# ------------------------------------------------------------------------------------------------------ KVM / TCG


def test_no_usable_dev_kvm_means_tcg() -> None:
    a = accel.decide(False, None)
    assert a.driver == "qemu" and a.emulated and "/dev/kvm" in a.reason


def test_a_kvm_guest_that_reaches_its_root_mount_means_kvm() -> None:
    console = "[    0.9] VFS: Unable to mount root fs on unknown-block(0,0)\n[    0.9] Kernel panic - not syncing\n"
    a = accel.decide(True, accel.BootTry(console, 1.2, False))
    assert a.driver == "kvm" and not a.emulated and "1.2 s" in a.reason


def test_a_silent_kvm_guest_means_tcg_and_says_why() -> None:
    a = accel.decide(True, accel.BootTry("", 30.0, True))
    assert a.driver == "qemu" and "printed nothing in 30 s" in a.reason and "nested" in a.reason
    a = accel.decide(True, accel.BootTry("Linux version 6.1\n", 30.0, True))
    assert a.driver == "qemu" and "did not reach its root mount" in a.reason


def test_kvm_without_a_kernel_to_try_is_trusted() -> None:
    assert accel.decide(True, None).driver == "kvm"


def test_kvm_usable_is_false_for_a_missing_device(tmp_path: Path) -> None:
    assert not accel.kvm_usable(tmp_path / "kvm")
    assert accel.kvm_boots(tmp_path / "no-kernel") is None
