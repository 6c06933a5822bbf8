"""An in-memory NAT generated from the same :class:`NatBehaviour` the kernel lab compiles (RFC 4787, RFC 5382).

UDP: mapping (§4.1), filtering (§5), port preservation (§4.2.1), hairpinning (§6), binding timeout (§4.3) with
inbound or outbound-only refresh. TCP (:meth:`SimNat.tcp_outbound`, :meth:`SimNat.tcp_inbound`): bindings and
filtering by the TCP section (RFC 5382 §4.1, §4.3), connections tracked as conntrack does (SYN, SYN-ACK, RST), the
answer to an unsolicited SYN (REQ-4) and the simultaneous open (REQ-2a); TCP hairpinning is not modelled.
Deterministic given its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind, SynAnswer
from ice.sim.tcp import ICMP_UNREACHABLE, RST, Segment, TcpFlag
from ice.stun.attributes import Address

TCP_TRANSITORY_TIMEOUT = 120
"""Idle timeout of a TCP connection still opening, seconds (Linux conntrack's SYN_SENT timeout)."""


@dataclass
class _Binding:
    external_port: int
    internal: Address
    refreshed: float
    contacted: dict[Address, float] = field(default_factory=dict)
    """Remote endpoints this binding sent to, with when (filtering state, RFC 4787 §5)."""


@dataclass
class _TcpFlow:
    """A TCP connection through the NAT, as conntrack tracks it."""

    binding: _Binding
    internal: Address
    remote: Address
    outbound: bool
    """The host opened it (its SYN went out first)."""
    refreshed: float
    replied: bool = False
    """A segment came back the other way (for an outbound flow: from the remote)."""
    isn: int = 0
    """The host's SYN's sequence space (:attr:`Segment.isn`)."""
    crossed: bool = False
    """The remote's SYN crossed the host's (conntrack's SYN_SENT2), let in or not."""


@dataclass(frozen=True)
class TcpVerdict:
    """What the NAT does with an inbound TCP segment: where it goes, or what it answers instead."""

    to: Address | None
    """The internal endpoint it is forwarded to; None when it is not admitted."""
    answer: Segment | None = None
    """A RST or ICMP error the NAT sends back to the segment's source instead (RFC 5382 REQ-4); None: silence."""


@dataclass
class SimNat:
    behaviour: NatBehaviour
    public_ip: str
    seed: int = 0
    bindings: dict[tuple[object, ...], _Binding] = field(default_factory=dict)
    by_port: dict[int, _Binding] = field(default_factory=dict)
    sessions: dict[tuple[Address, Address], _Binding] = field(default_factory=dict)
    """(internal, remote) -> the binding that flow uses. Like conntrack, a reply to a packet that came in keeps
    the binding it came in on, whatever the mapping behaviour says about new flows."""
    disguised: dict[tuple[Address, Address], tuple[Address, _Binding]] = field(default_factory=dict)
    """(internal, the remote as the host sees it) -> (the real remote, the binding): flows whose remote port the
    NAT rewrote on the way in (see :meth:`inbound_seen`)."""
    _disguise_of: dict[tuple[Address, Address, int], Address] = field(default_factory=dict)
    tcp_bindings: dict[tuple[object, ...], _Binding] = field(default_factory=dict)
    """TCP bindings, keyed as the TCP mapping behaviour says (RFC 5382 §4.1); TCP ports are their own space."""
    tcp_by_port: dict[int, _Binding] = field(default_factory=dict)
    tcp_flows: dict[tuple[Address, Address], _TcpFlow] = field(default_factory=dict)
    """(internal, remote) -> the TCP connection between them, as conntrack has it."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.behaviour.kind is NatKind.NONE:
            raise ValueError("a 'none' preset is not a NAT: give the host a public address instead")

    def _key(self, internal: Address, remote: Address) -> tuple[object, ...]:
        mapping = self.behaviour.mapping
        if mapping is Mapping.ENDPOINT_INDEPENDENT:
            return (internal,)
        if mapping is Mapping.ADDRESS_DEPENDENT:
            return (internal, remote[0])
        return (internal, remote)

    def _alive(self, b: _Binding, now: float) -> bool:
        return now - b.refreshed < self.behaviour.mapping_timeout

    def _allocate(self, internal: Address) -> int:
        lo, hi = self.behaviour.port_range or (1024, 65535)
        if self.behaviour.port_preservation and lo <= internal[1] <= hi and internal[1] not in self.by_port:
            return internal[1]
        while True:
            port = self._rng.randint(lo, hi)
            if port not in self.by_port:
                return port

    def outbound(self, now: float, internal: Address, remote: Address) -> Address | None:
        """Translate a packet from ``internal`` to ``remote``: its external source, or None if the NAT drops it."""
        routed = self.outbound_to(now, internal, remote)
        return routed[0] if routed is not None else None

    def outbound_to(self, now: float, internal: Address, remote: Address) -> tuple[Address, Address] | None:
        """(external source, real destination) of a packet from ``internal`` to ``remote``; the destination differs
        from ``remote`` when it is a disguised remote (a reply on a flow whose port was rewritten coming in)."""
        if self.behaviour.kind is NatKind.UDP_BLOCKED:
            return None
        hidden = self.disguised.get((internal, remote))
        if hidden is not None:
            real, b = hidden
            if self._alive(b, now) and self.by_port.get(b.external_port) is b:
                b.refreshed = now
                b.contacted[real] = now
                return (self.public_ip, b.external_port), real
            del self.disguised[(internal, remote)]
        ext = self._outbound(now, internal, remote)
        return (ext, remote) if ext is not None else None

    def _outbound(self, now: float, internal: Address, remote: Address) -> Address | None:
        session = self.sessions.get((internal, remote))
        if session is not None and self._alive(session, now) and self.by_port.get(session.external_port) is session:
            session.refreshed = now
            session.contacted[remote] = now
            return (self.public_ip, session.external_port)
        key = self._key(internal, remote)
        b = self.bindings.get(key)
        if b is not None and not self._alive(b, now):
            self._expire(key, b)
            b = None
        if b is None:
            self.sweep(now)
            b = _Binding(self._allocate(internal), internal, now)
            self.bindings[key] = b
            self.by_port[b.external_port] = b
        b.refreshed = now
        b.contacted[remote] = now
        self.sessions[(internal, remote)] = b
        return (self.public_ip, b.external_port)

    def _expire(self, key: tuple[object, ...], b: _Binding) -> None:
        del self.bindings[key]
        if self.by_port.get(b.external_port) is b:
            del self.by_port[b.external_port]

    def sweep(self, now: float) -> None:
        """Forget bindings past their timeout (RFC 4787 §4.3) and the flows that used them, so a long simulation
        neither grows without bound nor keeps ports of dead bindings out of use."""
        for key, b in list(self.bindings.items()):
            if not self._alive(b, now):
                self._expire(key, b)
        self.sessions = {k: b for k, b in self.sessions.items() if self.by_port.get(b.external_port) is b}
        self.disguised = {k: v for k, v in self.disguised.items() if self.by_port.get(v[1].external_port) is v[1]}
        live = set(self.disguised)
        self._disguise_of = {k: v for k, v in self._disguise_of.items() if (k[0], v) in live}

    def hairpin(self, now: float, external_port: int) -> Address | None:
        """RFC 4787 §6: where a packet from the LAN to our own public address and ``external_port`` goes (a live
        binding's internal endpoint). Filtering is not applied, as in the lab's nft rules (docs/lab.md)."""
        if not self.behaviour.hairpinning:
            return None
        b = self.by_port.get(external_port)
        return b.internal if b is not None and self._alive(b, now) else None

    def hairpin_route(self, now: float, internal: Address, external_port: int) -> tuple[Address, Address] | None:
        """(source, internal destination) of a packet from ``internal`` (on the LAN) to our public address and
        ``external_port``; None if we do not hairpin or no live binding holds that port.

        RFC 4787 REQ-9 wants the hairpinned packet to carry the sender's external address. What the lab's rules
        do (docs/lab.md), whatever the mapping behaviour: the sender's existing binding if it has one, else a new
        one; the flow is then a session like any other, so the receiver's reply goes back on the binding the
        packet was addressed to, and the sender's next packets keep the source they had."""
        target = self.hairpin(now, external_port)
        if target is None:
            return None
        hit = self.by_port[external_port]
        dst = (self.public_ip, external_port)
        session = self.sessions.get((internal, dst))
        own = session if session is not None and self._alive(session, now) and \
            self.by_port.get(session.external_port) is session else None
        if own is None:
            own = next((b for b in self.bindings.values() if b.internal == internal and self._alive(b, now)), None)
        if own is None:
            ext = self._outbound(now, internal, dst)
            if ext is None:
                return None
            own = self.by_port[ext[1]]
        own.refreshed = now
        own.contacted[dst] = now
        src = (self.public_ip, own.external_port)
        self.sessions[(internal, dst)] = own
        self.sessions[(target, src)] = hit  # the reply leaves by the binding the packet was addressed to
        hit.contacted[src] = now
        return src, target

    def inbound(self, now: float, remote: Address, external_port: int) -> Address | None:
        """Where a packet from ``remote`` to our public address and ``external_port`` goes; None if filtered."""
        seen = self.inbound_seen(now, remote, external_port)
        return seen[1] if seen is not None else None

    def inbound_seen(self, now: float, remote: Address, external_port: int) -> tuple[Address, Address] | None:
        """(source as the internal host sees it, internal destination) of an inbound packet; None if filtered.

        Like Linux conntrack: when the internal host already has a flow to ``remote`` through *another* binding
        (a destination-dependent mapping gave it another external port), the new inbound flow's reply tuple would
        clash with that flow, and the NAT gives the inbound packets a new source port instead. The host then sees
        the remote at that disguised address, and its replies to it are translated back."""
        b = self.by_port.get(external_port)
        if b is None or not self._alive(b, now):
            return None
        filtering = self.behaviour.filtering
        if filtering is Filtering.ADDRESS_DEPENDENT:
            allowed = any(ip == remote[0] for ip, _ in b.contacted)
        elif filtering is Filtering.ADDRESS_AND_PORT_DEPENDENT:
            allowed = remote in b.contacted
        else:
            allowed = True
        if not allowed:
            return None
        if self.behaviour.inbound_refresh:
            b.refreshed = now
        other = self.sessions.get((b.internal, remote))
        if other is not None and other is not b and self._alive(other, now) \
                and self.by_port.get(other.external_port) is other:
            seen = self._disguise_of.get((b.internal, remote, b.external_port))
            if seen is None or self.disguised.get((b.internal, seen), (None, None))[1] is not b:
                while True:  # a fresh port for the remote, unused by this host's flows
                    seen = (remote[0], self._rng.randint(1024, 65535))
                    if (b.internal, seen) not in self.sessions and (b.internal, seen) not in self.disguised:
                        break
                self._disguise_of[(b.internal, remote, b.external_port)] = seen
                self.disguised[(b.internal, seen)] = (remote, b)
            return seen, b.internal
        self.sessions[(b.internal, remote)] = b
        return remote, b.internal

    # ------------------------------------------------------------------------------------------------ TCP

    def _tcp_alive(self, b: _Binding, now: float) -> bool:
        return now - b.refreshed < self.behaviour.tcp.established_timeout

    def _flow(self, now: float, internal: Address, remote: Address) -> _TcpFlow | None:
        flow = self.tcp_flows.get((internal, remote))
        if flow is None:
            return None
        limit = self.behaviour.tcp.established_timeout if flow.replied else TCP_TRANSITORY_TIMEOUT
        if now - flow.refreshed >= limit or self.tcp_by_port.get(flow.binding.external_port) is not flow.binding:
            del self.tcp_flows[(internal, remote)]
            return None
        return flow

    def _tcp_binding(self, now: float, internal: Address, remote: Address) -> _Binding:
        """The binding a new outbound connection uses: the one its key names, else a new one (RFC 5382 §4.1; port
        preservation as RFC 4787 §4.2.1)."""
        mapping = self.behaviour.tcp_mapping
        key: tuple[object, ...] = (internal,) if mapping is Mapping.ENDPOINT_INDEPENDENT else \
            (internal, remote[0]) if mapping is Mapping.ADDRESS_DEPENDENT else (internal, remote)
        b = self.tcp_bindings.get(key)
        if b is not None and self._tcp_alive(b, now) and self.tcp_by_port.get(b.external_port) is b:
            return b
        for k, old in list(self.tcp_bindings.items()):  # forget dead bindings, so their ports are free again
            if not self._tcp_alive(old, now):
                del self.tcp_bindings[k]
                if self.tcp_by_port.get(old.external_port) is old:
                    del self.tcp_by_port[old.external_port]
        lo, hi = self.behaviour.port_range or (1024, 65535)
        port = internal[1]
        if not (self.behaviour.tcp_port_preservation and lo <= port <= hi and port not in self.tcp_by_port):
            while (port := self._rng.randint(lo, hi)) in self.tcp_by_port:
                pass
        b = _Binding(port, internal, now)
        self.tcp_bindings[key] = b
        self.tcp_by_port[port] = b
        return b

    def tcp_outbound(self, now: float, internal: Address, remote: Address, seg: Segment) -> Address | None:
        """The external source of a TCP segment from ``internal`` to ``remote``, or None if the NAT drops it.

        A bare SYN without a connection opens one (and, if needed, a binding); other segments need the connection
        (conntrack has nothing to translate them by). A RST ends the connection. A new connect()'s SYN on a
        connection the remote's SYN has crossed is not translated (measured in the lab: conntrack's SYN_SENT2 takes
        no SYN of another sequence space). The UDP-blocking firewall lets connections out only to its allowed
        ports."""
        flow = self._flow(now, internal, remote)
        if flow is None:
            if not seg.bare_syn:
                return None
            if self.behaviour.kind is NatKind.UDP_BLOCKED and remote[1] not in self.behaviour.allowed_tcp_ports:
                return None
            flow = _TcpFlow(self._tcp_binding(now, internal, remote), internal, remote, outbound=True,
                            refreshed=now, isn=seg.isn)
            self.tcp_flows[(internal, remote)] = flow
        elif not flow.outbound:
            flow.replied = True
        elif seg.bare_syn and seg.isn != flow.isn:  # a new connect() while its last SYN is still tracked
            if flow.crossed:
                return None  # conntrack: a SYN of another sequence space in SYN_SENT2 is invalid, not translated
            flow.isn = seg.isn
        b = flow.binding
        b.refreshed = flow.refreshed = now
        b.contacted[remote] = now
        if TcpFlag.RST in seg.flags:
            del self.tcp_flows[(internal, remote)]
        return (self.public_ip, b.external_port)

    def _tcp_admits(self, b: _Binding, remote: Address) -> bool:
        """RFC 5382 §4.3: does the binding's filter let a new connection from ``remote`` in? Address-and-port-
        dependent filtering admits only segments of a connection the host opened (conntrack), so never a new one."""
        filtering = self.behaviour.tcp_filtering
        if filtering is Filtering.ENDPOINT_INDEPENDENT:
            return True
        if filtering is Filtering.ADDRESS_DEPENDENT:
            return any(ip == remote[0] for ip, _ in b.contacted)
        return False

    def tcp_inbound(self, now: float, remote: Address, external_port: int, seg: Segment) -> TcpVerdict:
        """What happens to a TCP segment (or an ICMP error about one) from ``remote`` to our public address and
        ``external_port``.

        * A segment of a tracked connection is forwarded, except the remote's bare SYN crossing the host's own
          (a simultaneous open, RFC 5382 REQ-2a) when the NAT refuses those: it is silently dropped.
        * A bare SYN without a connection opens one if a live binding's filter admits the remote (§4.3).
        * Any other bare SYN is unsolicited: dropped, or answered with RST or ICMP Port Unreachable as the TCP
          section says (REQ-4). Other stray segments are dropped.
        """
        b = self.tcp_by_port.get(external_port)
        if b is None or not self._tcp_alive(b, now):
            b = None
        flow = self._flow(now, b.internal, remote) if b is not None else None
        if flow is not None and flow.binding is not b:
            flow = None
        if seg.icmp:
            return TcpVerdict(flow.internal if flow is not None else None)
        if flow is not None:
            if seg.bare_syn and flow.outbound and not flow.replied:
                flow.crossed = True
                if not self.behaviour.tcp.simultaneous_open:
                    return TcpVerdict(None)
            if flow.outbound:
                flow.replied = True
            flow.refreshed = now
            if self.behaviour.inbound_refresh:
                flow.binding.refreshed = now
            if TcpFlag.RST in seg.flags:
                del self.tcp_flows[(flow.internal, remote)]
            return TcpVerdict(flow.internal)
        if not seg.bare_syn:
            return TcpVerdict(None)
        if b is not None and self._tcp_admits(b, remote):
            if self._flow(now, b.internal, remote) is not None:
                return TcpVerdict(None)  # the host has a connection to the remote through another binding: the
                # new one would clash with it in conntrack (the lab rewrites the port; not modelled for TCP)
            self.tcp_flows[(b.internal, remote)] = _TcpFlow(b, b.internal, remote, outbound=False, refreshed=now)
            b.refreshed = now
            return TcpVerdict(b.internal)
        answer = {SynAnswer.DROP: None, SynAnswer.RST: RST, SynAnswer.ICMP: ICMP_UNREACHABLE}
        return TcpVerdict(None, answer[self.behaviour.tcp.unsolicited_syn])
