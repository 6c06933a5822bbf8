"""The in-memory back-end of a cell: the cell's topology spec realised by :mod:`ice.sim` on a virtual clock."""

from __future__ import annotations

from ice.agent import AgentConfig, Nomination
from ice.scenario.cell import Cell, PathKind
from ice.scenario.expect import Expected, PeerPaths
from ice.scenario.result import CellResult
from ice.scenario.timers import TIMERS, MatrixTimers
from ice.sim.scenario import run_pair
from ice.topology.spec import TopologySpec


def run_sim(cell: Cell, spec: TopologySpec, expected: Expected, timers: MatrixTimers = TIMERS) -> CellResult:
    """Run ``cell`` in the simulation of ``spec`` (deterministic, virtual time; the spec's NATs, routes and link
    conditions as the lab has them) and judge it against ``expected``. Cells whose peers need TURN over TCP
    (a UDP-blocking box on the way out) are skipped: the sim has no TCP; so are cells whose agents run as
    processes (a foreign agent, lite, kill, restart: the kernel lab runs them)."""
    if cell.in_processes:
        return CellResult(cell, "sim", expected.path, PathKind.NONE, None, None, skipped=True,
                          reason="skipped: agents that run as processes (" + " and ".join(
                              sorted({s.label for s in cell.agents.values()})) + ")"
                          + (" and coturn" if cell.server == "coturn" else "") + " run in the kernel lab only"
                          ).expecting(expected)
    if PeerPaths.of(spec).blocked:
        return CellResult(cell, "sim", expected.path, PathKind.NONE, None, None, skipped=True,
                          reason="skipped: TURN over TCP is not simulated (the lab runs this cell)"
                          ).expecting(expected)
    config = AgentConfig(nomination=Nomination(cell.nomination_mode))
    r = run_pair(spec, config, latency=timers.sim_latency, timeout=timers.connect_for(cell.lossy), turn=cell.turn,
                 relay_only=cell.relay_only, trickle=cell.trickle, controlling=cell.controlling)
    observed = PathKind.NONE if not r.connected else PathKind.RELAY if r.relayed else PathKind.DIRECT
    res = CellResult(cell, "sim", expected.path, observed, r.selected_pair, r.seconds if r.connected else None,
                     sorted(f"{x}-{y}" for x, y in r.succeeded), selected_types=r.selected_name,
                     selected_b=r.selected_pair_b)
    return res.expecting(expected)
