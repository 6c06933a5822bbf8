"""A virtual UDP + TCP network for two or more sans-IO agents (virtual clock): enough TCP to test ICE-TCP.

Connections are opened by the agents' :class:`TcpConnect` intents; a TCP candidate's address listens when it is
passive or so. Sends may be cut into chunks (``chunk``) to exercise RFC 4571 framing across reads.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from ice.agent import IceAgent
from ice.agent.tcp import TcpClose, TcpClosed, TcpConnect, TcpConnected, TcpConnectFailed, TcpSend, TcpType
from ice.stun.attributes import Address


@dataclass
class TcpNet:
    latency: float = 0.005
    chunk: int = 0
    """Cut every TCP send into pieces of this many bytes (0: whole)."""
    now: float = 0.0
    udp: dict[Address, IceAgent] = field(default_factory=dict)
    agents: list[IceAgent] = field(default_factory=list)
    refuse: Callable[[Address, Address], bool] | None = None
    """(src, dst) -> refuse this SYN with a RST."""
    blackhole: Callable[[Address, Address], bool] | None = None
    """(src, dst) -> drop this SYN silently (the initiator's connect never completes)."""
    separate: bool = False
    """Crossing SYNs make two connections (each reaches the other's listener) instead of one simultaneous open:
    what NATs that give each attempt its own port can do."""
    connects: list[tuple[float, TcpConnect]] = field(default_factory=list)
    _q: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _links: dict[tuple[int, int], tuple[IceAgent, int]] = field(default_factory=dict)
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))
    _tuples: set[tuple[Address, Address]] = field(default_factory=set)
    _syn_sent: dict[tuple[Address, Address], tuple[IceAgent, int]] = field(default_factory=dict)
    """(src, dst) -> the connection in SYN-SENT (a SYN crossing it makes a simultaneous open, RFC 9293 §3.5)."""

    def attach(self, agent: IceAgent, *udp: Address) -> None:
        self.agents.append(agent)
        for a in udp:
            self.udp[a] = agent
            agent.add_host_candidate(a)

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._q, (when, next(self._seq), fn))

    def _listener(self, addr: Address) -> IceAgent | None:
        for agent in self.agents:
            for c in agent.local_candidates:
                if c.transport == "tcp" and c.address == addr and c.related is None \
                        and TcpType.of(c) in (TcpType.PASSIVE, TcpType.SO):
                    return agent
        return None

    def pump(self, agent: IceAgent) -> None:
        while (t := agent.poll_transmit()) is not None:
            dst = self.udp.get(t.remote)
            if dst is not None and t.local is not None:
                src, remote, data = t.local, t.remote, t.data
                self._at(self.now + self.latency,
                         lambda d=dst, r=remote, s=src, x=data: d.handle_datagram(self.now, r, s, x))
        while (i := agent.poll_tcp()) is not None:
            key = (id(agent), i.conn)
            if isinstance(i, TcpConnect):
                self.connects.append((self.now, i))
                src = i.local if i.local[1] else (i.local[0], next(self._ports))
                self._syn_sent[(src, i.remote)] = (agent, i.conn)
                self._at(self.now + self.latency, lambda a=agent, c=i, s=src: self._syn(a, c, s))
            elif isinstance(i, TcpSend):
                peer = self._links.get(key)
                if peer is None:
                    continue
                data = i.data
                pieces = [data[k:k + self.chunk] for k in range(0, len(data), self.chunk)] if self.chunk else [data]
                for piece in pieces:
                    self._at(self.now + self.latency,
                             lambda p=peer, x=piece: p[0].handle_tcp_data(self.now, p[1], x))
            elif isinstance(i, TcpClose):
                peer = self._links.pop(key, None)
                if peer is not None:
                    self._links.pop((id(peer[0]), peer[1]), None)
                    self._at(self.now + self.latency,
                             lambda p=peer: p[0].handle_tcp_event(self.now, TcpClosed(p[1])))

    def _syn(self, agent: IceAgent, c: TcpConnect, src: Address) -> None:
        if self._syn_sent.get((src, c.remote)) != (agent, c.conn):
            return  # already established by the other end's crossing SYN
        if self.blackhole is not None and self.blackhole(src, c.remote):
            return
        crossing = None if self.separate else self._syn_sent.pop((c.remote, src), None)
        if crossing is not None:  # simultaneous open: one connection, both ends "connected"
            del self._syn_sent[(src, c.remote)]
            self._links[(id(agent), c.conn)] = crossing
            self._links[(id(crossing[0]), crossing[1])] = (agent, c.conn)
            for ag, cid in ((agent, c.conn), crossing):
                self._at(self.now + self.latency, lambda g=ag, k=cid: g.handle_tcp_event(self.now, TcpConnected(k)))
            return
        del self._syn_sent[(src, c.remote)]
        if (src, c.remote) in self._tuples and not self.separate:  # the 4-tuple is taken (the peer connected)
            self._at(self.now, lambda: agent.handle_tcp_event(self.now, TcpConnectFailed(c.conn, "in use")))
            return
        dst = self._listener(c.remote)
        refused = dst is None or (self.refuse is not None and self.refuse(src, c.remote))
        conn = None if refused or dst is None else dst.accept_tcp(self.now, c.remote, src)
        if conn is None or dst is None:
            self._at(self.now + self.latency,
                     lambda: agent.handle_tcp_event(self.now, TcpConnectFailed(c.conn, "refused")))
            return
        self._links[(id(agent), c.conn)] = (dst, conn)
        self._links[(id(dst), conn)] = (agent, c.conn)
        self._tuples |= {(src, c.remote), (c.remote, src)}
        self._at(self.now + self.latency, lambda: agent.handle_tcp_event(self.now, TcpConnected(c.conn)))

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        for a in self.agents:
            self.pump(a)
        while True:
            times = [t for a in self.agents if (t := a.next_timeout()) is not None]
            if self._q:
                times.append(self._q[0][0])
            if not times:
                return
            nxt = max(min(times), self.now)
            if nxt > until:
                self.now = until
                return
            self.now = nxt
            while self._q and self._q[0][0] <= self.now:
                heapq.heappop(self._q)[2]()
            for a in self.agents:
                t = a.next_timeout()
                if t is not None and t <= self.now:
                    a.handle_timeout(self.now)
            for a in self.agents:
                self.pump(a)
            if stop is not None and stop():
                return
