"""The in-memory back-end of a cell: the cell's topology spec realised by :mod:`ice.sim` on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ice.agent import CandidateType, IceAgent
from ice.agent.tcp import TcpType
from ice.scenario.bulk import BULK, BulkPhase, BulkSettings, BulkTransfer, is_bulk
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected
from ice.scenario.result import CellResult
from ice.scenario.timeline import TICK, TimelineNetwork, run_timeline, timeline_verdict
from ice.scenario.timers import TIMERS, MatrixTimers, agent_config
from ice.sim.scenario import SimPair
from ice.stun.attributes import Address
from ice.stun.transaction import Transmit
from ice.topology.spec import LinkConditions, TopologySpec


def run_sim(cell: Cell, spec: TopologySpec, expected: Expected, timers: MatrixTimers = TIMERS) -> CellResult:
    """Run ``cell`` in the simulation of ``spec`` (deterministic, virtual time; the spec's NATs, routes and link
    conditions as the lab has them) and judge it against ``expected``. A peer behind a UDP-blocking box reaches
    TURN over TCP, as in the lab. Cells whose agents run as processes (a foreign agent, lite, kill, restart,
    coturn) are skipped: the kernel lab runs them."""
    if cell.in_processes:
        return CellResult(cell, "sim", expected.path, PathKind.NONE, None, None, skipped=True,
                          reason="skipped: agents that run as processes (" + " and ".join(
                              sorted({s.label for s in cell.agents.values()})) + ")"
                          + (" and coturn" if cell.server == "coturn" else "") + " run in the kernel lab only"
                          ).expecting(expected)
    config = agent_config(cell.nomination_mode, cell.consent_timeout, cell.keepalive)
    pair = SimPair(spec, config, latency=timers.sim_latency, turn=cell.turn, relay_only=cell.relay_only,
                   trickle=cell.trickle, controlling=cell.controlling, transports=cell.transports,
                   tcp_types=(tcp_types(cell.tcp_types_a), tcp_types(cell.tcp_types_b)),
                   udp_blocked=cell.udp_blocked)
    r = pair.connect(timers.connect_for(cell.lossy))
    observed = PathKind.NONE if not r.connected else PathKind.RELAY if r.relayed else PathKind.DIRECT
    res = CellResult(cell, "sim", expected.path, observed, r.selected_pair, r.seconds if r.connected else None,
                     sorted(f"{x}-{y}" for x, y in r.succeeded), selected_types=r.selected_name,
                     selected_b=r.selected_pair_b)
    if cell.bulk is not None and r.connected:
        res.extra["bulk"] = figures = run_bulk(pair, cell.bulk, observed.value)
        bulk_error = cell.bulk.verdict(figures)
        if bulk_error:
            res.extra["bulk_error"] = bulk_error
    if cell.timeline and r.connected:
        net = SimTimeline(pair, restart_on_failure=cell.restart_on_failure)
        steps = asyncio.run(run_timeline(cell.timeline, net))
        res.extra["timeline"] = [s.as_json() for s in steps]
        res.extra["timeline_data"] = net.counts()
        res.reason = timeline_verdict(steps, cell.timeline)
        if res.reason:
            res.extra["timeline_error"] = res.reason
    return res.expecting(expected)


def tcp_types(names: tuple[str, ...]) -> tuple[TcpType, ...]:
    """A cell's tcptype names as the agent's enum."""
    return tuple(TcpType(n) for n in names)


@dataclass
class _Ticker:
    """An endpoint of the simulated network whose only job is a timer: the timeline's data stream and policy."""

    every: float
    on_tick: Callable[[], None]
    at: float = 0.0

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        pass

    def handle_timeout(self, now: float) -> None:
        self.at = now + self.every
        self.on_tick()

    def next_timeout(self) -> float | None:
        return self.at

    def poll_transmit(self) -> Transmit | None:
        return None

    def next_event(self) -> None:
        return None


@dataclass
class _BulkTimer:
    """An endpoint of the simulated network that runs the bulk phase's timer (datagrams given up)."""

    transfer: BulkTransfer
    on_timeout: Callable[[float], None]

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        pass

    def handle_timeout(self, now: float) -> None:
        self.on_timeout(now)

    def next_timeout(self) -> float | None:
        return self.transfer.next_timeout()

    def poll_transmit(self) -> Transmit | None:
        return None

    def next_event(self) -> None:
        return None


BULK_TIMER = ("0.0.0.0", 1)
"""Where the bulk phase's timer sits in the simulated network (no packet is addressed to it)."""


def run_bulk(pair: SimPair, phase: BulkPhase, path: str, settings: BulkSettings = BULK) -> dict[str, Any]:
    """The cell's bulk phase on the sim's virtual clock: A sends, B counts and acknowledges
    (:class:`BulkTransfer`); the figures come from the sim's link model (latency, delay, loss, token buckets), so
    its Mbit/s is a model figure."""
    net = pair.net
    transfer = BulkTransfer(phase.count(settings), net.now, settings)

    def send_more() -> None:
        out = transfer.to_send(net.now)
        for i, data in enumerate(out):
            if not pair.a.send(data):
                transfer.unsent(len(out) - i)
                return

    def on_datagram(side: str, data: bytes) -> None:
        if side == "b":
            ack = transfer.on_receiver(net.now, data)
            if ack is not None:
                pair.b.send(ack)
        elif transfer.on_sender(net.now, data):
            send_more()

    def on_timeout(now: float) -> None:
        transfer.on_timeout(now)
        send_more()

    pair.on_datagram = on_datagram
    net.add_endpoint(_BulkTimer(transfer, on_timeout), BULK_TIMER)
    try:
        send_more()
        net.run(net.now + settings.deadline, stop=lambda: transfer.done)
    finally:
        pair.on_datagram = None
        net.agents.pop(BULK_TIMER, None)
    return transfer.figures(path, net.now)


class SimTimeline(TimelineNetwork):
    """The timeline's network actions in the simulation: blocks as drop rules at the peers' hosts, a NAT reboot
    as a new model of that NAT, a renumber as the address moved in the network's fabric (:meth:`SimPair.renumber`),
    the data stream on a timer of the virtual clock."""

    def __init__(self, pair: SimPair, restart_on_failure: bool = False) -> None:
        super().__init__(restart_on_failure=restart_on_failure)
        self.pair = pair
        self.blocks: set[tuple[str, str]] = set()
        """(what, side): ("direct", "a") drops what host a sends to anyone but the server."""
        self.server_ip = pair.server[0]
        pair.on_datagram = self._datagram
        ticker = _Ticker(TICK, self.tick, pair.net.now)
        pair.net.add_endpoint(ticker, ("0.0.0.0", 0))  # reached by no packet: it only runs the timer
        pair.net.drop_if = self._drops

    def _sim(self) -> SimPair:
        return self.pair

    def _datagram(self, side: str, data: bytes) -> None:
        if not is_bulk(data):  # a straggler of the bulk phase is not the stream's
            self.on_data(side)

    def _drops(self, src: Address, dst: Address, data: bytes) -> bool:
        fabric = self._sim().net.fabric
        assert fabric is not None
        owner = fabric.owner(src[0])
        if ("turn", "both") in self.blocks and self.server_ip in (src[0], dst[0]):
            return True
        if self._sim().drops_udp(src, dst, data):
            return True
        return owner in ("a", "b") and ("direct", owner) in self.blocks and dst[0] != self.server_ip

    def now(self) -> float:
        return self._sim().net.now

    async def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        net = self._sim().net
        net.run(net.now + seconds, stop=stop or (lambda: False))

    def block(self, what: str, direction: str, on: bool) -> None:
        keys = {("turn", "both")} if what == "turn" else {("direct", s) for s in "ab"} if direction == "both" else \
            {("direct", direction[0])}
        if on:
            self.blocks |= keys
        else:
            self.blocks -= keys

    def nat_reboot(self, node: str) -> None:
        net = self._sim().net
        net.set_nat(node, net.nats[node].behaviour)

    def link_loss(self, loss: float) -> None:
        net = self._sim().net
        assert net.spec is not None
        for i, _ in net.spec.ends("a"):
            if loss:
                net.extra_loss[i] = loss
            else:
                net.extra_loss.pop(i, None)

    def set_link(self, changes: Mapping[str, float]) -> None:
        """Host a's access link(s) get these conditions in the model (the others keep theirs)."""
        net = self._sim().net
        assert net.spec is not None
        for i, _ in net.spec.ends("a"):
            current = net.link_conditions(i) or LinkConditions()
            net.link_overrides[i] = current.changed(changes)

    async def turn_restart(self) -> None:
        self._sim().net.restart_turn_server(self._sim().server)

    def restart_agents(self) -> None:
        self._sim().restart()

    def renumber(self, side: str) -> str:
        old, new = self._sim().renumber(side)
        return f"{old} -> {new}"

    def ufrags(self) -> tuple[str, str]:
        return self._sim().a.ufrag, self._sim().b.ufrag

    def network_restarts(self) -> int:
        return sum(agent.stats["network-changes"] for agent in (self._sim().a, self._sim().b))

    def _agent(self, side: str) -> IceAgent:
        return self._sim().a if side == "a" else self._sim().b

    def send(self, side: str, data: bytes) -> bool:
        return self._agent(side).send(data)

    def relayed(self, side: str) -> bool:
        sel = self._agent(side).selected
        return sel is not None and CandidateType.RELAYED in (sel.local.type, sel.remote.type)

    def agent(self, side: str) -> IceAgent:
        return self._agent(side)
