"""Write every report of a run into its --out directory: results.json, grid.txt, grid.md, grid.html, junit.xml."""

from __future__ import annotations

import json
from pathlib import Path as FsPath

from ice.report.html import html_grid
from ice.report.junit import junit_xml
from ice.report.markdown import markdown_grid
from ice.report.text import summary, terminal_grid
from ice.scenario.result import CellResult, Status


def write_reports(results: list[CellResult], out: FsPath, backend: str, seconds: float,
                  extra: dict[str, object] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "backend": backend,
        "seconds": round(seconds, 3),
        **(extra or {}),
        "cells": [r.as_json() for r in results],
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "statuses": summary(results),
        "unexpectedly_passing": [r.cell.name for r in results if r.status is Status.UNEXPECTED_PASS],
    }
    (out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "grid.txt").write_text(terminal_grid(results) + "\n")
    (out / "grid.md").write_text(markdown_grid(results) + "\n")
    (out / "grid.html").write_text(html_grid(results, backend, seconds))
    (out / "junit.xml").write_text(junit_xml(results, backend, seconds) + "\n")
