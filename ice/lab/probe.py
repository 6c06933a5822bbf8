"""The conformance probe: build a minimal lab around one NAT and measure it against its declared behaviour.

Topology: client 10.0.0.2 -- NAT (10.0.0.1 | 203.0.113.1) -- STUN server 203.0.113.10 and 203.0.113.11 (RFC 5780).
One process holds the server's sockets and the client's sockets (created in their namespaces) and runs the
embedded STUN server and RFC 5780 discovery on one event loop; raw UDP sockets check the mapping timeout.

TCP (RFC 5382) is measured with plain sockets in the same namespaces (:func:`measure_tcp`): the mapping and port
preservation from three connections out of one port, the filtering from SYNs of strangers to that mapping, the
answer to an unsolicited SYN, and whether a simultaneous open gets in.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field

from ice.aio.discovery import Behaviour, BehaviourReport, discover_behaviour
from ice.aio.stun import StunServerRunner
from ice.errors import StunTimeout
from ice.lab.mn import Lab
from ice.lab.stun import LabEndpoint
from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind
from ice.stun.server import StunServerConfig
from ice.stun.transaction import RetransmissionConfig
from ice.topology.spec import End, LinkSpec, NodeSpec, TopologySpec, nat_or_router

SERVER_1 = ("203.0.113.10", 3478)
SERVER_2 = ("203.0.113.11", 3479)
CLIENT_PORT = 40404
PROBE_TIMEOUT = 2
"""Mapping timeout the probe builds the NAT with (seconds), so expiry is measured in a few seconds."""
_RETRANS = RetransmissionConfig(rto=0.05, rc=3, rm=4)  # zero-latency lab: silence means filtered


def probe_topology(behaviour: NatBehaviour) -> TopologySpec:
    """client -- nat -- server (two public addresses); the server has no route to the private subnet."""
    public_client = behaviour.kind is NatKind.NONE
    lan = "198.51.100" if public_client else "10.0.0"
    server_routes = (("198.51.100.0/24", "203.0.113.1"),) if public_client else ()
    return TopologySpec(
        "nat-probe",
        nodes=(
            NodeSpec("client", routes=(("default", f"{lan}.1"),)),
            nat_or_router("nat", behaviour),
            NodeSpec("server", routes=server_routes),
        ),
        links=(
            LinkSpec(End("client", (f"{lan}.2/24",)), End("nat", (f"{lan}.1/24",), "lan")),
            LinkSpec(End("nat", ("203.0.113.1/24",), "wan"), End("server", ("203.0.113.10/24", "203.0.113.11/24"))),
        ),
        facts={"client": f"{lan}.2", "public": "203.0.113.1"},
    )


TCP_CLIENT_PORT = 40414
TCP_SERVER_PORTS = (3478, 5349)
"""Ports the TCP server side listens on (TURN ports, so the UDP-blocked firewall lets the client's SYNs out)."""
TCP_SIMOPEN_PORT = 443
TCP_STRANGER_PORT = 6000
TCP_WAIT = 0.4
"""Seconds to wait for an answer to a SYN: the lab's links have no delay, so RST and ICMP come back in well under a
millisecond and silence means dropped (the SYN's own retransmission comes only after 1 s)."""


@dataclass
class TcpMeasured:
    """What the probe measures of TCP (RFC 5382); each answer is ``admitted``, ``drop``, ``rst`` or ``icmp``."""

    mapping: str | None = None
    """RFC 5382 §4.1: from three connections out of one internal port (two to one server address, one to another)."""
    port_preservation: bool | None = None
    filtering: str | None = None
    """RFC 5382 §4.3: whether SYNs to that mapping from another port of the same server address, and from another
    address, get in."""
    stranger_syn: str | None = None
    """What a SYN from another address to that mapping gets."""
    unsolicited_syn: str | None = None
    """What a SYN to a public port with no mapping gets (RFC 5382 REQ-4)."""
    simultaneous_open: bool | None = None
    """RFC 5382 REQ-2a: the SYN of the server the client just sent its SYN to gets in and the connection opens."""


@dataclass
class Measured:
    udp: bool = True
    behind_nat: bool | None = None
    mapping: str | None = None
    filtering: str | None = None
    hairpinning: bool | None = None
    port_preservation: bool | None = None
    alive_before_timeout: bool | None = None
    inbound_refreshes: bool | None = None
    expired_after_timeout: bool | None = None
    tcp: TcpMeasured = field(default_factory=TcpMeasured)


@dataclass
class ProbeResult:
    preset: str
    declared: dict[str, object]
    expected: Measured
    """What the declared behaviour predicts for each measurement (None: not checked)."""
    measured: Measured
    mismatches: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    probe_seconds: float = 0.0
    ruleset: str = ""

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def as_json(self) -> dict[str, object]:
        return {
            "preset": self.preset,
            "ok": self.ok,
            "declared": self.declared,
            "expected": asdict(self.expected),
            "measured": asdict(self.measured),
            "mismatches": self.mismatches,
            "build_seconds": round(self.build_seconds, 3),
            "probe_seconds": round(self.probe_seconds, 3),
        }


def expected_tcp(behaviour: NatBehaviour) -> TcpMeasured:
    """What the probe must measure of TCP for this behaviour (RFC 5382). Without a NAT the unsolicited SYN reaches
    the host itself, whose answer is not the box's business (not checked)."""
    if behaviour.kind is NatKind.NONE:
        eim, eif = Mapping.ENDPOINT_INDEPENDENT.value, Filtering.ENDPOINT_INDEPENDENT.value
        return TcpMeasured(eim, True, eif, "admitted", None, True)
    mapping, filtering = behaviour.tcp_mapping, behaviour.tcp_filtering
    assert mapping is not None and filtering is not None
    answer = behaviour.tcp.unsolicited_syn.value
    return TcpMeasured(
        mapping=mapping.value,
        port_preservation=behaviour.tcp_port_preservation,
        filtering=filtering.value,
        stranger_syn="admitted" if filtering is Filtering.ENDPOINT_INDEPENDENT else answer,
        unsolicited_syn=answer,
        simultaneous_open=behaviour.tcp.simultaneous_open,
    )


def expected(behaviour: NatBehaviour) -> Measured:
    """What the probe must measure for this behaviour."""
    if behaviour.kind is NatKind.UDP_BLOCKED:
        return Measured(udp=False, tcp=expected_tcp(behaviour))
    if behaviour.kind is NatKind.NONE:
        return Measured(behind_nat=False, mapping=Behaviour.ENDPOINT_INDEPENDENT.value,
                        filtering=Behaviour.ENDPOINT_INDEPENDENT.value, tcp=expected_tcp(behaviour))
    assert behaviour.mapping is not None and behaviour.filtering is not None
    return Measured(
        tcp=expected_tcp(behaviour),
        behind_nat=True,
        mapping=behaviour.mapping.value,
        filtering=behaviour.filtering.value,
        hairpinning=behaviour.hairpinning,
        port_preservation=behaviour.port_preservation,
        alive_before_timeout=True,
        inbound_refreshes=behaviour.inbound_refresh,
        expired_after_timeout=True,
    )


async def _measure(lab: Lab, behaviour: NatBehaviour, timeout_check: bool) -> Measured:
    cfg = StunServerConfig(SERVER_1, SERVER_2, software="icelab probe")
    runner = await StunServerRunner(cfg, make_socket=lambda fam: lab.socket("server", fam)).start()
    m = Measured()
    client_ip = lab.spec.facts["client"]
    try:
        try:
            rep: BehaviourReport = await discover_behaviour(
                SERVER_1, (client_ip, CLIENT_PORT), _RETRANS, endpoint=lambda c: LabEndpoint(lab, "client", c)
            )
        except StunTimeout:
            m.udp = False
            return m
        m.behind_nat = rep.behind_nat
        m.mapping = rep.mapping.value if rep.mapping else None
        m.filtering = rep.filtering.value if rep.filtering else None
        if rep.behind_nat:
            m.hairpinning = rep.hairpinning
            m.port_preservation = rep.mapped[1] == CLIENT_PORT
            if timeout_check:
                m.alive_before_timeout, m.inbound_refreshes, m.expired_after_timeout = await _timeout_check(
                    lab, behaviour)
    finally:
        runner.close()
    return m


async def _timeout_check(lab: Lab, behaviour: NatBehaviour) -> tuple[bool, bool, bool]:
    """RFC 4787 §4.3 with one outbound packet at 0 and inbound ones from the same server endpoint after it:

    * at 0.6 T: must arrive (the mapping is alive);
    * at 1.2 T: arrives only if the inbound packet at 0.6 T refreshed the mapping (Linux does; RFC 4787's
      outbound-only refresh does not);
    * after T + 1 s of silence: must not arrive (expired).
    """
    loop = asyncio.get_running_loop()
    t = behaviour.mapping_timeout
    client = lab.socket("client")
    server = lab.socket("server")
    try:
        client.bind((lab.spec.facts["client"], CLIENT_PORT + 1))
        server.bind((SERVER_1[0], 4000))
        client.setblocking(False)
        server.setblocking(False)
        await loop.sock_sendto(client, b"out", (SERVER_1[0], 4000))
        start = loop.time()
        _, mapped = await asyncio.wait_for(loop.sock_recvfrom(server, 100), 2)

        async def inbound(at: float) -> bool:
            # The timeout under test is wall-clock kernel state: waiting in real time is the point here.
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            await loop.sock_sendto(server, b"in", mapped)
            try:
                await asyncio.wait_for(loop.sock_recvfrom(client, 100), 0.3)
                return True
            except TimeoutError:
                return False

        alive = await inbound(0.6 * t)
        refreshed = await inbound(1.3 * t)
        expired = not await inbound((1.3 * t if refreshed else 0.0) + t + 1.0)
        return alive, refreshed, expired
    finally:
        client.close()
        server.close()


# ------------------------------------------------------------------------------------------------------ TCP

_SYN, _RST, _ACK = 0x02, 0x04, 0x10


def _tcp_segments(raw: socket.socket) -> list[tuple[str, int, str, int, int]]:
    """Every TCP segment queued on a raw IPPROTO_TCP socket: (source ip, port, destination ip, port, flags)."""
    out = []
    while select.select([raw], [], [], 0)[0]:
        packet = raw.recv(65535)
        ihl = (packet[0] & 0x0F) * 4
        sport, dport = struct.unpack("!HH", packet[ihl:ihl + 4])
        out.append((socket.inet_ntoa(packet[12:16]), sport, socket.inet_ntoa(packet[16:20]), dport,
                    packet[ihl + 13]))
    return out


def _icmp_unreachable_from(raw: socket.socket, source: str) -> bool:
    """Did an ICMP Port Unreachable (type 3, code 3) from ``source`` arrive on a raw IPPROTO_ICMP socket?"""
    seen = False
    while select.select([raw], [], [], 0)[0]:
        packet, (src, _) = raw.recvfrom(65535)
        ihl = (packet[0] & 0x0F) * 4
        seen = seen or (src == source and packet[ihl] == 3 and packet[ihl + 1] == 3)
    return seen


def _connect(sock: socket.socket, dst: tuple[str, int], wait: float) -> int | None:
    """Start a connect() and wait for its outcome: 0 (connected), an errno (refused...) or None (no answer)."""
    sock.setblocking(False)
    sock.connect_ex(dst)
    if not select.select([], [sock], [], wait)[1]:
        return None
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


@dataclass
class _TcpLab:
    """The probe's TCP sockets, each in its node's namespace, closed together."""

    lab: Lab
    stack: ExitStack

    def sock(self, node: str, local: tuple[str, int] | None = None, kind: socket.SocketKind = socket.SOCK_STREAM,
             proto: int = 0) -> socket.socket:
        with self.lab.inside(node):
            s = self.stack.enter_context(socket.socket(socket.AF_INET, kind, proto))
        if kind is socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: RST, no TIME_WAIT
        if local is not None:
            s.bind(local)
        return s

    def listener(self, local: tuple[str, int]) -> socket.socket:
        s = self.sock("server", local)
        s.listen(8)
        return s


@contextmanager
def _tcp_lab(lab: Lab) -> Iterator[_TcpLab]:
    with ExitStack() as stack:
        yield _TcpLab(lab, stack)


def measure_tcp(lab: Lab) -> TcpMeasured:
    """Measure the NAT's TCP behaviour (RFC 5382) with kernel TCP in the probe lab.

    * Mapping (§4.1) and port preservation (RFC 4787 §4.2.1): the client connects from one port to the server's
      first address on two ports and then to its second address; the server sees where each connection comes
      from.
    * Filtering (§4.3): with the first two connections open (before the client has sent anything to the second
      address), SYNs to their mapping from another port of the first address and from the second address; a raw
      socket in the client sees whether they arrive.
    * The answer to what is not admitted (REQ-4): the server's connect() is refused by a RST (or by an ICMP Port
      Unreachable, which a raw ICMP socket in the server sees) or gets no answer (dropped). The unsolicited SYN goes
      to a public port no mapping uses.
    * Simultaneous open (REQ-2a): the client connects to a server port whose SYNs the server drops, so its SYN
      leaves the NAT but gets no answer; the server, seeing where it came from, connects back from that port. The
      connection opens if the NAT lets that SYN in on the client's flow.
    """
    client_ip, public = lab.spec.facts["client"], lab.spec.facts["public"]
    s1, s2 = SERVER_1[0], SERVER_2[0]
    port = TCP_CLIENT_PORT
    m = TcpMeasured()
    with _tcp_lab(lab) as t:
        sniff = t.sock("client", kind=socket.SOCK_RAW, proto=socket.IPPROTO_TCP)
        icmp = t.sock("server", kind=socket.SOCK_RAW, proto=socket.IPPROTO_ICMP)
        mapped: list[tuple[str, int]] = []

        def connect(target: tuple[str, int]) -> bool:
            """Connect from the client's port to a server listener; note where the server sees it from."""
            listener = t.listener(target)
            c = t.sock("client", (client_ip, port))
            if _connect(c, target, 1.0) != 0:
                return False  # TCP does not get out (the firewall lets only some ports out)
            conn, peer = listener.accept()
            t.stack.enter_context(conn)
            mapped.append(peer)
            return True

        if not (connect((s1, TCP_SERVER_PORTS[0])) and connect((s1, TCP_SERVER_PORTS[1]))):
            return m

        def syn(src: tuple[str, int], dst: tuple[str, int]) -> str:
            """Send a SYN from the server's ``src`` to ``dst`` and say what it got."""
            _tcp_segments(sniff)
            _icmp_unreachable_from(icmp, public)
            s = t.sock("server", src)
            result = _connect(s, dst, TCP_WAIT)
            s.close()
            if any(seg[:2] == src and seg[4] & (_SYN | _ACK) == _SYN for seg in _tcp_segments(sniff)):
                return "admitted"
            if result is None:
                return "drop"
            if result == errno.ECONNREFUSED:
                return "icmp" if _icmp_unreachable_from(icmp, public) else "rst"
            return errno.errorcode.get(result, str(result))

        # filtering before the client has sent anything to the second address, which is still a stranger
        same_ip = syn((s1, TCP_STRANGER_PORT), mapped[0])
        m.stranger_syn = syn((s2, TCP_STRANGER_PORT), mapped[0])
        m.filtering = (Filtering.ENDPOINT_INDEPENDENT if m.stranger_syn == "admitted" else
                       Filtering.ADDRESS_DEPENDENT if same_ip == "admitted" else
                       Filtering.ADDRESS_AND_PORT_DEPENDENT).value
        if not connect((s2, TCP_SERVER_PORTS[0])):
            return m
        if mapped[0] == mapped[1] == mapped[2]:
            m.mapping = Mapping.ENDPOINT_INDEPENDENT.value
        elif mapped[0] == mapped[1]:
            m.mapping = Mapping.ADDRESS_DEPENDENT.value
        else:
            m.mapping = Mapping.ADDRESS_AND_PORT_DEPENDENT.value
        m.port_preservation = mapped[0][1] == port
        unused = next(p for p in range(port + 7, 65535) if p not in {a[1] for a in mapped})
        m.unsolicited_syn = syn((s1, TCP_STRANGER_PORT + 1), (mapped[0][0], unused))
        m.simultaneous_open = _simultaneous_open(t, lab, client_ip, port + 1)
    return m


def _simultaneous_open(t: _TcpLab, lab: Lab, client_ip: str, port: int) -> bool:
    table = "icelab_probe"
    lab.run("server", f"nft 'add table ip {table}; add chain ip {table} in {{ type filter hook input priority 0; "
                      f"policy accept; }}; add rule ip {table} in tcp dport {TCP_SIMOPEN_PORT} "
                      "tcp flags & (syn | ack) == syn drop'")
    try:
        with t.lab.inside("server"):
            watch = t.stack.enter_context(socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800)))
        c = t.sock("client", (client_ip, port))
        c.setblocking(False)
        c.connect_ex((SERVER_1[0], TCP_SIMOPEN_PORT))
        source = None
        deadline = time.monotonic() + 1.0
        while source is None and time.monotonic() < deadline:
            if not select.select([watch], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            frame, addr = watch.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING or frame[14 + 9] != socket.IPPROTO_TCP:
                continue
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
            if dport == TCP_SIMOPEN_PORT and ip[ihl + 13] & (_SYN | _ACK) == _SYN:
                source = (socket.inet_ntoa(ip[12:16]), sport)
        if source is None:
            return False  # the client's SYN never left the NAT
        s = t.sock("server", (SERVER_1[0], TCP_SIMOPEN_PORT))
        if _connect(s, source, 1.0) != 0:
            return False
        return bool(select.select([], [c], [], 1.0)[1]) and c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        lab.run("server", f"nft delete table ip {table}")


def probe(name: str, behaviour: NatBehaviour, timeout_check: bool = True, timeout: int = PROBE_TIMEOUT
          ) -> ProbeResult:
    """Build the probe lab for ``behaviour`` (with a short mapping timeout) and compare measured with declared."""
    timed = behaviour.kind in (NatKind.ENGINE, NatKind.MASQUERADE)
    under_test = behaviour.with_(mapping_timeout=timeout) if timed else behaviour
    want = expected(under_test)
    if not (timeout_check and timed):
        want.alive_before_timeout = want.inbound_refreshes = want.expired_after_timeout = None
    declared = under_test.as_json()
    with Lab(probe_topology(under_test)) as lab:
        started = time.perf_counter()
        measured = asyncio.run(_measure(lab, under_test, timeout_check and timed))
        measured.tcp = measure_tcp(lab)
        result = ProbeResult(name, declared, want, measured, build_seconds=lab.build_seconds,
                             probe_seconds=time.perf_counter() - started,
                             ruleset=lab.ruleset("nat") if under_test.kind is not NatKind.NONE else "")
    for key, value in flat(want).items():
        got = flat(measured)[key]
        if value is not None and got != value:
            result.mismatches.append(f"{key}: declared {value}, measured {got}")
    return result


def flat(m: Measured) -> dict[str, object]:
    """Every measurement by name, the TCP ones as ``tcp.mapping`` and so on."""
    d = asdict(m)
    tcp = d.pop("tcp")
    return {**d, **{f"tcp.{k}": v for k, v in tcp.items()}}
