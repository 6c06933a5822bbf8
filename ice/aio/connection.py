"""asyncio API over the sans-IO agent: sockets, one re-armed timer, futures and queues. No protocol logic here."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable

from ice.agent import AgentConfig, AgentState, Candidate, IceAgent
from ice.agent.candidate import pair_text
from ice.agent.events import (
    ConsentLost,
    DataReceived,
    Event,
    GatheringComplete,
    SelectedPairChanged,
    StateChanged,
)
from ice.aio.turn_client import TurnEndpoint
from ice.errors import IcelabError
from ice.stun.attributes import Address
from ice.turn.client import TurnClientConfig


class ConnectionError_(IcelabError):
    """ICE failed (no pair worked) or the connection was closed."""


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, owner: Connection, local: Address) -> None:
        self.owner, self.local = owner, local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        self.owner._received(self.local, (addr[0], addr[1]), data)

    def error_received(self, exc: Exception) -> None:
        self.owner.agent.stats["socket-error"] += 1


class Connection:
    """One ICE session: ``await gather()``, exchange candidates and credentials, ``await connect()``, then
    ``send()``/``recv()``. ``events()`` yields every agent event as it happens."""

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
    ) -> None:
        self._make_stream_socket = make_stream_socket
        self.agent = IceAgent(controlling, config or AgentConfig())
        self.components = components
        self.turn = turn
        self.relay_only = relay_only
        if relay_only and turn is None:
            raise ValueError("relay_only needs a TURN server")
        self._relays: dict[Address, TurnEndpoint] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.bind = list(bind)
        self.stun_servers = list(stun_servers)
        self._make_socket = make_socket or (lambda family: socket.socket(family, socket.SOCK_DGRAM))
        self._sockets: dict[Address, _Socket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._recv: asyncio.Queue[bytes] = asyncio.Queue()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._gathered = asyncio.Event()
        self._state_changed = asyncio.Event()
        self.selected: SelectedPairChanged | None = None
        self.on_event: Callable[[Event], None] | None = None

    @property
    def ufrag(self) -> str:
        return self.agent.ufrag

    @property
    def pwd(self) -> str:
        return self.agent.pwd

    @property
    def local_candidates(self) -> list[Candidate]:
        return list(self.agent.local_candidates)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def gather(self) -> list[Candidate]:
        """Open one UDP socket per bind address (host candidates), ask the STUN servers (srflx), wait for the end."""
        loop = asyncio.get_running_loop()
        for component in range(1, self.components + 1):
            for ip in self.bind:
                sock = self._make_socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
                sock.bind((ip, 0))
                sa = sock.getsockname()
                local = (str(sa[0]), int(sa[1]))
                proto = _Socket(self, local)
                await loop.create_datagram_endpoint(lambda proto=proto: proto, sock=sock)  # type: ignore[misc]
                self._sockets[local] = proto
                if not self.relay_only:
                    self.agent.add_host_candidate(local, component=component)
            if self.turn is not None:
                await self._allocate_relay(component)
        now = self._now()
        for local in self._sockets:
            for server in self.stun_servers if not self.relay_only else ():
                if (":" in server[0]) == (":" in local[0]):
                    self.agent.gather_server_reflexive(now, local, server)
        self.agent.end_of_local_candidates()
        self._flush()
        await self._gathered.wait()
        return self.local_candidates

    async def _allocate_relay(self, component: int) -> None:
        """A TURN allocation per component; its relayed address becomes a relayed candidate (RFC 8445 §5.1.1.2)."""
        assert self.turn is not None
        ip = self.bind[0]
        ep = TurnEndpoint(self.turn, bind=(ip, 0), make_socket=self._make_socket,
                          make_stream_socket=self._make_stream_socket)
        alloc = await ep.open()
        self._relays[alloc.relayed] = ep
        ep.on_data = lambda peer, data, relayed=alloc.relayed: self._received(relayed, peer, data)
        self.agent.add_relayed_candidate(alloc.relayed, alloc.mapped, self.turn.server[0], component)

    def set_remote_credentials(self, ufrag: str, pwd: str, lite: bool = False) -> None:
        self.agent.set_remote_credentials(self._now(), ufrag, pwd, lite)
        self._flush()

    def add_remote_candidate(self, candidate: Candidate | None) -> None:
        self.agent.add_remote_candidate(self._now(), candidate)
        self._flush()

    async def connect(self, timeout: float | None = None) -> SelectedPairChanged:
        """Wait until a pair is selected; raises ConnectionError_ if ICE fails."""

        async def wait() -> SelectedPairChanged:
            while True:
                if self.selected is not None and self.agent.state in (AgentState.CONNECTED, AgentState.COMPLETED):
                    return self.selected
                if self.agent.state in (AgentState.FAILED, AgentState.CLOSED):
                    raise ConnectionError_(f"ICE {self.agent.state.value}: no candidate pair worked")
                self._state_changed.clear()
                await self._state_changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    def send(self, data: bytes, component: int | None = None) -> None:
        """Send on the selected pair of ``component`` (default: the first)."""
        if not self.agent.send(data, component):
            raise ConnectionError_("no selected pair (or consent lost): cannot send")
        self._flush()

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
        self._flush()

    def close(self) -> None:
        self.agent.close()
        for relay in self._relays.values():
            relay.close()
        self._relays.clear()
        if self._timer:
            self._timer.cancel()
        for s in self._sockets.values():
            if s.transport:
                s.transport.close()
        self._sockets.clear()
        self._state_changed.set()

    # ------------------------------------------------------------------------------------------- plumbing

    def _received(self, local: Address, remote: Address, data: bytes) -> None:
        self.agent.handle_datagram(self._now(), local, remote, data)
        self._flush()

    def _on_timer(self) -> None:
        at = self._timer_at or 0.0
        self._timer = self._timer_at = None
        self.agent.handle_timeout(max(at, self._now()))  # never fire early
        self._flush()

    def _flush(self) -> None:
        agent = self.agent
        while (t := agent.poll_transmit()) is not None:
            sock = self._sockets.get(t.local) if t.local else None
            if sock is not None and sock.transport is not None:
                sock.transport.sendto(t.data, t.remote)
            elif t.local in self._relays:
                self._relays[t.local].send(t.remote, t.data)  # through the TURN allocation
            else:
                agent.stats["no-socket-for-transmit"] += 1
        while (ev := agent.next_event()) is not None:
            if isinstance(ev, DataReceived):
                self._recv.put_nowait(ev.data)
            elif isinstance(ev, SelectedPairChanged):
                self.selected = ev
                relay = self._relays.get(ev.base)
                if relay is not None:  # data will flow: a channel saves 32 bytes per packet (RFC 8656 §12)
                    task = asyncio.ensure_future(_bind_quietly(relay, ev.remote.address))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif isinstance(ev, GatheringComplete):
                self._gathered.set()
            if isinstance(ev, (StateChanged, SelectedPairChanged, ConsentLost)):
                self._state_changed.set()
            self._events.put_nowait(ev)
            if self.on_event is not None:
                self.on_event(ev)
        at = agent.next_timeout()
        if at != self._timer_at:
            if self._timer:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_at(at, self._on_timer) if at is not None else None
            self._timer_at = at


async def _bind_quietly(relay: TurnEndpoint, peer: Address) -> None:
    """A channel is an optimisation: without it data still flows in Send/Data indications."""
    with contextlib.suppress(Exception):
        await relay.bind_channel(peer)


def describe_pair(ev: SelectedPairChanged) -> str:
    """``host 127.0.0.1:5000 | srflx 203.0.113.2:6000`` (local first), as the line protocol prints it."""
    return pair_text(ev.local, ev.remote, "|")
