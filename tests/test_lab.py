"""Lab tier (root): the conformance probe for every preset, isolation and cleanup of killed runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ICELAB, ROOT

from ice.lab.nat import PRESETS, Filtering, NatBehaviour, NatKind
from ice.lab.userns import real_root

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, netfilter): run the suite as root"),
]

# The mapping-timeout check takes ~4 s of real kernel time per preset; run it where the engine's timeout
# handling differs (each filtering kind, outbound-only refresh is covered by the golden rules), skip it elsewhere.
TIMEOUT_CHECKED = {"full-cone", "port-restricted-cone", "symmetric", "linux-masquerade"}


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", list(PRESETS))
def test_probe_measures_what_the_preset_declares(name: str) -> None:
    args = ["nat", "probe", name, "--json"] + ([] if name in TIMEOUT_CHECKED else ["--no-timeout-check"])
    p = subprocess.run([*ICELAB, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    doc = json.loads(p.stdout)
    assert doc["mismatches"] == [] and p.returncode == 0, (doc["mismatches"], p.stderr)
    behaviour = PRESETS[name]
    measured = doc["measured"]
    if behaviour.mapping is not None:
        assert measured["mapping"] == behaviour.mapping.value
        assert measured["filtering"] == behaviour.filtering.value  # type: ignore[union-attr]
        assert measured["hairpinning"] is behaviour.hairpinning
        assert measured["port_preservation"] is behaviour.port_preservation
    if name in TIMEOUT_CHECKED:
        assert measured["alive_before_timeout"] is True and measured["expired_after_timeout"] is True
        assert measured["inbound_refreshes"] is True  # every preset refreshes on inbound, as Linux does
    if name == "udp-blocked":
        assert measured["udp"] is False
    if name == "none":
        assert measured["behind_nat"] is False
    tcp = measured["tcp"]  # RFC 5382, measured with kernel TCP: what the model's TCP section says
    if behaviour.kind is not NatKind.NONE:
        assert tcp["mapping"] == behaviour.tcp_mapping.value  # type: ignore[union-attr]
        assert tcp["filtering"] == behaviour.tcp_filtering.value  # type: ignore[union-attr]
        assert tcp["port_preservation"] is behaviour.tcp_port_preservation
        assert tcp["unsolicited_syn"] == behaviour.tcp.unsolicited_syn.value
        assert tcp["stranger_syn"] == ("admitted" if behaviour.tcp_filtering is Filtering.ENDPOINT_INDEPENDENT
                                       else behaviour.tcp.unsolicited_syn.value)
    assert tcp["simultaneous_open"] is True  # every preset admits a simultaneous open (RFC 5382 REQ-2a)
    if name == "linux-masquerade-rst":
        assert tcp["unsolicited_syn"] == "rst"  # the box's own TCP stack answers: measured, not assumed


@pytest.mark.parametrize(
    ("args", "checks"),
    [
        (["eim-apdf", "--outbound-refresh"], {"inbound_refreshes": False, "expired_after_timeout": True}),
        (["adm-eif", "--no-hairpin", "--no-port-preservation", "--no-timeout-check"],
         {"hairpinning": False, "port_preservation": False, "mapping": "address-dependent",
          "tcp.port_preservation": False, "tcp.mapping": "address-dependent", "tcp.stranger_syn": "admitted"}),
        (["port-restricted-cone", "--syn-answer", "icmp", "--no-simultaneous-open", "--no-timeout-check"],
         {"tcp.unsolicited_syn": "icmp", "tcp.stranger_syn": "icmp", "tcp.simultaneous_open": False}),
        (["linux-masquerade", "--syn-answer", "rst", "--no-timeout-check"],
         {"tcp.unsolicited_syn": "rst", "tcp.stranger_syn": "rst", "tcp.simultaneous_open": True,
          "filtering": "address-and-port-dependent"}),
    ],
)
def test_probe_variants(args: list[str], checks: dict[str, object]) -> None:
    """Field overrides reach the kernel: RFC 4787 outbound-only refresh, no hairpin, random external ports; RFC 5382
    ICMP or RST answers to unsolicited SYNs, a refused simultaneous open."""
    p = subprocess.run([*ICELAB, "nat", "probe", *args, "--json"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    doc = json.loads(p.stdout)
    assert p.returncode == 0 and doc["mismatches"] == [], (doc["mismatches"], p.stderr)
    measured = {**doc["measured"], **{f"tcp.{k}": v for k, v in doc["measured"]["tcp"].items()}}
    assert {k: measured[k] for k in checks} == checks


def test_probe_refuses_an_impossible_variant() -> None:
    p = subprocess.run([*ICELAB, "nat", "probe", "linux-masquerade", "--no-port-preservation"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and "is apdm-apdf" in p.stderr and "Traceback" not in p.stderr


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_when_up(argv: list[str], marker: str, count: int, sig: signal.Signals, up_within: float = 20,
                 gone_within: float = 10) -> int:
    """Start ``argv``, wait until ``count`` of its descendants have ``marker`` in their command line (the lab is
    up), send ``sig`` to it, and check that it stopped because of the signal and that every process it had, and
    every namespace and root-namespace link it made, is gone."""
    links_before, netns_before = root_links(), netns_list()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + up_within
    seen: set[int] = set()
    while time.monotonic() < deadline and len(seen) < count:
        seen = {p for p in _descendants(proc.pid) if marker in _cmdline(p)}
        time.sleep(0.02)  # polling the process table: there is no event to wait on from outside the lab
    assert len(seen) >= count, "the lab never came up"
    tree = _descendants(proc.pid)
    os.kill(proc.pid, sig)
    proc.wait(gone_within * 2)
    assert proc.returncode != 0  # stopped by the signal, not finished (unshare alone would ignore INT/TERM)
    deadline = time.monotonic() + gone_within
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree):
        time.sleep(0.02)
    assert not [p for p in tree if Path(f"/proc/{p}").exists()], "lab processes survived"
    assert root_links() == links_before and netns_list() == netns_before
    return proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_lab_leaves_nothing_behind(sig: signal.Signals) -> None:
    """Kill a probe while its lab is up (client, NAT and server node shells): everything goes with it."""
    kill_when_up([*ICELAB, "nat", "probe", "full-cone", "--json"], "mininet:", 3, sig, gone_within=5)


@pytest.mark.skipif(not real_root(), reason="`ip netns add` needs /run/netns, which uid 0 of a user namespace "
                                            "cannot create (the lab itself never uses ip netns)")
@pytest.mark.parametrize(("name", "other_ip_gets_in"), [("full-cone", True), ("port-restricted-cone", False)])
def test_printed_rules_work_in_namespaces_made_by_hand(name: str, other_ip_gets_in: bool) -> None:
    """`icelab nat rules` output, loaded with nft -f into plain `ip netns` namespaces, behaves as declared."""
    from ice.lab.netns import socket_in

    tag = f"ih{os.getpid() % 100000}"
    c, n, s = f"{tag}c", f"{tag}n", f"{tag}s"

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    try:
        for ns in (c, n, s):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", c, "link", "add", "lan0", "type", "veth", "peer", "name", "nlan", "netns", n)
        sh("ip", "-n", n, "link", "add", "nwan", "type", "veth", "peer", "name", "wan0", "netns", s)
        for ns, dev, cidrs in ((c, "lan0", ["10.0.0.2/24"]), (n, "nlan", ["10.0.0.1/24"]),
                               (n, "nwan", ["203.0.113.1/24"]), (s, "wan0", ["203.0.113.10/24", "203.0.113.11/24"])):
            for cidr in cidrs:
                sh("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", c, "route", "add", "default", "via", "10.0.0.1")
        sh("ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = subprocess.run([*ICELAB, "nat", "rules", name, "--wan", "nwan", "--lan", "nlan", "--public",
                                "203.0.113.1", "--lan-subnet", "10.0.0.0/24"], capture_output=True, text=True,
                               check=True, cwd=ROOT).stdout
        subprocess.run(["ip", "netns", "exec", n, "nft", "-f", "-"], input=rules, text=True, check=True)

        client = socket_in(f"/run/netns/{c}")
        s1, s2 = socket_in(f"/run/netns/{s}"), socket_in(f"/run/netns/{s}")
        try:
            client.bind(("10.0.0.2", 40000))
            s1.bind(("203.0.113.10", 3478))
            s2.bind(("203.0.113.11", 3478))
            for sock in (client, s1, s2):
                sock.settimeout(1)
            client.sendto(b"hello", ("203.0.113.10", 3478))
            data, mapped = s1.recvfrom(100)
            assert data == b"hello" and mapped == ("203.0.113.1", 40000)  # EIM with port preservation
            s1.sendto(b"reply", mapped)
            assert client.recvfrom(100) == (b"reply", ("203.0.113.10", 3478))
            s2.sendto(b"stranger", mapped)  # an endpoint the client never contacted
            try:
                got: bytes | None = client.recvfrom(100)[0]
            except TimeoutError:
                got = None
            assert (got == b"stranger") is other_ip_gets_in
        finally:
            for sock in (client, s1, s2):
                sock.close()
    finally:
        for ns in (c, n, s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert tag not in netns_list()


# Each topology: (builder args, {peer: expected mapped IP, or None when UDP cannot get out}).
TOPOLOGY_CASES = {
    "two_nats": ((), {"a": "203.0.113.1", "b": "203.0.113.2"}),
    "same_nat": (("full-cone",), {"a": "203.0.113.1", "b": "203.0.113.1"}),
    "double_nat": ((), {"a": "203.0.113.1", "b": "203.0.113.101"}),  # A is seen at the CGN's public address
    "one_public": (("symmetric",), {"a": "203.0.113.1", "b": "203.0.113.101"}),
    "udp_blocked": ((), {"a": None, "b": "203.0.113.2"}),
    "shared_cgn": ((), {"a": "203.0.113.1", "b": "203.0.113.1"}),  # both behind the one CGN address
    "triple_nat": ((), {"a": "203.0.113.1", "b": "203.0.113.2"}),
}


@pytest.mark.parametrize("name", sorted(TOPOLOGY_CASES))
def test_topology_builds_and_peers_learn_their_mappings(name: str) -> None:
    import asyncio

    from ice.aio.stun import parse_hostport
    from ice.errors import StunTimeout
    from ice.lab.mn import Lab
    from ice.lab.stun import LabEndpoint, start_stun_server
    from ice.stun.transaction import RetransmissionConfig
    from ice.topology.registry import topology

    args, expected = TOPOLOGY_CASES[name]
    spec = topology(name, *args)
    links_before = root_links()

    async def learn(lab: Lab) -> dict[str, str | None]:
        runner = await start_stun_server(lab)
        seen: dict[str, str | None] = {}
        try:
            for peer in expected:
                ep = await LabEndpoint(lab, peer, RetransmissionConfig(rto=0.05, rc=3, rm=4)).open(
                    (spec.facts[peer], 0))
                try:
                    seen[peer] = (await ep.binding(parse_hostport(spec.facts["stun_primary"]))).mapped[0]
                except StunTimeout:
                    seen[peer] = None
                finally:
                    ep.close()
        finally:
            runner.close()
        return seen

    with Lab(spec) as lab:
        assert lab.build_seconds < 2.0
        assert asyncio.run(learn(lab)) == expected
    assert root_links() == links_before


def test_delay_and_jitter_give_the_configured_rtt() -> None:
    """20 ms +/- 2 ms one way on A's uplink: every A <-> STUN round trip takes 36..44 ms (plus scheduling)."""
    import asyncio
    import statistics

    from ice.aio.stun import parse_hostport
    from ice.lab.mn import Lab
    from ice.lab.stun import LabEndpoint, start_stun_server
    from ice.topology.registry import topology

    spec = topology("two_nats", "full-cone", "full-cone", delay_ms=20, jitter_ms=2, seed=7)

    async def rtts(lab: Lab) -> list[float]:
        runner = await start_stun_server(lab)
        ep = await LabEndpoint(lab, "a").open((spec.facts["a"], 0))
        try:
            server = parse_hostport(spec.facts["stun_primary"])
            await ep.binding(server)  # resolves ARP across the wire first
            return [(await ep.binding(server)).rtt * 1000 for _ in range(20)]
        finally:
            ep.close()
            runner.close()

    with Lab(spec) as lab:
        assert len(lab.wires) == 1
        measured = asyncio.run(rtts(lab))
    assert min(measured) >= 36.0
    assert 38.0 <= statistics.median(measured) <= 46.0
    assert max(measured) < 60.0


def test_deterministic_loss_drops_exactly_every_nth_packet_each_way() -> None:
    from ice.lab.mn import Lab
    from ice.topology.registry import topology

    spec = topology("one_public", "full-cone", loss=0.1, loss_mode="nth")
    with Lab(spec) as lab:
        a, s = lab.socket("a"), lab.socket("stun")
        try:
            a.bind((spec.facts["a"], 5000))
            s.bind(("203.0.113.10", 6000))
            a.settimeout(0.5)
            s.settimeout(0.5)
            for i in range(100):
                a.sendto(b"%d" % i, ("203.0.113.10", 6000))
            up = _drain(s)
            mapped = ("203.0.113.1", 5000)  # full cone with port preservation
            for i in range(100):
                s.sendto(b"%d" % i, mapped)
            down = _drain(a)
        finally:
            a.close()
            s.close()
    for received in (up, down):
        lost = set(range(100)) - {int(x) for x in received}
        # exactly every 10th packet: one residue class (the counter may already have seen a stray packet)
        assert len(lost) == 10 and len({x % 10 for x in lost}) == 1, sorted(lost)


def _drain(sock: object) -> list[bytes]:
    import socket

    assert isinstance(sock, socket.socket)
    got = []
    while True:
        try:
            got.append(sock.recv(100))
        except TimeoutError:
            return got


def test_bench_lab_reports_every_topology() -> None:
    """Structure only (speed is the benchmark's business): every topology and the probed presets appear."""
    from ice.topology.registry import Topologies

    p = subprocess.run([*ICELAB, "bench", "lab", "--json", "--rounds", "1"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc["topologies"]) == set(Topologies().all())
    for row in doc["topologies"].values():
        assert row["build_ms"] > 0 and row["teardown_ms"] > 0 and row["reset_ms"] > 0
    assert all(probe["ok"] for probe in doc["probes"].values())


def test_in_process_lab_dies_with_its_process() -> None:
    """A Lab used directly (as tests and scenario runners do) is also gone when its process is SIGKILLed:
    node shells and forwarders carry PR_SET_PDEATHSIG."""
    links_before = root_links()
    code = ("from ice.lab.mn import Lab; from ice.topology.registry import topology; import time; "
            "lab = Lab(topology('two_nats', delay_ms=5)); lab.build(); print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([ICELAB[0], "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        tree = _descendants(proc.pid)
        assert len([p for p in tree if "mininet:" in _cmdline(p)]) >= 8
        assert any("ice.lab.wire" in _cmdline(p) for p in tree)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree):
        time.sleep(0.02)
    assert not [p for p in tree if Path(f"/proc/{p}").exists()]
    assert root_links() == links_before


GRID = ["linux-masquerade", "eim-eif", "eim-adf", "eim-apdf", "adm-eif", "adm-adf", "adm-apdf", "apdm-eif",
        "apdm-apdf"]


def test_hole_punching_grid_matches_rfc4787_reasoning() -> None:
    """The hole-punching grid (docs/lab.md), reproduced on one reused lab: every pairing punches directly exactly when
    ice.nat.reach.direct_possible says it can (symmetric x port-restricted fails, cones work...)."""
    import asyncio

    from ice.lab.mn import Lab
    from ice.lab.nat import preset
    from ice.lab.punch import punch
    from ice.nat.reach import direct_possible
    from ice.topology.registry import topology

    observed: dict[tuple[str, str], bool] = {}
    with Lab(topology("two_nats")) as lab:
        for i, row in enumerate(GRID):
            for j, col in enumerate(GRID):
                lab.set_nat("nat-a", preset(row))
                lab.set_nat("nat-b", preset(col))
                observed[(row, col)] = asyncio.run(punch(lab, port=42000 + i * len(GRID) + j)).direct
    expected = {(r, c): direct_possible(preset(r), preset(c)) for r in GRID for c in GRID}
    wrong = {cell: observed[cell] for cell in expected if observed[cell] != expected[cell]}
    assert wrong == {}, f"cells that differ from the expectation (observed shown): {wrong}"
    # Spot checks against the grid measured by hand on this kernel, so the reasoning itself is pinned too.
    assert observed[("linux-masquerade", "linux-masquerade")] is True
    assert observed[("apdm-apdf", "eim-apdf")] is False and observed[("apdm-apdf", "eim-adf")] is True
    assert observed[("adm-adf", "adm-adf")] is False


def test_cli_topo_list_check_and_grid() -> None:
    """Topology modules are picked up by the CLI; `topo check` classifies each peer's path; `nat grid` punches."""
    from ice.topology.registry import Topologies

    p = subprocess.run([*ICELAB, "topo", "list", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert [t["name"] for t in json.loads(p.stdout)["topologies"]] == list(Topologies().all())

    p = subprocess.run([*ICELAB, "topo", "check", "two_nats", "full-cone", "symmetric", "--json"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    paths = {x["peer"]: x for x in json.loads(p.stdout)["peers"]}
    assert (paths["a"]["mapping"], paths["a"]["filtering"]) == ("endpoint-independent", "endpoint-independent")
    assert (paths["b"]["mapping"], paths["b"]["filtering"]) == ("address-and-port-dependent",) * 2
    assert paths["a"]["mapped"].startswith("203.0.113.1:") and paths["b"]["mapped"].startswith("203.0.113.2:")

    p = subprocess.run([*ICELAB, "nat", "grid", "eim-apdf", "apdm-apdf", "--json"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    cells = {(c["a"], c["b"]): c["direct"] for c in json.loads(p.stdout)["cells"]}
    assert cells == {("eim-apdf", "eim-apdf"): True, ("eim-apdf", "apdm-apdf"): False,
                     ("apdm-apdf", "eim-apdf"): False, ("apdm-apdf", "apdm-apdf"): False}


def test_udp_blocked_firewall_lets_only_tcp_to_turn_ports_out() -> None:
    """udp-blocked: no UDP gets out; TCP reaches the TURN port (3478) and nothing else (RFC 8656 §3.1 use case)."""
    import socket

    from ice.lab.mn import Lab
    from ice.topology.registry import topology

    spec = topology("udp_blocked")
    with Lab(spec) as lab:
        listeners = []
        try:
            for port in (3478, 8080):
                srv = lab.socket("stun", socket.AF_INET, socket.SOCK_STREAM)
                srv.bind(("203.0.113.10", port))
                srv.listen()
                listeners.append(srv)

            def tcp_ok(port: int) -> bool:
                c = lab.socket("a", socket.AF_INET, socket.SOCK_STREAM)
                c.settimeout(0.5)
                try:
                    c.connect(("203.0.113.10", port))
                    return True
                except OSError:
                    return False
                finally:
                    c.close()

            udp_in = lab.socket("stun")
            udp_in.bind(("203.0.113.10", 3478))
            udp_in.settimeout(0.3)
            udp_out = lab.socket("a")
            udp_out.sendto(b"x", ("203.0.113.10", 3478))
            try:
                udp_in.recv(10)
                udp_arrived = True
            except TimeoutError:
                udp_arrived = False
            udp_in.close()
            udp_out.close()
            assert (tcp_ok(3478), tcp_ok(8080), udp_arrived) == (True, False, False)
        finally:
            for srv in listeners:
                srv.close()


def test_bench_connect_through_two_nats_reports_both() -> None:
    """Structure only: icelab and aioice agents connect through two Linux-router NATs in the kernel lab."""
    p = subprocess.run([*ICELAB, "bench", "connect", "--where", "nat", "--peers", "aioice", "--json", "--runs", "1"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-500:]
    part = json.loads(p.stdout)["nat"]
    assert part["topology"].startswith("two linux-masquerade NATs") and part["fastest_foreign"] == "aioice"
    assert set(part["results"]) == {"icelab", "aioice"} and part["ratio"] == round(
        part["results"]["icelab"]["median_ms"] / part["results"]["aioice"]["median_ms"], 4)


# Agents through kernel NATs (direct, relayed, TURN over TCP, sim agreement): the scenario matrix's lab cells,
# tests/test_matrix.py::test_lab_cell.


def test_a_signal_before_the_lab_command_is_ready_still_stops_it() -> None:
    """SIGTERM a few milliseconds after start, while the isolated command is still importing (a PID-namespace
    init ignores signals it has no handler for): the run still ends with 143 and leaves nothing behind."""
    links_before, netns_before = root_links(), netns_list()
    proc = subprocess.Popen([*ICELAB, "nat", "probe", "full-cone", "--json"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("unshare" in _cmdline(p) for p in _descendants(proc.pid)):
        time.sleep(0.001)  # polling the process table for the moment unshare exists: the window under test
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 143
    assert root_links() == links_before and netns_list() == netns_before


@pytest.mark.slow
def test_a_normal_user_runs_the_kernel_lab_in_a_user_namespace() -> None:
    """`icelab run --backend lab` as a throwaway user (no sudo): the command builds the lab inside a user namespace
    it creates, every cell passes on the kernel back-end, and nothing of it outlives the run."""
    import shlex
    import shutil
    import tempfile

    if not real_root() or shutil.which("useradd") is None or shutil.which("su") is None:
        pytest.skip("creating a throwaway user needs real root (not uid 0 in a user namespace) and useradd/su")
    user = f"icelab{os.getpid() % 100000}"
    before = root_links()
    subprocess.run(["useradd", "-M", "-s", "/bin/bash", user], check=True, capture_output=True)
    out = Path(tempfile.mkdtemp(prefix="icelab-userns-"))  # pytest's tmp_path is private to root
    try:
        shutil.chown(out, user)

        def as_user(command: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
            inner = f"cd {shlex.quote(str(ROOT))} && env -u ICELAB_ISOLATED -u ICELAB_READY_FD PYTHONPATH=" \
                    f"{shlex.quote(str(ROOT))} {shlex.join(command)}"
            return subprocess.run(["su", user, "-c", inner], capture_output=True, text=True, timeout=timeout)

        if as_user(["test", "-r", "ice/__init__.py", "-a", "-x", sys.executable]).returncode != 0:
            pytest.skip(f"{ROOT} or {sys.executable} is not readable by other users")
        p = as_user([*ICELAB, "run", "--backend", "lab", "--presets", "eim-apdf", "apdm-apdf", "--out", str(out),
                     "--quiet"], timeout=300)
        assert p.returncode == 0, (p.stdout, p.stderr)
        doc = json.loads((out / "results.json").read_text())
        assert doc["backend"] == "lab" and len(doc["cells"]) == 4
        assert all(c["status"] == "pass" for c in doc["cells"]), doc["cells"]
        assert as_user(["id", "-u"]).stdout.strip() != "0"  # it really ran as the user
        left = subprocess.run(["pgrep", "-u", user], capture_output=True, text=True)
        assert left.stdout == "", f"processes of {user} left behind: {left.stdout}"  # so no namespace either
        assert root_links() == before  # the lab's links never were in the root namespace
    finally:
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(["userdel", user], capture_output=True)


@pytest.mark.slow
def test_interrupting_a_parallel_run_at_random_instants_leaves_nothing_and_prints_no_traceback() -> None:
    """`icelab run -j 2` stopped by SIGINT, SIGTERM or SIGKILL at random instants (seeded): it exits with the
    signal's code (or 0 when it finished first) without a traceback, nothing of the lab outlives it, and the next
    run passes."""
    import random

    rng = random.Random(20261204)
    links_before, netns_before = root_links(), netns_list()
    args = [*ICELAB, "run", "-j", "2", "--presets", "eim-apdf", "apdm-apdf", "-q", "--out"]
    with tempfile.TemporaryDirectory(prefix="icelab-interrupt-") as out:
        for sig in [signal.SIGINT, signal.SIGTERM, signal.SIGKILL] * 2:
            proc = subprocess.Popen([*args, out], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)
            time.sleep(rng.uniform(0.3, 3.0))
            os.kill(proc.pid, sig)
            said, _ = proc.communicate(timeout=30)
            assert proc.returncode in (0, 128 + sig, -sig), (sig, proc.returncode, said[-500:])
            assert "Traceback" not in said, said[-2000:]
            deadline = time.monotonic() + 10  # SIGKILL: the workers and the lab die with it (PDEATHSIG)
            while time.monotonic() < deadline and (root_links() != links_before or netns_list() != netns_before):
                time.sleep(0.1)
            assert root_links() == links_before and netns_list() == netns_before
        done = subprocess.run([*args, out], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-1000:]


def test_probe_text_output_reports_tcp() -> None:
    """The text report has a TCP section with every RFC 5382 measurement next to what the preset declares."""
    p = subprocess.run([*ICELAB, "nat", "probe", "linux-masquerade-rst", "--no-timeout-check"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "  TCP (RFC 5382):" in lines
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index("  TCP (RFC 5382):") + 1:]}
    assert rows == {"tcp.mapping": ["endpoint-independent"] * 2, "tcp.port_preservation": ["True"] * 2,
                    "tcp.filtering": ["address-and-port-dependent"] * 2, "tcp.stranger_syn": ["rst"] * 2,
                    "tcp.unsolicited_syn": ["rst"] * 2, "tcp.simultaneous_open": ["True"] * 2}


TCP_PAIRS = [
    ("port-restricted-cone", "port-restricted-cone"),  # both drop: connects
    ("linux-masquerade", "linux-masquerade"),
    ("linux-masquerade-rst", "linux-masquerade-rst"),  # both reset early SYNs: never
    ("linux-masquerade", "linux-masquerade-rst"),  # one resets: the refused side's paced retry gets in
    ("symmetric", "port-restricted-cone"),
    ("restricted-cone", "linux-masquerade-rst"),  # connects only when the RST side starts: not reliably
    ("port-restricted-cone", {"unsolicited_syn": "icmp"}),  # ICMP leaves the refused side's conntrack entry open
    ({"simultaneous_open": False}, "port-restricted-cone"),  # one NAT admitting the crossing SYN is enough
]


@pytest.mark.parametrize("pair", TCP_PAIRS, ids=lambda p: "x".join(
    x if isinstance(x, str) else "prc+" + "+".join(f"{k}={v}" for k, v in x.items()) for x in p))
def test_tcp_simultaneous_open_in_the_kernel_matches_the_reasoning(pair: tuple[object, object]) -> None:
    """Kernel TCP through two kernel NATs, each host first in turn: a simultaneous open connects both ways round
    exactly when ice.nat.reach.tcp_simultaneous_open_possible says so (the simulation is checked against the same
    function, so the three agree)."""
    from ice.lab.mn import Lab
    from ice.lab.punch import tcp_punch
    from ice.nat.behaviour import SynAnswer
    from ice.nat.reach import tcp_simultaneous_open_possible
    from ice.topology.registry import topology

    def behaviour(x: object) -> NatBehaviour:
        if isinstance(x, str):
            return PRESETS[x]
        changes = {k: SynAnswer(v) if k == "unsolicited_syn" else v for k, v in x.items()}  # type: ignore[attr-defined]
        return PRESETS["port-restricted-cone"].with_tcp(**changes)

    a, b = behaviour(pair[0]), behaviour(pair[1])
    links_before = root_links()
    got = []
    with Lab(topology("two_nats")) as lab:
        for i, (x, y) in enumerate(((a, b), (b, a))):
            lab.set_nat("nat-a", x)
            lab.set_nat("nat-b", y)
            got.append(tcp_punch(lab, 43000 + i).connected)
    assert root_links() == links_before
    assert all(got) is tcp_simultaneous_open_possible(a, b), got


def test_engine_hairpins_tcp() -> None:
    """Hairpinning (RFC 4787 §6, which RFC 5382 asks of TCP too) through the engine's TCP maps: host a connects to
    host b's public TCP address on their shared full-cone NAT, and b's listener sees a at a's own public address
    (port preserved)."""
    import socket

    from ice.lab.mn import Lab
    from ice.topology.registry import topology

    spec = topology("same_nat", "full-cone")
    facts, server = spec.facts, spec.facts["stun_primary"].rsplit(":", 1)[0]
    with Lab(spec) as lab:
        socks: list[socket.socket] = []

        def sock(node: str, local: tuple[str, int]) -> socket.socket:
            with lab.inside(node):
                s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(local)
            s.settimeout(2)
            return s

        try:
            listener = sock("stun", (server, 5555))
            listener.listen(2)
            sock("b", (facts["b"], 45000)).connect((server, 5555))  # makes b's binding
            mapped = listener.accept()[1]
            b = sock("b", (facts["b"], 45000))
            b.listen(2)
            sock("a", (facts["a"], 46000)).connect(mapped)
            assert mapped == (facts["nat_public"], 45000)
            assert b.accept()[1] == (facts["nat_public"], 46000)
        finally:
            for s in socks:
                s.close()
