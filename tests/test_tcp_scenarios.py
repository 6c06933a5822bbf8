"""ICE-TCP (RFC 6544) in scenario cells: the cell options, the sim's TCP driver for the agent's intents, and
scenarios/tcp.toml in both back-ends (the lab's run is checked against the sim's, cell by cell)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from ice.errors import UserError
from ice.scenario.cell import Cell
from ice.scenario.expect import expect
from ice.scenario.sim import run_sim
from ice.scenario.suite import Suite

TCP = ROOT / "scenarios" / "tcp.toml"


def _cell(**table: object) -> Cell:
    return Cell.from_table({"name": "c", "topology": "two_nats", **table})


def test_tcp_cell_options_parse_and_a_udp_cell_echoes_as_before() -> None:
    cell = _cell(transports="tcp", udp_blocked=True, tcp_types_a=["so"],
                 nats={"nat_a": {"preset": "linux-masquerade", "tcp": {"unsolicited_syn": "rst"}}})
    assert cell.tcp and cell.tcp_types_a == ("so",) and cell.tcp_types_b == ("active", "passive", "so")
    doc = cell.as_json()
    assert doc["transports"] == "tcp" and doc["udp_blocked"] is True and doc["tcp_types_a"] == ["so"]
    assert doc["nats"]["nat_a"] == {"preset": "linux-masquerade", "tcp": {"unsolicited_syn": "rst"}}
    assert Cell.from_table(doc) == cell
    assert not {"transports", "udp_blocked", "tcp_types_a"} & set(_cell().as_json())


@pytest.mark.parametrize(("table", "says"), [
    ({"transports": "sctp"}, "transports is 'udp', 'tcp' or 'both', not 'sctp'"),
    ({"tcp_types_a": ["so", "so"]}, "tcp_types_a lists tcptypes among active, passive, so, each once"),
    ({"tcp_types_b": "so"}, "tcp_types_b is a list such as"),
    ({"udp_blocked": "yes"}, "udp_blocked is 'yes'; expected a bool"),
    ({"transports": "tcp", "lite": "b"}, "transports 'tcp' and 'both' go with no lite, kill or restart"),
])
def test_a_bad_tcp_option_is_one_sentence(table: dict[str, object], says: str) -> None:
    with pytest.raises(UserError, match="cell c: " + says.replace("(", r"\(").replace("[", r"\[")):
        _cell(**table)


def _sim(cell: Cell) -> tuple[str, str | None, list[str]]:
    suite = Suite.load([])
    spec = suite.topologies.get(cell.topology).spec(cell.behaviours())
    r = run_sim(cell, spec, expect(cell, spec))
    return r.observed.value, r.selected, [r.reason] if r.reason else []


def test_sim_so_to_so_through_two_dropping_port_restricted_nats() -> None:
    """The agents' so candidates open one connection through both NATs (a simultaneous open) and the TCP pair is
    selected: A's host so base against B's server-reflexive so candidate, learnt by a Binding over TCP."""
    observed, selected, problems = _sim(_cell(transports="tcp", udp_blocked=True, turn=False,
                                              tcp_types_a=["so"], tcp_types_b=["so"],
                                              nats={"nat_a": "eim-apdf", "nat_b": "eim-apdf"}))
    assert (observed, problems) == ("direct", [])
    assert selected == "host tcp so 10.0.1.2:5002 -> srflx tcp so 203.0.113.2:5002"


def test_sim_rst_answering_nats_leave_only_the_relay_and_without_turn_nothing() -> None:
    """The relay is a TURN TCP allocation (RFC 6062) reached over TCP: A's active host candidate connects to B's
    passive relayed TCP candidate on the server (RFC 6544 §5.3)."""
    nats = {"nat_a": "linux-masquerade-rst", "nat_b": "linux-masquerade-rst"}
    observed, selected, problems = _sim(_cell(transports="tcp", udp_blocked=True, nats=nats))
    assert (observed, problems) == ("relay", [])
    assert selected is not None and re.match(r"host tcp active 10\.0\.1\.2:9 -> relay tcp passive 203\.0\.113\.10:\d+$",
                                             selected)
    assert _sim(_cell(transports="tcp", udp_blocked=True, turn=False, nats=nats)) == ("none", None, [])


def test_sim_a_peer_behind_the_udp_blocking_firewall_relays_through_turn_over_tcp() -> None:
    """Its UDP to the server is dropped: it reaches TURN over a simulated TCP connection (the firewall lets port
    3478 out), allocates a UDP relayed address and the relayed pair is selected, as in the lab."""
    observed, selected, problems = _sim(_cell(nats={"nat_a": "udp-blocked", "nat_b": "eim-apdf"}))
    assert (observed, problems) == ("relay", [])
    assert selected is not None and selected.startswith("relay 203.0.113.10:") and " tcp " not in selected


def test_sim_udp_blocked_without_tcp_relays() -> None:
    """UDP between the peers blocked: a UDP-only cell's direct pairs all fail and the relay is selected."""
    observed, selected, problems = _sim(_cell(udp_blocked=True, nats={"nat_a": "eim-eif", "nat_b": "eim-eif"}))
    assert (observed, problems) == ("relay", []) and selected is not None and " tcp " not in selected


@pytest.mark.parametrize("backend", ["sim", pytest.param("lab", marks=pytest.mark.lab)])
def test_the_tcp_suite(backend: str, tmp_path: Path) -> None:
    """so <-> so direct through dropping NATs, active -> passive to a public peer, RST-answering and symmetric NATs
    relayed through a TURN TCP allocation (icelab's server, and coturn's in the lab), UDP winning when both
    transports work and TCP beating the relay when UDP is blocked; on the lab every cell agrees with the sim."""
    out = tmp_path / backend
    p = subprocess.run([*ICELAB, "run", "--backend", backend, str(TCP), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-1000:]
    cells = {c["scenario"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    coturn = cells.pop("symmetric-relay-coturn")  # icelab's agents as processes, relaying on coturn: lab only
    if backend == "sim":
        assert coturn["status"] == "skipped" and "run in the kernel lab only" in coturn["reason"]
    else:
        assert (coturn["status"], coturn["observed"]) == ("pass", "relay")
        assert re.match(r"host tcp active 10\.0\.1\.2:9 -> relay tcp passive 203\.0\.113\.10:\d+$",
                        coturn["selected"]), coturn["selected"]
    assert len(cells) >= 10 and all(c["status"] == "pass" and c["pinned"] for c in cells.values())
    observed = {name: c["observed"] for name, c in cells.items()}
    assert observed == {"so-so-port-restricted": "direct", "so-so-linux-masquerade": "direct",
                        "so-so-drop-x-rst": "direct", "active-passive-public": "direct", "rst-rst-relay": "relay",
                        "rst-rst-no-turn": "none", "symmetric-relay": "relay", "mixed-udp-wins": "direct",
                        "mixed-udp-blocked-tcp-wins": "direct", "udp-only-blocked-relays": "relay"}
    for name in ("so-so-port-restricted", "so-so-linux-masquerade", "so-so-drop-x-rst", "mixed-udp-blocked-tcp-wins"):
        assert " tcp so " in cells[name]["selected"] and " tcp so " in cells[name]["selected_b"]
    assert "host tcp active" in cells["active-passive-public"]["selected"]
    assert " tcp " not in cells["mixed-udp-wins"]["selected"]
    for name in ("rst-rst-relay", "symmetric-relay"):  # a TURN TCP allocation's passive relayed candidate
        assert re.match(r"host tcp active 10\.0\.1\.2:9 -> relay tcp passive 203\.0\.113\.10:\d+$",
                        cells[name]["selected"]), cells[name]["selected"]
    if backend == "lab":
        assert all(c["sim_observed"] == c["observed"] for c in cells.values())


def _bench_tcp(where: str, tmp_path: Path) -> dict[str, object]:
    p = subprocess.run([*ICELAB, "bench", "connect", "--tcp", "--json", "--runs", "3", "--where", where, "--peers",
                        "aioice,pion"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    doc: dict[str, object] = json.loads(p.stdout)
    assert set(doc["not_supported"]) == {"aioice", "pion"}  # type: ignore[arg-type]
    assert "passive" in doc["not_supported"]["pion"]  # type: ignore[index]
    return doc


def test_bench_connect_tcp_on_loopback(tmp_path: Path) -> None:
    """icelab against itself with TCP candidates only: a TCP pair, timed; the stacks without ICE-TCP listed with
    the reason."""
    doc = _bench_tcp("loopback", tmp_path)
    icelab = doc["loopback"]["results"]["icelab"]  # type: ignore[index]
    assert " tcp " in icelab["selected"] and 0 < icelab["median_ms"] <= icelab["p95_ms"] < 1000


@pytest.mark.lab
def test_bench_connect_tcp_through_two_port_restricted_nats(tmp_path: Path) -> None:
    """Through two dropping port-restricted NATs with peer-to-peer UDP dropped: so to so over TCP within 200 ms."""
    doc = _bench_tcp("nat", tmp_path)
    icelab = doc["nat"]["results"]["icelab"]  # type: ignore[index]
    assert "tcptype so" in icelab["selected"] and icelab["median_ms"] <= 200
