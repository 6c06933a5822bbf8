"""The icelab command as a user runs it: real processes, loopback only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT, free_udp_ports

from ice.errors import UserError


def icelab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ICELAB, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_stun_learns_mapping_json(icelab_server: tuple[str, int]) -> None:
    host, port = icelab_server
    (local,) = free_udp_ports(1)
    p = icelab("stun", f"{host}:{port}", "--json", "--bind", f"127.0.0.1:{local}")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["mapped"] == f"127.0.0.1:{local}" and doc["local"] == f"127.0.0.1:{local}"
    assert doc["mapped_address"] == {"host": "127.0.0.1", "port": local}
    assert doc["software"].startswith("icelab ")
    assert doc["other_address"].startswith("127.0.0.2:")
    assert doc["response_origin"] == f"{host}:{port}"
    assert doc["rtt_ms"] > 0 and doc["requests_sent"] == 1


def test_stun_human_output(icelab_server: tuple[str, int]) -> None:
    host, port = icelab_server
    p = icelab("stun", f"{host}:{port}", "--bind", "127.0.0.1:0")
    assert p.returncode == 0 and p.stdout.startswith("mapped 127.0.0.1:"), p.stderr


def test_behaviour_on_loopback_is_no_nat(icelab_server: tuple[str, int]) -> None:
    host, port = icelab_server
    p = icelab("stun", "--behaviour", f"{host}:{port}", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["behind_nat"] is False
    assert (doc["mapping"], doc["filtering"], doc["hairpinning"]) == ("endpoint-independent",) * 2 + (None,)
    assert doc["other_address"].startswith("127.0.0.2:")


def test_unreachable_server_is_one_line_error() -> None:
    (port,) = free_udp_ports(1)  # nothing listens there: the kernel answers ICMP port unreachable
    p = icelab("stun", f"127.0.0.1:{port}", "--json", timeout=20)
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1
    assert "unreachable" in p.stderr


def test_silent_server_fails_after_the_schedule() -> None:
    """A blackhole (a bound socket that never answers) exhausts the schedule: --rto 0.05 --rc 2 -> 0.05 + 0.8 s."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        p = icelab("stun", f"127.0.0.1:{hole.getsockname()[1]}", "--rto", "0.05", "--rc", "2", timeout=20)
    assert p.returncode == 1 and "2 requests" in p.stderr and "Traceback" not in p.stderr


def test_usage_errors_are_one_sentence() -> None:
    for args in (["stun", "no-port-here:x"], ["server", "stun", "--listen", "127.0.0.1:1", "--alt", "127.0.0.1:2"],
                 ["stun", "127.0.0.1:3478", "--rto", "-1"]):
        p = icelab(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stderr.startswith("icelab: ") and "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_server_refuses_busy_port_clearly() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        p = icelab("server", "stun", "--listen", f"127.0.0.1:{busy.getsockname()[1]}")
    assert p.returncode == 1 and "cannot listen on 127.0.0.1:" in p.stderr and "Traceback" not in p.stderr


def test_run_is_the_matrix_with_a_grid_and_every_report(tmp_path: Path) -> None:
    p = icelab("run", "--presets", "eim-eif", "apdm-apdf", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "4/4 cells as expected" in p.stdout and "A \\ B" in p.stdout
    assert {f.name for f in tmp_path.iterdir()} >= {"results.json", "grid.md", "grid.html", "junit.xml"}
    junit = (tmp_path / "junit.xml").read_text()
    assert 'tests="4"' in junit and 'failures="0"' in junit
    bad = icelab("run", "--scenario", "nope", "--out", str(tmp_path))
    assert bad.returncode == 2 and "no cell named nope" in bad.stderr and "Traceback" not in bad.stderr


def test_demo_prints_a_mapping() -> None:
    p = icelab("demo")
    assert p.returncode == 0, p.stderr
    assert "STUN client learned its mapping: 127.0.0.1:" in p.stdout
    assert "mapping endpoint-independent, filtering endpoint-independent" in p.stdout


def test_doctor_reports_every_check_as_json() -> None:
    p = icelab("doctor", "--json")
    doc = json.loads(p.stdout)
    names = {c["name"] for c in doc["checks"]}
    assert {"root", "netns", "nftables", "conntrack-kernel", "netem", "mininet", "turnserver", "stund"} <= names
    assert p.returncode == (0 if doc["ok"] else 1)
    netem = next(c for c in doc["checks"] if c["name"] == "netem")
    assert netem["required"] is False


def test_bench_codec_json_reports_both_implementations() -> None:
    """Structure only: speed is reported by the benchmark, never asserted by a test."""
    p = icelab("bench", "codec", "--json", "--seconds", "0.01")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    ops = {"build", "parse", "response"}
    assert set(doc["ops_per_second"]) == {"icelab", "aioice"}
    assert set(doc["ops_per_second"]["icelab"]) == ops == set(doc["ops_per_second"]["aioice"]) == set(doc["ratio"])
    for op in ops:
        assert doc["ratio"][op] == round(doc["ops_per_second"]["icelab"][op] / doc["ops_per_second"]["aioice"][op], 2)


def test_bench_server_json_compares_with_coturn() -> None:
    p = icelab("bench", "server", "--json", "--requests", "3000", timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc["requests_per_second"]) == {"icelab", "coturn"}
    assert doc["lost"] == {"icelab": 0, "coturn": 0}
    assert doc["ratio"] == round(doc["requests_per_second"]["icelab"] / doc["requests_per_second"]["coturn"], 2)


def test_bench_throughput_json_reports_every_stack_on_both_paths() -> None:
    """Structure only, with tiny bursts: every stack against itself, direct and relayed, and the ratio to the best
    foreign stack (speed is reported by the benchmark, never asserted)."""
    p = icelab("bench", "throughput", "--json", "--count", "300", "--size", "100", "--runs", "2", timeout=240)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert (doc["benchmark"], doc["count"], doc["size"], doc["runs"]) == ("throughput", 300, 100, 2)
    for path in ("direct", "relayed"):
        part = doc[path]
        assert set(part["results"]) == {"icelab", "aioice", "libnice", "pion"}
        for r in part["results"].values():
            assert "error" not in r, r
            assert r["runs"] == 2 and len(r["mbit_per_s_runs"]) == 2 and 0 <= r["loss_pct"] <= 100
            assert abs(r["mbit_per_s"] - r["datagrams_per_s"] * 100 * 8 / 1e6) <= 0.1  # payload bits of 100 bytes
            assert r["sender_cpu_us_per_datagram"] > 0 and r["receiver_cpu_us_per_datagram"] > 0
            assert ("relay_cpu_us_per_datagram" in r) == (path == "relayed")
        foreign = {n: r["mbit_per_s"] for n, r in part["results"].items() if n != "icelab"}
        assert part["fastest_foreign"] == max(foreign, key=foreign.__getitem__)
        assert part["ratio"] == round(part["results"]["icelab"]["mbit_per_s"] / max(foreign.values()), 4)


def test_bench_throughput_bad_size_is_one_sentence() -> None:
    p = icelab("bench", "throughput", "--size", "4")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == ("icelab: --size is a bulk datagram's size in bytes: 8 to 1472 "
                                "(docs/agent-protocol.md, Bulk data)")


def test_server_json_log_and_clean_stop_with_counters() -> None:
    """--json-log: a 'listening' line, one line per answer, and on SIGTERM a 'stopped' line with the counters."""
    import signal
    import socket

    (port,) = free_udp_ports(1)
    proc = subprocess.Popen([*ICELAB, "server", "stun", "--listen", f"127.0.0.1:{port}", "--json-log"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first == {"ts": first["ts"], "event": "listening", "addresses": [f"127.0.0.1:{port}"], "rfc5780": False}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            s.sendto(b"junk", ("127.0.0.1", port))  # same socket, so it is handled before the request below
            s.sendto(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), ("127.0.0.1", port))
            assert s.recvfrom(2048)[0][:2] == b"\x01\x01"
        binding = json.loads(proc.stdout.readline())
        assert binding["event"] == "binding" and binding["via"] == f"127.0.0.1:{port}"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["stats"] == {"binding": 1, "malformed": 1}


def test_run_records_the_commit_of_its_own_checkout_only(tmp_path: Path) -> None:
    """results.json's environment names the checkout's commit when icelab runs from its source checkout, and no
    commit when the package is installed, even into a venv that sits inside some other git repository."""
    from ice.cli.run import environment, source_checkout

    assert source_checkout() == ROOT.resolve()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert environment()["commit"] == head.stdout.strip()
    # An installed copy of the package inside another repository: no pyproject.toml/icelab next to ice/.
    other = tmp_path / "project"
    (other / "venv" / "site-packages").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    subprocess.run(["git", "-C", str(other), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q",
                    "--allow-empty", "-m", "someone else's project"], check=True)
    subprocess.run(["cp", "-r", str(ROOT / "ice"), str(other / "venv" / "site-packages")], check=True)
    code = ("import ice; from ice.cli.run import environment, source_checkout; "
            "print(ice.__file__, source_checkout(), environment()['commit'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(other / "venv" / "site-packages"), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(other / "venv" / "site-packages" / "ice" / "__init__.py"), "None", "None"]


def test_an_address_that_is_neither_ip_nor_name_is_a_usage_error_naming_it() -> None:
    for bad in ("300.1.1.1:3478", "1.2.3:3478", "bad_host!:3478"):
        p = icelab("stun", bad)
        assert p.returncode == 2, (bad, p.stderr)
        assert p.stderr.startswith(f"icelab: {bad}: ") and "not an IPv4/IPv6 address or host name" in p.stderr


def test_a_missing_port_is_stated(icelab_server: tuple[str, int]) -> None:
    """``icelab stun HOST`` uses 3478 and says so, on success and on failure."""
    host, _ = icelab_server
    p = icelab("stun", host, "--rto", "0.05", "--rc", "2", timeout=20)
    if p.returncode == 0:
        assert f"via {host}:3478 (default port)" in p.stdout
    else:
        assert p.returncode == 1 and f"{host}:3478 (default port)" in p.stderr, p.stderr


def test_user_namespace_probe_names_the_sysctl_that_allows_it(tmp_path: Path) -> None:
    from ice.lab.userns import problem

    (tmp_path / "kernel").mkdir()
    (tmp_path / "user").mkdir()
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    said = problem(tmp_path)
    assert said is not None and "kernel.unprivileged_userns_clone=1" in said
    (tmp_path / "kernel" / "unprivileged_userns_clone").write_text("1\n")
    (tmp_path / "user" / "max_user_namespaces").write_text("0\n")
    said = problem(tmp_path)
    assert said is not None and "user.max_user_namespaces=" in said
    (tmp_path / "user" / "max_user_namespaces").write_text("15000\n")
    failing = tmp_path / "unshare"
    failing.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not permitted' >&2\nexit 1\n")
    failing.chmod(0o755)
    said = problem(tmp_path, str(failing))
    assert said is not None and "Operation not permitted" in said and "user.max_user_namespaces" in said
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    said = problem(tmp_path, str(failing))
    assert said is not None and "kernel.apparmor_restrict_unprivileged_userns=0" in said
    assert "unshare" in (problem(tmp_path, None) or "")


def test_without_user_namespaces_run_says_so_in_one_sentence_and_runs_the_sim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import ice.lab.userns
    from ice.cli import main

    forbidden = ("this host forbids user namespaces (user.max_user_namespaces = 0; "
                 "`sudo sysctl -w user.max_user_namespaces=10000` allows them)")
    monkeypatch.setattr(ice.lab.userns, "lab_problem", lambda: forbidden)
    assert main(["run", "--presets", "eim-apdf", "--out", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err == ""  # --quiet
    assert main(["run", "--presets", "eim-apdf", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"not root, and {forbidden}, so the in-memory sim back-end runs the cells" in err
    assert json.loads((tmp_path / "results.json").read_text())["backend"] == "sim"
    from ice.lab.mn import require_lab

    with pytest.raises(UserError, match=r"user\.max_user_namespaces = 0"):  # lab commands: the same sentence
        require_lab()


def test_this_host_allows_the_user_namespace_the_lab_uses() -> None:
    """The rootless lab's premise here: a user + net + mount + pid namespace with root mapped can be made."""
    from ice.lab.userns import problem

    assert problem() is None


def test_a_bug_is_one_sentence_and_the_traceback_goes_to_a_file(monkeypatch: object, capsys: object) -> None:
    """An unexpected exception inside a command is reported in one line naming a file that holds the traceback,
    exit code 70 (EX_SOFTWARE), never a traceback on the terminal."""
    import ice.cli as cli

    def broken(args: object) -> int:
        raise RuntimeError("a bug on purpose")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)  # type: ignore[attr-defined]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        action.choices["demo"].set_defaults(func=broken)  # type: ignore[index]
    assert cli.main(["demo"]) == 70
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("icelab: internal error (RuntimeError: a bug on purpose); the traceback is in ")
    path = err.split("the traceback is in ")[1].split(":")[0]
    text = Path(path).read_text()
    assert text.startswith("icelab ") and "icelab demo" in text and "RuntimeError: a bug on purpose" in text
    os.unlink(path)
