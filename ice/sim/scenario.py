"""Two ICE agents on hosts ``a`` and ``b`` of any topology spec, with its STUN/TURN server: what the sim back-end
of a scenario cell runs."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from ice.agent import AgentConfig, Candidate, CandidateType, IceAgent
from ice.agent.agent import Pair
from ice.agent.candidate import pair_text
from ice.agent.events import CandidateGathered, DataReceived, Event, GatheringComplete, NetworkChangeRestart
from ice.agent.network import NetworkChange
from ice.agent.tcp import TcpType
from ice.nat.behaviour import NatKind
from ice.relayed import RelayedAgent
from ice.sim.network import SimNetwork
from ice.sim.tcp import TcpConnection, TcpState
from ice.sim.tcp_driver import SimTcpDriver, SimTcpStunServer
from ice.stun.attributes import Address
from ice.topology.spec import TopologySpec
from ice.turn.client import TurnClientConfig


@dataclass(frozen=True)
class SimResult:
    connected: bool
    seconds: float
    """Virtual time from both agents having the remote credentials until both selected a pair."""
    selected: tuple[CandidateType, CandidateType] | None
    """(local type, remote type) of A's selected pair."""
    succeeded: frozenset[tuple[str, str]]
    """Candidate-type pairs (local, remote) of A's valid pairs (RFC 8445 §7.2.5.3.1)."""
    selected_b: tuple[CandidateType, CandidateType] | None = None
    """The same for B."""
    selected_pair: str | None = None
    """A's selected pair with addresses ("srflx 203.0.113.1:5000 -> prflx 203.0.113.2:6000")."""
    selected_pair_b: str | None = None

    @property
    def relayed(self) -> bool:
        """Either side's selected pair has a relayed candidate."""
        return any(s is not None and CandidateType.RELAYED in s for s in (self.selected, self.selected_b))

    @property
    def selected_name(self) -> str | None:
        return f"{self.selected[0].value}-{self.selected[1].value}" if self.selected else None


PEERS = ("a", "b")
"""The hosts of a topology the two ICE agents run on."""


TCP_PORT = 5002
"""Where a host's passive and so TCP candidates listen (the next port for the second of them)."""

ALL_TCP_TYPES = (TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO)


def _peer(net: SimNetwork, host: str, agent: IceAgent, turn: TurnClientConfig | None,
          relay_only: bool, transports: str = "udp", tcp_types: tuple[TcpType, ...] = ALL_TCP_TYPES,
          turn_over_tcp: bool = False) -> tuple[IceAgent | RelayedAgent, SimTcpDriver | None]:
    """Put ``agent`` on every address of ``host`` (port 5000; with ``transports`` "tcp" no UDP host candidate);
    with ``turn``, wrap it with a TURN client on port 5001 of the host's first address (as a real TURN client has
    its own socket). With TCP (``transports`` "tcp" or "both"), a TCP stack on each address with a host candidate
    of each of ``tcp_types`` (passive and so ones listen from port 5002), driven by a :class:`SimTcpDriver`. As
    the lab's Connection does, a TCP-only peer, or one whose UDP to the server is blocked (``turn_over_tcp``),
    reaches TURN over TCP (RFC 8656 §3.1); a TCP-only one allocates a TCP relayed address (RFC 6062), so its
    relayed candidates are TCP ones (RFC 6544 §5.3) and its data connections go on its stack."""
    assert net.fabric is not None
    addresses = [(ip, 5000) for ip in net.fabric.addresses(host)]
    if not addresses:
        raise ValueError(f"topology {net.fabric.spec.name}: host {host} has no address")
    driver = None
    if transports != "udp" and not relay_only:
        stacks = {ip: net.tcp.get(ip) or net.add_tcp(ip) for ip, _ in addresses}
        driver = SimTcpDriver(agent, stacks)
        net.tcp_drivers.append(driver)
        for ip, _ in addresses:
            driver.add_candidates(ip, tcp_types, TCP_PORT)
    if relay_only or transports == "tcp":
        net.add_endpoint(agent, *addresses)  # sockets, but no host candidates to offer
    else:
        net.add_agent(agent, *addresses)
    if turn is None:
        return agent, driver
    turn_local = (addresses[0][0], 5001)
    if transports == "tcp" or turn_over_tcp:
        relayed = RelayedAgent(agent, replace(turn, transport="tcp"))
        relayed.add_allocation(turn_local, tcp=transports == "tcp" and driver is not None)
        net.add_stream(turn_local, turn.server)
        if driver is not None:
            driver.driven = relayed
    else:
        relayed = RelayedAgent(agent, turn, turn_local)
    net.add_endpoint(relayed, *addresses, turn_local)
    return relayed, driver


class SimPair:
    """Two agents on hosts ``a`` and ``b`` of a spec's simulated network, with the server and the signalling
    channel between them (see :func:`run_pair`); it stays usable after connecting (timelines drive it on)."""

    def __init__(self, spec: TopologySpec, config: AgentConfig | None = None, seed: int = 0, latency: float = 0.001,
                 loss: float = 0.0, jitter: float = 0.0, turn: bool = False, relay_only: bool = False,
                 trickle: bool = True, controlling: str = "a", transports: str = "udp",
                 tcp_types: tuple[tuple[TcpType, ...], tuple[TcpType, ...]] = (ALL_TCP_TYPES, ALL_TCP_TYPES),
                 udp_blocked: bool = False) -> None:
        if transports not in ("udp", "tcp", "both"):
            raise ValueError(f"transports is 'udp', 'tcp' or 'both', not {transports!r}")
        self.net = net = SimNetwork(spec, latency=latency, loss=loss, jitter=jitter, seed=seed)
        self.transports = transports
        self.trickle = trickle
        self.relay_only = relay_only
        self.stun = spec.address("stun_primary")
        turn_config = None
        server = spec.address("turn" if "turn" in spec.facts else "stun_primary")
        nats, fabric = spec.nat_behaviours(), net.fabric
        assert fabric is not None
        self.blocked = {peer: any(nats[n].kind is NatKind.UDP_BLOCKED
                                  for n in fabric.walk(peer, server[0]).translated_by) for peer in PEERS}
        """Peers whose UDP to the server a UDP-blocking box drops: they reach TURN over TCP and ask no STUN."""
        if turn:
            self.server = server
            net.add_turn_server(self.server, {"alice": "secret"},
                                tcp=transports != "udp" or any(self.blocked.values()))
            turn_config = TurnClientConfig(self.server, "alice", "secret")
            self.stun = self.server
        else:
            self.server = self.stun
            net.add_stun_server(self.stun, spec.address("stun_alternate") if "stun_alternate" in spec.facts else None)
        cfg = config or AgentConfig()
        if transports != "udp" and not cfg.tcp.enabled:
            cfg = replace(cfg, tcp=replace(cfg.tcp, enabled=True))
        self.a = IceAgent(controlling in ("a", "both"), cfg, rng=random.Random(seed * 2 + 1))
        self.b = IceAgent(controlling in ("b", "both"), cfg, rng=random.Random(seed * 2 + 2))
        self.tcp_types = {"a": tcp_types[0], "b": tcp_types[1]}
        self.ea, self.tcp_a = _peer(net, PEERS[0], self.a, turn_config, relay_only, transports, tcp_types[0],
                                    self.blocked["a"])
        self.eb, self.tcp_b = _peer(net, PEERS[1], self.b, turn_config, relay_only, transports, tcp_types[1],
                                    self.blocked["b"])
        if (self.tcp_a is not None or self.tcp_b is not None) and self.stun not in net.turn_tcp:
            stack = net.tcp.get(self.stun[0]) or net.add_tcp(self.stun[0])  # the server answers Binding over TCP
            net.tcp_drivers.append(SimTcpStunServer(stack, self.stun))
        self.server_ips = {spec.address(f)[0] for f in ("stun_primary", "stun_alternate", "turn") if f in spec.facts}
        """The STUN/TURN server's addresses (what ``udp_blocked`` leaves alone)."""
        self.udp_blocked = udp_blocked
        if udp_blocked:
            net.drop_if = self.drops_udp
        self._peer_of = {id(self.a): self.b, id(self.b): self.a, id(self.ea): self.b, id(self.eb): self.a}
        self._held: dict[int, list[Candidate]] = {id(self.a): [], id(self.b): []}
        self.on_data: Callable[[str], None] | None = None
        """Called with "a" or "b" when that agent receives application data."""
        self.on_datagram: Callable[[str, bytes], None] | None = None
        """Called with "a" or "b" and the datagram when that agent receives application data (the bulk phase)."""
        net.on_event = self._signal

    def drops_udp(self, src: Address, dst: Address, data: bytes) -> bool:
        """With ``udp_blocked``: a datagram between the peers' sides (from host a or b to anything but the server;
        the server's answers and relayed traffic pass) is dropped, as the lab's rules in the hosts drop it."""
        if not self.udp_blocked:
            return False
        fabric = self.net.fabric
        assert fabric is not None
        return fabric.owner(src[0]) in PEERS and dst[0] not in self.server_ips

    def side_of(self, endpoint: object) -> str:
        return "a" if endpoint is self.a or endpoint is self.ea else "b"

    def _signal(self, endpoint: object, ev: Event) -> None:  # an instant signalling channel
        me = endpoint.agent if isinstance(endpoint, RelayedAgent) else endpoint
        peer = self._peer_of[id(endpoint)]
        if isinstance(ev, CandidateGathered):
            if self.trickle:
                peer.add_remote_candidate(self.net.now, ev.candidate)
            else:
                self._held[id(me)].append(ev.candidate)
        elif isinstance(ev, GatheringComplete):
            for cand in self._held[id(me)]:
                peer.add_remote_candidate(self.net.now, cand)
            peer.add_remote_candidate(self.net.now, None)
        elif isinstance(ev, DataReceived):
            if self.on_datagram is not None:
                self.on_datagram(self.side_of(endpoint), ev.data)
            if self.on_data is not None:
                self.on_data(self.side_of(endpoint))
        elif isinstance(ev, NetworkChangeRestart):
            self._answer_restart(self.a if peer is self.b else self.b, peer)

    def connect(self, timeout: float) -> SimResult:
        """Credentials at t = 0, gathering, checks; until both selected a pair or ``timeout``."""
        a, b, net = self.a, self.b, self.net
        for x, y in ((a, b), (b, a)):
            y.set_remote_credentials(net.now, x.ufrag, x.pwd)
        for agent, endpoint, tcp, side in ((a, self.ea, self.tcp_a, "a"), (b, self.eb, self.tcp_b, "b")):
            if not self.relay_only and not self.blocked[side]:
                for base in agent.bases:
                    agent.gather_server_reflexive(net.now, base, self.stun)

            def finish(agent: IceAgent = agent, endpoint: IceAgent | RelayedAgent = endpoint) -> None:
                if isinstance(endpoint, RelayedAgent):
                    endpoint.start(net.now)  # end-of-candidates follows the allocation
                else:
                    agent.end_of_local_candidates()

            if tcp is not None and not self.blocked[side]:  # as the Connection does: the TCP bindings end first
                tcp.on_gathered = finish
                tcp.gather_server_reflexive(net.now, self.stun)
            else:
                finish()
        net.run(timeout, stop=lambda: a.selected is not None and b.selected is not None)
        ok = a.selected is not None and b.selected is not None
        sel = (a.selected.local.type, a.selected.remote.type) if a.selected is not None else None
        sel_b = (b.selected.local.type, b.selected.remote.type) if b.selected is not None else None
        return SimResult(ok, net.now, sel, frozenset(a.valid_pair_types()), sel_b, describe_pair(a.selected),
                         describe_pair(b.selected))

    def restart(self) -> None:
        """ICE restart on both sides (RFC 8445 §9): new credentials, each side's candidates signalled again."""
        now = self.net.now
        self.a.restart(now)
        self.b.restart(now)
        for x, y in ((self.a, self.b), (self.b, self.a)):
            y.set_remote_credentials(now, x.ufrag, x.pwd)
            for cand in x.local_candidates:
                y.add_remote_candidate(now, cand)
            y.add_remote_candidate(now, None)

    # ---------------------------------------------------------------------------------------- renumbering

    def renumber(self, side: str) -> tuple[str, str]:
        """Host ``side`` moves to another address of its subnet (:meth:`Fabric.spare_address`), as the kernel lab
        does with ``ip addr``: packets to or from the old address vanish from then on. The agent hears of it at once
        (as an application from its OS) and restarts ICE on sockets at the new address, gathering host, srflx and
        relayed candidates again (RFC 8445 §9, :meth:`IceAgent.network_changed`); the peer answers through
        signalling. Returns (old address, new address)."""
        net = self.net
        fabric = net.fabric
        assert fabric is not None
        endpoint = self.ea if side == "a" else self.eb
        agent = self.a if side == "a" else self.b
        driver = self.tcp_a if side == "a" else self.tcp_b
        old = fabric.addresses(side)[0]
        new = fabric.spare_address(old)
        fabric.move_address(old, new)
        ip = str(new.ip)
        gone = tuple(addr for addr in net.agents if addr[0] == old)
        for addr in gone:
            del net.agents[addr]
        moved = [r for r in endpoint.relays if r.local[0] == old] if isinstance(endpoint, RelayedAgent) else []
        turn = tuple((r.component, (ip, 5001)) for r in moved if not r.tcp)
        turn_tcp = tuple((r.component, (ip, 5001)) for r in moved if r.tcp)
        net.add_endpoint(endpoint, (ip, 5000), *(local for _, local in (*turn, *turn_tcp)))
        for r in moved:
            if (r.local, r.client.server) in net.streams:  # TURN over TCP: a new control connection
                net.remove_stream(r.local, r.client.server)
                net.add_stream((ip, 5001), r.client.server)
        hosts = ((1, (ip, 5000)),) if self.transports != "tcp" else ()
        tcp_hosts: tuple[tuple[int, Address, TcpType], ...] = ()
        if driver is not None and not self.relay_only:  # ICE-TCP: listeners on the new address (RFC 6544 §4.1)
            stack = driver.stacks[ip] = net.tcp.get(ip) or net.add_tcp(ip)
            if stack.events is None:
                stack.events = deque()
            tcp_hosts = tuple((1, local, t) for local, t in driver.open(ip, self.tcp_types[side], TCP_PORT))
        tcp_gone = tuple(b for b in agent.tcp_bases if b[0] == old)
        change = NetworkChange((*gone, *tcp_gone), hosts, turn, () if self.relay_only else (self.stun,),
                               not self.relay_only, tcp_hosts, turn_tcp)
        srflx = bool(tcp_hosts) and not self.blocked[side]
        endpoint.network_changed(net.now, change, final=not srflx)
        if srflx and driver is not None:  # their server-reflexive TCP candidates, then end-of-candidates
            driver.on_gathered = endpoint.end_of_local_candidates
            driver.gather_server_reflexive(net.now, self.stun)
        return old, ip

    def _answer_restart(self, moved: IceAgent, peer: IceAgent) -> None:
        """What the application does when ``moved``'s new credentials arrive over signalling: a changed ufrag is
        an ICE restart, so ``peer`` restarts too unless it already did (RFC 8839 §4.4.1.1.1), each side takes the
        other's credentials and current candidates (peer-reflexive ones are never signalled, RFC 8445 §7.2.5.3.1),
        and ``peer``'s end-of-candidates goes along; ``moved``'s follows when its gathering ends."""
        now = self.net.now
        if peer.remote_ufrag is not None:
            peer.restart(now)
        peer.set_remote_credentials(now, moved.ufrag, moved.pwd)
        moved.set_remote_credentials(now, peer.ufrag, peer.pwd)
        for x, y in ((moved, peer), (peer, moved)):
            for cand in x.local_candidates:
                if cand.type is not CandidateType.PEER_REFLEXIVE:
                    y.add_remote_candidate(now, cand)
        if peer.gathering_complete:
            moved.add_remote_candidate(now, None)


def run_pair(spec: TopologySpec, config: AgentConfig | None = None, seed: int = 0, latency: float = 0.001,
             loss: float = 0.0, jitter: float = 0.0, timeout: float = 10.0, turn: bool = False,
             relay_only: bool = False, trickle: bool = True, controlling: str = "a", transports: str = "udp",
             udp_blocked: bool = False) -> SimResult:
    """ICE between the agents on hosts ``a`` and ``b`` of ``spec``, with the spec's NATs, routes and link
    conditions: credentials at t = 0; with ``trickle`` every candidate is signalled as soon as it is gathered (host
    at once, srflx when the STUN server answers, relayed when the TURN allocation succeeds) and
    end-of-candidates when gathering ends, otherwise all of them at once then. The server runs at the spec's
    ``stun_primary``/``stun_alternate`` facts; with ``turn`` it is a TURN server (at ``turn``, answering Binding
    too) and both agents allocate on it. ``controlling`` says who starts controlling: "a", "b", "both" or
    "neither" (a role conflict). ``loss``/``latency``/``jitter`` apply to every packet, on top of the links' own
    conditions. ``transports`` "tcp" or "both" adds ICE-TCP (RFC 6544) candidates of every tcptype, "tcp" without
    UDP host and srflx ones; ``udp_blocked`` drops UDP between the peers' sides. Results are A's view."""
    return SimPair(spec, config, seed, latency, loss, jitter, turn, relay_only, trickle, controlling, transports,
                   udp_blocked=udp_blocked).connect(timeout)


def describe_pair(pair: Pair | None) -> str | None:
    return pair_text(pair.local, pair.remote) if pair is not None else None


# ------------------------------------------------------------------------------------------------------- TCP


@dataclass(frozen=True)
class TcpPairConfig:
    """How the two hosts of :func:`run_tcp_pair` try to connect (RFC 6544 will decide this for ICE-TCP)."""

    port: int = 40000
    """The port each host connects to the server from, and then to its peer from (or listens on)."""
    server_port: int = 3478
    start_b: float = 0.05
    """B starts this long after A (seconds): on a fast path A's first SYN reaches B's NAT before B has sent."""
    retry: float = 0.2
    """A refused connect() is tried again this long after it started: paced, never a busy loop (an unpaced loop
    can brute-force a symmetric NAT's random port)."""
    attempts: int = 10
    deadline: float = 10.0
    """Give up this long after the first connect() to the peer (seconds; SYN retransmissions at 1, 3 and 7 s fit
    in): a connection that only opens once the NATs' state for the failed attempts has expired does not count."""
    latency: float = 0.001


@dataclass(frozen=True)
class TcpPairResult:
    connected: bool
    """Both hosts hold an open connection with each other."""
    seconds: float
    """Virtual time from the first connect() to the peer until both held the connection."""
    srflx: tuple[Address, Address]
    """Where the server saw each host's connection come from (its server-reflexive TCP address)."""
    refusals: tuple[str, ...]
    """How each failed attempt ended (``rst``, ``icmp``, ``timeout``), A's then B's."""


class _TcpPeers:
    """Hosts ``a`` and ``b`` of a spec with TCP stacks, each with an open connection to the STUN host (which keeps
    its binding alive), and the server-reflexive addresses the server saw."""

    def __init__(self, spec: TopologySpec, config: TcpPairConfig) -> None:
        self.net = net = SimNetwork(spec, latency=config.latency)
        assert net.fabric is not None
        server_ip = spec.facts["stun_primary"].rsplit(":", 1)[0]
        server = net.add_tcp(server_ip)
        server_addr = (server_ip, config.server_port)
        server.listen(server_addr)
        self.hosts = {peer: (net.fabric.addresses(peer)[0], config.port) for peer in PEERS}
        self.stacks = {peer: net.add_tcp(self.hosts[peer][0]) for peer in PEERS}
        self.srflx: dict[str, Address] = {}
        for peer in PEERS:
            conn = self.stacks[peer].connect(net.now, self.hosts[peer], server_addr)

            def accepted() -> list[Address]:
                return [c.remote for c in server.accepted() if c.established and c.remote not in self.srflx.values()]

            net.run(net.now + 1, stop=lambda: bool(accepted()))
            if not conn.established or not accepted():
                raise ValueError(f"host {peer} cannot open a TCP connection to the server")
            self.srflx[peer] = accepted()[-1]

    def open_with(self, peer: str, other: str) -> TcpConnection | None:
        """``peer``'s open connection with ``other`` (by the other's public address), if any."""
        ip = self.srflx[other][0]
        return next((c for c in self.stacks[peer].connections.values() if c.established and c.remote[0] == ip),
                    None)

    def both_open(self) -> bool:
        return self.open_with("a", "b") is not None and self.open_with("b", "a") is not None

    def result(self, start: float, conns: list[TcpConnection]) -> TcpPairResult:
        connected = self.both_open()
        return TcpPairResult(connected, self.net.now - start if connected else 0.0,
                             (self.srflx["a"], self.srflx["b"]), tuple(c.error for c in conns if c.error))


def run_tcp_pair(spec: TopologySpec, config: TcpPairConfig = TcpPairConfig()) -> TcpPairResult:
    """A TCP simultaneous open: hosts ``a`` and ``b`` of ``spec`` learn their server-reflexive TCP addresses from a
    connection to the STUN host, then each connects from that same port to the other's, A first; a refused
    connect() is tried again after ``retry``. Whether both end up holding one connection is what
    :func:`ice.nat.reach.tcp_simultaneous_open_possible` predicts (for either host first)."""
    peers = _TcpPeers(spec, config)
    net, other = peers.net, {"a": "b", "b": "a"}
    start = net.now
    due = {"a": start, "b": start + config.start_b}
    conns: dict[str, list[TcpConnection]] = {peer: [] for peer in PEERS}
    deadline = start + config.deadline
    while not peers.both_open() and net.now < deadline:
        for peer in PEERS:
            idle = not conns[peer] or conns[peer][-1].state is TcpState.CLOSED
            if idle and due[peer] <= net.now and len(conns[peer]) < config.attempts:
                conns[peer].append(peers.stacks[peer].connect(net.now, peers.hosts[peer],
                                                              peers.srflx[other[peer]]))
                due[peer] = net.now + config.retry
        waiting = any(c.state is not TcpState.CLOSED for p in PEERS for c in conns[p])
        retries = [due[p] for p in PEERS if len(conns[p]) < config.attempts and due[p] > net.now]
        if not waiting and not retries:
            break
        net.run(min([*retries, deadline]), stop=lambda: peers.both_open() or any(
            conns[p][-1].state is TcpState.CLOSED and due[p] <= net.now and len(conns[p]) < config.attempts
            for p in PEERS if conns[p]))
    return peers.result(start, [*conns["a"], *conns["b"]])


def run_tcp_active_passive(spec: TopologySpec, passive: str = "b", config: TcpPairConfig = TcpPairConfig()
                           ) -> TcpPairResult:
    """Active -> passive: host ``passive`` listens on the port of its server-reflexive TCP address and the other
    connects to that address from a fresh port (one attempt, with the SYN's own retransmissions). Whether it
    opens is what :func:`ice.nat.reach.tcp_reachable` says of the passive side's NAT."""
    peers = _TcpPeers(spec, config)
    net = peers.net
    active = "a" if passive == "b" else "b"
    peers.stacks[passive].listen(peers.hosts[passive])
    start = net.now
    local = (peers.hosts[active][0], config.port + 1)
    conn = peers.stacks[active].connect(net.now, local, peers.srflx[passive])
    net.run(start + config.deadline, stop=lambda: peers.both_open() or conn.state is TcpState.CLOSED)
    return peers.result(start, [conn])
