"""Report formats beyond JSON: a self-contained HTML grid (legend + a details panel per cell) and JUnit XML."""

from __future__ import annotations

import html
import json
from xml.etree import ElementTree as ET

from ice.scenario.model import CellResult, Path

_COLOUR = {Path.DIRECT: "#2e7d32", Path.RELAY: "#1565c0", Path.NONE: "#616161"}


def html_grid(results: list[CellResult], backend: str, seconds: float) -> str:
    """One page, no external assets: a NAT A x NAT B table; clicking a cell shows its full record."""
    rows: list[str] = []
    cols: list[str] = []
    by: dict[tuple[str, str], CellResult] = {}
    for r in results:
        a, b = r.scenario.nat_a, r.scenario.nat_b
        rows += [a] if a not in rows else []
        cols += [b] if b not in cols else []
        by[(a, b)] = r
    records = {r.scenario.name: r.as_json() for r in results}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for a in rows:
        tds = []
        for b in cols:
            found = by.get((a, b))
            if found is None:
                tds.append("<td></td>")
                continue
            r = found
            cls = "pass" if r.passed else "fail"
            tds.append(f'<td class="{cls}" data-cell="{html.escape(r.scenario.name)}" '
                       f'style="color:{_COLOUR[r.observed]}" title="{html.escape(r.selected or r.reason)}">'
                       f'{r.observed.value}{"" if r.passed else " ✗"}</td>')
        body.append(f"<tr><th>{html.escape(a)}</th>{''.join(tds)}</tr>")
    passed = sum(r.passed for r in results)
    data = json.dumps(records).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>icelab NAT matrix ({html.escape(backend)})</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:center}} td{{cursor:pointer}}
td.fail{{background:#ffebee;font-weight:bold}} td.pass{{background:#f1f8e9}}
#details{{white-space:pre-wrap;font-family:monospace;background:#fafafa;border:1px solid #ddd;
padding:1em;margin-top:1em}}
</style></head><body>
<h1>icelab NAT &times; NAT matrix</h1>
<p id="summary">{passed}/{len(results)} cells as expected · back-end {html.escape(backend)} · {seconds:.1f} s</p>
<p id="legend">Legend: <span style="color:{_COLOUR[Path.DIRECT]}">direct</span> = the selected pair has no relayed
candidate · <span style="color:{_COLOUR[Path.RELAY]}">relay</span> = through TURN ·
<span style="color:{_COLOUR[Path.NONE]}">none</span> = no connection · ✗ = differs from the pinned expectation.
Rows: NAT of peer A; columns: NAT of peer B. Click a cell for its record.</p>
<table id="grid"><tr><th>A \\ B</th>{head}</tr>
{"".join(body)}
</table>
<div id="details">Click a cell.</div>
<script>
const cells = {data};
for (const td of document.querySelectorAll("td[data-cell]")) {{
  td.addEventListener("click", () => {{
    document.getElementById("details").textContent = JSON.stringify(cells[td.dataset.cell], null, 2);
  }});
}}
</script>
</body></html>
"""


def junit_xml(results: list[CellResult], backend: str, seconds: float) -> str:
    failures = sum(not r.passed for r in results)
    suite = ET.Element("testsuite", name=f"icelab-matrix-{backend}", tests=str(len(results)),
                       failures=str(failures), errors="0", time=f"{seconds:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"matrix.{backend}", name=r.scenario.name,
                             time=f"{r.seconds or 0:.3f}")
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=r.reason or f"observed {r.observed.value}")
            fail.text = json.dumps(r.as_json(), indent=2)
        elif r.reason.startswith("skipped"):
            ET.SubElement(case, "skipped", message=r.reason)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
