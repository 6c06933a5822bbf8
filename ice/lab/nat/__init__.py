"""NAT behaviour (RFC 4787) as data and its compilation to nftables rulesets."""

from ice.lab.nat.nft import NatInterfaces, compile_ruleset
from ice.nat.behaviour import (
    PRESETS,
    Filtering,
    Mapping,
    NatBehaviour,
    NatKind,
    preset,
)

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
