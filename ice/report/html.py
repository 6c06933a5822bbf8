"""grid.html: one self-contained page (no external assets) with a legend, the grid, the other cells and a
details panel per cell, deep-linkable as ``grid.html#cell=NAME``."""

from __future__ import annotations

import html
import json

from ice.report.bulk import bulk_html
from ice.report.text import place
from ice.scenario.cell import PathKind
from ice.scenario.result import CellResult, Status

_COLOUR = {PathKind.DIRECT: "#2e7d32", PathKind.RELAY: "#1565c0", PathKind.NONE: "#616161"}


_CLASS = {Status.PASS: "pass", Status.FAIL: "fail", Status.KNOWN_FAILURE: "known", Status.UNEXPECTED_PASS: "xpass",
          Status.SKIPPED: "skipped"}
_SUFFIX = {Status.PASS: "", Status.FAIL: " ✗", Status.KNOWN_FAILURE: " (known)", Status.UNEXPECTED_PASS: " ?",
           Status.SKIPPED: ""}


def _td(r: CellResult) -> str:
    types = f" {r.selected_types}" if r.selected_types else ""
    text = "skipped" if r.skipped else r.observed.value
    return (f'<td class="{_CLASS[r.status]}" data-cell="{html.escape(r.cell.name)}" '
            f'style="color:{_COLOUR[r.observed]}" title="{html.escape(r.selected or r.reason)}">{text}'
            f'<small>{html.escape(types)}</small>{_SUFFIX[r.status]}</td>')


def html_grid(results: list[CellResult], backend: str, seconds: float) -> str:
    """One page, no external assets: a NAT A x NAT B table, the other cells in a list; clicking a cell (or opening
    the page at ``#cell=NAME``, a link CI logs can print) shows its full record, artifacts and repro command."""
    rows, cols, by, rest = place(results)  # a second cell at a taken grid position is listed, not overwritten
    records = {r.cell.name: r.as_json() for r in results}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for a in rows:
        tds = [_td(by[(a, b)]) if (a, b) in by else "<td></td>" for b in cols]
        body.append(f"<tr><th>{html.escape(a)}</th>{''.join(tds)}</tr>")
    other_rows = "".join(
        f"<tr><th>{html.escape(r.cell.name)}</th><td>{html.escape(r.cell.group)}</td>"
        f"<td>{html.escape(r.expected.value)}</td>{_td(r)}</tr>" for r in rest)
    failed = [r for r in results if r.status is Status.FAIL]
    fail_list = "".join(f'<li><a href="#cell={html.escape(r.cell.name)}">{html.escape(r.cell.name)}</a>: '
                        f"{html.escape(r.reason)}</li>" for r in failed)
    passed = len(results) - len(failed)
    others = ('<h2>Other scenarios</h2><table id="others"><tr><th>scenario</th><th>group</th><th>expected</th>'
              f"<th>observed</th></tr>{other_rows}</table>") if rest else ""
    data = json.dumps(records).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>icelab NAT matrix ({html.escape(backend)})</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:center}} td[data-cell]{{cursor:pointer}}
td small{{display:block;color:#555;font-size:.75em}}
td.fail{{background:#ffebee;font-weight:bold}} td.pass{{background:#f1f8e9}} td.selected{{outline:3px solid #ff9800}}
td.known{{background:#fff8e1}} td.xpass{{background:#e3f2fd}} td.skipped{{background:#eeeeee}}
svg.bulk-chart{{display:block}} #bulk td small{{color:#b71c1c}}
#details{{white-space:pre-wrap;font-family:monospace;background:#fafafa;border:1px solid #ddd;
padding:1em;margin-top:1em}}
</style></head><body>
<h1>icelab NAT &times; NAT matrix</h1>
<p id="summary">{passed}/{len(results)} cells as expected · back-end {html.escape(backend)} · {seconds:.1f} s</p>
<p id="legend">Legend: <span style="color:{_COLOUR[PathKind.DIRECT]}">direct</span> = the selected pair has no relayed
candidate · <span style="color:{_COLOUR[PathKind.RELAY]}">relay</span> = through TURN ·
<span style="color:{_COLOUR[PathKind.NONE]}">none</span> = no connection · (known) = a pinned known failure ·
? = a known failure that passed · skipped = this back-end cannot run the cell · small print: the selected pair's
candidate types (local-remote, as peer A sees them) · ✗ = differs from the pinned expectation. Rows: NAT of peer A;
columns: NAT of peer B. Click a cell for its record, artifacts and repro command.</p>
{f'<h2>Failed cells</h2><ul id="failed">{fail_list}</ul>' if failed else ''}
<table id="grid"><tr><th>A \\ B</th>{head}</tr>
{"".join(body)}
</table>
{others}
{bulk_html(results)}
<div id="details">Click a cell.</div>
<script>
const cells = {data};
function show(name) {{
  const rec = cells[name];
  if (!rec) return;
  for (const td of document.querySelectorAll("td.selected")) td.classList.remove("selected");
  const td = document.querySelector(`td[data-cell="${{CSS.escape(name)}}"]`);
  if (td) td.classList.add("selected");
  document.getElementById("details").textContent = JSON.stringify(rec, null, 2);
}}
for (const td of document.querySelectorAll("td[data-cell]")) {{
  td.addEventListener("click", () => {{
    history.replaceState(null, "", "#cell=" + td.dataset.cell);
    show(td.dataset.cell);
  }});
}}
function fromHash() {{
  const m = location.hash.match(/^#cell=(.+)$/);
  if (m) show(decodeURIComponent(m[1]));
}}
window.addEventListener("hashchange", fromHash);
fromHash();
</script>
</body></html>
"""
