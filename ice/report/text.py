"""The terminal grid: NAT A x NAT B for the grid groups, the other cells listed below, and a legend."""

from __future__ import annotations

from ice.scenario.cell import PathKind
from ice.scenario.result import CellResult, Status

_STATUS_MARK = {Status.PASS: "", Status.FAIL: "!", Status.KNOWN_FAILURE: "k", Status.UNEXPECTED_PASS: "?",
                Status.SKIPPED: ""}


def _mark(r: CellResult) -> str:
    if r.skipped:
        return "s"
    return {PathKind.DIRECT: "D", PathKind.RELAY: "R", PathKind.NONE: "-"}[r.observed] + _STATUS_MARK[r.status]


LEGEND = ("D: direct pair selected, R: relayed pair, -: no connection, s: skipped by this back-end; "
          "!: differs from the expectation, k: a known failure, ?: a known failure that passed")


def place(results: list[CellResult]) -> tuple[list[str], list[str], dict[tuple[str, str], CellResult],
                                              list[CellResult]]:
    """Rows (NAT A), columns (NAT B) and cells of the two-NAT grid (the GRID_GROUPS), and the other cells: those
    outside the grid groups, and any whose grid position an earlier cell already holds (never overwritten)."""
    rows: list[str] = []
    cols: list[str] = []
    cells: dict[tuple[str, str], CellResult] = {}
    rest: list[CellResult] = []
    for r in results:
        pos = r.cell.grid_position
        if pos is None or pos in cells:
            rest.append(r)
            continue
        a, b = pos
        if a not in rows:
            rows.append(a)
        if b not in cols:
            cols.append(b)
        cells[pos] = r
    return rows, cols, cells, rest


def grid(results: list[CellResult]) -> tuple[list[str], list[str], dict[tuple[str, str], CellResult]]:
    """Rows (NAT A), columns (NAT B) and cells of the two-NAT grid (the GRID_GROUPS)."""
    rows, cols, cells, _ = place(results)
    return rows, cols, cells


def others(results: list[CellResult]) -> list[CellResult]:
    """Cells outside the grid (same NAT, double NAT, impaired links, agent options, a second cell at a grid
    position already taken)."""
    return place(results)[3]


def terminal_grid(results: list[CellResult]) -> str:
    rows, cols, cells, rest = place(results)
    lines = []
    if rows:
        corner = "A \\ B"
        w = max(len(x) for x in [*rows, corner])
        lines.append(corner.ljust(w) + "  " + " ".join(f"{c[:9]:>9}" for c in cols))
        for a in rows:
            lines.append(a.ljust(w) + "  " + " ".join(f"{_mark(cells[(a, b)]) if (a, b) in cells else '':>9}"
                                                      for b in cols))
    if rest:
        w = max(len(r.cell.name) for r in rest)
        lines.append("")
        lines += [f"{r.cell.name.ljust(w)}  {_mark(r)}" for r in rest]
    from ice.report.bulk import bulk_text

    lines += bulk_text(results)
    lines.append(LEGEND)
    return "\n".join(lines)


def summary(results: list[CellResult]) -> dict[str, int]:
    return {s.value: sum(r.status is s for r in results) for s in Status}
