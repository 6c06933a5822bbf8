"""A flat virtual UDP + TCP network for two or more sans-IO agents (virtual clock), for the ICE-TCP agent tests: the
simulation's own network (:class:`ice.sim.network.SimNetwork` without a topology) with each agent's TCP intents
carried out by :class:`ice.sim.tcp_driver.SimTcpDriver` on :mod:`ice.sim.tcp` host stacks, so the tests and the
scenarios share one TCP model.

A TCP candidate's address listens when it is passive or so. Sends may be cut into chunks (``chunk``) to exercise
RFC 4571 framing across reads; ``refuse`` and ``blackhole`` answer SYNs with RST or drop them.
"""

from __future__ import annotations

from collections.abc import Callable

from ice.agent import IceAgent
from ice.agent.tcp import TcpConnect
from ice.sim.network import SimNetwork
from ice.sim.tcp import Segment
from ice.sim.tcp_driver import SimTcpDriver
from ice.stun.attributes import Address


class TcpNet:
    def __init__(self, latency: float = 0.005, chunk: int = 0,
                 refuse: Callable[[Address, Address], bool] | None = None,
                 blackhole: Callable[[Address, Address], bool] | None = None) -> None:
        self.net = SimNetwork(latency=latency)
        self.chunk = chunk
        self.refuse, self.blackhole = refuse, blackhole
        self.net.segment_rule = self._rule
        self.connects: list[tuple[float, TcpConnect]] = []
        self.drivers: list[SimTcpDriver] = []

    @property
    def now(self) -> float:
        return self.net.now

    def _rule(self, src: Address, dst: Address, seg: Segment) -> str | None:
        if self.blackhole is not None and self.blackhole(src, dst):
            return "drop"
        if self.refuse is not None and self.refuse(src, dst):
            return "rst"
        return None

    def attach(self, agent: IceAgent, *udp: Address) -> None:
        """The agent, with a UDP host candidate on each of ``udp``; its TCP candidates' IPs get stacks when it
        runs."""
        self.net.add_agent(agent, *udp)
        self.net.add_endpoint(agent, ("0.0.0.0", len(self.drivers)))  # its timers run even without UDP
        driver = SimTcpDriver(agent, {}, chunk=self.chunk, connects=self.connects)
        self.drivers.append(driver)
        self.net.tcp_drivers.append(driver)

    def _stacks(self) -> None:
        for driver in self.drivers:
            for c in driver.agent.local_candidates:
                if c.transport == "tcp" and c.host not in driver.stacks:
                    stack = self.net.tcp.get(c.host) or self.net.add_tcp(c.host)
                    if stack.events is None:
                        from collections import deque

                        stack.events = deque()
                    driver.stacks[c.host] = stack
            driver.listen_candidates()

    def reset_connections(self) -> None:
        """Every open connection ends under both hosts, as when a middlebox resets them."""
        for stack in self.net.tcp.values():
            for conn in list(stack.connections.values()):
                stack.abort(conn)

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        self._stacks()
        self.net.run(until, stop or (lambda: False))
