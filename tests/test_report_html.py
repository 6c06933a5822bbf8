"""grid.html rendered by a real browser (Debian's chromium, headless): the page builds its grid, lists the failed
cells and opens a cell's record from a ``#cell=NAME`` link, with no script errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ice.cli.run import run_suite


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, list[str]] = {}
        self.ids: dict[str, str] = {}
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-cell"):
            self.cells[str(a["data-cell"])] = (a.get("class") or "").split()
        if a.get("id"):
            self._in = str(a["id"])
            self.ids.setdefault(self._in, "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("div", "p", "ul"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self.ids[self._in] += data


def render(url: str, tmp: Path) -> tuple[_Page, str]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run ./icelab once (scripts/provision.sh installs it)")
    p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                        "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-1000:]
    page = _Page()
    page.feed(p.stdout)
    return page, p.stderr


def test_grid_html_in_headless_chromium(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = "apdm-apdfxeim-apdf"
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({broken: {"path": "direct", "reason": "deliberately wrong"}}))
    monkeypatch.setenv("ICELAB_EXPECTATIONS", str(pins))
    assert run_suite("sim", tmp_path / "out", quiet=True) == 1
    page, log = render(f"file://{tmp_path / 'out' / 'grid.html'}#cell={broken}", tmp_path)
    assert "Uncaught" not in log, log[-1000:]
    total = len(json.loads((tmp_path / "out" / "results.json").read_text())["cells"])
    assert len(page.cells) == total  # the grid and the list of other scenarios: every cell clickable
    assert page.cells[broken] == ["fail", "selected"]  # the #cell= link selected it
    others = {name: cls for name, cls in page.cells.items() if name != broken}
    assert all(c == ["pass"] for c in others.values())  # the UDP-blocked cell too: TURN over TCP in the sim
    details = json.loads(page.ids["details"])
    assert details["scenario"] == broken and details["pass"] is False and details["expected"] == "direct"
    assert details["observed"] == "relay" and details["config"]["nats"]["nat_a"] == "apdm-apdf"
    assert f"{total - 1}/{total} cells as expected" in page.ids["summary"]
    assert "Legend" in page.ids["legend"] and broken in page.ids["failed"]


class _Charts(HTMLParser):
    """The bulk table's rows and the shapes of each inline chart."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, list[str]] = {}
        self.links: list[str] = []
        self._chart: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and "bulk-chart" in (a.get("class") or ""):
            self._chart = str(a.get("data-cell"))
            self.charts[self._chart] = []
        elif self._chart is not None and tag in ("polyline", "rect"):
            self.charts[self._chart].append(f"{tag}.{a.get('class') or ''}")
        elif tag == "a" and (a.get("href") or "").startswith("#cell="):
            self.links.append(str(a["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None


def test_bulk_charts_in_headless_chromium(tmp_path: Path) -> None:
    """A bulk phase per cell of scenarios/throughput.toml: a row with an inline SVG chart (the band shaded, the
    measured series drawn), a link that opens the cell's record, and no script errors."""
    root = Path(__file__).resolve().parents[1]
    assert run_suite("sim", tmp_path / "out", files=[root / "scenarios" / "throughput.toml"], quiet=True) == 0
    url = f"file://{tmp_path / 'out' / 'grid.html'}#cell=bulk-10mbit-lossy"
    page, log = render(url, tmp_path)
    assert "Uncaught" not in log, log[-1000:]
    details = json.loads(page.ids["details"])
    assert details["scenario"] == "bulk-10mbit-lossy" and details["bulk"]["loss_pct"] > 0
    chromium = shutil.which("chromium")
    assert chromium is not None
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90).stdout
    charts = _Charts()
    charts.feed(dom)
    assert set(charts.charts) == {"bulk-10mbit-direct", "bulk-10mbit-relayed", "bulk-10mbit-lossy", "bulk-10mbit-40ms"}
    assert all(shapes == ["rect.", "rect.band", "polyline.measured"] for shapes in charts.charts.values())
    assert "#cell=bulk-10mbit-40ms" in charts.links
