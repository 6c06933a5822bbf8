"""``icelab run --shard I/N``: a deterministic split of a suite's cells into N parts of about equal cost.

Each cell's cost is the seconds it takes in the lab: the ``cost`` kept in its pin entry (measured by a run,
written by ``icelab report costs``), or a default for its expected path when it has none. The split is greedy,
longest first (ties by name), each cell to the part with the least cost so far (ties to the lower part): every
shard of a CI job computes the same split on its own, from the same suite and pins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ice.errors import UserError
from ice.scenario.cell import Cell, PathKind
from ice.scenario.timers import TIMERS

CELL_OVERHEAD = 0.5
"""Seconds a lab cell costs besides connecting: resetting the lab, starting the agents, the data check."""

CONNECT_COST = {PathKind.DIRECT: 0.3, PathKind.RELAY: 1.2}
"""Seconds to connect before a run measured a cell, by the path it is expected to take (no path: it waits the
connect timeout)."""


def default_cost(cell: Cell, path: PathKind) -> float:
    """A cell's cost before a run measured it."""
    return round(CONNECT_COST.get(path, TIMERS.connect_for(cell.lossy)) + CELL_OVERHEAD, 2)

_SHARD = re.compile(r"(\d+)/(\d+)")


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as (I, N), 1 <= I <= N; anything else is a UserError in one sentence."""
    m = _SHARD.fullmatch(text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"--shard takes I/N with 1 <= I <= N (e.g. --shard 2/3 runs the second of three parts), "
                        f"not {text!r}")
    return int(m.group(1)), int(m.group(2))


def split(cells: Sequence[Cell], cost: Callable[[Cell], float], parts: int) -> list[list[Cell]]:
    """``cells`` in ``parts`` lists of about equal total cost (longest processing time first), each list in the
    order of ``cells``."""
    load = [0.0] * parts
    chosen: list[set[str]] = [set() for _ in range(parts)]
    for c in sorted(cells, key=lambda c: (-round(cost(c), 3), c.name)):
        i = min(range(parts), key=lambda k: (round(load[k], 6), k))
        load[i] += round(cost(c), 3)
        chosen[i].add(c.name)
    return [[c for c in cells if c.name in names] for names in chosen]


def measured(cell: Mapping[str, Any]) -> float | None:
    """A cell's cost from its entry in a results.json: its time to connect (the connect timeout when it did not
    connect) plus :data:`CELL_OVERHEAD`; None for a skipped cell (it measured nothing)."""
    if cell.get("status") == "skipped":
        return None
    seconds = cell.get("seconds_to_connect")
    config = cell.get("config")
    lossy = isinstance(config, Mapping) and bool(config.get("loss"))
    took = float(seconds) if isinstance(seconds, (int, float)) else TIMERS.connect_for(lossy)
    return round(took + CELL_OVERHEAD, 2)


def costs_from(docs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Cell name -> measured cost, over one or more results.json documents (a later one wins)."""
    out: dict[str, float] = {}
    for doc in docs:
        for cell in doc.get("cells", []):
            cost = measured(cell)
            if cost is not None and isinstance(cell.get("scenario"), str):
                out[cell["scenario"]] = cost
    return out
