"""The golden NAT rulesets: every preset and a few variants, compiled for fixed interface names.

``python -m tests.golden_nat --write`` (scripts/update-golden) regenerates the files; tests/test_nat_rules.py
compares the compiler's output with them byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ice.lab.nat import PRESETS, Filtering, Mapping, NatBehaviour, NatInterfaces, compile_ruleset
from ice.nat.behaviour import SynAnswer

GOLDEN = Path(__file__).resolve().parent / "golden" / "nat"
IFACES = NatInterfaces("nat-wan", "nat-lan", "203.0.113.1", "10.0.0.0/24")


def cases() -> dict[str, NatBehaviour]:
    variants = {
        "eim-apdf-pp0-ir0-range": PRESETS["eim-apdf"].with_(
            port_preservation=False, inbound_refresh=False, port_range=(40000, 40999), mapping_timeout=5
        ),
        "adm-eif-nohairpin": PRESETS["adm-eif"].with_(hairpinning=False),
        "masq-random-range": PRESETS["linux-masquerade"].with_(
            port_preservation=False, mapping=Mapping.ADDRESS_AND_PORT_DEPENDENT, port_range=(40000, 40999)
        ),
        # TCP (RFC 5382) apart from UDP: an ICMP-answering NAT refusing simultaneous open; a full cone for UDP
        # that treats TCP like a port-restricted cone without port preservation
        "eim-apdf-tcp-icmp-nosimopen": PRESETS["eim-apdf"].with_tcp(
            unsolicited_syn=SynAnswer.ICMP, simultaneous_open=False
        ),
        "eim-eif-tcp-apdm-apdf-pp0": PRESETS["eim-eif"].with_tcp(
            mapping=Mapping.ADDRESS_AND_PORT_DEPENDENT, filtering=Filtering.ADDRESS_AND_PORT_DEPENDENT,
            port_preservation=False,
        ),
        "masq-tcp-random": PRESETS["linux-masquerade"].with_tcp(
            port_preservation=False, mapping=Mapping.ADDRESS_AND_PORT_DEPENDENT
        ),
    }
    return {**PRESETS, **variants}


def main() -> None:
    if "--write" in sys.argv:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, behaviour in cases().items():
            (GOLDEN / f"{name}.nft").write_text(compile_ruleset(behaviour, IFACES))
        print(f"wrote {len(cases())} files to {GOLDEN}")


if __name__ == "__main__":
    main()
