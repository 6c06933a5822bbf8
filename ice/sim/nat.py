"""An in-memory NAT generated from the same :class:`NatBehaviour` the kernel lab compiles (RFC 4787).

Mapping (§4.1), filtering (§5), port preservation (§4.2.1), hairpinning (§6), binding timeout (§4.3) with
inbound or outbound-only refresh. UDP only; deterministic given its seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ice.nat.behaviour import Filtering, Mapping, NatBehaviour, NatKind
from ice.stun.attributes import Address


@dataclass
class _Binding:
    external_port: int
    internal: Address
    refreshed: float
    contacted: dict[Address, float] = field(default_factory=dict)
    """Remote endpoints this binding sent to, with when (filtering state, RFC 4787 §5)."""


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
