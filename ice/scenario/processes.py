"""The kernel lab's cells whose agents run as processes on the agent protocol (docs/agent-protocol.md): a foreign
agent on either side, or a step only that path has (a lite side, a side killed to test consent, an ICE restart).

Each agent starts in its host's network namespace (``nsenter``), gets the cell's settings (role, the host's
addresses, the lab's STUN/TURN server, nomination, lite, relay-only, trickle, ICE-TCP transports and tcptypes), and
the harness is the signalling channel between the two. The path is read from the agents' own ``selected`` reports
and judged by the same reasoning as every cell; the agents' valid pairs are not part of the protocol, so only the
path and the selected pair's types (and for ICE-TCP cells its transport) are judged.
"""

from __future__ import annotations

import asyncio
import contextlib

from ice.agents.line import AgentError, AgentProcess
from ice.agents.pair import PairRun, SideSetup, TurnSetting, connect, exchange, prepare
from ice.agents.registry import AgentSpec, resolve
from ice.lab.mn import Lab
from ice.lab.netns import nsenter
from ice.scenario.cell import TCP_TYPES, Cell, PathKind
from ice.scenario.lab import LabServer, _Outcome, block_peer_udp, start_server
from ice.scenario.timers import TIMERS, MatrixTimers
from ice.topology.fabric import Fabric
from ice.topology.spec import TopologySpec

CONSENT_SLACK = 5.0
"""How long after the consent timeout the survivor may take to say ``state failed`` (the last consent check's
retransmissions and the agent's timer granularity)."""


def agent_specs(cell: Cell) -> dict[str, AgentSpec]:
    return {side: resolve(agent.as_json()) for side, agent in cell.agents.items()}


def not_installed(cell: Cell) -> str:
    """Why the cell cannot run here ("" when every agent it names is installed)."""
    return "; ".join(f"agent_{side} {spec.label}: {spec.missing}" for side, spec in agent_specs(cell).items()
                     if spec.missing)


def _setup(cell: Cell, side: str, fabric: Fabric, server: LabServer) -> SideSetup:
    blocked = server.udp_blocked[side]
    tcp = blocked or cell.transports == "tcp"  # as in-process: a TCP-only peer reaches its TURN server over TCP too
    turn = TurnSetting(server.address[0], server.address[1], "alice", "secret", "tcp" if tcp else "udp") \
        if cell.turn else None
    survivor = cell.kill and side != cell.kill
    role = "controlling" if cell.controlling in (side, "both") else "controlled"
    types = cell.tcp_types_a if side == "a" else cell.tcp_types_b
    return SideSetup(
        role=role,
        bind=tuple(fabric.addresses(side)),
        stun=None if blocked else server.address,
        turn=turn,
        nomination=(cell.nomination or None) if role == "controlling" else None,
        lite=cell.lite == side,
        relay_only=cell.relay_only,
        trickle=cell.trickle,
        consent_timeout=cell.consent_timeout if survivor and cell.consent_timeout else None,
        transports=cell.transports if cell.transports != "udp" else None,
        tcp_types=types if cell.transports != "udp" and set(types) != set(TCP_TYPES) else (),
    )


async def connect_processes(lab: Lab, spec: TopologySpec, cell: Cell, timers: MatrixTimers = TIMERS) -> _Outcome:
    """Run the cell with both agents as processes in the lab's hosts ``a`` and ``b``."""
    fabric = Fabric(spec)
    out = _Outcome(PathKind.NONE, pairs_known=False)
    specs = agent_specs(cell)
    server = await start_server(lab, spec, cell)
    unblock = block_peer_udp(lab, spec) if cell.udp_blocked else None
    agents: list[AgentProcess] = []
    run: PairRun | None = None
    try:
        for side in "ab":
            agents.append(await AgentProcess.spawn(specs[side].argv, side, prefix=nsenter(lab.pid(side))))
        out.extra["agents"] = {side: f"{a.hello.stack} {a.hello.version}" for side, a in zip("ab", agents,
                                                                                              strict=True)}
        run = await prepare(agents[0], agents[1], _setup(cell, "a", fabric, server),
                            _setup(cell, "b", fabric, server))
        if run.unsupported:
            out.unsupported = run.unsupported
            out.reason = run.unsupported
            return out
        timeout = timers.connect_for(cell.lossy)
        await connect(run, timeout)
        _record_selected(out, run)
        if run.reason:
            out.reason = f"ICE failed: {run.reason}" if "failed" in run.reason or "exited" in run.reason \
                else run.reason
            return out
        out.seconds = run.seconds
        missing = await exchange(run, timers.data_for(cell.lossy), timers.data_resend)
        _record_selected(out, run)  # a selected pair may be reported again, e.g. with its signalled type
        if missing:
            out.reason = missing
            return out
        out.observed = PathKind.RELAY if run.relayed else PathKind.DIRECT
        if cell.restart:
            out.reason = await _restart(run, timeout, timers)
            _record_selected(out, run)
        if cell.kill and not out.reason:
            out.reason = await _consent(run, cell, out)
        return out
    except AgentError as exc:
        out.reason = str(exc)
        return out
    finally:
        if run is not None:
            out.extra["agent_states"] = {"a": [s for _, s in run.a.states], "b": [s for _, s in run.b.states]}
            if run.a.errors or run.b.errors:
                out.extra["agent_errors"] = {"a": run.a.errors[:5], "b": run.b.errors[:5]}
        for agent in agents:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(agent.quit(2.0), 5.0)
        for side, agent in zip("ab", agents, strict=True):
            out.files[f"agent-{side}.transcript"] = "\n".join(agent.transcript) + "\n"
            out.files[f"agent-{side}.stderr"] = agent.stderr
        out.stats["server"] = server.stats()
        server.close()
        if unblock is not None:
            unblock()
        await asyncio.sleep(0)


def _record_selected(out: _Outcome, run: PairRun) -> None:
    """Both agents' reports as they stand, and the selected pair's types to judge (A's view). The types are judged
    from icelab's side, which builds valid pairs exactly as RFC 8445 §7.2.5.3.2 says (its local candidate is the
    one whose address the peer saw): aioice 0.13 and pion 2.3.1 report the pair they checked instead (their host
    candidate behind a NAT), which says where their checks went, not what the path is. With icelab on neither side
    (a control), only the path is judged. Each side's own types are kept in ``reported_types``."""
    sa, sb = run.a.selected, run.b.selected
    out.selected = sa.text if sa is not None else None
    out.selected_b = sb.text if sb is not None else None
    out.extra["reported_types"] = {"a": sa.types if sa else None, "b": sb.types if sb else None}
    stacks = {"a": run.a.agent.hello.stack, "b": run.b.agent.hello.stack}
    if stacks["a"] == "icelab" and sa is not None:
        out.selected_types, out.extra["types_from"] = sa.types, "a"
    elif stacks["b"] == "icelab" and sb is not None:
        out.selected_types, out.extra["types_from"] = f"{sb.remote.type.value}-{sb.local.type.value}", "b"
    else:
        out.selected_types, out.extra["types_from"] = None, None


async def _restart(run: PairRun, timeout: float, timers: MatrixTimers) -> str:
    """Both sides restart ICE (RFC 8445 §9); "" when both select a pair again and data flows on it."""
    old = (run.a.credentials, run.b.credentials)
    for side in (run.a, run.b):
        side.selected = None
        side.agent.write("restart")
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end and (run.a.selected is None or run.b.selected is None):
        if any(s.agent.proc.returncode is not None for s in (run.a, run.b)):
            break
        await asyncio.sleep(0.05)
    if (run.a.credentials, run.b.credentials) == old or None in old:
        return "after restart no side printed new local-credentials"
    if run.a.selected is None or run.b.selected is None:
        return f"after restart no pair was selected again within {timeout:g} s"
    run.a.received.clear()
    run.b.received.clear()
    missing = await exchange(run, timers.data_resend * 20)
    return f"after restart: {missing}" if missing else ""


async def _consent(run: PairRun, cell: Cell, out: _Outcome) -> str:
    """Kill the cell's ``kill`` side; the survivor must report ``state failed`` within the consent bound
    (RFC 7675 §5.1: 30 s, or the cell's ``consent_timeout``)."""
    killed, survivor = (run.a, run.b) if cell.kill == "a" else (run.b, run.a)
    bound = (cell.consent_timeout or 30.0) + CONSENT_SLACK
    loop = asyncio.get_running_loop()
    seen = len(survivor.states)
    t0 = loop.time()
    killed.agent.kill()
    while loop.time() - t0 < bound:
        new = survivor.states[seen:]
        failed = next((at for at, state in new if state == "failed"), None)
        if failed is not None:
            out.extra["consent_lost_after_s"] = round(failed - t0, 3)
            return ""
        await asyncio.sleep(0.1)
    states = [s for _, s in survivor.states[seen:]] or ["no state change"]
    return (f"after {killed.agent.name} was killed, {survivor.agent.name} ({survivor.agent.hello.stack}) did not "
            f"report consent lost within {bound:g} s (RFC 7675 §5.1); it reported: {', '.join(states)}")


__all__ = ["agent_specs", "connect_processes", "not_installed"]
