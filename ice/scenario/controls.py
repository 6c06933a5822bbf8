"""Control cells: a foreign stack against itself. When a cell pairing icelab with a foreign stack fails, the
control of the same kind (same topology, NATs and options, the foreign stack on both sides) says whose fault it is:
if the stack fails against itself too, the failure is the stack's."""

from __future__ import annotations

import dataclasses

from ice.scenario.cell import Cell
from ice.scenario.result import CellResult, Status

_FAILED = (Status.FAIL, Status.KNOWN_FAILURE)


def _kind(cell: Cell) -> Cell:
    """The cell without its name and agents (what a control must share)."""
    return dataclasses.replace(cell, name="x", group="", agent_a=cell.agent_b, agent_b=cell.agent_b)


def control_of(cell: Cell, results: list[CellResult]) -> CellResult | None:
    """The control of a cell pairing icelab with one foreign stack, if the suite has one."""
    foreign = {s for s in (cell.agent_a, cell.agent_b) if s.foreign}
    if len(foreign) != 1 or not any(not s.foreign for s in (cell.agent_a, cell.agent_b)):
        return None
    stack = foreign.pop()
    want = dataclasses.replace(cell, name="x", group="", agent_a=stack, agent_b=stack)
    return next((r for r in results if r.cell.agent_a == r.cell.agent_b == stack and _kind(r.cell) == want), None)


def note_controls(results: list[CellResult]) -> None:
    """Say in each failed icelab-versus-foreign cell what its control did (``control`` in results.json)."""
    for r in results:
        if r.status not in _FAILED:
            continue
        control = control_of(r.cell, results)
        if control is None:
            continue
        r.extra["control"] = {"cell": control.cell.name, "status": control.status.value}
        stack = control.cell.agent_a.label
        if control.status in _FAILED:
            r.reason += f" (the control {control.cell.name}, {stack} against itself, fails too: {stack}'s fault)"
        elif control.status is Status.PASS:
            r.reason += f" (the control {control.cell.name}, {stack} against itself, passes)"
