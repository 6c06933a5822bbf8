"""asyncio API over the sans-IO agent: the :class:`Driver` (sockets, one timer, the pump), futures and queues.

No protocol logic here: with a TURN server the endpoint is the core's ICE-over-TURN composition
(:class:`~ice.relayed.RelayedAgent`), otherwise the :class:`IceAgent` itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import replace

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
from ice.agent.tcp import TcpType
from ice.aio.driver import Driver
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
            self.tcp = TcpPlumbing(self.agent, lambda: self.driver.pump(), self._make_stream_socket)
            self.endpoint = TcpEndpoint(self.endpoint, self.tcp)
        self._driver: Driver[Event] | None = None
        self._stream_tasks: set[asyncio.Task[None]] = set()
        self.bind = list(bind)
        self.stun_servers = list(stun_servers)
        self._make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_DGRAM))
        self._hosts: list[Address] = []
        self._recv: asyncio.Queue[bytes] = asyncio.Queue()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._queue_events = queue_events
        self._gathered = asyncio.Event()
        self._state_changed = asyncio.Event()
        self.selected: SelectedPairChanged | None = None
        self.on_event: Callable[[Event], None] | None = None
        self._failure: str | None = None

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
            self._driver = Driver(self.endpoint, self._on_event, stats=self.agent.stats, batch=1)
            self._driver.on_unreachable = self._on_unreachable
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

    async def _open_relay(self, relayed: RelayedAgent, component: int) -> None:
        """The socket (or TCP/TLS stream, RFC 8656 §3.1) a component's TURN allocation lives on."""
        assert self.turn is not None
        bind = (self.bind[0], 0)
        if self.turn.stream:
            try:
                reader, writer, local = await open_turn_stream(self.turn, bind, self._make_stream_socket)
            except TurnError:
                self.agent.stats["turn-connect-failed"] += 1
                return
            task = self.driver.start_stream(reader, writer, local, self.turn.server)
            self._stream_tasks.add(task)
            task.add_done_callback(self._stream_tasks.discard)
        else:
            sock = self._make_socket(socket.AF_INET6 if ":" in bind[0] else socket.AF_INET)
            sock.bind(bind)
            local = self.driver.add_socket(sock)
        relayed.add_allocation(local, component)

    def set_remote_credentials(self, ufrag: str, pwd: str, lite: bool = False) -> None:
        self.agent.set_remote_credentials(self._now(), ufrag, pwd, lite)
        self.driver.pump()

    def add_remote_candidate(self, candidate: Candidate | None) -> None:
        self.agent.add_remote_candidate(self._now(), candidate)
        self.driver.pump()

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

    def close(self) -> None:
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
        if isinstance(ev, StateChanged) and ev.state is AgentState.FAILED:
            self._failure = ev.reason or "ICE failed"
        elif isinstance(ev, StunServerUnreachable):
            log.warning("STUN server %s unreachable from %s: %s", _fmt(ev.server), _fmt(ev.local), ev.reason)
        if isinstance(ev, DataReceived):
            self._recv.put_nowait(ev.data)
        elif isinstance(ev, SelectedPairChanged):
            self.selected = ev
        elif isinstance(ev, GatheringComplete):
            self._gathered.set()
        if isinstance(ev, (StateChanged, SelectedPairChanged, ConsentLost)):
            self._state_changed.set()
        if self._queue_events:
            self._events.put_nowait(ev)
        if self.on_event is not None:
            self.on_event(ev)


def _fmt(addr: Address) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def describe_pair(ev: SelectedPairChanged) -> str:
    """``host 127.0.0.1:5000 | srflx 203.0.113.2:6000`` (local first), as the line protocol prints it."""
    return pair_text(ev.local, ev.remote, "|")
