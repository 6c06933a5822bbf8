"""Which NAT pairings let two peers reach each other directly: RFC 4787 reasoning, written once.

Used to pin the expected outcome of hole-punching and ICE scenarios (the scenario matrix stores the result per
cell as data, so every expectation can be read and reviewed).
"""

from __future__ import annotations

from collections.abc import Sequence

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind, SynAnswer


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


# ------------------------------------------------------------------------------------------------------- TCP


def tcp_reachable(nat: NatBehaviour) -> bool:
    """Does a SYN from an endpoint the host never contacted reach a host listening behind ``nat`` on the port its
    server-reflexive TCP address maps (RFC 5382 §4.3)?

    Only with no NAT or endpoint-independent filtering: the mapping the host's connection to the server made then
    admits anyone. Address-dependent filtering would need the host to have sent to the peer's address first, and a
    listener never sends (that case is a simultaneous open, :func:`tcp_simultaneous_open_possible`)."""
    if nat.kind is NatKind.NONE:
        return True
    if nat.kind is NatKind.UDP_BLOCKED:
        return False
    return nat.tcp_filtering is Filtering.ENDPOINT_INDEPENDENT


def _answers_early_syn(nat: NatBehaviour) -> bool:
    """Is a peer's SYN that arrives before the host has sent anything towards the peer answered (so the peer's
    connect() fails at once) rather than silently dropped? The NAT answers it itself (RST or ICMP, RFC 5382 REQ-4),
    or lets it in to the host (no NAT, endpoint-independent filtering), whose stack answers RST because its own
    connect() to the peer has not started yet."""
    return tcp_reachable(nat) or nat.tcp.unsolicited_syn is not SynAnswer.DROP


def _admits_crossing_syn(nat: NatBehaviour) -> bool:
    """RFC 5382 REQ-2a: the peer's SYN crossing the host's own is let in (no NAT lets everything in)."""
    return nat.kind is NatKind.NONE or nat.tcp.simultaneous_open


def _answers_icmp(nat: NatBehaviour) -> bool:
    """The NAT itself answers the peer's early SYN with ICMP (an endpoint-independent filter never gets to)."""
    return not tcp_reachable(nat) and nat.tcp.unsolicited_syn is SynAnswer.ICMP


def _tcp_filtering_is(nat: NatBehaviour, filtering: Filtering) -> bool:
    return nat.kind is not NatKind.NONE and nat.tcp_filtering is filtering


def tcp_simultaneous_open_possible(a: NatBehaviour, b: NatBehaviour) -> bool:
    """Do two hosts that connect() to each other's server-reflexive TCP address, from the port their server
    connection used, retrying a refused connect() after a pause, get one connection (a TCP simultaneous open, RFC
    793 §3.4, RFC 5382 REQ-2a), whichever host's first SYN arrives first?

    Each SYN must leave from the server-reflexive port the other side targets, so both TCP mappings must be
    endpoint-independent (a destination-dependent one sends it from a new port, which the other NAT, or the other
    host's socket connecting to another port, refuses). Then it works once one host's connect() waits (its SYN was
    silently dropped) while the other's next SYN reaches it through a NAT that lets a crossing SYN in. What spoils
    that is a SYN answered at once (RST or ICMP from the NAT, RST from a host its NAT let it through to), which
    fails a connect() and makes the host try again, and a SYN that gets through to a host whose connect() has just
    failed, whose stack then resets it. Case by case:

    * At least one NAT must let the crossing SYN in.
    * If both answer early SYNs, every first SYN is refused, and so is every retry: only SYNs that cross in flight
      connect (measured with two RST-answering Linux boxes: 1 in 10).
    * A RST answer clears the answered host's state in its own NAT; it spoils the open when that NAT filters by
      address, since the host has sent to the peer's address and the peer's next SYN is let in to the failed
      socket.
    * An ICMP answer leaves the answered host's connection tracked in its own NAT. If that NAT lets crossing SYNs
      in, the answering host's SYN reaches the failed socket and is reset, over and over, unless the ICMP came
      from an address-dependent filter (which then lets the retry in to its own host, whose RST clears that state).
      If that NAT refuses crossing SYNs, the entry has seen the peer's SYN (conntrack's SYN_SENT2) and the
      answered host's new connect() is not translated at all (measured in the lab).

    The simulation's TCP model (``ice.sim``) is checked against this for every pairing of filtering, SYN answer
    and crossing-SYN behaviour, and the kernel lab for eight pairings (tests/test_tcp_nat.py, tests/test_lab.py).
    Examples: two port-restricted NATs that drop unsolicited SYNs connect (measured in the lab: 10 in 10); a
    dropping one and a RST-answering Linux box connect (measured: every time); two RST-answering Linux boxes do
    not; a symmetric NAT never does."""
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        return False
    for nat in (a, b):
        if nat.kind is not NatKind.NONE and nat.tcp_mapping is not Mapping.ENDPOINT_INDEPENDENT:
            return False
    if not (_admits_crossing_syn(a) or _admits_crossing_syn(b)):
        return False
    adf = Filtering.ADDRESS_DEPENDENT
    if _answers_early_syn(a) and _answers_early_syn(b):
        return False
    for y, x in ((a, b), (b, a)):  # y answers x's early SYN; does x's NAT then let y's SYN in to the failed socket?
        if _answers_icmp(y) and not (_admits_crossing_syn(x) and _tcp_filtering_is(y, adf)):
            return False
        if _answers_early_syn(y) and _tcp_filtering_is(x, adf):
            return False
    return True


def tcp_direct_possible(a: NatBehaviour, b: NatBehaviour) -> bool:
    """Can A and B open a TCP connection to each other without a relay, each listening on the port of its
    server-reflexive TCP address and connecting to the other's?

    Yes when one side is reachable and the other connects to it (active -> passive: the active side's SYN leaves
    through any mapping, and the answer comes back on that very flow), or by a simultaneous open
    (:func:`tcp_simultaneous_open_possible`). A UDP-blocking firewall only lets TCP out to TURN ports, so never.
    """
    if NatKind.UDP_BLOCKED in (a.kind, b.kind):
        return False
    return tcp_reachable(a) or tcp_reachable(b) or tcp_simultaneous_open_possible(a, b)
