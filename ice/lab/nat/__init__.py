"""NAT behaviour (RFC 4787) as data and its compilation to nftables rulesets."""

from ice.lab.nat.behaviour import (
    PRESETS,
    Filtering,
    Mapping,
    NatBehaviour,
    NatKind,
    preset,
)
from ice.lab.nat.nft import NatInterfaces, compile_ruleset

__all__ = [
    "PRESETS",
    "Filtering",
    "Mapping",
    "NatBehaviour",
    "NatInterfaces",
    "NatKind",
    "compile_ruleset",
    "preset",
]
