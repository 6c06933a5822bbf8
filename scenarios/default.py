"""The default matrix: every RFC 4787 mapping x filtering preset against every other, with a TURN server on the
public segment, plus the special boxes (Linux router, UDP-blocked firewall, public peer).

Each cell's expected path (direct / relay / none) is pinned in scenarios/expected.json; regenerate it with
``./icelab run --update-expectations`` after changing the reasoning, and review the diff.
"""

from __future__ import annotations

from ice.scenario.model import Scenario

RFC4787 = ["eim-eif", "eim-adf", "eim-apdf", "adm-eif", "adm-adf", "adm-apdf", "apdm-eif", "apdm-adf", "apdm-apdf"]
SPECIAL = [("linux-masquerade", "linux-masquerade"), ("linux-masquerade", "apdm-apdf"),
           ("udp-blocked", "eim-apdf"), ("none", "apdm-apdf")]


def matrix(presets: list[str] | None = None) -> list[Scenario]:
    names = presets or RFC4787
    cells = [Scenario(f"{a}x{b}", a, b) for a in names for b in names]
    if presets is None:
        cells += [Scenario(f"{a}x{b}", a, b) for a, b in SPECIAL]
    return cells
