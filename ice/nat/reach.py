"""Which NAT pairings let two peers reach each other directly: RFC 4787 reasoning, written once.

Used to pin the expected outcome of hole-punching and ICE scenarios (the scenario matrix stores the result per
cell as data, so every expectation can be read and reviewed).
"""

from __future__ import annotations

from collections.abc import Sequence

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind


def _eim(nat: NatBehaviour) -> bool:
    return nat.kind is NatKind.NONE or nat.mapping is Mapping.ENDPOINT_INDEPENDENT


def _filtering(nat: NatBehaviour) -> Filtering:
    if nat.kind is NatKind.NONE or nat.filtering is None:
        return Filtering.ENDPOINT_INDEPENDENT
    return nat.filtering


def admits_first(receiver: NatBehaviour, sender: NatBehaviour) -> bool:
    """Does the sender's first packet to the receiver's server-reflexive address get in (RFC 4787 §5)?

    It arrives on the receiver's STUN-facing binding, from whatever binding the sender's NAT chose for the
    receiver's address. Endpoint-independent filtering admits it. Otherwise the receiver must have sent to the
    sender through that same binding (its mapping must be endpoint-independent, since it sent to another
    address than the STUN server): address-dependent filtering then admits the sender's IP, and
    address-and-port-dependent filtering only the sender's srflx port, so the sender's mapping must be
    endpoint-independent too.
    """
    f = _filtering(receiver)
    if f is Filtering.ENDPOINT_INDEPENDENT:
        return True
    if not _eim(receiver):
        return False
    return f is Filtering.ADDRESS_DEPENDENT or _eim(sender)


def direct_possible(a: NatBehaviour, b: NatBehaviour) -> bool:
    """Can A and B exchange UDP directly, both sending to each other's server-reflexive address and answering
    whatever address they hear from (ICE's peer-reflexive learning)?

    Yes when, in one direction or the other, the first packet gets in (:func:`admits_first`). The answer then
    always gets back: NATs track sessions (conntrack), so it leaves through the binding the packet came in on,
    which is the very address the first sender sent to. That also makes the answer come from where the request
    went, as an ICE check requires (RFC 8445 §7.2.5.2.1), so raw hole punching and ICE agree.

    Examples (RFC 4787 names): full cone x anything works; port-restricted x port-restricted works; symmetric x
    restricted cone works; symmetric x port-restricted and symmetric x symmetric need a relay; a UDP-blocked
    side never reaches anyone directly. The in-memory simulation and the kernel lab's hole-punching grid are
    tested against this function.
    """
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        return False
    return admits_first(b, a) or admits_first(a, b)


def admits_first_through(receiver: Sequence[NatBehaviour], sender: Sequence[NatBehaviour]) -> bool:
    """:func:`admits_first` for peers behind chains of NATs (innermost first).

    The sender's first packet to the receiver's server-reflexive address crosses the receiver's NATs from the
    outside in, each on the binding the receiver's STUN flow made, and each NAT filters it on its own: an
    endpoint-independent filter lets it through; any other filter needs the receiver to have sent to the sender
    through that very binding, which holds only when every NAT from the receiver up to this one maps
    independently of the destination (the receiver's check then leaves through the STUN flow's bindings). An
    address-dependent filter then admits the sender's IP. An address-and-port-dependent one admits only the
    sender's server-reflexive port, so the sender's whole chain must map independently of the destination, and
    so must the receiver's NATs further out: a destination-dependent one there gave the receiver's own packet to
    the sender a flow of its own, and the sender's packet, arriving on the STUN flow's binding, clashes with it
    in conntrack and gets a new source port (docs/lab.md). One NAT on each side gives :func:`admits_first`."""
    inner_eim = True
    whole_eim = all(_eim(n) for n in receiver)
    for nat in receiver:
        inner_eim = inner_eim and _eim(nat)
        f = _filtering(nat)
        if f is Filtering.ENDPOINT_INDEPENDENT:
            continue
        if not inner_eim:
            return False
        if f is Filtering.ADDRESS_AND_PORT_DEPENDENT and not (whole_eim and all(_eim(s) for s in sender)):
            return False
    return True


def direct_possible_through(a: Sequence[NatBehaviour], b: Sequence[NatBehaviour]) -> bool:
    """:func:`direct_possible` for peers behind chains of NATs (innermost first): in one direction or the other
    the first packet gets in (:func:`admits_first_through`); a UDP-blocking box anywhere blocks it."""
    if any(n.kind is NatKind.UDP_BLOCKED for n in (*a, *b)):
        return False
    return admits_first_through(b, a) or admits_first_through(a, b)
