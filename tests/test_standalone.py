"""The repository stands alone: nothing in it cites notes kept outside it, or this project's issue tracker.

What a reader needs from outside material is restated in the repository (docs/lab.md, "How the NATs are built"),
or cited from a public source (an RFC section, a public project). Other projects' issues (``ex_ice#110``) are fine.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT

_SCANNED = ["ice", "docs", "topologies", "scenarios", "bench", "tests", "scripts", ".ci", "README.md", "icelab",
            "Vagrantfile", "pyproject.toml"]
_SKIPPED_DIRS = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}

_OUTSIDE = re.compile(
    r"\.\./shared"  # the sibling directory of notes
    r"|\bshared/(?:reference|interop)\b"
    r"|\breference/[\w-]+\.md\b"
    r"|\b(?:nat-lab-recipes|interop-peers|ice-peers|harness-anchors|connect-and-server-anchors)\.md\b"
    r"|\brecipes'? [A-C]\.\d"  # "recipes B.5": a section of those notes
)
_TRACKER = re.compile(r"\b(?:issues?|tickets?|bugs?|PR)\s*#?\s*\d+\b|\((?:#|GH-)\d+\)", re.IGNORECASE)


def _files(*tops: str) -> list[Path]:
    out: list[Path] = []
    for top in tops:
        path = ROOT / top
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        out += [p for p in candidates if not _SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts)]
    return out


def _hits(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    hits = []
    for path in files:
        if path.resolve() == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary files cite nothing
        for n, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    return hits


def test_nothing_cites_material_outside_the_repository() -> None:
    hits = _hits(_OUTSIDE, _files(*_SCANNED))
    assert hits == [], "restate the fact (docs/lab.md) or cite a public source instead:\n" + "\n".join(hits)


def test_code_and_docs_name_no_issue_numbers() -> None:
    hits = _hits(_TRACKER, _files("ice", "docs", "bench", "topologies", "scenarios", "README.md"))
    assert hits == [], "say what the code does, not which issue asked for it:\n" + "\n".join(hits)


def test_the_patterns_catch_what_they_are_for() -> None:
    for cited in ["see ../shared/reference/nat-lab-recipes.md", "(recipes B.5)", "the recipes' B.5 grid",
                  "copied from shared/interop/line_peer.py", "(reference/interop-peers.md)"]:
        assert _OUTSIDE.search(cited), cited
    for fine in ["docs/lab.md, 'How the NATs are built'", "RFC 4787 section 4.3", "the shared line protocol"]:
        assert not _OUTSIDE.search(fine), fine
    for tracker in ["(issue 7)", "Issue #12", "see issues 3", "(#42)", "PR 17"]:
        assert _TRACKER.search(tracker), tracker
    for fine in ["elixir-webrtc/ex_ice#110", "iroh#917", "issue time and an HMAC", f"{0x1234:#06x}", "#2e7d32"]:
        assert not _TRACKER.search(fine), fine
