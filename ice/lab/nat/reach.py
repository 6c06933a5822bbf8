"""Which NAT pairings let two peers reach each other directly: RFC 4787 reasoning, written once.

Used to pin the expected outcome of hole-punching and ICE scenarios (the scenario matrix stores the result per
cell as data, so every expectation can be read and reviewed).
"""

from __future__ import annotations

from ice.lab.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind

_OPEN_FILTERS = (Filtering.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT)


def predictable(nat: NatBehaviour) -> bool:
    """The address a STUN server reports is the one the peer will see (RFC 4787 §4.1 endpoint-independent
    mapping, or no NAT at all)."""
    return nat.kind is NatKind.NONE or nat.mapping is Mapping.ENDPOINT_INDEPENDENT


def admits_unknown_port(nat: NatBehaviour) -> bool:
    """A packet from the right IP but an unexpected port gets in once the host has sent to that IP (RFC 4787 §5:
    endpoint-independent or address-dependent filtering, or no NAT)."""
    return nat.kind is NatKind.NONE or nat.filtering in _OPEN_FILTERS


def direct_possible(a: NatBehaviour, b: NatBehaviour) -> bool:
    """Can A and B exchange UDP directly, both sending to each other's server-reflexive address and answering
    whatever address they hear from (ICE's peer-reflexive learning)?

    * Both mappings predictable: each side sends to the address the other will use, which opens each NAT for
      the other (simultaneous open works even through address-and-port-dependent filtering).
    * One mapping unpredictable (Y), one predictable (X): Y's packets come from a port X has never seen, so X's
      filtering must admit an unknown port from an IP it has sent to (endpoint-independent or address-dependent
      filtering). X then answers Y's real address, which Y's NAT lets in because Y sent to X's (right) address.
    * Both unpredictable: each side sends to a stale port of the other; nothing ever gets in. A relay is needed.

    A UDP-blocked side never reaches anyone directly.
    """
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        return False
    if predictable(a) and predictable(b):
        return True
    if predictable(a):
        return admits_unknown_port(a)
    if predictable(b):
        return admits_unknown_port(b)
    return False
