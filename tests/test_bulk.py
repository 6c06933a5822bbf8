"""Bandwidth as a link condition, the timeline's ``link`` step and the cell's bulk phase: parsing (a mistake is one
sentence naming the cell), the token bucket in the sim, the bulk transfer without I/O, the reports, and
scenarios/throughput.toml in both back-ends landing in its bands with the lab and the sim agreeing."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from ice.errors import UserError
from ice.lab.wire import parse_set
from ice.nat.behaviour import preset
from ice.scenario.bulk import ACK_MAGIC, BulkPhase, BulkSettings, BulkTransfer, ack_for
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected
from ice.scenario.sim import run_sim
from ice.scenario.timeline import Step, changes_delay, parse_timeline
from ice.sim.network import SimNetwork, _Shaper
from ice.topology.builder import conditions
from ice.topology.registry import BUILTIN, LINK_KEYWORDS
from ice.topology.spec import LinkConditions, TokenBucket

THROUGHPUT = ROOT / "scenarios" / "throughput.toml"


# ------------------------------------------------------------------------------------------------ parsing


def test_bandwidth_is_a_link_condition_of_topologies_and_cells() -> None:
    assert "bandwidth_mbit" in LINK_KEYWORDS
    spec = BUILTIN.build("two_nats", "eim-eif", "eim-eif", bandwidth_mbit=10)
    shaped = [link.conditions for link in spec.links if link.conditions is not None]
    assert shaped == [LinkConditions(bandwidth_mbit=10.0)]
    cell = Cell.from_table({"name": "c", "topology": "two_nats", "bandwidth_mbit": 10, "delay_ms": 5})
    assert cell.link() == {"delay_ms": 5.0, "bandwidth_mbit": 10.0}
    assert cell.as_json()["bandwidth_mbit"] == 10.0 and "bulk" not in cell.as_json()
    assert conditions() is None


def test_token_bucket_sizes_and_tc_arguments() -> None:
    bucket = LinkConditions(bandwidth_mbit=10).token_bucket()
    assert bucket == TokenBucket(1_250_000.0, 16384, 125_000)
    assert bucket.tc_args() == "rate 10000000bit burst 16384 limit 125000"
    assert LinkConditions(bandwidth_mbit=1).token_bucket() == TokenBucket(125_000.0, 16384, 65536)
    assert LinkConditions().token_bucket() is None
    assert LinkConditions(loss=1).loss_rule() == "meta protocol ip drop"  # a dead link


@pytest.mark.parametrize(("table", "says"), [
    ({"bandwidth_mbit": -1}, "bandwidth_mbit must be >= 0"),
    ({"bandwidth_mbit": "fast"}, "bandwidth_mbit is 'fast'; expected a int"),
    ({"bulk": 2}, "bulk is a table such as"),
    ({"bulk": {}}, "bulk needs mb = MEGABYTES"),
    ({"bulk": {"mb": 0}}, "bulk mb is more than 0 and at most 50"),
    ({"bulk": {"mb": 2, "rate": 3}}, "bulk knows mb, mbit and max_loss_pct, not rate"),
    ({"bulk": {"mb": 2, "mbit": [10, 5]}}, r"bulk mbit is \[low, high\] with 0 <= low <= high"),
    ({"bulk": {"mb": 2, "mbit": 5}}, r"bulk mbit is \[low, high\] in Mbit/s, not 5"),
    ({"bulk": {"mb": 2}, "agent_b": "pion"}, "bulk runs between icelab's own agents"),
])
def test_a_bad_bandwidth_or_bulk_is_one_sentence_naming_the_cell(table: dict[str, object], says: str) -> None:
    with pytest.raises(UserError, match="cell c: .*" + says):
        Cell.from_table({"name": "c", "topology": "two_nats", **table})


def test_bulk_option_echoes_and_judges_its_band() -> None:
    cell = Cell.from_table({"name": "c", "topology": "two_nats",
                            "bulk": {"mb": 2, "mbit": [5, 10.5], "max_loss_pct": 1}})
    assert cell.bulk == BulkPhase(2.0, (5.0, 10.5), 1.0)
    assert cell.as_json()["bulk"] == {"mb": 2.0, "mbit": [5.0, 10.5], "max_loss_pct": 1.0}
    assert Cell.from_table(cell.as_json()) == cell  # what a lab worker receives
    assert cell.bulk.count() == 1667
    assert cell.bulk.verdict({"mbit_per_s": 9.7, "loss_pct": 0.0}) == ""
    assert cell.bulk.verdict({"mbit_per_s": 11.0, "loss_pct": 0.0}) == "bulk: 11 Mbit/s, expected 5 to 10.5"
    assert cell.bulk.verdict({"mbit_per_s": 9.0, "loss_pct": 3.0}) == "bulk: loss 3 %, expected at most 1 %"
    assert cell.bulk.verdict({"mbit_per_s": None}) == "bulk: nothing measured (expected 5 to 10.5 Mbit/s)"


def test_link_steps_parse_echo_and_say_whether_they_change_the_delay() -> None:
    steps = parse_timeline([{"after": 1, "link": {"bandwidth_mbit": 2, "delay_ms": 80}}, {"link": {"loss": 1}},
                            {"link_loss": 0.3}])
    assert steps[0] == Step("link", "", 1.0, link=(("delay_ms", 80.0), ("bandwidth_mbit", 2.0)))
    assert steps[0].as_json() == {"after": 1.0, "link": {"delay_ms": 80.0, "bandwidth_mbit": 2.0}}
    assert steps[0].label == "after 1 s: link delay_ms=80 bandwidth_mbit=2"
    assert steps[1].label == "link loss=1" and steps[2].as_json() == {"link_loss": 0.3}
    assert changes_delay(steps) and not changes_delay(steps[1:])


@pytest.mark.parametrize(("step", "says"), [
    ({"link": {}}, "link is a table of loss, delay_ms, jitter_ms, bandwidth_mbit"),
    ({"link": 0.3}, "link is a table of"),
    ({"link": {"mtu": 1200}}, "link changes loss, delay_ms, jitter_ms, bandwidth_mbit, not mtu"),
    ({"link": {"loss": 1.5}}, r"link loss is a fraction in \[0, 1\] \(1: a dead link\)"),
    ({"link": {"delay_ms": -5}}, "link delay_ms is a number >= 0, not -5"),
    ({"link": {"jitter_ms": 5}}, "link jitter_ms goes with a delay_ms at least as large"),
    ({"link": {"bandwidth_mbit": True}}, "link bandwidth_mbit is a number >= 0, not True"),
])
def test_a_bad_link_step_is_one_sentence_naming_the_cell_and_step(step: dict[str, object], says: str) -> None:
    with pytest.raises(UserError, match="cell c: timeline step 1: " + says):
        Cell.from_table({"name": "c", "topology": "two_nats", "timeline": [step]})


def test_the_wire_forwarders_control_line() -> None:
    assert parse_set("set 80 5") == (0.08, 0.005)
    for bad, says in (("delay 80", "is 'set DELAY_MS JITTER_MS'"), ("set x 0", "are milliseconds"),
                      ("set 5 10", "jitter <= delay")):
        with pytest.raises(ValueError, match=says):
            parse_set(bad)


# ------------------------------------------------------------------------------------------------ models


def test_the_sim_token_bucket_passes_its_burst_then_the_rate_and_drops_beyond_its_queue() -> None:
    bucket = TokenBucket(125_000.0, 2484, 12_420)  # 1 Mbit/s, two 1242-byte frames of burst, ten of queue
    shaper = _Shaper(float(bucket.burst_bytes))
    leaves = [shaper.depart(bucket, 0.0, 1242) for _ in range(13)]
    assert leaves[:2] == [0.0, 0.0]  # the full bucket lets two frames through at once
    assert leaves[2:12] == pytest.approx([i * 1242 / 125_000 for i in range(1, 11)])  # then one per 9.9 ms
    assert leaves[12] is None  # the eleventh waiting frame would need more than the queue holds
    assert shaper.depart(bucket, 1.0, 1242) == 1.0  # idle for a while: the bucket is full again


def test_a_shaped_link_in_the_sim_delays_by_the_frames_length() -> None:
    spec = BUILTIN.build("two_nats", preset("eim-eif"), preset("eim-eif"), bandwidth_mbit=1)
    net = SimNetwork(spec, latency=0.0)
    sent = []

    class Sink:
        def handle_datagram(self, now: float, local: object, remote: object, data: bytes) -> None:
            sent.append(now)

        def handle_timeout(self, now: float) -> None: ...

        def next_timeout(self) -> None:
            return None

        def poll_transmit(self) -> None:
            return None

        def next_event(self) -> None:
            return None

    net.add_endpoint(Sink(), ("203.0.113.10", 7000))  # type: ignore[arg-type]
    for _ in range(20):  # from A (behind its full cone) to the server, across A's shaped WAN link
        net.send(("10.0.1.2", 5000), ("203.0.113.10", 7000), bytes(1200))
    net.run(5.0)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert len(sent) == 20 and sent[12] == 0.0  # 16 KiB of burst: 13 frames of 1242 bytes at once
    assert gaps[13:] == pytest.approx([1242 * 8 / 1e6] * 6)  # then 1 Mbit/s


def test_bulk_transfer_window_acknowledgements_and_loss() -> None:
    t = BulkTransfer(10, 0.0, BulkSettings(size=100, window=4, ack_timeout=1.0, bins=2))
    first = t.to_send(0.0)
    assert len(first) == 4 and t.to_send(0.0) == [] and t.next_timeout() == 1.0
    assert ack_for(b"hello") is None and t.on_receiver(0.01, b"t") is None  # the stream's datagrams are not counted
    ack = t.on_receiver(0.01, first[2])  # 0 and 1 are lost on the way
    assert ack == ACK_MAGIC + first[2][4:8]
    assert t.on_sender(0.02, ack) is True  # frees 2, and 0 and 1 sent before it (the path keeps order)
    assert t.given_up == 2 and list(t.in_flight) == [3] and t.rtts == [0.02]
    assert len(t.to_send(0.02)) == 3
    t.on_timeout(1.5)  # nothing acknowledged for a second: every slot is free again
    assert not t.in_flight and t.given_up == 6
    while not t.done:
        for data in t.to_send(2.0):
            t.on_sender(2.1, t.on_receiver(2.05, data) or b"")
    f = t.figures("direct", 2.1)
    assert (f["sent"], f["received"], f["loss_pct"], f["complete"]) == (10, 4, 60.0, True)
    assert f["mbit_per_s"] == pytest.approx(3 * 100 * 8 / 2.04 / 1e6, abs=0.01)
    assert f["rtt_ms_median"] == pytest.approx(100.0) and f["path"] == "direct"
    assert f["series"]["mbit_per_s"] and len(f["series"]["mbit_per_s"]) == 2


def _cell(**table: object) -> Cell:
    return Cell.from_table({"name": "c", "topology": "two_nats", "nats": {"nat_a": "eim-apdf", "nat_b": "eim-apdf"},
                            **table})


def test_sim_bulk_over_a_shaped_link_is_the_rate_less_the_headers() -> None:
    cell = _cell(bandwidth_mbit=10, bulk={"mb": 1, "mbit": [9, 10]})
    spec = BUILTIN.build("two_nats", **cell.behaviours(), **cell.link())
    res = run_sim(cell, spec, Expected(PathKind.DIRECT, "direct"))
    bulk = res.extra["bulk"]
    assert isinstance(bulk, dict)
    assert res.passed and bulk["complete"] and bulk["loss_pct"] == 0.0
    assert bulk["mbit_per_s"] == pytest.approx(10 * 1200 / 1242, rel=0.02)  # payload of each frame tbf counts
    assert 25 <= bulk["rtt_ms_median"] <= 35  # the window's 32 frames queued in the filter: 32 ms
    missed = run_sim(_cell(bandwidth_mbit=2, bulk={"mb": 0.5, "mbit": [5, 10]}), BUILTIN.build(
        "two_nats", **cell.behaviours(), bandwidth_mbit=2), Expected(PathKind.DIRECT, "direct"))
    assert missed.status.value == "fail" and missed.reason.startswith("bulk: 1.9")


def test_sim_link_step_changes_the_model_and_a_dead_link_stops_the_stream() -> None:
    cell = _cell(consent_timeout=6, timeline=[
        {"after": 1, "link": {"delay_ms": 80, "bandwidth_mbit": 2}}, {"after": 2, "expect": "direct", "within": 3},
        {"link": {"loss": 1}}, {"expect": "none", "within": 3},
        {"after": 1, "link": {"loss": 0, "delay_ms": 0, "bandwidth_mbit": 0}}, {"expect": "direct", "within": 3}])
    spec = BUILTIN.build("two_nats", **cell.behaviours())
    res = run_sim(cell, spec, Expected(PathKind.DIRECT, "direct"))
    steps = res.extra["timeline"]
    assert isinstance(steps, list) and res.passed, res.reason
    assert [s.get("observed") for s in steps if "observed" in s] == ["direct", "none", "direct"]
    data = res.extra["timeline_data"]
    assert isinstance(data, dict) and data["restarts"] == 0 and data["lost"]["a-to-b"] > 0


# ------------------------------------------------------------------------------------------------ reports


def test_reports_show_each_bulk_phase(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    p = subprocess.run([*ICELAB, "run", "--backend", "sim", str(THROUGHPUT), "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-1000:]
    assert "bulk-10mbit-direct   sim 9.73 Mbit/s, loss 0 %" in p.stdout
    assert "bulk-10mbit-direct   sim 9.73 Mbit/s" in (out / "grid.txt").read_text()
    assert "| bulk-10mbit-direct | direct | 9.73 | 5 to 10.5 | 0 % |" in (out / "grid.md").read_text()
    page = (out / "grid.html").read_text()
    assert page.count('<svg class="bulk-chart"') == 4 and page.count('class="measured"') == 4
    assert 'class="band"' in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


# ------------------------------------------------------------------------------------------------ both back-ends


@pytest.mark.parametrize("backend", ["sim", pytest.param("lab", marks=pytest.mark.lab)])
def test_the_throughput_suite(backend: str, tmp_path: Path) -> None:
    """A 10 Mbit/s link carries 9.7 Mbit/s of payload direct and relayed, a 5 % lossy one loses about 5 % of the
    datagrams, and 40 ms of delay makes the window the limit; on the lab the sim's model agrees within 10 %."""
    if backend == "lab" and os.geteuid() != 0:
        pytest.skip("the lab needs root")
    out = tmp_path / backend
    p = subprocess.run([*ICELAB, "run", "--backend", backend, str(THROUGHPUT), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    results = out / "results.json"
    cells = {c["scenario"]: c for c in json.loads(results.read_text())["cells"]} if results.is_file() else {}
    why = {name: (c["status"], c.get("reason"), c.get("bulk_error"), c.get("bulk")) for name, c in cells.items()
           if c["status"] != "pass"}
    assert p.returncode == 0, f"{why} {p.stdout[-2000:]} {p.stderr[-1000:]}"
    assert len(cells) == 4 and all(c["status"] == "pass" and c["pinned"] for c in cells.values())
    for name in ("bulk-10mbit-direct", "bulk-10mbit-relayed"):
        bulk = cells[name]["bulk"]
        assert 9.0 <= bulk["mbit_per_s"] <= 10.0 and bulk["loss_pct"] == 0 and bulk["complete"]
        assert bulk["path"] == ("relay" if "relayed" in name else "direct")
    lossy = cells["bulk-10mbit-lossy"]["bulk"]
    assert 1.0 <= lossy["loss_pct"] <= 10.0 and lossy["mbit_per_s"] >= 8.0
    far = cells["bulk-10mbit-40ms"]["bulk"]
    assert far["rtt_ms_median"] >= 80.0 and 2.5 <= far["mbit_per_s"] <= 4.5
    if backend == "lab":
        for c in cells.values():
            assert c["sim_bulk"]["mbit_per_s"] == pytest.approx(c["bulk"]["mbit_per_s"], rel=0.1)


@pytest.mark.lab
@pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, netfilter)")
def test_lab_set_link_changes_delay_bandwidth_and_loss_in_place_and_back() -> None:
    """Host a's link built with a forwarder and no conditions: a delay given mid-run shows in the round trips to
    the server, the shaper is a tbf qdisc on both ends, a loss of 1 kills the link, and resetting restores it all;
    the lab leaves nothing behind."""
    import asyncio
    import statistics

    from ice.aio.stun import parse_hostport
    from ice.errors import StunTimeout
    from ice.lab.mn import Lab
    from ice.lab.stun import LabEndpoint, start_stun_server
    from ice.stun.transaction import RetransmissionConfig

    spec = BUILTIN.build("two_nats", "eim-eif", "eim-eif")
    link = next(i for i, _ in spec.ends("a"))
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout

    async def rtts(lab: Lab, n: int = 10) -> list[float]:
        runner = await start_stun_server(lab)
        ep = await LabEndpoint(lab, "a", RetransmissionConfig(rto=0.3, rc=2, rm=2)).open((spec.facts["a"], 0))
        try:
            server = parse_hostport(spec.facts["stun_primary"])
            await ep.binding(server)
            return [(await ep.binding(server)).rtt * 1000 for _ in range(n)]
        except StunTimeout:
            return []
        finally:
            ep.close()
            runner.close()

    def qdisc(lab: Lab, node: str) -> str:
        return lab.run(node, f"tc qdisc show dev {lab.interfaces[(link, node)]}")

    ends = (spec.links[link].a.node, spec.links[link].b.node)
    with Lab(spec, forwarders=frozenset({link})) as lab:
        assert set(lab.wires) == {link}
        assert statistics.median(asyncio.run(rtts(lab))) < 10.0
        lab.set_link(link, LinkConditions(delay_ms=25, bandwidth_mbit=3))
        assert 50.0 <= statistics.median(asyncio.run(rtts(lab))) <= 65.0  # 25 ms each way, once per direction
        assert all("tbf" in qdisc(lab, node) and "rate 3Mbit" in qdisc(lab, node) for node in ends)
        lab.set_link(link, lab.link_conditions(link).changed({"loss": 1.0}))
        assert asyncio.run(rtts(lab, 1)) == []  # a dead link
        lab.reset_links()
        assert lab.link_conditions(link) == LinkConditions() and not lab.link_overrides
        assert statistics.median(asyncio.run(rtts(lab))) < 10.0
        assert not any("tbf" in qdisc(lab, node) for node in ends)
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == namespaces
