"""A failed cell's artifacts, read by someone debugging: pcap names by side, the index, the trace header, the
record kept in step with results.json (no lab needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ice.lab.capture import capture_names
from ice.scenario.cell import Cell, PathKind
from ice.scenario.lab import artifact_index, trace_header
from ice.scenario.result import CellResult
from ice.scenario.runner import Runner
from ice.scenario.suite import Suite


def _suite_cell(name: str = "apdm-apdfxeim-apdf") -> tuple[Suite, Cell]:
    suite = Suite.load().select([name])
    return suite, suite.cells[0]


def test_pcap_names_say_which_side_of_each_nat() -> None:
    suite, cell = _suite_cell()
    names = {name: what for name, what in capture_names(suite.spec(cell)).values()}
    assert set(names) == {"a.pcap", "b.pcap", "stun.pcap", "nat-a-wan.pcap", "nat-a-lan.pcap", "nat-b-wan.pcap",
                          "nat-b-lan.pcap"}
    assert "WAN side" in names["nat-a-wan.pcap"] and "203.0.113.1/24" in names["nat-a-wan.pcap"]
    assert "LAN side" in names["nat-a-lan.pcap"] and "10.0.1.1/24" in names["nat-a-lan.pcap"]
    assert names["a.pcap"].startswith("host a, 10.0.1.2/24")


def test_a_node_with_several_interfaces_gets_one_pcap_each_in_link_order() -> None:
    from ice.topology.spec import End, LinkSpec, NodeKind, NodeSpec, TopologySpec

    spec = TopologySpec("multi", (NodeSpec("a"), NodeSpec("r", NodeKind.ROUTER), NodeSpec("s", NodeKind.SWITCH)),
                        (LinkSpec(End("a", ("10.0.0.2/24",)), End("r", ("10.0.0.1/24",))),
                         LinkSpec(End("a", ("10.0.1.2/24",)), End("s"))))
    names = capture_names(spec)
    assert names[(0, "a")][0] == "a-eth0.pcap" and names[(1, "a")][0] == "a-eth1.pcap"
    assert names[(0, "r")][0] == "r.pcap" and (1, "s") not in names  # a switch only forwards


def test_the_index_explains_every_file_and_how_to_read_stun() -> None:
    suite, cell = _suite_cell()
    spec = suite.spec(cell)
    pcaps = {name: what for name, what in capture_names(spec).values()}
    files = sorted([*pcaps, "trace-a.jsonl", "trace-b.jsonl", "nat-a.nft", "nat-a.conntrack", "nat-b.nft",
                    "nat-b.conntrack", "stats.json", "result.json", "repro.txt", "index.txt"])
    repro = suite.repro(cell)
    text = artifact_index(cell, spec, {"nat-a": "apdm-apdf", "nat-b": "eim-apdf"}, pcaps, files, repro)
    for f in files:
        line = next(x for x in text.splitlines() if x.strip().startswith(f + " "))
        assert len(line.split(None, 1)) == 2, line  # every file has its description
    assert "tcpdump -nn -r nat-a-wan.pcap udp" in text
    assert "-d udp.port==3478,stun" in text and "--enable-heuristic stun_udp" in text
    assert "wall_clock" in text and "apt-get install tshark" in text
    assert repro in text and "(apdm-apdf)" in text


def test_a_trace_starts_with_the_wall_clock_time_of_t0() -> None:
    _, cell = _suite_cell()
    wall = time.time()
    header = trace_header("a", cell, wall)
    assert header["t"] == 0.0 and header["event"] == "TraceStart" and header["wall_clock"] == wall
    assert json.loads(json.dumps(header))["wall_clock_utc"].endswith("Z")


def test_the_artifact_record_is_rewritten_with_the_final_result(tmp_path: Path) -> None:
    """The lab wrote result.json before the sim check and the annotations: the runner brings it in step."""
    suite, cell = _suite_cell()
    res = CellResult(cell, "lab", PathKind.RELAY, PathKind.RELAY, "x", 0.1, artifacts=str(tmp_path))
    res.expecting(suite.expectation(cell)[0])
    (tmp_path / "result.json").write_text(json.dumps(res.as_json()))
    assert json.loads((tmp_path / "result.json").read_text())["sim_observed"] is None
    final = Runner(suite).with_sim_check(res)
    doc = json.loads((tmp_path / "result.json").read_text())
    assert doc == final.as_json() and doc["sim_observed"] == "relay" and doc["artifacts"] == str(tmp_path)
    assert doc["repro"] and doc["source"].endswith("default.toml")
