"""The Markdown report (grid.md): the grid, the other cells, and the failed cells with their artifacts; drop it
into a CI step summary."""

from __future__ import annotations

from ice.report.bulk import bulk_markdown
from ice.report.text import place, summary
from ice.scenario.result import CellResult, Status


def _md_mark(r: CellResult) -> str:
    icon = {Status.PASS: "✅", Status.FAIL: "❌", Status.KNOWN_FAILURE: "⚠️", Status.UNEXPECTED_PASS: "❓",
            Status.SKIPPED: "⏭️"}[r.status]
    return f"{icon} {'skipped' if r.skipped else r.observed.value}"


def markdown_grid(results: list[CellResult]) -> str:
    rows, cols, cells, rest = place(results)
    out = []
    if rows:
        out += ["| A \\ B | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for a in rows:
            out.append(f"| {a} | " + " | ".join(_md_mark(cells[(a, b)]) if (a, b) in cells else "" for b in cols)
                       + " |")
    if rest:
        out += ["", "| scenario | group | expected | observed |", "|---|---|---|---|"]
        out += [f"| {r.cell.name} | {r.cell.group} | {r.expected.value} | {_md_mark(r)} |" for r in rest]
    out += bulk_markdown(results)
    counts = summary(results)
    out.append(f"\n{sum(r.passed for r in results)}/{len(results)} cells as expected "
               f"({', '.join(f'{n} {k}' for k, n in counts.items() if n)}).")
    for title, status in (("Failed cells", Status.FAIL), ("Known failures", Status.KNOWN_FAILURE),
                          ("Unexpectedly passing (remove their known_failure pin)", Status.UNEXPECTED_PASS)):
        chosen = [r for r in results if r.status is status]
        if chosen:
            out.append(f"\n{title}:\n")
            out += [f"- `{r.cell.name}`: {r.reason or (r.expectation.known_failure if r.expectation else '')}"
                    + (f" (artifacts: `{r.artifacts}`)" if r.artifacts else "") for r in chosen]
    return "\n".join(out)
