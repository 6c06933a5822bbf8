"""The API reference builds offline (pdoc) and documents the public asyncio API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_icelab_docs_builds_the_api_reference(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "ice.cli", "docs", "--out", str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"written to {tmp_path}/index.html" in p.stdout
    page = (tmp_path / "ice" / "aio" / "connection.html").read_text()
    assert "Connection" in page and "gather" in page and "add_remote_candidate" in page
    assert not (tmp_path / "ice" / "cli" / "__main__.html").exists()
