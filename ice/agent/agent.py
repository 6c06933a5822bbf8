"""The sans-IO ICE agent (RFC 8445 full and lite, RFC 7675 consent, RFC 8838 trickle).

Driving it::

    agent.add_host_candidate(local_address)             # one per socket the caller owns
    agent.gather_server_reflexive(now, local, stun)     # optional; RFC 8445 §5.1.1.2
    agent.set_remote_credentials(now, ufrag, pwd)       # checks start once there are remote candidates
    agent.add_remote_candidate(now, candidate)          # trickled or all at once; None = end-of-candidates
    agent.handle_datagram(now, local, remote, data)     # everything a socket receives
    agent.handle_timeout(now)                           # when next_timeout() is due
    while (t := agent.poll_transmit()): sock(t.local).sendto(t.data, t.remote)
    while (e := agent.next_event()): ...

ICE-TCP (RFC 6544, with ``AgentConfig.tcp.enabled``): ``add_tcp_host_candidate``/``add_tcp_server_reflexive``
add TCP candidates; the driver carries out ``poll_tcp()`` (connect, send an RFC 4571 frame, close), reports with
``handle_tcp_event`` and ``accept_tcp`` and feeds ``handle_tcp_data`` (see the ICE-TCP section of the class).

One data stream with any number of components (RTP/RTCP style: each component has its own sockets, pairs,
nomination and selected pair). Bad input from the network is counted in ``stats`` or answered with a STUN error
(400, 401, 420, 487); it never raises.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from ice.agent.candidate import Candidate, CandidateType, candidate_priority, foundation, pair_priority, pair_text
from ice.agent.config import AgentConfig, Nomination
from ice.agent.events import (
    CandidateGathered,
    ConsentLost,
    DataReceived,
    Event,
    GatheringComplete,
    NetworkChangeRestart,
    PairStateChanged,
    RoleChanged,
    SelectedPairChanged,
    StateChanged,
    StunServerUnreachable,
)
from ice.agent.network import NetworkChange
from ice.agent.states import AGENT_TRANSITIONS, AgentState, PairState
from ice.agent.tcp import (
    DISCARD_PORT,
    ConnState,
    Rfc4571Framer,
    TcpClose,
    TcpConn,
    TcpConnect,
    TcpConnected,
    TcpConnectFailed,
    TcpEvent,
    TcpIntent,
    TcpSend,
    TcpState,
    TcpType,
    frame,
    tcp_candidate,
    tcp_pairable,
)
from ice.errors import StunParseError
from ice.stun.attributes import (
    Address,
    Attribute,
    ErrorCode,
    IceControlled,
    IceControlling,
    Priority,
    Software,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
)
from ice.stun.integrity import IntegrityKey
from ice.stun.message import Message, MessageClass, Method, encode_parts, ice_answer, ice_check, is_stun, parse
from ice.stun.transaction import ClientTransaction, RetransmissionConfig, Transmit

COUNTERS = {
    "checks-sent": "connectivity checks sent (first transmissions)",
    "checks-retransmitted": "connectivity checks sent again (no answer yet)",
    "check-responses-success": "success responses to our checks",
    "check-responses-error": "error responses to our checks (487 role conflict, ...)",
    "pairs-succeeded": "pairs whose check succeeded",
    "pairs-failed": "pairs that failed (error, timeout, asymmetric answer, a broken nomination)",
    "triggered-checks": "checks triggered by the peer's checks (RFC 8445 §7.3.1.4)",
    "triggered-deferred": "triggered checks held back for the answer to the pair's own check in flight "
                          "(AgentConfig.triggered_grace); sent after all if that answer did not come",
    "nominations-sent": "checks sent with USE-CANDIDATE",
    "consent-sent": "consent checks sent (RFC 7675; -retransmitted: sent again)",
    "consent-answered": "consent checks answered",
    "gather-sent": "server-reflexive gathering requests sent (-retransmitted: sent again)",
    "data-sent": "application datagrams sent (data-bytes-sent: their bytes)",
    "data-received": "application datagrams received (data-bytes-received: their bytes)",
}
"""The agent's own activity counters in :attr:`IceAgent.stats` (other keys count bad input from the network)."""

_SENT = {"check": ("checks-sent", "checks-retransmitted"), "consent": ("consent-sent", "consent-retransmitted"),
         "gather": ("gather-sent", "gather-retransmitted")}
"""Purpose -> (counter of first transmissions, counter of retransmissions)."""


_K = TypeVar("_K")


def _prflx_priority(local: Candidate) -> int:
    """The PRIORITY a check from ``local`` carries: what a peer-reflexive candidate learned from it would get
    (RFC 8445 §7.1.1), with the local candidate's local preference and component."""
    return candidate_priority(CandidateType.PEER_REFLEXIVE, local.priority >> 8 & 0xFFFF, local.component)


def _bounded(cache: dict[_K, bytes], value: bytes, limit: int = 256) -> bytes:
    """``value``, after emptying ``cache`` if it holds ``limit`` entries (credentials or candidates that changed
    many times): the caches of encoded attributes stay small whatever the peer does."""
    if len(cache) >= limit:
        cache.clear()
    return value


@dataclass(eq=False)
class Pair:
    """A candidate pair (RFC 8445 §6.1.2). ``local`` is a host or relayed candidate (its own base), or a prflx one."""

    local: Candidate
    base: Address
    remote: Candidate
    priority: int
    state: PairState = PairState.FROZEN
    valid: bool = False
    nominated: bool = False
    remote_nominated: bool = False
    """The controlled side received USE-CANDIDATE for this pair (RFC 8445 §7.3.1.5)."""
    first_check_at: float | None = None
    rtt: float | None = None
    valid_pair: Pair | None = None
    """RFC 8445 §7.2.5.3.1: the valid pair this pair's successful check produced; its local candidate is the one
    whose address is the mapped address (a srflx or prflx candidate of the same base) when that is not the
    base. Selection and nomination use it, so a selected pair names what the peer sees."""
    counters: Counter[str] | None = field(default=None, repr=False)
    """This pair's entry of :attr:`IceAgent.pair_stats` (made on first use, see ``IceAgent._count``)."""

    @property
    def foundation(self) -> str:
        return f"{self.local.foundation}:{self.remote.foundation}"

    @property
    def key(self) -> tuple[Address, Address]:
        return (self.base, self.remote.address)


@dataclass
class _Check:
    pair: Pair | None
    tx: ClientTransaction
    local: Address
    nominating: bool = False
    purpose: str = "check"  # "check", "gather", "consent"
    server: Address | None = None
    cancelled: bool = False
    """RFC 8445 §7.3.1.4: no more retransmissions, but a response is still welcome until the timeout."""
    controlling: bool = False
    """The role the request was sent in (a 487 answer means: take the other one, RFC 8445 §7.2.5.1)."""
    sends: int = 0
    """Requests of this transaction queued so far (the first one, then retransmissions)."""
    deadline: float | None = None
    """Gathering: when the request stops holding up end-of-candidates (``AgentConfig.gather_timeout``)."""


@dataclass(frozen=True)
class _Generation:
    """The credentials of the ICE generation an ICE restart replaces: consent on the old selected pair keeps using
    them until a new pair is selected (RFC 8445 §9, RFC 7675 §5.1)."""

    local_ufrag: str
    local_key: IntegrityKey
    remote_ufrag: str
    remote_key: IntegrityKey


@dataclass
class Pacer:
    """When the next ordinary check may go (RFC 8445 §6.1.4.2). Agents of one session share one (one Ta for the
    whole checklist set), and through it see each other's checklists for foundation freezing (§6.1.2.6)."""

    next_at: float | None = None
    checklists: list[IceAgent] = field(default_factory=list)
    """The agents (one checklist each) of the session, in checklist-set order; empty for a lone agent."""
    changes: int = 0
    """Bumped by every agent sharing this pacer on each call that can move a deadline (everything but ``send``,
    ``poll_transmit``, ``next_event``): the key of the agents' cached ``next_timeout()``. Shared, because an
    agent's deadline also depends on the other checklists of its session (the pacer, foundation freezing)."""


@dataclass
class IceAgent:
    controlling: bool
    config: AgentConfig = field(default_factory=AgentConfig)
    pacer: Pacer = field(default_factory=Pacer)
    ufrag: str = ""
    pwd: str = ""
    tie_breaker: int = 0
    # Credentials, tie-breaker and transaction IDs must not be predictable from what is seen on the wire
    # (RFC 8445 §5.3, RFC 8489 §6): the OS CSPRNG by default; tests pass a seeded Random for reproducibility.
    rng: random.Random = field(default_factory=random.SystemRandom)
    stats: Counter[str] = field(default_factory=Counter)
    """What happened, counted: checks sent and retransmitted, responses, failed pairs, triggered checks,
    nominations, consent, data (see :data:`COUNTERS`), and anything the network did wrong."""
    pair_stats: dict[str, Counter[str]] = field(default_factory=dict)
    """The same counters per candidate pair, keyed ``"local-type local-addr -> remote-type remote-addr"``."""

    def __post_init__(self) -> None:
        if self.config.lite:
            self.controlling = False
        self.ufrag = self.ufrag or _token(self.rng, 8)
        self.pwd = self.pwd or _token(self.rng, 24)
        self.tie_breaker = self.tie_breaker or self.rng.getrandbits(64)
        self._key = IntegrityKey(self.pwd.encode())
        self._random_pool = bytearray(self.rng.randbytes(384))
        self._encoded_checks: dict[tuple[int, bool, int, bool], bytes] = {}
        self._encoded_users: dict[str, bytes] = {}
        self._check_timers: dict[float, RetransmissionConfig] = {}
        self.remote_ufrag: str | None = None
        self._remote_key: IntegrityKey | None = None
        self.remote_lite = False
        self.local_candidates: list[Candidate] = []
        self._bases: dict[Address, Candidate] = {}
        self._components: list[int] | None = None
        """:attr:`components`, worked out again after a base is added or removed (None: not yet)."""
        self.remote_candidates: list[Candidate] = []
        self.remote_end_of_candidates = False
        self.pairs: list[Pair] = []
        self._pairs_by_key: dict[tuple[Address, Address], Pair] = {}
        self._triggered: deque[Pair] = deque()
        self._deferred: dict[int, tuple[Pair, float]] = {}
        """Triggered checks waiting for the answer to the pair's own check in flight (``triggered_grace``)."""
        self._checks: dict[bytes, _Check] = {}
        self._transmits: deque[Transmit] = deque()
        self._events: deque[Event] = deque()
        self.state = AgentState.NEW
        self.selected_pairs: dict[int, Pair] = {}
        """Component ID -> the pair data flows on (RFC 8445 §8.1.2)."""
        self._started = False
        self._gathering = 0
        self._gathering_final = False
        self._gathering_done_sent = False
        self._consent_at: float | None = None
        self._consent_ok_at = 0.0
        self._consent_lost = False
        self._first_valid_at: float | None = None
        self._early_checks: list[tuple[Address, Address, int, bool]] = []
        self._restarting = False
        self._start_pending = False
        self._previous: _Generation | None = None
        self._nominated: set[int] = set()
        """Components whose nomination (regular) is on its way or done."""
        self._rejected = 0
        """Checks the peer answered with 401 Unauthorized (this generation): the reason ICE fails, if it does."""
        self._last_check_rx: float | None = None
        """When the peer's last authenticated check arrived (the controlled side's nomination deadline)."""
        self.failure_reason: str | None = None
        """Why the agent last went to FAILED (also in that StateChanged event); None while it has not."""
        self._tcp: TcpState[Pair] = TcpState()
        """ICE-TCP (RFC 6544): TCP bases, TCP pairs, connections (see the ICE-TCP section below)."""
        self._deadline: tuple[int, float | None] = (-1, None)
        """``next_timeout()`` as computed when ``pacer.changes`` had this value (see :meth:`next_timeout`)."""

    # ================================================================================================ setup

    def add_host_candidate(self, local: Address, local_preference: int | None = None, component: int = 1
                           ) -> Candidate:
        """A host candidate on a socket the caller owns (RFC 8445 §5.1.1.1), for ``component`` (1 = RTP, 2 = RTCP,
        ...). Distinct local preferences keep priorities unique on multi-homed hosts (§5.1.2.1)."""
        self.pacer.changes += 1
        if local in self._bases:
            return self._bases[local]
        same = sum(1 for c in self._bases.values() if c.component == component)
        pref = local_preference if local_preference is not None else 65535 - same
        cand = Candidate(foundation(CandidateType.HOST, local[0]), component, "udp",
                         candidate_priority(CandidateType.HOST, pref, component), local[0], local[1],
                         CandidateType.HOST)
        self._bases[local] = cand
        self._components = None
        self._add_local(cand)
        self._pair_late_local(cand, local)
        return cand

    def _pair_late_local(self, cand: Candidate, base: Address) -> None:
        """Trickle ICE (RFC 8838 §10): a local candidate gathered after remote ones pairs with them at once; the
        new pairs are unfrozen on the next ``handle_timeout`` (due immediately: this call has no ``now``)."""
        added = [self._add_pair(cand, base, remote) for remote in self.remote_candidates]
        if any(p is not None for p in added) and self._remote_key is not None:
            self._start_pending = True

    def add_relayed_candidate(self, relayed: Address, mapped: Address | None = None, server_ip: str | None = None,
                              component: int = 1) -> Candidate:
        """A relayed candidate (RFC 8445 §5.1.1.2), the hook for a TURN client: the relayed transport address is
        its own base, so its pairs' transmits carry ``local=relayed`` and the caller sends them through the
        allocation (Send indication or ChannelData); what the relay delivers comes back through
        ``handle_datagram(now, relayed, peer, data)``. ``mapped`` (the allocation's XOR-MAPPED-ADDRESS) becomes
        raddr/rport."""
        self.pacer.changes += 1
        if relayed in self._bases:
            return self._bases[relayed]
        same = sum(1 for c in self._bases.values() if c.component == component)
        cand = Candidate(foundation(CandidateType.RELAYED, relayed[0], server_ip or relayed[0]), component, "udp",
                         candidate_priority(CandidateType.RELAYED, 65535 - same, component), relayed[0], relayed[1],
                         CandidateType.RELAYED, related=mapped)
        self._bases[relayed] = cand
        self._components = None
        self._add_local(cand)
        self._pair_late_local(cand, relayed)
        return cand

    def gather_server_reflexive(self, now: float, local: Address, server: Address) -> None:
        """Ask ``server`` for this base's mapping; a srflx candidate follows (RFC 8445 §5.1.1.2)."""
        self.pacer.changes += 1
        msg = Message(Method.BINDING, MessageClass.REQUEST, self._tid())
        cfg = RetransmissionConfig(rto=self.config.gather_rto, rc=self.config.gather_max_sends,
                                   rm=2)
        tx = ClientTransaction(msg.encode(fingerprint=True), msg.transaction_id, server, now, cfg)
        deadline = now + self.config.gather_timeout if self.config.gather_timeout is not None else None
        check = self._checks[msg.transaction_id] = _Check(None, tx, local, purpose="gather", server=server,
                                                          deadline=deadline)
        self._gathering += 1
        self._pump(tx, local, now, check)

    def stun_server_unreachable(self, now: float, local: Address, server: Address, reason: str) -> bool:
        """The caller learnt that ``server`` cannot be reached from ``local`` (an ICMP port or host unreachable
        on that socket): end its server-reflexive request now (reported as :class:`StunServerUnreachable`)
        instead of retransmitting for the whole schedule. False when no such request is pending."""
        self.pacer.changes += 1
        for tid, check in list(self._checks.items()):
            if check.purpose == "gather" and check.local == local and check.server == server:
                del self._checks[tid]
                self._gather_failed(check, reason)
                return True
        return False

    def _gather_failed(self, check: _Check, reason: str) -> None:
        assert check.server is not None
        self.stats["gather-failed"] += 1
        self._events.append(StunServerUnreachable(check.server, check.local, reason))
        self._gathering -= 1
        self._maybe_gathering_complete()

    def end_of_local_candidates(self) -> None:
        """The caller will add no more host candidates or servers: GatheringComplete follows once pending
        server-reflexive requests end."""
        self.pacer.changes += 1
        self._gathering_final = True
        self._maybe_gathering_complete()

    def set_remote_credentials(self, now: float, ufrag: str, pwd: str, lite: bool = False) -> None:
        """The peer's ice-ufrag/ice-pwd (and whether it is ICE-lite); checks start once there are pairs."""
        self.pacer.changes += 1
        self.remote_ufrag = ufrag
        self._remote_key = IntegrityKey(pwd.encode())
        self.remote_lite = lite
        if lite and not self.config.lite and not self.controlling:
            self._switch_role(True)  # RFC 8445 §6.1.1: a full agent facing a lite one is controlling
        early, self._early_checks = self._early_checks, []
        for local, remote, priority, use in early:
            self._learn_check(now, local, remote, priority, use)
        self._tcp_replay_early(now)
        self._start_if_ready(now)

    def add_remote_candidate(self, now: float, candidate: Candidate | None) -> None:
        """A remote candidate (trickled or not); ``None`` signals end-of-candidates (RFC 8838 §11)."""
        self.pacer.changes += 1
        if candidate is None:
            self.remote_end_of_candidates = True
            self._check_failed()
            return
        if not self._transport_allowed(candidate) or candidate.component not in self.components:
            self.stats["remote-candidate-ignored"] += 1
            return
        if not _is_ip(candidate.host):
            # An mDNS name (RFC 8839 §5.1, "<uuid>.local") or other FQDN: this core does no name resolution; the
            # application resolves it and adds the candidate with the address.
            self.stats["remote-candidate-not-an-ip"] += 1
            return
        known = next((c for c in self.remote_candidates if c.address == candidate.address
                      and c.transport == candidate.transport), None)
        if known is not None:
            if known.type is CandidateType.PEER_REFLEXIVE and candidate.type is not CandidateType.PEER_REFLEXIVE \
                    and known.component == candidate.component:
                self._signalled_prflx(known, candidate)
            return
        self.remote_candidates.append(candidate)
        for base, local in [*self._bases.items(), *self._tcp.bases.items()]:
            self._add_pair(local, base, candidate)
        self._start_if_ready(now)

    def _signalled_prflx(self, learned: Candidate, signalled: Candidate) -> None:
        """A check from the peer arrived before signalling delivered the candidate it came from, so the agent
        learned it as peer-reflexive (RFC 8445 §7.3.1.3); now signalling delivers it with its true type, foundation
        and priority. It is the same candidate: its pairs keep their states and take the signalled description
        (and the priority it gives, §6.1.2.3), and a selected pair on it is reported again with its real type
        (libnice does the same)."""
        self.remote_candidates[self.remote_candidates.index(learned)] = signalled
        self.stats["remote-prflx-signalled"] += 1
        touched = {id(p): p for p in self.pairs if p.remote is learned}
        touched.update({id(p.valid_pair): p.valid_pair for p in self.pairs
                        if p.valid_pair is not None and p.valid_pair.remote is learned})
        for pair in touched.values():
            pair.remote = signalled
            g, d = (pair.local.priority, signalled.priority) if self.controlling else \
                (signalled.priority, pair.local.priority)
            pair.priority = pair_priority(g, d)
        self.pairs.sort(key=lambda p: -p.priority)
        for component, pair in self.selected_pairs.items():
            if id(pair) in touched:
                self._events.append(SelectedPairChanged(pair.local, pair.remote, pair.base, component))

    # ============================================================================================== checks

    def _add_local(self, cand: Candidate) -> None:
        self.local_candidates.append(cand)
        self._events.append(CandidateGathered(cand))
        if not self.config.lite:  # its checks' attributes, ready before the peer's candidates arrive
            for use in (False, True) if self.controlling else (False,):
                self._check_attributes(_prflx_priority(cand), use)

    def _add_pair(self, local: Candidate, base: Address, remote: Candidate, state: PairState = PairState.FROZEN,
                  learned: bool = False) -> Pair | None:
        if (":" in base[0]) != (":" in remote.host) or local.component != remote.component:
            return None  # address families or components differ (RFC 8445 §6.1.2.2)
        if not tcp_pairable(local, remote):
            return None  # RFC 6544 §6.2: same transport, matching tcptypes
        if not learned and TcpType.of(local) is TcpType.PASSIVE:
            self._tcp.pruned += 1  # RFC 6544 §6.2: no checks from a passive candidate; the peer connects to it
            return None
        index = self._tcp.pairs if local.transport == "tcp" else self._pairs_by_key
        key = (base, remote.address)
        if key in index:
            return index[key]
        g, d = (local.priority, remote.priority) if self.controlling else (remote.priority, local.priority)
        priority = pair_priority(g, d)
        if len(self.pairs) >= self.config.max_pairs:
            # RFC 8445 §6.1.2.5: keep the highest-priority pairs; only a pair not yet checked can make room.
            busy = {id(c.pair) for c in self._checks.values()} | {id(p) for p in self._triggered}
            unchecked = [p for p in self.pairs if p.state in (PairState.FROZEN, PairState.WAITING)
                         and id(p) not in busy]
            worst = min(unchecked, key=lambda p: p.priority, default=None)
            self.stats["pairs-over-limit"] += 1
            if worst is None or worst.priority >= priority:
                return None
            self.pairs.remove(worst)
            (self._tcp.pairs if worst.local.transport == "tcp" else self._pairs_by_key).pop(worst.key, None)
        pair = Pair(local, base, remote, priority, state)
        self.pairs.append(pair)
        self.pairs.sort(key=lambda p: -p.priority)
        index[key] = pair
        return pair

    def _start_if_ready(self, now: float) -> None:
        if self._remote_key is None or not self.pairs or self.state is AgentState.CLOSED:
            return
        if self.state is AgentState.FAILED and self.controlling and self._nominated and not self._restarting:
            # Consent was lost on a pair this agent nominated: nominating another within the session is not allowed
            # (RFC 8445 §8.1.1), so checks could never lead anywhere; only an ICE restart (§9) recovers. Staying
            # FAILED says so, instead of checking pairs no nomination can follow.
            self.stats["late-pair-after-nomination"] += 1
            return
        if self.state in (AgentState.NEW, AgentState.FAILED):
            # FAILED is not a dead end: a peer-reflexive pair from the peer's check (RFC 8445 §7.3.1.4) or a
            # candidate gathered late (a TURN allocation) is checked again.
            self._set_state(AgentState.CHECKING)
        # RFC 8445 §6.1.2.6: per foundation, across the whole checklist set, one pair becomes Waiting (the first
        # checklist's highest-priority one): a foundation already being checked in another stream stays frozen here.
        seen = {p.foundation for p in self._checklist_set() if p.state is not PairState.FROZEN}
        for p in self.pairs:
            if p.state is PairState.FROZEN and p.foundation not in seen:
                self._set_pair(p, PairState.WAITING)
                seen.add(p.foundation)
        if self.config.lite:
            return
        if not self._started:
            self._started = True
            if self.pacer.next_at is None or self.pacer.next_at < now:
                self.pacer.next_at = now  # the first check goes at once (unless another stream just sent one)
            self._paced_check(now)  # the rest of handle_timeout's work is due at its own deadlines

    def _set_pair(self, pair: Pair, state: PairState) -> None:
        if pair.state is not state:
            pair.state = state
            if state is PairState.FAILED:
                self._count(pair, "pairs-failed")
            elif state is PairState.SUCCEEDED:
                self._count(pair, "pairs-succeeded")
            self._events.append(PairStateChanged(pair.local, pair.remote, state))

    def _set_state(self, state: AgentState, reason: str | None = None) -> None:
        if state is self.state:
            return
        if state not in AGENT_TRANSITIONS[self.state]:
            return
        self.state = state
        if state is AgentState.FAILED:
            self.failure_reason = reason
        self._events.append(StateChanged(state, reason))

    def _request(self, pair: Pair, nominating: bool, generation: _Generation | None = None) -> tuple[bytes, bytes]:
        """A check on ``pair`` (RFC 8445 §7.1.1 PRIORITY, §7.1.2 USE-CANDIDATE, §7.1.3 the role, §7.2.2 short-term
        credentials), signed with the remote password and fingerprinted: its transaction ID and its bytes."""
        remote_ufrag, ufrag, key = ((generation.remote_ufrag, generation.local_ufrag, generation.remote_key)
                                    if generation is not None else (self.remote_ufrag, self.ufrag, self._remote_key))
        assert remote_ufrag is not None and key is not None
        use = self.controlling and (nominating or self.config.nomination is Nomination.AGGRESSIVE)
        username = f"{remote_ufrag}:{ufrag}"
        user = self._encoded_users.get(username)
        if user is None:
            user = self._encoded_users[username] = _bounded(self._encoded_users, Username(username).tlv(b""))
        tid = self._tid()
        body = user + self._check_attributes(_prflx_priority(pair.local), use)
        return tid, encode_parts(Method.BINDING, MessageClass.REQUEST, tid, body, key, fingerprint=True)

    def _check_attributes(self, priority: int, use: bool) -> bytes:
        """A check's attributes after USERNAME, encoded (none depends on the transaction ID): PRIORITY, the role
        with the tie-breaker, USE-CANDIDATE when nominating, SOFTWARE. An agent sends the same few sets again and
        again (checks, retransmissions, nominations, consent): each is encoded once, those of a local candidate
        when it is gathered (:meth:`_add_local`), before any check waits for them."""
        key = (priority, self.controlling, self.tie_breaker, use)
        body = self._encoded_checks.get(key)
        if body is None:
            attrs: list[Attribute] = [Priority(priority), IceControlling(self.tie_breaker) if self.controlling
                                      else IceControlled(self.tie_breaker)]
            if use:
                attrs.append(UseCandidate())
            if self.config.software:
                attrs.append(Software(self.config.software))
            body = self._encoded_checks[key] = _bounded(self._encoded_checks, b"".join([a.tlv(b"") for a in attrs]))
        return body

    def _send_check(self, now: float, pair: Pair, nominating: bool = False) -> None:
        assert self._remote_key is not None
        tid, data = self._request(pair, nominating)
        n = max(1, sum(1 for p in self.pairs if p.state in (PairState.WAITING, PairState.IN_PROGRESS)))
        rto = max(self.config.check_rto, n * self.config.ta)  # RFC 8445 §14.3
        cfg = self._check_timers.get(rto)
        if cfg is None:  # one per distinct RTO (it follows the number of pairs in the checklist)
            cfg = self._check_timers[rto] = RetransmissionConfig(rto=rto, rc=self.config.check_max_sends, rm=16)
        tx = ClientTransaction(data, tid, pair.remote.address, now, cfg, key=self._remote_key)
        use = nominating or (self.controlling and self.config.nomination is Nomination.AGGRESSIVE)  # as _request
        check = _Check(pair, tx, pair.base, use, controlling=self.controlling)
        self._checks[tid] = check
        if pair.first_check_at is None:
            pair.first_check_at = now
        self._set_pair(pair, PairState.IN_PROGRESS)
        self._pump(tx, pair.base, now, check)

    def _pump(self, tx: ClientTransaction, local: Address, now: float | None = None, check: _Check | None = None
              ) -> None:
        """Queue what ``tx`` has to send; with ``now``, first let it queue the sends due by then (a new
        transaction's first request goes out at once). ``check`` counts the sends."""
        if now is not None:
            tx.handle_timeout(now)
        if check is not None and check.pair is not None and check.pair.local.transport == "tcp":
            self._tcp_pump(tx, check, now)
            return
        while (out := tx.poll_transmit()) is not None:
            self._transmits.append(Transmit(out.remote, out.data, local))
            if check is not None:
                check.sends += 1
                what = _SENT[check.purpose][check.sends > 1]
                self._count(check.pair, what)
                if check.nominating and check.sends == 1:
                    self._count(check.pair, "nominations-sent")

    def _count(self, pair: Pair | None, what: str, n: int = 1) -> None:
        """Count ``what`` for the agent and, given a pair, for that pair too (``get``: a Counter's missing key is
        a Python-level call, and most counts here are a key's first)."""
        stats = self.stats
        stats[what] = stats.get(what, 0) + n
        if pair is not None:
            counters = pair.counters
            if counters is None:
                counters = pair.counters = self.pair_stats.setdefault(pair_text(pair.local, pair.remote), Counter())
            counters[what] = counters.get(what, 0) + n

    def _checklist_set(self) -> Iterator[Pair]:
        for agent in self.pacer.checklists or [self]:
            yield from agent.pairs

    def _ordinary_candidate(self) -> Pair | None:
        """The pair the next ordinary check goes to (RFC 8445 §6.1.4.2): the highest-priority Waiting one, else a
        Frozen one whose foundation no *other* checklist of the set is checking (Waiting or In-Progress). Within
        one checklist a frozen pair is checked once nothing waits, without waiting for its foundation's other
        pairs to fail (39.5 s): two sockets on one IP share a foundation, yet one may work and the other not."""
        frozen = None
        for p in self.pairs:
            if p.state is PairState.WAITING:
                return p
            if frozen is None and p.state is PairState.FROZEN:
                frozen = p
        if frozen is None or not self.pacer.checklists:
            return frozen
        busy = {p.foundation for agent in self.pacer.checklists if agent is not self for p in agent.pairs
                if p.state in (PairState.WAITING, PairState.IN_PROGRESS)}
        return next((p for p in self.pairs if p.state is PairState.FROZEN and p.foundation not in busy), None)

    def _has_ordinary(self) -> bool:
        """Whether a paced check is due (no side effects: :meth:`_next_ordinary` pops the triggered queue)."""
        return bool(self._triggered and self.config.pace_triggered) or self._ordinary_candidate() is not None

    def _next_ordinary(self) -> Pair | None:
        if self._triggered and self.config.pace_triggered:
            return self._triggered.popleft()
        return self._ordinary_candidate()

    # ========================================================================================= timers

    def next_timeout(self) -> float | None:
        """When :meth:`handle_timeout` is due next (None: nothing is). Computed once per change: every call that
        can move a deadline bumps ``pacer.changes``, and until then the last answer stands (a driver asks after
        every datagram it sends, and ``send`` moves none)."""
        changes, at = self._deadline
        if changes == self.pacer.changes:
            return at
        at = self._next_timeout()
        self._deadline = (self.pacer.changes, at)
        return at

    def _next_timeout(self) -> float | None:
        if self.state is AgentState.CLOSED:
            return None
        times: list[float] = []
        for c in self._checks.values():  # a loop, not generators: this runs after every change
            t = c.tx.next_timeout()
            if t is not None:
                times.append(t)
            if c.deadline is not None:
                times.append(c.deadline)
        at = self.pacer.next_at
        if (self._started and at is not None and not self.config.lite
                and self.state in (AgentState.CHECKING, AgentState.CONNECTED, AgentState.COMPLETED)
                and self._has_ordinary()):
            times.append(at)  # the same gate as handle_timeout, or the caller would spin on a past deadline
        if self._consent_at is not None:
            times.append(self._consent_at)
        for _, due in self._deferred.values():
            times.append(due)
        if self._start_pending:
            times.append(0.0)  # due at once: pairs made by a late local candidate wait to be unfrozen
        nominate_at = self._nomination_at()
        if nominate_at is not None:
            times.append(nominate_at)
        nomination_deadline = self._nomination_deadline()
        if nomination_deadline is not None:
            times.append(nomination_deadline)
        if self._tcp.conns:
            times.extend(self._tcp_deadlines())
        return min(times) if times else None

    def _nomination_deadline(self) -> float | None:
        """Controlled side: when to give up waiting for a nomination (``AgentConfig.nomination_timeout``)."""
        timeout = self.config.nomination_timeout
        if (timeout is None or self.controlling or self.config.lite or self._first_valid_at is None
                or self.state is not AgentState.CHECKING or (self.selected_pairs and not self._restarting)):
            return None
        return max(self._first_valid_at, self._last_check_rx or 0.0) + timeout

    def handle_timeout(self, now: float) -> None:
        self.pacer.changes += 1
        if self.state is AgentState.CLOSED:
            return
        if self._start_pending:
            self._start_pending = False
            self._start_if_ready(now)
        for tid, check in list(self._checks.items()):
            if self._checks.get(tid) is not check:
                continue  # ended by one before it in this pass (a failed restart ends the old consent checks)
            timed_out = check.tx.handle_timeout(now)
            if check.cancelled:
                while check.tx.poll_transmit() is not None:
                    pass
            else:
                self._pump(check.tx, check.local, check=check)
            if timed_out is not None:
                del self._checks[tid]
                self._check_timed_out(now, check)
            elif check.deadline is not None and now >= check.deadline and tid in self._checks:
                del self._checks[tid]
                self._gather_failed(check, f"no response within {self.config.gather_timeout:g} s "
                                           f"({len(check.tx.sent_at)} requests; AgentConfig.gather_timeout)")
        for waiting, due in list(self._deferred.values()):
            if now >= due:
                self._deferred.pop(id(waiting), None)
                if waiting.state is PairState.IN_PROGRESS and any(p is waiting for p in self.pairs):
                    self._trigger(now, waiting)  # its own check is still unanswered: trigger now
        self._paced_check(now)
        if self._consent_at is not None and now >= self._consent_at:
            self._consent_check(now)
        self._tcp_handle_timeout(now)
        deadline = self._nomination_deadline()
        if deadline is not None and now >= deadline:
            self.stats["nomination-timeout"] += 1
            self._set_state(AgentState.FAILED, (
                f"no nomination from the controlling agent within {self.config.nomination_timeout:g} s of a valid "
                f"pair and its last check (AgentConfig.nomination_timeout): the peer has probably given up; "
                f"its error says why (is our password right on its side?)"))
        self._maybe_nominate(now)
        self._maybe_completed()

    def _paced_check(self, now: float) -> None:
        """The next ordinary check, when one Ta has passed since the last (RFC 8445 §6.1.4.2, §14.2)."""
        at = self.pacer.next_at
        if (self._started and at is not None and now >= at and not self.config.lite
                and self.state in (AgentState.CHECKING, AgentState.CONNECTED, AgentState.COMPLETED)):
            pair = self._next_ordinary()
            if pair is not None:
                # A nomination queued with pace_triggered keeps its USE-CANDIDATE (RFC 8445 §8.1.1).
                self._send_check(now, pair, nominating=self.controlling and pair.nominated)
                self.pacer.next_at = now + self.config.ta

    def _check_timed_out(self, now: float, check: _Check) -> None:
        if check.purpose == "gather":
            sent = check.tx.sent_at
            span = now - sent[0] if sent else 0.0
            self._gather_failed(check, f"no response to {len(sent)} requests in {span:.1f} s")
            return
        if check.purpose == "consent":
            return
        pair = check.pair
        assert pair is not None
        component = pair.local.component
        if check.nominating and not check.cancelled and (self._restarting or component not in self.selected_pairs):
            # The nomination went unanswered for its whole schedule: the path broke after its check succeeded.
            # The pair (and the valid pair it made) is no longer valid, so the next nomination picks another one
            # and retries are bounded by the number of pairs.
            for broken in (pair, pair.valid_pair):
                if broken is not None:
                    broken.valid = broken.nominated = False
                    self._set_pair(broken, PairState.FAILED)
            self._nominated.discard(component)
        if not pair.valid and not any(c.pair is pair for c in self._checks.values()):
            self._set_pair(pair, PairState.FAILED)
        self._check_failed()

    def _check_failed(self) -> None:
        """RFC 8445 §8.1.2 with trickle ICE (RFC 8838 §8): ICE fails once no more candidates can come from either
        side (local gathering done, remote end-of-candidates) and every pair failed, or there are no pairs."""
        if (self.selected_pairs and not self._restarting) or not self.remote_end_of_candidates \
                or not self._gathering_done_sent or self._tcp.pruned:
            return
        if self.state not in (AgentState.NEW, AgentState.CHECKING):
            return
        if all(p.state is PairState.FAILED for p in self.pairs) and not any(
                c.purpose == "check" for c in self._checks.values()):
            if self._restarting:  # a restart whose every new pair failed: the old generation ends with it
                self._consent_at = None
                self._previous = None
                self._checks = {t: c for t, c in self._checks.items() if c.purpose != "consent"}
            self._set_state(AgentState.FAILED, self._failure_text())

    def _failure_text(self) -> str:
        """The likely cause of every pair failing, in one sentence (RFC 8445 §7.2.5.2.4: the error that failed
        a pair can say why)."""
        if self._rejected:
            return (f"the peer rejected our credentials (401 Unauthorized to {self._rejected} check"
                    f"{'s' if self._rejected != 1 else ''}): is the remote password right?")
        if not self.pairs:
            return "no candidate pairs: no remote candidate matches a local one (address family, component)"
        return f"no candidate pair worked: all {len(self.pairs)} pairs failed (checks unanswered or refused)"

    def _maybe_gathering_complete(self) -> None:
        if self._gathering_final and self._gathering == 0 and not self._gathering_done_sent:
            self._gathering_done_sent = True
            self._events.append(GatheringComplete())
            self._check_failed()

    # ======================================================================================== nomination

    def _maybe_nominate(self, now: float) -> None:
        """RFC 8445 §8.1.1, regular nomination, per component: nominate the best valid pair once no better pair can
        still be expected to succeed (better pairs not yet checked, or checked less than ``nomination_wait`` ago)."""
        if not self.controlling or self.config.nomination is Nomination.AGGRESSIVE or self._first_valid_at is None:
            return  # (no valid pair yet: nothing to nominate)
        for component, pairs, best in self._to_nominate():
            if any(self._may_still_win(now, p, best) for p in self._contenders(pairs, best)):
                continue
            self._nominated.add(component)
            if self.config.pace_triggered:
                self._triggered.append(best)
                best.nominated = True
            else:
                self._send_check(now, best, nominating=True)

    def _to_nominate(self) -> Iterator[tuple[int, list[Pair], Pair]]:
        """(component, its pairs, its best valid pair) for each component with a valid pair but no nomination."""
        for component in self.components:
            if component in self._nominated:
                continue
            pairs = [p for p in self.pairs if p.local.component == component]
            valid = [p for p in pairs if p.valid]
            if valid:  # a direct valid pair beats a relayed one whatever their priorities (see _relayed)
                yield component, pairs, max(valid, key=lambda p: (not self._relayed(p), p.priority))

    def _contenders(self, pairs: list[Pair], best: Pair) -> list[Pair]:
        """Pairs not yet done that would be nominated instead of ``best`` if they succeeded: higher-priority ones,
        and, when ``best`` is relayed, every direct one."""
        relayed = self._relayed(best)
        return [p for p in pairs if p.state not in (PairState.FAILED, PairState.SUCCEEDED)
                and (p.priority > best.priority or (relayed and not self._relayed(p)))]

    def _may_still_win(self, now: float, p: Pair, best: Pair) -> bool:
        if p.state in (PairState.FROZEN, PairState.WAITING):
            return True
        return p.first_check_at is not None and now < self._give_up_at(p, best)

    def _give_up_at(self, p: Pair, best: Pair) -> float:
        """When in-progress pair ``p`` stops holding back the nomination of ``best`` (one expression for the check
        and the deadline, or float rounding could leave a past deadline that never fires its nomination)."""
        assert p.first_check_at is not None
        return p.first_check_at + self._wait(p, best)

    def _wait(self, p: Pair, best: Pair) -> float:
        direct_vs_relay = self._relayed(best) and not self._relayed(p)
        return self.config.relay_nomination_wait if direct_vs_relay else self.config.nomination_wait

    def _relayed(self, pair: Pair) -> bool:
        """Does the pair go through a TURN relay? Its candidates say so, or its remote is a peer-reflexive address
        on the IP of one of the peer's relayed candidates: the peer's relay reached us through a NAT that rewrote
        its source port (Linux does on a conntrack clash), and RFC 8445 gives such a candidate prflx priority. The
        nomination policy (§8.1.1 leaves it to the controlling agent) treats it as the relay it is."""
        relay = CandidateType.RELAYED
        if relay in (pair.local.type, pair.remote.type):
            return True
        return pair.remote.type is CandidateType.PEER_REFLEXIVE and any(
            c.type is relay and c.host == pair.remote.host for c in self.remote_candidates)

    def _nomination_at(self) -> float | None:
        """When regular nomination becomes due on its own: the moment the last better pair still in progress has
        waited ``nomination_wait`` (or ``relay_nomination_wait``). None when nothing waits on a clock (no valid
        pair yet, or a better pair not yet checked, whose check is itself a paced event)."""
        if not self.controlling or self.config.nomination is Nomination.AGGRESSIVE or self.config.lite \
                or self._first_valid_at is None:
            return None  # (no valid pair yet: nothing to wait for)
        due: float | None = None
        for _, pairs, best in self._to_nominate():
            better = self._contenders(pairs, best)
            if any(p.state is not PairState.IN_PROGRESS or p.first_check_at is None for p in better):
                continue
            if not better:
                continue  # nominated at once by the event that made ``best`` valid
            at = max(self._give_up_at(p, best) for p in better)
            due = at if due is None else min(due, at)
        return due

    @property
    def bases(self) -> list[Address]:
        """The local transport addresses candidates are gathered on: host and relayed bases (RFC 8445 §5.1.1)."""
        return list(self._bases)

    @property
    def components(self) -> list[int]:
        """The components this agent has candidates for (a list the agent keeps: read it, do not change it)."""
        if self._components is None:
            self._components = sorted({c.component for c in [*self._bases.values(), *self._tcp.bases.values()]}) \
                or [1]
        return self._components

    @property
    def selected(self) -> Pair | None:
        """The selected pair of the first component (most applications have one)."""
        return self.selected_pairs.get(self.components[0])

    def valid_pair_types(self) -> set[tuple[str, str]]:
        """The (local, remote) candidate type names (``host``, ``srflx``, ...) of the valid pairs. A checked pair
        whose successful check produced another valid pair (RFC 8445 §7.2.5.3.1, e.g. the srflx pair a host base
        behind a NAT yields) counts as the pair it produced, not as itself."""
        return {(p.local.type.value, p.remote.type.value) for p in self.pairs
                if p.valid and (p.valid_pair is None or p.valid_pair is p)}

    def _maybe_completed(self) -> None:
        """RFC 8445 §6.1.3 / §8.1.2: completed once every component has its pair and no check is left to run."""
        if self.state is not AgentState.CONNECTED:
            return
        busy = (PairState.FROZEN, PairState.WAITING, PairState.IN_PROGRESS)
        if self.controlling and len(self._nominated) < len(self.components) and \
                self.config.nomination is Nomination.REGULAR:
            return
        for c in self._checks.values():  # loops, not generators: this runs after every datagram once connected
            if c.purpose == "check":
                return
        for p in self.pairs:
            if p.state in busy:
                return
        self._set_state(AgentState.COMPLETED)

    def _select(self, now: float, pair: Pair) -> None:
        component = pair.local.component
        current = self.selected_pairs.get(component)
        if current is pair:
            return
        if (current is not None and not self._restarting and current.priority > pair.priority
                and now - self._consent_ok_at < self.config.consent_interval):
            # RFC 8445 §8.1.1: of several nominated pairs (aggressive nomination) the highest-priority one is
            # selected. A later, lower nomination while consent on the current pair has stopped succeeding is the
            # controlling side recovering from a pair that broke: follow it.
            return
        if self._restarting:
            self.selected_pairs.clear()  # the first new pair replaces the pre-restart ones (RFC 8445 §9)
            self._restarting = False
            self._previous = None
        self.selected_pairs[component] = pair
        self._events.append(SelectedPairChanged(pair.local, pair.remote, pair.base, component))
        if self.state is AgentState.FAILED:
            self._set_state(AgentState.CHECKING)  # a new pair after consent loss or failure: the way back up
        if all(c in self.selected_pairs for c in self.components):
            self._set_state(AgentState.CONNECTED)
            self._consent_lost = False  # consent is fresh on the newly selected pairs
            self._consent_ok_at = now
            self._schedule_consent(now)

    # ========================================================================================= datagrams

    def handle_datagram(self, now: float, local: Address, remote: Address, data: bytes) -> None:
        """Feed one datagram received on ``local`` from ``remote``: a STUN check, a response, or data."""
        if self.state is AgentState.CLOSED:
            return
        if not is_stun(data):
            self._data(local, remote, data)  # moves no deadline
            return
        self.pacer.changes += 1
        if data[1] == 1 and data[0] == 0 and self._key.c is not None and not self._restarting \
                and self._tcp.rx is None:
            # A Binding request: the common check is verified and read in one pass (ice_check); anything else
            # (a wrong password, an unknown attribute, malformed framing) goes the general way below.
            fields = ice_check(data, f"{self.ufrag}:".encode(), self._key.c, remote)
            if fields is not None:
                self._on_check(now, local, remote, *fields)
                self._maybe_nominate(now)
                self._maybe_completed()
                return
        elif data[1] == 1 and data[0] == 1 and self._remote_key is not None and self._tcp.rx is None:
            # A success response: to one of our checks, the common one is verified and read in one pass too.
            tid = data[8:20]
            check = self._checks.get(tid)
            if check is not None and check.purpose == "check" and check.pair is not None:
                mapped = ice_answer(data, self._remote_key.c)
                if mapped is not None:
                    del self._checks[tid]
                    self._check_succeeded(now, local, remote, check, check.pair, mapped)
                    self._maybe_nominate(now)
                    self._maybe_completed()
                    return
        try:
            msg = parse(data)
        except StunParseError:
            self.stats["malformed"] += 1
            return
        try:
            if msg.message_class is MessageClass.REQUEST and msg.method == Method.BINDING:
                self._on_request(now, local, remote, msg)
            elif msg.message_class in (MessageClass.SUCCESS, MessageClass.ERROR):
                self._on_response(now, local, remote, msg)
            else:
                self.stats["stun-ignored"] += 1
        except StunParseError:
            self.stats["malformed-attribute"] += 1
        self._maybe_nominate(now)
        self._maybe_completed()

    def _data(self, local: Address, remote: Address, data: bytes) -> None:
        base = self._bases.get(local)
        component = base.component if base is not None else 1
        if (any(p.key == (local, remote) and p.valid for p in self.pairs)
                or any(p.key == (local, remote) for p in self.selected_pairs.values())
                or any(c.address == remote for c in self.remote_candidates)):  # early data from a known address
            self._events.append(DataReceived(data, local, remote, component))
            selected = self.selected_pairs.get(component)
            pair = selected if selected is not None and selected.key == (local, remote) else None
            self._count(pair, "data-received")
            self._count(pair, "data-bytes-received", len(data))
        else:
            self.stats["data-from-unknown"] += 1

    def _respond(self, local: Address, remote: Address, tid: bytes, attrs: list[Attribute],
                 cls: MessageClass = MessageClass.SUCCESS, sign: bool = True) -> None:
        """Answer the request ``tid``; ``sign=False`` for 400/401 to an unauthenticated request: no
        MESSAGE-INTEGRITY (RFC 8489 §9.1.3)."""
        body = b"".join([a.tlv(tid) for a in attrs])
        data = encode_parts(Method.BINDING, cls, tid, body, self._key if sign else None, fingerprint=True)
        self._emit(Transmit(remote, data, local))

    def _on_request(self, now: float, local: Address, remote: Address, req: Message) -> None:
        # RFC 8445 §7.3: short-term credentials; USERNAME is "our ufrag:their ufrag".
        tid = req.transaction_id
        user = req.get(Username)
        if user is None or not req.has_integrity:
            self.stats["check-unauthenticated"] += 1
            self._respond(local, remote, tid, [ErrorCode(400, "Bad Request")], MessageClass.ERROR, sign=False)
            return
        old = self._previous if self._restarting else None
        if old is not None and user.text.startswith(old.local_ufrag + ":") and req.check_integrity(old.local_key):
            # The peer's consent check on the pair selected before the restart (RFC 8445 §9): answered, signed with
            # the old password, and nothing more (pairs belong to the new generation).
            self.stats["check-previous-generation"] += 1
            resp = Message(Method.BINDING, MessageClass.SUCCESS, req.transaction_id, [XorMappedAddress(*remote)])
            self._emit(Transmit(remote, resp.encode(old.local_key, fingerprint=True), local))
            return
        if not user.text.startswith(self.ufrag + ":"):
            self.stats["check-wrong-username"] += 1
            self._respond(local, remote, tid, [ErrorCode(401, "Unauthorized")], MessageClass.ERROR, sign=False)
            return
        if not req.check_integrity(self._key):
            self.stats["check-bad-integrity"] += 1
            self._respond(local, remote, tid, [ErrorCode(401, "Unauthorized")], MessageClass.ERROR, sign=False)
            return
        unknown = req.unknown_comprehension_required()
        if unknown:
            self._respond(local, remote, tid, [ErrorCode(420, "Unknown Attribute"), UnknownAttributes(tuple(unknown))],
                          MessageClass.ERROR)
            return
        priority = req.get(Priority)
        if priority is None:  # RFC 8445 §7.1.1: every check carries PRIORITY
            self.stats["check-without-priority"] += 1
            self._respond(local, remote, tid, [ErrorCode(400, "Bad Request: no PRIORITY")], MessageClass.ERROR)
            return
        controlling, controlled = req.get(IceControlling), req.get(IceControlled)
        self._on_check(now, local, remote, tid, priority.number,
                       controlling.number if controlling is not None else None,
                       controlled.number if controlled is not None else None, req.get(UseCandidate) is not None)

    def _on_check(self, now: float, local: Address, remote: Address, tid: bytes, priority: int,
                  controlling: int | None, controlled: int | None, use: bool, answer: bytes | None = None) -> None:
        """An authenticated check (RFC 8445 §7.3) with its PRIORITY, the peer's tie-breaker in ICE-CONTROLLING or
        ICE-CONTROLLED, and USE-CANDIDATE: the role conflict, the answer, what it teaches. Checks reach it from
        :meth:`_on_request` or, in the common case, straight from the C accelerator's single pass, with the
        success response already built (``answer``)."""
        if local not in self._rx_bases():
            self.stats["check-on-unknown-base"] += 1
            return
        self._last_check_rx = now
        # Role conflict (RFC 8445 §7.3.1.1).
        if self.controlling and controlling is not None:
            if self.tie_breaker >= controlling:
                self._respond(local, remote, tid, [ErrorCode(487, "Role Conflict")], MessageClass.ERROR)
                return
            self._switch_role(False)
        elif not self.controlling and controlled is not None:
            if self.tie_breaker >= controlled and not self.config.lite:  # lite stays controlled
                self._switch_role(True)
            else:
                self._respond(local, remote, tid, [ErrorCode(487, "Role Conflict")], MessageClass.ERROR)
                return
        if answer is not None:
            self._emit(Transmit(remote, answer, local))
        else:
            self._respond(local, remote, tid, [XorMappedAddress(*remote)])
        if self.remote_ufrag is None and self._tcp.rx is not None:
            self._tcp_early(local, remote, priority, use)
            return
        if self.remote_ufrag is None:
            # Answered; the pair (and a nomination it carried) waits for the remote credentials (RFC 8838 §11).
            # One entry per path (retransmissions repeat it; a nomination sticks), and no more than a checklist.
            for i, (l0, r0, p0, u0) in enumerate(self._early_checks):
                if (l0, r0) == (local, remote):
                    self._early_checks[i] = (l0, r0, p0, u0 or use)
                    break
            else:
                if len(self._early_checks) < self.config.max_pairs:
                    self._early_checks.append((local, remote, priority, use))
                else:
                    self.stats["early-checks-over-limit"] += 1
            return
        self._learn_check(now, local, remote, priority, use)

    def _learn_check(self, now: float, local: Address, remote: Address, priority: int, use: bool) -> None:
        """What a valid incoming check teaches: a prflx remote candidate, a pair, a nomination, a triggered check."""
        transport = "tcp" if self._tcp.rx is not None else "udp"
        index = self._tcp.pairs if transport == "tcp" else self._pairs_by_key
        pair = index.get((local, remote))
        if pair is None:  # the path is new: its remote candidate is known, or learned now
            bases = self._rx_bases()
            rcand = next((c for c in self.remote_candidates if c.address == remote and c.transport == transport
                          and (transport == "udp" or tcp_pairable(bases[local], c))), None)
            if rcand is None and transport == "tcp":
                # RFC 6544 §7.2: a connection from an unknown address, or from a known one whose tcptype could not
                # have opened it (a TURN server connects to us from its relayed address, which the peer also
                # signalled as a passive relayed candidate, RFC 6062 §5.2), makes a peer-reflexive candidate.
                rcand = self._tcp_prflx_remote(bases[local], remote, priority)
            elif rcand is None:  # peer-reflexive remote candidate (RFC 8445 §7.3.1.3)
                rcand = Candidate(foundation(CandidateType.PEER_REFLEXIVE, remote[0]), self._bases[local].component,
                                  "udp", priority, remote[0], remote[1], CandidateType.PEER_REFLEXIVE)
                self.remote_candidates.append(rcand)
            pair = self._add_pair(bases[local], local, rcand, PairState.WAITING, learned=True)
            if pair is None:
                return
        self._tcp_bind(pair)
        if use and not self.controlling:
            pair.remote_nominated = True
            if pair.valid:
                self._select(now, pair.valid_pair or pair)  # RFC 8445 §7.3.1.5: the valid pair it generated
        # Triggered check (RFC 8445 §7.3.1.4).
        if self.config.lite:
            if use:
                pair.valid = True
                self._select(now, pair)
            return
        if pair.state is PairState.SUCCEEDED:
            return
        grace = self.config.triggered_grace
        if pair.state is PairState.IN_PROGRESS and grace > 0 and not self.config.pace_triggered:
            sent = [c.tx.sent_at[0] for c in self._checks.values()
                    if c.pair is pair and c.purpose == "check" and not c.cancelled and c.tx.sent_at]
            if sent and now - min(sent) < grace:
                if id(pair) not in self._deferred:
                    self._deferred[id(pair)] = (pair, min(sent) + grace)  # AgentConfig.triggered_grace
                    self._count(pair, "triggered-deferred")
                return
        self._trigger(now, pair)

    def _trigger(self, now: float, pair: Pair) -> None:
        """The triggered check itself (RFC 8445 §7.3.1.4): cancel the pair's check in progress (its answer is
        still welcome) and check again, carrying its nomination on."""
        self._deferred.pop(id(pair), None)
        nominating = False
        if pair.state is PairState.IN_PROGRESS:
            for c in self._checks.values():
                if c.pair is pair and c.purpose == "check" and not c.cancelled:
                    c.cancelled = True
                    nominating = nominating or c.nominating  # the replacement carries the nomination on
        self._count(pair, "triggered-checks")
        if self.config.pace_triggered:
            self._start_if_ready(now)
            self._set_pair(pair, PairState.WAITING)
            if pair not in self._triggered:
                self._triggered.append(pair)
        else:
            # The triggered check first: starting the checklist sends its first ordinary check at once, which
            # must not pick this same pair again.
            self._send_check(now, pair, nominating=nominating)
            self._start_if_ready(now)

    def _switch_role(self, controlling: bool) -> None:
        self.pacer.changes += 1
        self.controlling = controlling
        self.stats["role-switch"] += 1
        self._events.append(RoleChanged(controlling))
        for p in self.pairs:  # pair priorities depend on the role (RFC 8445 §6.1.2.3)
            g, d = (p.local.priority, p.remote.priority) if controlling else (p.remote.priority, p.local.priority)
            p.priority = pair_priority(g, d)
        self.pairs.sort(key=lambda p: -p.priority)

    def _on_response(self, now: float, local: Address, remote: Address, resp: Message) -> None:
        check = self._checks.get(resp.transaction_id)
        if check is None:
            self.stats["response-unknown-transaction"] += 1
            return
        if check.purpose == "gather":
            self._on_gather_response(check, local, resp)
            return
        if check.purpose != "consent" and not resp.check_integrity(self._remote_key):  # type: ignore[arg-type]
            self.stats["response-bad-integrity"] += 1
            err = resp.error if resp.message_class is MessageClass.ERROR else None
            if err is not None and err.code == 401 and check.purpose == "check" and check.pair is not None \
                    and remote == check.pair.remote.address and local == check.pair.base:
                # RFC 8445 §7.2.5.2.4: the peer could not authenticate our check (wrong remote password, or a
                # stale ufrag). Its 401 cannot carry MESSAGE-INTEGRITY; see AgentConfig.unsigned_401_fails_pair.
                self.stats["check-401"] += 1
                self._rejected += 1
                if self.config.unsigned_401_fails_pair:
                    # Every check on this pair went with the same credentials: none of them can succeed.
                    rejected = check.pair
                    self._checks = {t: c for t, c in self._checks.items()
                                    if not (c.pair is rejected and c.purpose == "check")}
                    if not rejected.valid:
                        self._set_pair(rejected, PairState.FAILED)
                    self._check_failed()
            return
        del self._checks[resp.transaction_id]
        pair = check.pair
        assert pair is not None
        if check.purpose == "consent":
            key = check.tx.key  # the generation the consent check was sent in (the old one during a restart)
            if resp.message_class is MessageClass.SUCCESS and key is not None and resp.check_integrity(key):
                self._count(pair, "consent-answered")
                self._consent_ok_at = now
                if self.state is AgentState.DISCONNECTED:
                    self._set_state(AgentState.CONNECTED)
                    self._maybe_completed()
            else:
                self._count(pair, "consent-refused")
            return
        if resp.message_class is MessageClass.ERROR:
            self._count(pair, "check-responses-error")
            err = resp.error
            if err is not None and err.code == 487:  # RFC 8445 §7.2.5.1: take the other role, check again
                if self.controlling == check.controlling:
                    self._switch_role(not check.controlling)
                self._send_check(now, pair)
                return
            if err is not None and err.code == 401:
                self._rejected += 1
            self._set_pair(pair, PairState.FAILED)
            self._check_failed()
            return
        xma = resp.get(XorMappedAddress)
        self._check_succeeded(now, local, remote, check, pair, xma.address if xma is not None else None)

    def _check_succeeded(self, now: float, local: Address, remote: Address, check: _Check, pair: Pair,
                         mapped: Address | None) -> None:
        """A check's authenticated success response, mapping it to ``mapped`` (XOR-MAPPED-ADDRESS): RFC 8445
        §7.2.5.2.1 symmetry, §7.2.5.3 the valid pair, the unfreezing and the selection it leads to. Responses
        reach it from :meth:`_on_response` or, in the common case, straight from the C accelerator's single
        pass."""
        # RFC 8445 §7.2.5.2.1: the response must come from where the request went, to where it came from.
        if remote != pair.remote.address or local != pair.base or not self._tcp_same_path(pair):
            self._set_pair(pair, PairState.FAILED)
            self.stats["response-asymmetric"] += 1
            return
        self._count(pair, "check-responses-success")
        pair.rtt = now - (check.tx.sent_at[-1] if check.tx.sent_at else now)
        self._set_pair(pair, PairState.SUCCEEDED)
        valid = self._valid_pair(pair, mapped) if mapped is not None and mapped != pair.base else pair
        valid.valid = True
        pair.valid = True
        if self._first_valid_at is None:
            self._first_valid_at = now
        # RFC 8445 §7.2.5.3.3: unfreeze pairs with the same foundation, in every checklist of the set.
        for agent in self.pacer.checklists or [self]:
            for p in agent.pairs:
                if p.state is PairState.FROZEN and p.foundation == pair.foundation:
                    agent._set_pair(p, PairState.WAITING)
        if self.controlling and (check.nominating or self.config.nomination is Nomination.AGGRESSIVE):
            valid.nominated = pair.nominated = True
            self._select(now, valid)
        elif self.remote_lite or (not self.controlling and pair.remote_nominated):
            self._select(now, valid)  # a lite peer needs no nomination round trip (RFC 8445 §8.2)

    def _valid_pair(self, pair: Pair, mapped: Address) -> Pair:
        """RFC 8445 §7.2.5.3.1: the valid pair of a check whose response maps it to ``mapped`` (not the base): its
        local candidate is the srflx or prflx candidate with that address, or a new prflx one (same base)."""
        if pair.local.address == mapped or pair.local.type is CandidateType.RELAYED or pair.local.transport == "tcp":
            # Already a valid pair (a nomination or consent check repeats its check); or a relayed candidate,
            # whose path is the relay whatever the peer's NAT did to the relay's source port on the way (Linux
            # gives a packet a new source port when its conntrack tuple clashes with a flow going the other way).
            return pair
        if pair.valid_pair is not None and pair.valid_pair.local.address == mapped:
            self._set_pair(pair.valid_pair, PairState.SUCCEEDED)  # it may have failed a nomination before
            pair.valid_pair.rtt = pair.rtt
            return pair.valid_pair
        local = next((c for c in self.local_candidates if c.address == mapped
                      and c.type in (CandidateType.SERVER_REFLEXIVE, CandidateType.PEER_REFLEXIVE)
                      and c.related == pair.base), None)
        if local is None:
            local = Candidate(foundation(CandidateType.PEER_REFLEXIVE, pair.base[0]), pair.local.component, "udp",
                              _prflx_priority(pair.local),
                              mapped[0], mapped[1], CandidateType.PEER_REFLEXIVE, related=pair.base)
            self.local_candidates.append(local)
        # It keeps the checked pair's priority (not one computed from the srflx/prflx candidate): the checklist's
        # order is what nomination and selection compare, and a pair and its valid pair are one path.
        valid = Pair(local, pair.base, pair.remote, pair.priority, PairState.SUCCEEDED, rtt=pair.rtt)
        valid.first_check_at = pair.first_check_at
        pair.valid_pair = valid
        self.pairs.append(valid)
        self.pairs.sort(key=lambda p: -p.priority)
        return valid

    def _on_gather_response(self, check: _Check, local: Address, resp: Message) -> None:
        del self._checks[resp.transaction_id]
        self._gathering -= 1
        xma = resp.get(XorMappedAddress)
        base = self._bases.get(local)
        server = check.server or ("", 0)
        if (resp.message_class is MessageClass.SUCCESS and xma is not None and base is not None
                and xma.address != local and not any(c.address == xma.address and c.type is not
                                                     CandidateType.PEER_REFLEXIVE for c in self.local_candidates)):
            # A check's answer may have beaten the server's and made this address a prflx candidate; the srflx
            # one is still gathered and signalled (prflx candidates never are, RFC 8445 §7.2.5.3.1).
            cand = Candidate(foundation(CandidateType.SERVER_REFLEXIVE, local[0], server[0]), base.component,
                             "udp", candidate_priority(CandidateType.SERVER_REFLEXIVE, base.priority >> 8 & 0xFFFF,
                                                       base.component),
                             xma.host, xma.port, CandidateType.SERVER_REFLEXIVE, related=local)
            # RFC 8445 §6.1.2.4: a srflx candidate is paired through its base, so it adds no pairs.
            self._add_local(cand)
        self._maybe_gathering_complete()

    # ============================================================================================ consent

    def _schedule_consent(self, now: float) -> None:
        if not self.config.keepalive:
            self._consent_at = None  # AgentConfig.keepalive = False: a test of an agent that stays quiet
            return
        jitter = 0.8 + 0.4 * int.from_bytes(self._random(4), "big") / (1 << 32)  # RFC 7675 §5.1: 4-6 s around 5 s
        self._consent_at = now + self.config.consent_interval * jitter

    def _consent_check(self, now: float) -> None:
        """RFC 7675 §5.1 on every selected pair; consent is lost when none succeeded for ``consent_timeout``."""
        generation = self._previous if self._restarting else None
        remote_key = generation.remote_key if generation is not None else self._remote_key
        if not self.selected_pairs or remote_key is None:
            self._consent_at = None
            return
        if (now - self._consent_ok_at >= self.config.disconnected_after
                and self.state in (AgentState.CONNECTED, AgentState.COMPLETED)):
            self._set_state(AgentState.DISCONNECTED)  # consent is late: data may not be getting through
        if now - self._consent_ok_at >= self.config.consent_timeout:
            if not self._consent_lost:
                self._consent_lost = True
                for pair in self.selected_pairs.values():
                    self._events.append(ConsentLost(pair.base, pair.remote.address))
                self._set_state(AgentState.FAILED, f"consent lost: no consent check succeeded for "
                                                   f"{self.config.consent_timeout:g} s (RFC 7675)")
            self._consent_at = None
            return
        for pair in self.selected_pairs.values():
            nominate = self.controlling and self.remote_lite and self.config.lite_consent_use_candidate
            tid, data = self._request(pair, nominating=nominate, generation=generation)
            cfg = RetransmissionConfig(rto=self.config.consent_rto, rc=3, rm=2)
            tx = ClientTransaction(data, tid, pair.remote.address, now, cfg, key=remote_key)
            check = self._checks[tid] = _Check(pair, tx, pair.base, purpose="consent")
            self._pump(tx, pair.base, now, check)
        self._schedule_consent(now)

    # =============================================================================================== I/O

    def poll_transmit(self) -> Transmit | None:
        return self._transmits.popleft() if self._transmits else None

    def poll_transmits(self) -> list[Transmit]:
        """Everything :meth:`poll_transmit` would give, in order, at once (the driver's one call per pump)."""
        if not self._transmits:
            return []
        out = list(self._transmits)
        self._transmits.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def send(self, data: bytes, component: int | None = None) -> bool:
        """Queue application data on the selected pair of ``component`` (default: the first); False when there is
        none or consent was lost."""
        pair = self.selected if component is None else self.selected_pairs.get(component)
        if pair is None or self._consent_lost or self.state in (AgentState.CLOSED, AgentState.FAILED):
            return False
        if pair.local.transport == "tcp":
            if not self._tcp_send_data(pair, data):
                return True  # lost, as a datagram may be (counted): no connection right now, or too long
        else:
            self._transmits.append(Transmit(pair.remote.address, data, pair.base))
        self._count(pair, "data-sent")
        self._count(pair, "data-bytes-sent", len(data))
        return True

    def restart(self, now: float) -> None:
        """ICE restart (RFC 8445 §9): new local credentials, a fresh checklist, no remote credentials or candidates
        until the peer signals its new ones. Data keeps flowing on the old selected pair until a new pair is
        selected. Local candidates are kept (gather new server-reflexive ones if the network changed)."""
        self.pacer.changes += 1
        if self.selected_pairs and not self._consent_lost and self.remote_ufrag is not None \
                and self._remote_key is not None and not self._restarting:
            self._previous = _Generation(self.ufrag, self._key, self.remote_ufrag, self._remote_key)
        self.ufrag = _token(self.rng, 8)
        self.pwd = _token(self.rng, 24)
        self._key = IntegrityKey(self.pwd.encode())
        self.remote_ufrag = None
        self._remote_key = None
        self.remote_candidates.clear()
        self.remote_end_of_candidates = False
        self.pairs.clear()
        self._pairs_by_key.clear()
        self._tcp.pairs.clear()
        self._tcp.early.clear()
        self._tcp.pruned = 0
        self._triggered.clear()
        self._deferred.clear()
        self._early_checks.clear()
        self._checks = {tid: c for tid, c in self._checks.items() if c.purpose == "gather"}
        self._started = False
        self._nominated.clear()
        self._first_valid_at = None
        self._rejected = 0
        self._last_check_rx = None
        # Consent goes on, on the old pair with the old credentials, until a new pair is selected (RFC 7675 §5.1:
        # data may only flow with fresh consent).
        if self._consent_lost:
            self._consent_at = None
            self._previous = None
            self.selected_pairs.clear()  # never send on a pair whose consent expired (RFC 7675 §5.2)
        self._restarting = True
        self._set_state(AgentState.CHECKING)

    # ====================================================================================== network change

    def network_changed(self, now: float, change: NetworkChange, final: bool = True) -> None:
        """The network changed under the agent (an address left the interface, another came): an ICE restart
        (RFC 8445 §9) that also gathers again. New local credentials (a :class:`NetworkChangeRestart` event says
        so: signal them to the peer); the candidates and pairs of ``change.gone`` are forgotten, with a selected
        pair on them (nothing can be sent from a socket whose address is gone, so the old generation's consent
        ends there too); each new host socket gets a host candidate and server-reflexive requests
        (RFC 8445 §5.1.1); :class:`GatheringComplete` is reported again when they end. ``final=False``: more
        candidates follow (a TURN allocation), the caller calls :meth:`end_of_local_candidates`."""
        self.restart(now)
        for local in change.gone:
            self._forget_base(local)
        if not self.selected_pairs:
            self._previous = None
            self._consent_at = None
        self._gathering_final = False
        self._gathering_done_sent = False
        self.stats["network-changes"] += 1
        self._events.append(NetworkChangeRestart(self.ufrag, tuple(change.gone),
                                                 tuple(local for _, local in change.hosts)))
        if change.offer_hosts:
            for component, local in change.hosts:
                self.add_host_candidate(local, component=component)
            for component, local, tcptype in change.tcp_hosts:
                self.add_tcp_host_candidate(local, tcptype, component=component)
            for _, local in change.hosts:
                for server in change.stun_servers:
                    if (":" in server[0]) == (":" in local[0]):
                        self.gather_server_reflexive(now, local, server)
        if final:
            self.end_of_local_candidates()

    def _forget_base(self, local: Address) -> None:
        """Everything that lives on the local address ``local``: its candidate (host or relayed), the srflx and prflx
        candidates based on it, its pairs, checks (a pending server-reflexive request ends without an event),
        early checks and a selected pair on it."""
        self._bases.pop(local, None)
        self._components = None
        self.local_candidates = [c for c in self.local_candidates if c.address != local and not (
            c.type in (CandidateType.SERVER_REFLEXIVE, CandidateType.PEER_REFLEXIVE) and c.related == local)]
        gone = [p for p in self.pairs if p.base == local]
        if gone:
            self.pairs = [p for p in self.pairs if p.base != local]
            for p in gone:
                if self._pairs_by_key.get(p.key) is p:
                    del self._pairs_by_key[p.key]
            self._triggered = deque(p for p in self._triggered if p.base != local)
            self._deferred = {k: v for k, v in self._deferred.items() if v[0].base != local}
        for tid, check in list(self._checks.items()):
            if check.local == local:
                del self._checks[tid]
                if check.purpose == "gather":
                    self._gathering -= 1
        self._early_checks = [e for e in self._early_checks if e[0] != local]
        for component, pair in list(self.selected_pairs.items()):
            if pair.base == local:
                del self.selected_pairs[component]
        if self._tcp.bases.pop(local, None) is not None:  # a TCP base: its connections end with it
            self._tcp.relay_of.pop(local, None)
            self._tcp.pairs = {k: p for k, p in self._tcp.pairs.items() if k[0] != local}
            for conn in [c for c in self._tcp.conns.values() if c.base == local]:
                self._tcp_drop(conn)
            self._tcp.early = [e for e in self._tcp.early if e[1] != local]

    @property
    def gathering_complete(self) -> bool:
        """GatheringComplete was reported (for the current gathering: a network change starts another)."""
        return self._gathering_done_sent

    def close(self) -> None:
        self._tcp_close_all()
        self.pacer.changes += 1
        self._checks.clear()
        self._consent_at = None
        self._start_pending = False
        self._set_state(AgentState.CLOSED)

    def _tid(self) -> bytes:
        """A transaction ID (RFC 8489 §6: uniformly random, 96 bits) from :meth:`_random`."""
        return self._random(12)

    def _random(self, n: int) -> bytes:
        """``n`` random bytes from ``rng``, drawn 384 at a time (one system call for 32 transaction IDs with the
        default CSPRNG; the first batch when the agent is made, before checks wait for it)."""
        pool = self._random_pool
        if len(pool) < n:
            pool += self.rng.randbytes(384)
        out = bytes(pool[:n])
        del pool[:n]
        return out

    # ===================================================================================== ICE-TCP (RFC 6544)
    #
    # TCP pairs share the checklist with UDP ones; their checks, answers and data go on the pair's connection as
    # RFC 4571 frames. The driver is asked for connections (poll_tcp), reports on them (handle_tcp_event), hands
    # over accepted ones (accept_tcp) and the bytes it reads (handle_tcp_data).

    def add_tcp_host_candidate(self, local: Address, tcptype: TcpType, other_preference: int | None = None,
                               component: int = 1) -> Candidate:
        """A TCP host candidate (RFC 6544 §4.1). ``local`` is a passive or so candidate's listening address (the
        caller listens there; for so it also connects from that port); for an active candidate only its IP
        matters: it is signalled with port 9 (RFC 6544 §4.5) and every connection gets its own port.
        ``other_preference`` (0..8191, RFC 6544 §4.2) ranks interfaces; by default each further candidate of a
        tcptype gets one less."""
        self.pacer.changes += 1  # may move a deadline: next_timeout() computes afresh
        addr = (local[0], DISCARD_PORT) if tcptype is TcpType.ACTIVE else local
        known = self._tcp.bases.get(addr)
        if known is not None:
            if known.tcptype != tcptype.value or known.component != component:
                raise ValueError(f"{addr} is already a {known.tcptype} TCP base of component {known.component}")
            return known
        same = sum(1 for c in self._tcp.bases.values() if c.component == component and c.tcptype == tcptype.value)
        other = other_preference if other_preference is not None else max(0, 8191 - same)
        cand = tcp_candidate(CandidateType.HOST, tcptype, addr, component, other, config=self.config.tcp)
        self._tcp.bases[addr] = cand
        self._components = None
        self._add_local(cand)
        self._pair_late_local(cand, addr)
        return cand

    def add_tcp_server_reflexive(self, base: Address, mapped: Address, server_ip: str | None = None
                                 ) -> Candidate | None:
        """A TCP server-reflexive candidate: ``mapped`` is what a STUN Binding sent over a TCP connection from the
        passive or so candidate at ``base`` (from its very port) returned (RFC 6544 §4.1: learnt over TCP, not
        copied from UDP). Paired through its base (RFC 8445 §6.1.2.4), so it only needs signalling. None (and
        counted) when the base is unknown or active, or the mapping is the base itself or already a candidate."""
        self.pacer.changes += 1  # may move a deadline: next_timeout() computes afresh
        local = self._tcp.bases.get(base)
        tcptype = TcpType.of(local) if local is not None else None
        if local is None or tcptype is None or tcptype is TcpType.ACTIVE:
            self.stats["tcp-srflx-bad-base"] += 1
            return None
        if mapped == base or any(c.transport == "tcp" and c.address == mapped for c in self.local_candidates):
            self.stats["tcp-srflx-redundant"] += 1
            return None
        cand = tcp_candidate(CandidateType.SERVER_REFLEXIVE, tcptype, mapped, local.component,
                             local.priority >> 8 & 0x1FFF, related=base, server_ip=server_ip, config=self.config.tcp)
        self._add_local(cand)
        return cand

    def add_tcp_relayed_candidates(self, relayed: Address, mapped: Address | None = None,
                                   server_ip: str | None = None, component: int = 1) -> list[Candidate]:
        """The relayed TCP candidates of a TURN TCP allocation (RFC 6544 §5.3, RFC 6062), the hook for the
        ICE-over-TURN composition: a passive one at ``relayed`` (peers connect to the relayed address; the TURN
        server announces each connection with a ConnectionAttempt and the composition hands it over with
        :meth:`accept_tcp`) and an active one signalled with port 9 (its connections are made by the server, on a
        Connect: :class:`TcpConnect` with ``relayed`` set). The active one is left out when a host active
        candidate already has that address (the TURN server runs on this host): the same transport address and
        base, a redundant candidate (RFC 8445 §5.1.3), counted as ``tcp-relayed-redundant``. ``mapped`` (the
        allocation's XOR-MAPPED-ADDRESS) becomes raddr/rport."""
        self.pacer.changes += 1  # may move a deadline: next_timeout() computes afresh
        made: list[Candidate] = []
        for tcptype in (TcpType.PASSIVE, TcpType.ACTIVE):
            addr = (relayed[0], DISCARD_PORT) if tcptype is TcpType.ACTIVE else relayed
            known = self._tcp.bases.get(addr)
            if known is not None:
                if known.type is not CandidateType.RELAYED or known.component != component:
                    self.stats["tcp-relayed-redundant"] += 1  # a host one there, or another component's
                else:
                    if tcptype is TcpType.ACTIVE:
                        self._tcp.relay_of[addr] = relayed  # allocated again (RFC 8656 §8): a new relayed port
                    made.append(known)
                continue
            same = sum(1 for c in self._tcp.bases.values() if c.component == component
                       and c.tcptype == tcptype.value and c.type is CandidateType.RELAYED)
            cand = tcp_candidate(CandidateType.RELAYED, tcptype, addr, component, max(0, 8191 - same),
                                 related=mapped, server_ip=server_ip or relayed[0], config=self.config.tcp)
            if tcptype is TcpType.ACTIVE:
                self._tcp.relay_of[addr] = relayed
            self._tcp.bases[addr] = cand
            self._components = None
            self._add_local(cand)
            self._pair_late_local(cand, addr)
            made.append(cand)
        return made

    @property
    def tcp_bases(self) -> list[Address]:
        """The bases of the local TCP host candidates (an active one's is its IP with port 9); relayed ones are
        the TURN server's."""
        return [b for b, c in self._tcp.bases.items() if c.type is not CandidateType.RELAYED]

    def has_tcp_connection(self, conn_id: int) -> bool:
        """Whether connection ``conn_id`` is one the agent still has (connecting or up); one it closed itself has
        its :class:`TcpClose` queued for the driver."""
        return conn_id in self._tcp.conns

    def new_tcp_connection_id(self) -> int:
        """A connection id the agent will not give out itself: for a connection made on its behalf (a TURN data
        connection the composition binds before handing it over with :meth:`accept_tcp`)."""
        conn_id = self._tcp.next_id
        self._tcp.next_id += 1
        return conn_id

    def poll_tcp(self) -> TcpIntent | None:
        """The next thing the driver must do on TCP: connect, send a frame, close."""
        return self._tcp.out.popleft() if self._tcp.out else None

    def accept_tcp(self, now: float, local: Address, remote: Address, conn_id: int | None = None) -> int | None:
        """The driver accepted a connection from ``remote`` on the passive or so candidate listening at ``local``:
        its id for :meth:`handle_tcp_data`, or None (counted) when the agent does not take it (close it). A
        connection from a remote so candidate's address on a local so base is that pair's (the peer's half of a
        simultaneous open won the race, RFC 6544 §7.1); any other waits for a check to tell its pair
        (RFC 6544 §7.2). ``conn_id``: the id to use, from :meth:`new_tcp_connection_id` (a connection the caller
        already knows by it)."""
        self.pacer.changes += 1  # may move a deadline: next_timeout() computes afresh
        base = self._tcp.bases.get(local)
        if base is None or TcpType.of(base) in (None, TcpType.ACTIVE) or self.state is AgentState.CLOSED:
            self.stats["tcp-accept-refused"] += 1
            return None
        unbound = sum(1 for c in self._tcp.conns.values() if not c.outgoing and self._tcp_pair_of(c) is None)
        if unbound >= self.config.max_pairs:
            self.stats["tcp-accept-over-limit"] += 1
            return None
        conn = self._tcp_new_conn(local, remote, outgoing=False, conn_id=conn_id)
        conn.state = ConnState.UP
        conn.started_at = now
        self.stats["tcp-accepted"] += 1
        pair = self._tcp.pairs.get((local, remote))
        if pair is not None:
            self._tcp_attach(pair, conn)
        return conn.id

    def handle_tcp_event(self, now: float, event: TcpEvent) -> None:
        """What became of a connection the agent asked for (or of an established one)."""
        self.pacer.changes += 1  # may move a deadline: next_timeout() computes afresh
        conn = self._tcp.conns.get(event.conn)
        if conn is None:
            if isinstance(event, TcpConnected):
                self._tcp.out.append(TcpClose(event.conn))  # abandoned meanwhile: close what came up
            self.stats["tcp-event-unknown-connection"] += 1
            return
        if isinstance(event, TcpConnected):
            if conn.state is not ConnState.CONNECTING:
                return
            pair = self._tcp_pair_of(conn) or self._tcp.pairs.get((conn.base, conn.remote))
            if pair is None:
                self._tcp_drop(conn)
                return
            conn.state = ConnState.UP
            self.stats["tcp-connected"] += 1
            self._tcp.attempts.pop(pair, None)
            self._tcp_attach(pair, conn)
        else:
            if isinstance(event, TcpConnectFailed):
                self.stats["tcp-connect-failed"] += 1
            else:
                self.stats["tcp-closed"] += 1
            self._tcp_lost(now, conn)

    def handle_tcp_data(self, now: float, conn_id: int, data: bytes) -> None:
        """Bytes read from connection ``conn_id``: RFC 4571 frames (any split across reads) carrying checks,
        answers (matched to their checks by transaction ID; they count only over TCP between the pair's ends,
        RFC 6544 §7.1) or data."""
        self.pacer.changes += 1  # may move a deadline: next_timeout() computes afresh
        conn = self._tcp.conns.get(conn_id)
        if conn is None or conn.state is not ConnState.UP or self.state is AgentState.CLOSED:
            self.stats["tcp-data-unknown-connection"] += 1
            return
        for payload in conn.framer.feed(data):
            self._tcp_frame(now, conn, payload)
            if conn.state is not ConnState.UP:
                break

    # ---------------------------------------------------------------------------------------- ICE-TCP helpers

    def _transport_allowed(self, candidate: Candidate) -> bool:
        if candidate.transport == "udp":
            return True
        if candidate.transport != "tcp" or not self.config.tcp.enabled:
            return False
        if TcpType.of(candidate) is None:
            self.stats["remote-candidate-bad-tcptype"] += 1
            return False
        return True

    def _rx_bases(self) -> dict[Address, Candidate]:
        """The bases of the transport the message being handled came on."""
        return self._tcp.bases if self._tcp.rx is not None else self._bases

    def _emit(self, t: Transmit) -> None:
        """An answer goes back the way the request came: on its TCP connection, else as a datagram."""
        rx = self._tcp.rx
        if rx is None:
            self._transmits.append(t)
        elif rx.state is ConnState.UP:
            self._tcp.out.append(TcpSend(rx.id, frame(t.data)))

    def _tcp_same_path(self, pair: Pair) -> bool:
        """RFC 8445 §7.2.5.2.1 for TCP: a TCP check's answer must come over TCP (on a connection between the
        pair's ends: the caller compares the addresses), a UDP check's as a datagram."""
        return (self._tcp.rx is not None) == (pair.local.transport == "tcp")

    def _tcp_prflx_remote(self, local: Candidate, remote: Address, priority: int) -> Candidate:
        """RFC 6544 §7.2: a check on a connection from an unknown address (an active candidate's connection
        comes from a port nobody signalled) makes a peer-reflexive remote candidate of the opposite tcptype."""
        mine = TcpType.of(local)
        tcptype = mine.opposite if mine is not None else TcpType.ACTIVE
        cand = Candidate(foundation(CandidateType.PEER_REFLEXIVE, remote[0], None, f"tcp-{tcptype.value}"),
                         local.component, "tcp", priority, remote[0], remote[1], CandidateType.PEER_REFLEXIVE,
                         tcptype=tcptype.value)
        self.remote_candidates.append(cand)
        self.stats["tcp-prflx-remote"] += 1
        return cand

    def _tcp_bind(self, pair: Pair) -> None:
        """A check arrived for ``pair`` on the connection being handled: the pair uses that connection (its own
        check, answer or triggered check go there, RFC 6544 §7.2) unless it has another one up."""
        rx = self._tcp.rx
        if rx is not None and pair.local.transport == "tcp":
            self._tcp_attach(pair, rx)

    def _tcp_attach(self, pair: Pair, conn: TcpConn) -> None:
        """``conn`` (up) serves the pair from now on, unless the pair has another connection up: then
        :meth:`_tcp_resolve` picks one. An attempt of ours still connecting is detached (its frames move over)
        but left to finish: closing it could close the connection the peer is using."""
        current = self._tcp.pair_conn.get(pair)
        if current is not None and current is not conn and current.state is ConnState.UP:
            self._tcp_resolve(pair, current, conn)
            return
        self._tcp.pair_conn[pair] = conn
        if current is not None and current is not conn:
            conn.pending += current.pending
            current.pending.clear()
        for data in conn.pending:
            self._tcp.out.append(TcpSend(conn.id, data))
        conn.pending.clear()

    def _tcp_resolve(self, pair: Pair, current: TcpConn, other: TcpConn) -> None:
        """Two connections up for one pair (both ends connected at once and each reached the other's listening so
        port, e.g. through NATs that gave the attempts different ports). Both ends keep the one the controlling
        agent opened (RFC 6544 §7.1 wants one connection per pair); the controlled agent closes its own, the
        controlling agent leaves the other open for the peer to close (closing it could race the peer's choice)."""
        ours = {c for c in (current, other) if c.outgoing}
        if len(ours) != 1:
            return  # two of the same kind: keep the current one
        winner = next(iter(ours)) if self.controlling else next(c for c in (current, other) if not c.outgoing)
        loser = other if winner is current else current
        self._tcp.pair_conn[pair] = winner
        self.stats["tcp-duplicate-connection"] += 1
        for data in loser.pending:
            self._tcp.out.append(TcpSend(winner.id, data))
        loser.pending.clear()
        if not self.controlling:
            self._tcp_drop(loser)

    def _tcp_early(self, local: Address, remote: Address, priority: int, use: bool) -> None:
        """A check on a connection before the remote credentials: answered; learnt once they come (RFC 8838 §11)."""
        rx = self._tcp.rx
        assert rx is not None
        for i, (c0, l0, r0, p0, u0) in enumerate(self._tcp.early):
            if (c0, l0, r0) == (rx.id, local, remote):
                self._tcp.early[i] = (c0, l0, r0, p0, u0 or use)
                return
        if len(self._tcp.early) < self.config.max_pairs:
            self._tcp.early.append((rx.id, local, remote, priority, use))
        else:
            self.stats["early-checks-over-limit"] += 1

    def _tcp_replay_early(self, now: float) -> None:
        early, self._tcp.early = self._tcp.early, []
        for conn_id, local, remote, priority, use in early:
            conn = self._tcp.conns.get(conn_id)
            if conn is None or conn.state is not ConnState.UP or local not in self._tcp.bases:
                continue
            prev, self._tcp.rx = self._tcp.rx, conn
            try:
                self._learn_check(now, local, remote, priority, use)
            finally:
                self._tcp.rx = prev

    def _tcp_frame(self, now: float, conn: TcpConn, payload: bytes) -> None:
        if is_stun(payload):
            prev, self._tcp.rx = self._tcp.rx, conn
            try:
                self.handle_datagram(now, conn.base, conn.remote, payload)
            finally:
                self._tcp.rx = prev
            return
        pair = self._tcp_pair_of(conn)
        if pair is None:  # a second connection between a valid pair's ends (attempts that crossed)
            pair = self._tcp.pairs.get((conn.base, conn.remote))
            pair = pair if pair is not None and pair.valid else None
        if pair is None:
            # Data on a connection no authenticated check has tied to a pair: not the peer's, as far as we know.
            self.stats["tcp-data-before-check"] += 1
            return
        component = pair.local.component
        self._events.append(DataReceived(payload, conn.base, conn.remote, component))
        selected = self.selected_pairs.get(component)
        counted = selected if selected is not None and self._tcp.pair_conn.get(selected) is conn else None
        self._count(counted, "data-received")
        self._count(counted, "data-bytes-received", len(payload))

    def _tcp_pair_of(self, conn: TcpConn) -> Pair | None:
        return next((p for p, c in self._tcp.pair_conn.items() if c is conn), None)

    def _tcp_new_conn(self, base: Address, remote: Address, outgoing: bool, conn_id: int | None = None) -> TcpConn:
        conn = TcpConn(self.new_tcp_connection_id() if conn_id is None else conn_id, base, remote, outgoing,
                       Rfc4571Framer(self.config.tcp.max_frame, stats=self.stats))
        self._tcp.conns[conn.id] = conn
        return conn

    def _tcp_pump(self, tx: ClientTransaction, check: _Check, now: float | None) -> None:
        """A check (or consent check) on a TCP pair: sent once on the pair's connection, never retransmitted
        (RFC 8489 §6.2.2: the transport is reliable; the transaction still times out on its schedule)."""
        pair = check.pair
        assert pair is not None
        while (out := tx.poll_transmit()) is not None:
            check.sends += 1
            if check.sends > 1:
                self.stats["tcp-retransmit-suppressed"] += 1
                continue
            self._count(pair, _SENT[check.purpose][0])
            if check.nominating:
                self._count(pair, "nominations-sent")
            self._tcp_send_frame(pair, out.data, now)

    def _tcp_send_frame(self, pair: Pair, data: bytes, now: float | None) -> bool:
        """Frame ``data`` onto the pair's connection; without one, an active or so candidate asks for one (paced:
        ``TcpConfig.connect_pace``) and the frame waits for it. A passive candidate cannot connect: counted."""
        framed = frame(data)
        conn = self._tcp.pair_conn.get(pair)
        if conn is None:
            # A connection between the pair's ends already up (the same pair of a previous ICE generation, or one
            # the peer opened): use it. Opening another from an so port would clash on the four-tuple.
            conn = next((c for c in self._tcp.conns.values() if c.state is ConnState.UP
                         and (c.base, c.remote) == (pair.base, pair.remote.address)), None)
            if conn is not None:
                self._tcp.pair_conn[pair] = conn
        if conn is not None and conn.state is ConnState.UP:
            self._tcp.out.append(TcpSend(conn.id, framed))
            return True
        if conn is not None:
            conn.pending.append(framed)
            return True
        if now is None or TcpType.of(pair.local) not in (TcpType.ACTIVE, TcpType.SO):
            self.stats["tcp-check-no-connection"] += 1
            return False
        conn = self._tcp_open(now, pair, now)
        conn.pending.append(framed)
        return True

    def _tcp_send_data(self, pair: Pair, data: bytes) -> bool:
        conn = self._tcp.pair_conn.get(pair)
        if len(data) > self.config.tcp.max_frame:
            self.stats["tcp-data-too-long"] += 1
            return False
        if conn is None or conn.state is not ConnState.UP:
            self.stats["tcp-data-no-connection"] += 1
            return False
        self._tcp.out.append(TcpSend(conn.id, frame(data)))
        return True

    def _tcp_open(self, now: float, pair: Pair, due: float) -> TcpConn:
        """A connection for ``pair``, asked for at ``due`` or later (``connect_pace`` apart from the last one)."""
        conn = self._tcp_new_conn(pair.base, pair.remote.address, outgoing=True)
        conn.due_at = due
        self._tcp.pair_conn[pair] = conn
        if max(due, self._tcp.next_connect_at) <= now:
            self._tcp_start(now, conn, pair)
        return conn

    def _tcp_start(self, now: float, conn: TcpConn, pair: Pair) -> None:
        local = self._tcp.bases[conn.base]
        so = TcpType.of(local) is TcpType.SO
        self._tcp.attempts[pair] = self._tcp.attempts.get(pair, 0) + 1
        conn.started_at = now
        self._tcp.next_connect_at = now + self.config.tcp.connect_pace
        self.stats["tcp-connects"] += 1
        bind = conn.base if so else (conn.base[0], 0)
        ttl = self.config.tcp.so_syn_ttl if so and not self.controlling else None
        self._tcp.out.append(TcpConnect(conn.id, bind, conn.remote, simultaneous=so, syn_ttl=ttl,
                                        relayed=self._tcp.relay_of.get(conn.base)))

    def _tcp_drop(self, conn: TcpConn) -> None:
        """Forget a connection and tell the driver to close it (if it was ever asked for)."""
        self._tcp.conns.pop(conn.id, None)
        if conn.started_at is not None and conn.state is not ConnState.CLOSED:
            self._tcp.out.append(TcpClose(conn.id))
        conn.state = ConnState.CLOSED
        for p in [p for p, c in self._tcp.pair_conn.items() if c is conn]:
            del self._tcp.pair_conn[p]

    def _tcp_lost(self, now: float, conn: TcpConn) -> None:
        """A connection failed or closed: each pair it served (a pair and its successor of the next ICE generation
        can share one, see :meth:`_tcp_send_frame`) reconnects, paced (``TcpConfig.backoff``), while it still has
        checks to send or is selected; after ``max_connect_attempts`` failed attempts the pair fails."""
        pairs = [p for p, c in self._tcp.pair_conn.items() if c is conn]
        self._tcp.conns.pop(conn.id, None)
        conn.state = ConnState.CLOSED
        for pair in pairs:
            del self._tcp.pair_conn[pair]
        for pair in pairs:
            self._tcp_pair_lost(now, pair, conn)

    def _tcp_pair_lost(self, now: float, pair: Pair, conn: TcpConn) -> None:
        ends = (conn.base, conn.remote)
        spare = next((c for c in self._tcp.conns.values() if c.state is ConnState.UP
                      and (c.base, c.remote) == ends), None)
        if spare is not None:  # another connection between the same ends (one that crossed ours) takes over
            self._tcp_attach(pair, spare)
            return
        if TcpType.of(pair.local) not in (TcpType.ACTIVE, TcpType.SO):
            return  # a passive candidate waits for the peer to connect again
        outstanding = [c for c in self._checks.values() if c.pair is pair and not c.cancelled
                       and c.purpose in ("check", "consent")]
        if not outstanding and pair not in self.selected_pairs.values():
            return
        again = next((c for c in self._tcp.conns.values() if c.state is ConnState.CONNECTING and c.outgoing
                      and (c.base, c.remote) == ends), None)
        if again is not None:  # another pair on the same ends reconnects already: one connection serves both
            self._tcp.pair_conn[pair] = again
            again.pending += [frame(c.tx.request) for c in outstanding]
            return
        attempts = self._tcp.attempts.get(pair, 0)
        if attempts >= self.config.tcp.max_connect_attempts:
            self.stats["tcp-gave-up"] += 1
            self._checks = {t: c for t, c in self._checks.items() if not (c.pair is pair and c.purpose == "check")}
            if not pair.valid:
                self._set_pair(pair, PairState.FAILED)
            self._check_failed()
            return
        retry = self._tcp_open(now, pair, now + self.config.tcp.backoff(attempts))
        retry.pending = [frame(c.tx.request) for c in outstanding]

    def _tcp_deadlines(self) -> list[float]:
        if not self._tcp.conns:
            return []
        pace, timeout = self._tcp.next_connect_at, self.config.tcp.connect_timeout
        times = [max(c.due_at, pace) if c.started_at is None else c.started_at + timeout
                 for c in self._tcp.conns.values() if c.state is ConnState.CONNECTING and c.outgoing]
        times.extend(c.started_at + self.config.tcp.accept_idle for c in self._tcp_idle_candidates()
                     if c.started_at is not None)
        return times

    def _tcp_idle_candidates(self) -> list[TcpConn]:
        """Accepted connections no authenticated check has tied to a pair (yet): closed after ``accept_idle``."""
        bound = {c.id for c in self._tcp.pair_conn.values()} | {conn_id for conn_id, *_ in self._tcp.early}
        return [c for c in self._tcp.conns.values() if not c.outgoing and c.started_at is not None
                and c.id not in bound]

    def _tcp_handle_timeout(self, now: float) -> None:
        for conn in self._tcp_idle_candidates() if self._tcp.conns else ():
            assert conn.started_at is not None
            if now >= conn.started_at + self.config.tcp.accept_idle:
                self.stats["tcp-accepted-idle-closed"] += 1
                self._tcp_drop(conn)
        for conn in list(self._tcp.conns.values()):
            if conn.state is not ConnState.CONNECTING or not conn.outgoing:
                continue
            if conn.started_at is None:
                pair = self._tcp_pair_of(conn)
                if pair is None:
                    self._tcp_drop(conn)
                elif now >= max(conn.due_at, self._tcp.next_connect_at):
                    self._tcp_start(now, conn, pair)
            elif now >= conn.started_at + self.config.tcp.connect_timeout:
                self.stats["tcp-connect-timeout"] += 1
                self._tcp.out.append(TcpClose(conn.id))
                self._tcp_lost(now, conn)

    def _tcp_close_all(self) -> None:
        for conn in list(self._tcp.conns.values()):
            self._tcp_drop(conn)


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, host)  # the common case, without ipaddress's objects
        return True
    except OSError:
        pass
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _token(rng: random.Random, n: int) -> str:
    """ice-char tokens (RFC 8839 §5.4: ALPHA / DIGIT / "+" / "/")."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(alphabet[rng.getrandbits(6)] for _ in range(n))
