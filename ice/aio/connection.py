"""asyncio API over the sans-IO agent: the :class:`Driver` (sockets, one timer, the pump), futures and queues.

No protocol logic here: with a TURN server the endpoint is the core's ICE-over-TURN composition
(:class:`~ice.relayed.RelayedAgent`), otherwise the :class:`IceAgent` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from ice.agent import AgentConfig, AgentState, Candidate, IceAgent
from ice.agent.candidate import pair_text
from ice.agent.events import (
    ConsentLost,
    DataReceived,
    Event,
    GatheringComplete,
    SelectedPairChanged,
    StateChanged,
    StunServerUnreachable,
)
from ice.agent.network import NetworkChange
from ice.agent.tcp import TcpType
from ice.aio.driver import Driver, DriverConfig
from ice.aio.tcp import TcpEndpoint, TcpPlumbing
from ice.aio.turn_client import open_turn_stream
from ice.endpoint import Endpoint
from ice.errors import ConnectTimeout, GatheringFailed, IceFailed, NotConnected, TurnError
from ice.relayed import RelayedAgent
from ice.stun.attributes import Address
from ice.turn.client import TurnClientConfig

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 60.0
"""``connect()``'s default deadline in seconds. Longer than the agent's own bounds on a session that is failing
(a check's whole schedule, 39.5 s; the controlled side's ``nomination_timeout``, 40 s after the peer's last check),
so the agent's own reason (:class:`IceFailed`) normally comes first; :class:`ConnectTimeout` covers the rest (e.g.
a peer that never signals end-of-candidates)."""


LOCAL_GONE_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EINVAL, errno.ENETUNREACH})
"""What a send from a socket whose local address left the interface fails with (Linux says ENETUNREACH; other
systems EADDRNOTAVAIL or EINVAL). An unroutable destination gives ENETUNREACH too, so the address is probed."""


@dataclass(frozen=True)
class NetworkPolicy:
    """How a :class:`Connection` follows changes of its host's addresses (see :meth:`Connection.network_changed`)."""

    follow: bool = True
    """Notice on its own that a local address is gone: a send fails with one of :data:`LOCAL_GONE_ERRNOS` and a
    new socket can no longer bind that address (EADDRNOTAVAIL); then :meth:`Connection.network_changed` runs.
    False: only the application's own call does."""
    probe_interval: float = 1.0
    """At most one bind probe per local address in this many seconds (sends to an unroutable candidate fail the
    same way, as often as the agent checks it)."""


class Connection:
    """One ICE session: ``await gather()``, exchange candidates and credentials, ``await connect()``, then
    ``send()``/``recv()``. ``events()`` yields every agent event as it happens.

    ``queue_events=False``: events go to ``on_event`` only and ``events()`` yields nothing, so a caller that never
    iterates ``events()`` does not keep every event (and every received datagram) in memory."""

    def __init__(
        self,
        controlling: bool,
        config: AgentConfig | None = None,
        bind: Iterable[str] = ("127.0.0.1",),
        stun_servers: Iterable[Address] = (),
        make_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
        components: int = 1,
        turn: TurnClientConfig | None = None,
        relay_only: bool = False,
        make_stream_socket: Callable[[socket.AddressFamily], socket.socket] | None = None,
        queue_events: bool = True,
        network: NetworkPolicy | None = None,
        transports: str = "udp",
        tcp_types: Iterable[TcpType] = (TcpType.ACTIVE, TcpType.PASSIVE, TcpType.SO),
    ) -> None:
        self._make_stream_socket = make_stream_socket or (lambda fam: socket.socket(fam, socket.SOCK_STREAM))
        config = self._with_transports(config or AgentConfig(), transports)
        self.transports = transports
        """``"udp"`` (the default), ``"tcp"`` or ``"both"``: the candidates gathered (ICE-TCP: RFC 6544)."""
        self.tcp_types = tuple(tcp_types)
        """The tcptypes of the TCP host candidates gathered per bind address (RFC 6544 §4.1)."""
        self.agent = IceAgent(controlling, config)
        self.components = components
        self.turn = turn
        self.relay_only = relay_only
        if relay_only and turn is None:
            raise ValueError("relay_only needs a TURN server")
        self.relayed = RelayedAgent(self.agent, turn) if turn is not None else None
        """The ICE-over-TURN composition (RFC 8445 §5.1.1.2) when there is a TURN server."""
        self.endpoint: Endpoint[Event] = self.relayed if self.relayed is not None else self.agent
        self.tcp: TcpPlumbing | None = None
        """The listeners and connections of the TCP candidates (None: UDP only)."""
        if transports != "udp":
            self.tcp = TcpPlumbing(self.agent, lambda: self.driver.pump(), self._make_stream_socket,
                                   driven=self.relayed)
            self.endpoint = TcpEndpoint(self.endpoint, self.tcp)
        self._driver: Driver[Event] | None = None
        self._stream_tasks: set[asyncio.Task[None]] = set()
        self.bind = list(bind)
        self.stun_servers = list(stun_servers)
        self._make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_DGRAM))
        self._hosts: list[Address] = []
        self._gather_started = False
        self._recv: asyncio.Queue[bytes] = asyncio.Queue()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._queue_events = queue_events
        self._gathered = asyncio.Event()
        self._state_changed = asyncio.Event()
        self.selected: SelectedPairChanged | None = None
        self.on_event: Callable[[Event], None] | None = None
        self._failure: str | None = None
        self.network = network or NetworkPolicy()
        self._probe_at: dict[str, float] = {}
        self._changing: asyncio.Task[bool] | None = None

    @property
    def ufrag(self) -> str:
        return self.agent.ufrag

    @property
    def pwd(self) -> str:
        return self.agent.pwd

    @property
    def local_candidates(self) -> list[Candidate]:
        return list(self.agent.local_candidates)

    @property
    def driver(self) -> Driver[Event]:
        if self._driver is None:
            self._driver = Driver(self.endpoint, self._on_event, stats=self.agent.stats,
                                  config=DriverConfig(batch=1))
            self._driver.on_unreachable = self._on_unreachable
            self._driver.on_send_error = self._on_send_error
        return self._driver

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def gather(self) -> list[Candidate]:
        """Open one UDP socket per bind address (host candidates), ask the STUN servers (srflx), allocate on the
        TURN server (relayed, one allocation per component), wait for the end of gathering. A failed allocation
        only means no relayed candidate for that component; raises :class:`GatheringFailed` when there is no
        candidate at all.

        A STUN server holds up the end of gathering for at most ``AgentConfig.gather_timeout`` (8 s); one whose
        host answers with ICMP port unreachable (Linux, IP_RECVERR) ends its request at once. Either way a
        :class:`StunServerUnreachable` event and a ``logging`` warning (logger ``ice.aio.connection``) name the
        server and the reason. Candidates trickle (``events()``, ``on_event``) as they are gathered."""
        driver = self.driver
        self._gather_started = True
        for component in range(1, self.components + 1):
            for ip in self.bind if self.transports != "tcp" else ():
                sock = self._make_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                sock.bind((ip, 0))
                local = driver.add_socket(sock, icmp_errors=True)
                self._hosts.append(local)
                if not self.relay_only:
                    self.agent.add_host_candidate(local, component=component)
            if self.relayed is not None:
                await self._open_relay(self.relayed, component)
        if self.tcp is not None and not self.relay_only:
            await self._gather_tcp(self.tcp)
        now = self._now()
        for local in self._hosts:
            for server in self.stun_servers if not self.relay_only else ():
                if (":" in server[0]) == (":" in local[0]):
                    self.agent.gather_server_reflexive(now, local, server)
        if self.tcp is not None and not self.relay_only and self.stun_servers:
            driver.pump()  # the UDP requests go out while the TCP bindings run
            timeout = self.agent.config.tcp.stun_timeout
            await asyncio.gather(*(self.tcp.gather_server_reflexive(s, timeout) for s in self.stun_servers))
        if self.relayed is not None:
            self.relayed.start(now)  # end-of-candidates follows the allocations
        else:
            self.agent.end_of_local_candidates()
        driver.pump()
        await self._gathered.wait()
        if not self.agent.local_candidates:
            raise GatheringFailed("no local candidate: " + ("no relayed candidate (the TURN allocation failed)"
                                                          if self.relay_only else "no usable socket"))
        return self.local_candidates

    @staticmethod
    def _with_transports(config: AgentConfig, transports: str) -> AgentConfig:
        if transports not in ("udp", "tcp", "both"):
            raise ValueError(f"transports is 'udp', 'tcp' or 'both', not {transports!r}")
        if transports != "udp" and not config.tcp.enabled:
            return replace(config, tcp=replace(config.tcp, enabled=True))
        return config

    async def _gather_tcp(self, tcp: TcpPlumbing) -> None:
        """TCP host candidates of ``tcp_types`` on every bind address (passive and so ones listen); their
        server-reflexive candidates follow from a STUN Binding over TCP to each STUN server (RFC 6544 §4.1),
        alongside the UDP ones."""
        for component in range(1, self.components + 1):
            for ip in self.bind:
                for tcptype in self.tcp_types:
                    await tcp.add_candidate(ip, tcptype, component)

    @property
    def relay_kinds(self) -> tuple[bool, ...]:
        """The allocations made per component, True for a TURN TCP allocation (RFC 6062: relayed TCP candidates,
        RFC 6544 §5.3): with ``transports`` "tcp" a TCP one, with "both" a UDP and a TCP one, with "udp" a UDP
        one. A TCP allocation needs the TURN server reached over TCP (``turn.transport`` "tcp"; its data
        connections are plain TCP: over TLS they would need TLS too, which the ICE-TCP driver does not do); without
        that a TCP-only connection relays through a UDP allocation."""
        if self.turn is None:
            return ()
        tcp = self.turn.transport == "tcp" and self.transports != "udp"
        if self.transports == "tcp":
            return (tcp,)
        return (False, True) if tcp else (False,)

    async def _open_relay(self, relayed: RelayedAgent, component: int) -> None:
        for tcp in self.relay_kinds:
            local = await self._open_relay_socket()
            if local is not None:
                relayed.add_allocation(local, component, tcp=tcp)

    async def _open_relay_socket(self) -> Address | None:
        """The socket (or TCP/TLS stream, RFC 8656 §3.1) a component's TURN allocation lives on, on the first bind
        address (None: the stream could not be opened)."""
        assert self.turn is not None
        bind = (self.bind[0], 0)
        if self.turn.stream:
            try:
                reader, writer, local = await open_turn_stream(self.turn, bind, self._make_stream_socket)
            except TurnError:
                self.agent.stats["turn-connect-failed"] += 1
                return None
            task = self.driver.start_stream(reader, writer, local, self.turn.server)
            self._stream_tasks.add(task)
            task.add_done_callback(self._stream_tasks.discard)
            return local
        sock = self._make_socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET)
        try:
            sock.bind(bind)
        except OSError:
            sock.close()
            raise
        return self.driver.add_socket(sock)

    def held(self) -> contextlib.AbstractContextManager[None]:
        """``with conn.held(): ...``: the calls inside (``set_remote_credentials``, ``add_remote_candidate``, ...)
        send what they queued once, when the block ends, instead of each at once: for applying one signalling
        message (credentials, several candidates, end-of-candidates) in one go."""
        return self.driver.held()

    def set_remote_credentials(self, ufrag: str, pwd: str, lite: bool = False) -> None:
        self.agent.set_remote_credentials(self._now(), ufrag, pwd, lite)
        (self._driver or self.driver).pump()

    def add_remote_candidate(self, candidate: Candidate | None) -> None:
        self.agent.add_remote_candidate(self._now(), candidate)
        (self._driver or self.driver).pump()

    async def connect(self, timeout: float | None = CONNECT_TIMEOUT) -> SelectedPairChanged:
        """Wait until a pair is selected. Raises :class:`IceFailed` when ICE fails (its ``reason`` says why, e.g.
        "the peer rejected our credentials (401 ...): is the remote password right?") or the connection is closed,
        :class:`ConnectTimeout` (also a ``TimeoutError``) after ``timeout`` seconds (default
        :data:`CONNECT_TIMEOUT`, 60 s; None: no deadline of its own)."""
        if self.agent.state is not AgentState.FAILED:
            self._failure = None  # a failure before an ICE restart is not this attempt's
        elif self._failure is None:
            self._failure = self.agent.failure_reason or "ICE failed"

        async def wait() -> SelectedPairChanged:
            while True:
                if self.selected is not None and self.agent.state in (AgentState.CONNECTED, AgentState.COMPLETED):
                    return self.selected
                if self._failure is not None:
                    raise IceFailed(self._failure)
                if self.agent.state is AgentState.CLOSED:
                    raise IceFailed("the connection was closed before ICE connected")
                self._state_changed.clear()
                await self._state_changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:  # TimeoutError from 3.11 on
            agent = self.agent
            valid = sum(1 for p in agent.pairs if p.valid)
            eoc = "received" if agent.remote_end_of_candidates else "not received"
            raise ConnectTimeout(f"not connected within {timeout:g} s (state {agent.state.value}, "
                                 f"{len(agent.pairs)} pairs, {valid} valid, remote end-of-candidates {eoc})"
                                 ) from None

    def send(self, data: bytes, component: int | None = None) -> None:
        """Send on the selected pair of ``component`` (default: the first)."""
        if not self.agent.send(data, component):
            raise NotConnected("no selected pair (not connected, consent lost, or closed): cannot send")
        self.driver.pump()

    async def recv(self) -> bytes:
        return await self._recv.get()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._events.get()

    def restart(self) -> None:
        """ICE restart (RFC 8445 §9): new ufrag/pwd (signal them and the candidates again); data keeps flowing on
        the current pair until a new one is selected."""
        self.agent.restart(self._now())
        self.selected = None
        self._failure = None
        self.driver.pump()

    async def network_changed(self, bind: Iterable[str] | None = None, regather: bool = False) -> bool:
        """The host's addresses changed (an interface was renumbered, Wi-Fi became cellular): call this when the
        OS says so (netlink, NetworkManager, a mobile platform's connectivity callback), with the addresses to use
        now, or None to have them found: each bind address that still binds is kept, and one that does not is
        replaced by the source address the OS picks towards the STUN/TURN servers (or the peer).

        Sockets on addresses that left are closed, new ones opened (one per component), and the agent restarts
        ICE (RFC 8445 §9) gathering host, server-reflexive and relayed candidates again on them
        (:meth:`IceAgent.network_changed`; a TURN allocation made from a dead socket is made again, RFC 8656
        §7.1). A :class:`~ice.agent.events.NetworkChangeRestart` event carries the new ufrag: signal it with
        :attr:`pwd` and :attr:`local_candidates` to the peer, which restarts (:meth:`restart`) on a changed ufrag
        (RFC 8839 §4.4.1.1.1) and answers with its own; the new candidates trickle as usual. :meth:`connect`
        waits for the new pair. Returns False when nothing changed (the OS reports changes of other interfaces too).
        ``regather=True`` replaces every socket and restarts even when the addresses are the same: the same
        private address on another network has another NAT in front, so other server-reflexive and relayed
        candidates.

        With :attr:`NetworkPolicy.follow` (the default) the connection also calls this itself once a send fails
        because its local address is gone (:data:`LOCAL_GONE_ERRNOS`, confirmed by a bind probe)."""
        old = list(self.bind)
        new = list(bind) if bind is not None else self._find_addresses(old)
        if not self._gather_started or self.agent.state is AgentState.CLOSED:
            self.bind = new  # not gathered yet (or closed): gather() takes them
            return False
        gone_ips = set(old) if regather else {ip for ip in old if ip not in new}
        added = list(new) if regather else [ip for ip in new if ip not in old]
        if not gone_ips and not added:
            return False
        relays = self.relayed.relays if self.relayed is not None else []
        gone = tuple(local for local in [*self._hosts, *(r.local for r in relays)] if local[0] in gone_ips)
        self.bind = new
        hosts: list[tuple[int, Address]] = []
        tcp_gone = tuple(b for b in self.agent.tcp_bases if b[0] in gone_ips)
        tcp_hosts = await self._open_tcp_hosts(added)
        for component in range(1, self.components + 1):
            for ip in added if self.transports != "tcp" else ():
                try:
                    sock = self._make_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                except OSError as exc:
                    log.warning("network change: no socket for %s: %s", ip, exc)
                    continue
                try:
                    sock.bind((ip, 0))
                except OSError as exc:
                    sock.close()
                    log.warning("network change: cannot bind %s: %s", ip, exc)
                    continue
                hosts.append((component, self.driver.add_socket(sock, icmp_errors=True)))
        turn: list[tuple[int, Address]] = []
        turn_tcp: list[tuple[int, Address]] = []
        for relay in relays:
            if relay.local in gone and self.bind:
                try:
                    local = await self._open_relay_socket()
                except OSError as exc:
                    log.warning("network change: no TURN socket on %s: %s", self.bind[0], exc)
                    continue
                if local is not None:
                    (turn_tcp if relay.tcp else turn).append((relay.component, local))
        for local in gone:
            self.driver.remove_socket(local)
            self.driver.remove_streams(local)
        if self.tcp is not None:
            for ip in gone_ips:
                self.tcp.forget(ip)
        self._hosts = [h for h in self._hosts if h not in gone] + [local for _, local in hosts]
        self.selected = None
        self._failure = None
        change = NetworkChange((*gone, *tcp_gone), tuple(hosts), tuple(turn),
                               () if self.relay_only else tuple(self.stun_servers), not self.relay_only,
                               tuple(tcp_hosts), tuple(turn_tcp))
        # RFC 6544 §4.1: the new TCP candidates' server-reflexive ones come from Bindings over TCP, before
        # end-of-candidates (RFC 8838 §8.2).
        srflx = {local for _, local, t in tcp_hosts if t is not TcpType.ACTIVE} if self.stun_servers else set()
        if self.relayed is not None:
            self.relayed.network_changed(self._now(), change, final=not srflx)
        else:
            self.agent.network_changed(self._now(), change, final=not srflx)
        self.driver.pump()
        if srflx and self.tcp is not None:
            timeout = self.agent.config.tcp.stun_timeout
            await asyncio.gather(*(self.tcp.gather_server_reflexive(s, timeout, srflx) for s in self.stun_servers))
            (self.relayed or self.agent).end_of_local_candidates()
            self.driver.pump()
        return True

    async def _open_tcp_hosts(self, ips: list[str]) -> list[tuple[int, Address, TcpType]]:
        """The sockets of the TCP host candidates on new addresses (a network change), one per tcptype."""
        out: list[tuple[int, Address, TcpType]] = []
        if self.tcp is None or self.relay_only:
            return out
        for component in range(1, self.components + 1):
            for ip in ips:
                for tcptype in self.tcp_types:
                    try:
                        out.append((component, await self.tcp.open(ip, tcptype), tcptype))
                    except OSError as exc:
                        log.warning("network change: no TCP %s socket on %s: %s", tcptype.value, ip, exc)
        return out

    def _find_addresses(self, old: list[str]) -> list[str]:
        """The bind addresses after a change the OS did not describe: each old one that still binds, and for one
        that does not, the source address the OS routes from towards the servers (or the peer)."""
        keep = [ip for ip in old if self._address_available(ip)]
        targets = [*([self.turn.server] if self.turn is not None else []), *self.stun_servers,
                   *(c.address for c in self.agent.remote_candidates)]
        for ip in old:
            if ip in keep:
                continue
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            for target in targets:
                if (":" in target[0]) != (family == socket.AF_INET6):
                    continue
                try:
                    sock = self._make_socket(family)
                except OSError:
                    break
                try:
                    sock.connect(target)  # UDP: no packet, only the route (and its source address)
                    found = str(sock.getsockname()[0])
                except OSError:
                    continue
                finally:
                    sock.close()
                if found not in keep:
                    keep.append(found)
                break
        return keep

    def _address_available(self, ip: str) -> bool:
        """Can a new socket bind ``ip``? (EADDRNOTAVAIL: the address left the host; any other trouble, e.g. out of
        descriptors, says nothing about the address.)"""
        try:
            sock = self._make_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        except OSError:
            return True
        try:
            sock.bind((ip, 0))
        except OSError as exc:
            return exc.errno != errno.EADDRNOTAVAIL
        finally:
            sock.close()
        return True

    def _on_send_error(self, local: Address, remote: Address, exc: OSError) -> None:
        """A send failed: if it is because ``local``'s address left the host, follow the network change."""
        if not self.network.follow or exc.errno not in LOCAL_GONE_ERRNOS or self._changing is not None \
                or self.agent.state is AgentState.CLOSED or local[0] not in self.bind:
            return
        now = self._now()
        if now < self._probe_at.get(local[0], float("-inf")):
            return
        self._probe_at[local[0]] = now + self.network.probe_interval
        if self._address_available(local[0]):
            return
        self.agent.stats["local-address-gone"] += 1
        log.info("local address %s is gone (%s): following the network change", local[0], exc.strerror or exc)
        self._changing = asyncio.ensure_future(self.network_changed())
        self._changing.add_done_callback(self._changed)

    def _changed(self, task: asyncio.Task[bool]) -> None:
        self._changing = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("following a network change failed: %r", task.exception())

    def close(self) -> None:
        if self._changing is not None:
            self._changing.cancel()
        if self.relayed is not None and self._driver is not None:
            self.relayed.close(self._now())  # deallocate (RFC 8656 §8): sent by the driver's last pump
        else:
            self.agent.close()
        if self.tcp is not None:
            self.tcp.close()
        if self._driver is not None:
            self._driver.close()
        for task in self._stream_tasks:
            task.cancel()
        self._state_changed.set()

    # ------------------------------------------------------------------------------------------- plumbing

    def _on_unreachable(self, local: Address, remote: Address, exc: OSError) -> None:
        """An ICMP error on a host socket: if it answers a STUN request, that server is unreachable."""
        reason = f"{exc.strerror or exc} (ICMP)"
        if self.agent.stun_server_unreachable(self._now(), local, remote, reason):
            self.driver.pump()

    def _on_event(self, ev: Event) -> None:
        react = _REACTIONS.get(type(ev))  # most events (pair states) need nothing of the connection itself
        if react is not None:
            react(self, ev)
        if self._queue_events:
            self._events.put_nowait(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def _on_state(self, ev: StateChanged) -> None:
        if ev.state is AgentState.FAILED:
            self._failure = ev.reason or "ICE failed"
        self._state_changed.set()

    def _on_selected(self, ev: SelectedPairChanged) -> None:
        self.selected = ev
        self._state_changed.set()

    def _on_consent_lost(self, ev: ConsentLost) -> None:
        self._state_changed.set()

    def _on_data(self, ev: DataReceived) -> None:
        self._recv.put_nowait(ev.data)

    def _on_gathered(self, ev: GatheringComplete) -> None:
        self._gathered.set()

    def _on_server_unreachable(self, ev: StunServerUnreachable) -> None:
        log.warning("STUN server %s unreachable from %s: %s", _fmt(ev.server), _fmt(ev.local), ev.reason)


_REACTIONS: dict[type, Callable[[Connection, Any], None]] = {
    StateChanged: Connection._on_state,
    SelectedPairChanged: Connection._on_selected,
    ConsentLost: Connection._on_consent_lost,
    DataReceived: Connection._on_data,
    GatheringComplete: Connection._on_gathered,
    StunServerUnreachable: Connection._on_server_unreachable,
}
"""What the connection itself does with an event, by its type, before queueing it or handing it to ``on_event``."""


def _fmt(addr: Address) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def describe_pair(ev: SelectedPairChanged) -> str:
    """``host 127.0.0.1:5000 | srflx 203.0.113.2:6000`` (local first), as the line protocol prints it."""
    return pair_text(ev.local, ev.remote, "|")
