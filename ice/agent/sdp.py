"""ICE's SDP attributes (RFC 8839 §5): candidates, credentials, options, lite, end-of-candidates.

Only the ICE lines of a media section; the rest of SDP is the application's business. Unknown candidate
extensions are preserved by :class:`~ice.agent.candidate.Candidate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ice.agent.candidate import Candidate

_ICE_CHAR = re.compile(r"^[A-Za-z0-9+/]+$")


@dataclass
class IceDescription:
    """The ICE attributes of one media section (or session-level defaults)."""

    ufrag: str = ""
    pwd: str = ""
    options: tuple[str, ...] = ()
    lite: bool = False
    candidates: list[Candidate] = field(default_factory=list)
    end_of_candidates: bool = False

    def validate(self) -> None:
        """RFC 8839 §5.4: ice-ufrag 4-256 ice-chars, ice-pwd 22-256 ice-chars."""
        if not (4 <= len(self.ufrag) <= 256 and _ICE_CHAR.match(self.ufrag)):
            raise ValueError(f"ice-ufrag {self.ufrag!r} must be 4 to 256 characters of ALPHA / DIGIT / + / /")
        if not (22 <= len(self.pwd) <= 256 and _ICE_CHAR.match(self.pwd)):
            raise ValueError("ice-pwd must be 22 to 256 characters of ALPHA / DIGIT / + / /")

    def to_lines(self) -> list[str]:
        lines = []
        if self.lite:
            lines.append("a=ice-lite")
        lines += [f"a=ice-ufrag:{self.ufrag}", f"a=ice-pwd:{self.pwd}"]
        if self.options:
            lines.append("a=ice-options:" + " ".join(self.options))
        lines += ["a=candidate:" + c.to_sdp() for c in self.candidates]
        if self.end_of_candidates:
            lines.append("a=end-of-candidates")
        return lines

    @classmethod
    def from_lines(cls, lines: list[str] | str) -> IceDescription:
        """Parse the ICE attributes out of SDP lines; other lines are ignored. Raises ValueError when malformed."""
        if isinstance(lines, str):
            lines = lines.splitlines()
        d = cls()
        for raw in lines:
            line = raw.strip()
            if not line.startswith("a="):
                continue
            name, _, value = line[2:].partition(":")
            if name == "ice-ufrag":
                d.ufrag = value.strip()
            elif name == "ice-pwd":
                d.pwd = value.strip()
            elif name == "ice-options":
                d.options = tuple(value.split())
            elif name == "ice-lite":
                d.lite = True
            elif name == "candidate":
                d.candidates.append(Candidate.from_sdp(value))
            elif name == "end-of-candidates":
                d.end_of_candidates = True
        return d
