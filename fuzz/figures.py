"""``python -m fuzz.figures [FILE]``: the figures table of docs/robustness.md, in Markdown, from fuzz/figures.json
(which ``icelab fuzz ... --figures fuzz/figures.json`` writes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures.json"


def table(figures: dict[str, dict[str, object]]) -> str:
    rows = ["| target | inputs | seconds | inputs/s | exceptions | hangs | out of memory | RSS after warm-up -> end "
            "(peak), KiB | date | commit |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for name, f in figures.items():
        peak = f" ({f['rss_peak_kb']:,})" if f.get("rss_peak_kb") else ""
        rows.append(f"| `{name}` | {f['inputs']:,} | {f['seconds']:,} | {f['execs_per_s']:,} | {f['exceptions']} | "
                    f"{f['hangs']} | {f.get('out_of_memory', 0)} | {f['rss_start_kb']:,} -> {f['rss_end_kb']:,}{peak} "
                    f"| {f['date']} | {f['commit']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else FIGURES).read_text())))
