"""The default matrix: every RFC 4787 mapping x filtering preset against every other, with a TURN server on the
public segment, plus the special boxes (Linux router, UDP-blocked firewall, public peer), peers sharing one NAT
(with and without hairpinning), double NAT, impaired links and agent options.

Each cell's expected path (direct / relay / none) is pinned in scenarios/expected.json; regenerate it with
``./icelab run --update-expectations`` after changing the reasoning, and review the diff.
"""

from __future__ import annotations

from ice.scenario.model import Scenario

RFC4787 = ["eim-eif", "eim-adf", "eim-apdf", "adm-eif", "adm-adf", "adm-apdf", "apdm-eif", "apdm-adf", "apdm-apdf"]
SPECIAL = [("linux-masquerade", "linux-masquerade"), ("linux-masquerade", "apdm-apdf"),
           ("udp-blocked", "eim-apdf"), ("none", "apdm-apdf")]


def same_nat() -> list[Scenario]:
    """Two peers on one LAN: host pairs must win whatever the NAT does; hairpinning only adds srflx pairs."""
    return [Scenario(f"same-nat-{nat}-{'hairpin' if hp else 'nohairpin'}", nat, nat, topology="same_nat",
                     hairpin=hp, group="same-nat")
            for nat in ("eim-apdf", "apdm-apdf") for hp in (True, False)]


def double_nat() -> list[Scenario]:
    """A behind a home NAT behind a carrier-grade NAT (RFC 6598 space); B behind its own NAT."""
    return [Scenario(f"double-nat-{inner}-behind-{outer}x{b}", inner, b, topology="double_nat", outer=outer,
                     group="double-nat")
            for inner, outer, b in (("eim-apdf", "eim-eif", "eim-apdf"), ("eim-apdf", "eim-apdf", "eim-apdf"),
                                    ("eim-apdf", "apdm-apdf", "eim-apdf"), ("apdm-apdf", "eim-eif", "eim-adf"))]


def impaired() -> list[Scenario]:
    """Lossy and slow access links that must still connect. The lossy cells have no TURN server, so the direct
    pair is the only way and retransmissions must carry it."""
    return [
        Scenario("loss10-eim-apdfxeim-apdf", "eim-apdf", "eim-apdf", turn=False, loss=0.10, group="impaired"),
        Scenario("loss30-eim-apdfxeim-apdf", "eim-apdf", "eim-apdf", turn=False, loss=0.30, group="impaired"),
        Scenario("delay50-eim-apdfxeim-apdf", "eim-apdf", "eim-apdf", delay_ms=50, group="impaired"),
        Scenario("delay50-apdm-apdfxapdm-apdf", "apdm-apdf", "apdm-apdf", delay_ms=50, group="impaired"),
    ]


def options() -> list[Scenario]:
    """Agent options: aggressive nomination, the relay-only policy, all-at-once signalling, no TURN server, B
    controlling, and both controlling (the role conflict the tie-breakers resolve)."""
    return [
        Scenario("aggressive-eim-apdfxeim-apdf", "eim-apdf", "eim-apdf", nomination="aggressive", group="options"),
        Scenario("aggressive-apdm-apdfxapdm-apdf", "apdm-apdf", "apdm-apdf", nomination="aggressive",
                 group="options"),
        Scenario("relay-only-eim-eifxeim-eif", "eim-eif", "eim-eif", relay_only=True, group="options"),
        Scenario("no-trickle-apdm-apdfxeim-adf", "apdm-apdf", "eim-adf", trickle=False, group="options"),
        Scenario("no-turn-apdm-apdfxapdm-apdf", "apdm-apdf", "apdm-apdf", turn=False, group="options"),
        Scenario("b-controls-apdm-apdfxeim-adf", "apdm-apdf", "eim-adf", controlling="b", group="options"),
        Scenario("role-conflict-eim-apdfxeim-apdf", "eim-apdf", "eim-apdf", controlling="both", group="options"),
    ]


def matrix(presets: list[str] | None = None) -> list[Scenario]:
    names = presets or RFC4787
    cells = [Scenario(f"{a}x{b}", a, b) for a in names for b in names]
    if presets is None:
        cells += [Scenario(f"{a}x{b}", a, b, group="special") for a, b in SPECIAL]
        cells += same_nat() + double_nat() + impaired() + options()
    return cells
