"""The scenario matrix as tests: every default cell on the simulation, a representative subset in the kernel lab
(``ICELAB_FULL_MATRIX=1`` runs every cell there too), and the lab runner's reports and artifacts."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from ice.lab.userns import real_root
from ice.pytest_plugin import matrix_params
from ice.scenario.cell import Cell, PathKind
from ice.scenario.result import CellResult, Status

LAB_SUBSET = [
    "eim-eifxeim-eif", "eim-apdfxeim-apdf", "apdm-apdfxeim-adf",  # direct: srflx and peer-reflexive
    "apdm-apdfxapdm-apdf", "apdm-adfxeim-apdf",  # relayed; the second is the conntrack source-port clash case
    "udp-blockedxeim-apdf", "nonexapdm-apdf",  # TURN over TCP; a public peer
    "same-nat-apdm-apdf-nohairpin", "double-nat-eim-apdf-behind-apdm-apdfxeim-apdf",
    "delay50-eim-apdfxeim-apdf", "loss10-eim-apdfxeim-apdf", "relay-only-eim-eifxeim-eif",
]


@pytest.mark.parametrize("cell", matrix_params("sim"))
def test_sim_cell(cell: Cell, matrix_sim: object) -> None:
    r: CellResult = matrix_sim(cell)  # type: ignore[operator]
    if r.skipped:
        pytest.skip(r.reason)
    assert r.status is Status.PASS, r.reason
    if r.observed is not PathKind.NONE:
        assert r.selected is not None and r.seconds is not None and r.selected_types is not None
        local, remote = r.selected_types.split("-")
        assert r.selected.startswith(f"{local} ") and f" -> {remote} " in r.selected  # types with addresses


@pytest.mark.parametrize("cell", matrix_params("lab", None if os.environ.get("ICELAB_FULL_MATRIX") else LAB_SUBSET))
def test_lab_cell(cell: Cell, matrix_lab: object) -> None:
    r: CellResult = matrix_lab(cell)  # type: ignore[operator]
    assert r.status is Status.PASS, f"{r.reason} (artifacts: {r.artifacts}; repro: {r.repro})"
    if r.observed is not PathKind.NONE:
        assert r.selected is not None and r.selected_b is not None and r.selected_types in r.succeeded


@pytest.mark.lab
def test_a_broken_expectation_fails_with_artifacts_and_a_repro(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """Two workers (-j 2), one deliberately wrong pin: that cell fails and leaves pcaps of the cell's packets (named
    by the side they were captured on), both agents' traces (with the wall-clock time of t=0), each NAT's rules and
    conntrack table, both agents' counters, its final record, an index and a repro command; the other cell
    passes."""
    import time

    from ice.cli.run import run_suite

    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"eim-eifxeim-eif": {"path": "relay", "reason": "deliberately wrong"}}))
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(pins))
    rc = run_suite("lab", tmp_path, quiet=True, names=["eim-eifxeim-eif", "apdm-apdfxeim-adf"], jobs=2)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert rc == 1 and doc["passed"] == 1 and doc["failed"] == 1 and doc["jobs"] == 2
    cells = {c["scenario"]: c for c in doc["cells"]}
    bad = cells["eim-eifxeim-eif"]
    assert not bad["pass"] and bad["expected"] == "relay" and bad["observed"] == "direct"
    assert bad["sim_observed"] == "direct" and bad["repro"].endswith("--scenario eim-eifxeim-eif --keep-artifacts "
                                                                     f"--out {tmp_path}/repro/eim-eifxeim-eif")
    assert bad["pinned"] is True
    art = Path(bad["artifacts"])
    names = {p.name for p in art.iterdir()}
    assert {"trace-a.jsonl", "trace-b.jsonl", "nat-a.nft", "nat-b.nft", "nat-a.conntrack", "nat-b.conntrack",
            "repro.txt", "result.json", "stats.json", "index.txt"} <= names
    from ice.lab.capture import pcap_count

    pcaps = {p.name: pcap_count(p) for p in art.glob("*.pcap")}
    assert set(pcaps) == {"a.pcap", "b.pcap", "stun.pcap", "nat-a-wan.pcap", "nat-a-lan.pcap", "nat-b-wan.pcap",
                          "nat-b-lan.pcap"}  # every host and NAT interface, named by its side
    assert all(n > 0 for n in pcaps.values()), pcaps
    assert json.loads((art / "result.json").read_text()) == bad  # the final record: sim check, pin, source
    stats = json.loads((art / "stats.json").read_text())
    for peer in "ab":
        assert stats[peer]["checks-sent"] > 0 and stats[peer]["check-responses-success"] > 0, stats
        assert stats[peer]["data-bytes-sent"] > 0 and stats["pairs"][peer], stats
    assert stats["server"]["kind"] == "turn" and stats["server"]["allocate"] > 0  # the cell has a TURN server
    records = [json.loads(line) for line in (art / "trace-a.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "TraceStart" and abs(records[0]["wall_clock"] - time.time()) < 600
    events = [r["event"] for r in records]
    assert "SelectedPairChanged" in events and "CandidateGathered" in events
    index = (art / "index.txt").read_text()
    assert "nat-a-wan.pcap" in index and "WAN side" in index and "stun_udp" in index and bad["repro"] in index
    assert "table ip icelab" in (art / "nat-a.nft").read_text()
    assert "dport=3478" in (art / "nat-a.conntrack").read_text()  # the STUN/TURN flow, before the reset
    assert cells["apdm-apdfxeim-adf"]["pass"] and cells["apdm-apdfxeim-adf"]["artifacts"] is None
    assert "❌" in (tmp_path / "grid.md").read_text() and "artifacts" in (tmp_path / "grid.md").read_text()


@pytest.mark.lab
def test_shell_on_failure_opens_a_shell_in_the_failed_lab(tmp_path: Path) -> None:
    import subprocess
    import sys

    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"eim-eifxeim-eif": {"path": "relay", "reason": "deliberately wrong"}}))
    p = subprocess.run([sys.executable, "-m", "ice.cli", "run", "--backend", "lab", "--scenario", "eim-eifxeim-eif",
                        "--shell-on-failure", "--out", str(tmp_path / "out"), "-q"],
                       input="ip -o -4 addr show; nft list tables; exit\n", capture_output=True, text=True,
                       timeout=120, env={**os.environ, "ICELAB_EXPECTATIONS": str(pins)},
                       cwd=Path(__file__).parents[1])
    assert p.returncode == 1, p.stderr[-2000:]
    assert "--shell-on-failure: eim-eifxeim-eif failed" in p.stderr
    assert "inet 10.0.1.2/24" in p.stdout  # the shell ran in peer a's namespace, with the lab still up
    assert "FAIL eim-eifxeim-eif" in p.stdout


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() == 0 and not real_root(), reason="it waits for the run's tcpdumps, which cannot "
                    "run in a user namespace (docs/lab.md, \"Without root\")")
@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 128 + 15),
                                             (signal.SIGKILL, -9)])
def test_an_interrupted_parallel_run_leaves_nothing_behind(sig: signal.Signals, status: int, tmp_path: Path
                                                           ) -> None:
    """Ctrl-C, SIGTERM (a CI runner cancelling) or SIGKILL of `icelab run -j 2` while both workers have labs up
    (7 tcpdumps per two-NAT lab): the run stops because of the signal, and every worker, node shell, tcpdump,
    namespace and link is gone; on INT/TERM the workers also removed their capture files themselves."""
    import sys

    from test_lab import kill_when_up

    rc = kill_when_up([sys.executable, "-m", "ice.cli", "run", "--backend", "lab", "-j", "2", "-q", "--out",
                       str(tmp_path)], "tcpdump", 14, sig, up_within=60)
    assert rc == status
    if sig is not signal.SIGKILL:
        assert not (tmp_path / ".captures").exists()
