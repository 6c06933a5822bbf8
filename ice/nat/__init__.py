"""NAT behaviour as data (RFC 4787) and the reasoning over it: the model both the kernel lab (``ice.lab``, which
compiles it to nftables) and the in-memory simulation (``ice.sim``) are generated from. Pure: no I/O."""

from ice.nat.behaviour import ALIASES, PRESETS, Filtering, Mapping, NatBehaviour, NatKind, preset
from ice.nat.reach import direct_possible

__all__ = ["ALIASES", "PRESETS", "Filtering", "Mapping", "NatBehaviour", "NatKind", "direct_possible", "preset"]
