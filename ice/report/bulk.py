"""The bulk phases of a run in the reports: a line per cell in grid.txt and on the terminal, a table in grid.md, and
a table with a small inline SVG chart per cell in grid.html (the receiver's Mbit/s over the transfer, the sim's
model beside it on the lab back-end, the cell's band shaded)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ice.scenario.result import CellResult


@dataclass(frozen=True)
class BulkRow:
    """One cell's bulk phase as the reports show it."""

    cell: str
    backend: str
    figures: Mapping[str, Any]
    """The back-end's figures (results.json ``bulk``)."""
    sim: Mapping[str, Any] | None
    """On the lab back-end, the sim's model figures (results.json ``sim_bulk``)."""
    band: tuple[float, float] | None
    error: str


def bulk_rows(results: list[CellResult]) -> list[BulkRow]:
    """The cells that ran a bulk phase, in run order."""
    rows = []
    for r in results:
        figures = r.extra.get("bulk")
        if not isinstance(figures, Mapping):
            continue
        sim = r.extra.get("sim_bulk")
        band = r.cell.bulk.mbit if r.cell.bulk is not None else None
        rows.append(BulkRow(r.cell.name, r.backend, figures, sim if isinstance(sim, Mapping) else None, band,
                            str(r.extra.get("bulk_error") or "")))
    return rows


def _num(x: object, unit: str) -> str:
    return (f"{x:g} {unit}" if unit else f"{x:g}") if isinstance(x, (int, float)) else "-"


def summary_text(f: Mapping[str, Any]) -> str:
    """``9.74 Mbit/s, loss 0 %, RTT 30.8 ms (1667/1667 datagrams, direct)``."""
    return (f"{_num(f.get('mbit_per_s'), 'Mbit/s')}, loss {_num(f.get('loss_pct'), '%')}, RTT "
            f"{_num(f.get('rtt_ms_median'), 'ms')} ({f.get('received')}/{f.get('sent')} datagrams, {f.get('path')}"
            + ("" if f.get("complete", True) else ", stopped at the deadline") + ")")


def bulk_text(results: list[CellResult]) -> list[str]:
    """A line per bulk phase (grid.txt, the terminal)."""
    rows = bulk_rows(results)
    if not rows:
        return []
    w = max(len(r.cell) for r in rows)
    lines = ["", "bulk (A to B over the selected pair; Mbit/s of payload at B, median RTT):"]
    for r in rows:
        line = f"  {r.cell.ljust(w)}  {r.backend} {summary_text(r.figures)}"
        if r.sim is not None:
            line += f"; sim model {_num(r.sim.get('mbit_per_s'), 'Mbit/s')}"
        if r.band is not None:
            line += f"; expected {r.band[0]:g} to {r.band[1]:g} Mbit/s"
        lines.append(line + (f"  !  {r.error}" if r.error else ""))
    return lines


def bulk_markdown(results: list[CellResult]) -> list[str]:
    """A table of the bulk phases (grid.md)."""
    rows = bulk_rows(results)
    if not rows:
        return []
    out = ["", "Bulk phases (A to B over the selected pair):", "",
           "| scenario | path | Mbit/s | expected | loss | RTT (median) | sim model | |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.figures
        out.append(f"| {r.cell} | {f.get('path')} | {_num(f.get('mbit_per_s'), '')} | "
                   + (f"{r.band[0]:g} to {r.band[1]:g}" if r.band else "") + f" | {_num(f.get('loss_pct'), '%')} | "
                   f"{_num(f.get('rtt_ms_median'), 'ms')} | "
                   + (_num(r.sim.get("mbit_per_s"), "Mbit/s") if r.sim is not None else "")
                   + f" | {'❌ ' + r.error if r.error else '✅'} |")
    return out


CHART_W, CHART_H = 220, 56
"""The chart's size in CSS pixels."""


def _series(f: Mapping[str, Any] | None) -> list[float]:
    series = f.get("series") if f is not None else None
    values = series.get("mbit_per_s") if isinstance(series, Mapping) else None
    return [float(v) for v in values if isinstance(v, (int, float))] if isinstance(values, list) else []


def _points(values: list[float], top: float) -> str:
    if not values:
        return ""
    step = CHART_W / max(1, len(values) - 1)
    return " ".join(f"{i * step:.1f},{CHART_H - v / top * (CHART_H - 4):.1f}" for i, v in enumerate(values))


def bulk_svg(row: BulkRow) -> str:
    """An inline SVG: the receiver's Mbit/s in each interval of the transfer (solid), the sim's model (dashed, on
    the lab back-end) and the cell's band (shaded); no script, no external asset."""
    mine, sim = _series(row.figures), _series(row.sim)
    top = max([*mine, *sim, *(row.band or ()), 1.0]) * 1.1
    parts = [f'<svg class="bulk-chart" width="{CHART_W}" height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" data-cell="{html.escape(row.cell)}">',
             f"<title>{html.escape(row.cell)}: {html.escape(summary_text(row.figures))}</title>",
             f'<rect width="{CHART_W}" height="{CHART_H}" fill="#fafafa" stroke="#ddd"/>']
    if row.band is not None:
        y_hi = CHART_H - row.band[1] / top * (CHART_H - 4)
        y_lo = CHART_H - row.band[0] / top * (CHART_H - 4)
        parts.append(f'<rect class="band" x="0" y="{y_hi:.1f}" width="{CHART_W}" height="{y_lo - y_hi:.1f}" '
                     'fill="#c8e6c9" opacity="0.6"/>')
    if sim:
        parts.append(f'<polyline class="sim" points="{_points(sim, top)}" fill="none" stroke="#9e9e9e" '
                     'stroke-width="1.5" stroke-dasharray="4 3"/>')
    if mine:
        parts.append(f'<polyline class="measured" points="{_points(mine, top)}" fill="none" stroke="#1565c0" '
                     'stroke-width="2"/>')
    parts.append(f'<text x="3" y="11" font-size="10" fill="#555">{top / 1.1:.3g} Mbit/s</text></svg>')
    return "".join(parts)


def bulk_html(results: list[CellResult]) -> str:
    """The section of grid.html: a row per bulk phase with its figures and chart ("" without bulk phases)."""
    rows = bulk_rows(results)
    if not rows:
        return ""
    body = []
    for r in rows:
        f = r.figures
        body.append(
            f'<tr><th><a href="#cell={html.escape(r.cell)}">{html.escape(r.cell)}</a></th>'
            f"<td>{html.escape(str(f.get('path')))}</td><td>{html.escape(_num(f.get('mbit_per_s'), 'Mbit/s'))}</td>"
            f"<td>{html.escape(f'{r.band[0]:g} to {r.band[1]:g}' if r.band else '')}</td>"
            f"<td>{html.escape(_num(f.get('loss_pct'), '%'))}</td>"
            f"<td>{html.escape(_num(f.get('rtt_ms_median'), 'ms'))}</td>"
            f"<td>{html.escape(_num(r.sim.get('mbit_per_s'), 'Mbit/s') if r.sim is not None else '')}</td>"
            f'<td class="{"fail" if r.error else "pass"}">{bulk_svg(r)}'
            + (f"<small>{html.escape(r.error)}</small>" if r.error else "") + "</td></tr>")
    return ('<h2>Bulk phases</h2><p>A to B over the selected pair: Mbit/s of payload at B, loss, median round-trip '
            "time; the chart is B's Mbit/s over the transfer (solid), the sim's model (dashed, lab runs) and the "
            'expected band (shaded). The sim\'s figures are its link model\'s, not a measurement.</p>'
            '<table id="bulk"><tr><th>scenario</th><th>path</th><th>Mbit/s</th><th>expected</th><th>loss</th>'
            f"<th>RTT</th><th>sim model</th><th>over the transfer</th></tr>{''.join(body)}</table>")


__all__ = ["BulkRow", "bulk_html", "bulk_markdown", "bulk_rows", "bulk_svg", "bulk_text", "summary_text"]
