"""Every timer and limit of the agent, in one place (RFC 8445 §14, RFC 7675 §5.1)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from ice.agent.tcp import TcpConfig


class Nomination(enum.Enum):
    REGULAR = "regular"
    """RFC 8445 §8.1.1: the controlling agent nominates a valid pair by repeating its check with USE-CANDIDATE."""
    AGGRESSIVE = "aggressive"
    """RFC 5245 §8.1.1.2 (for interop): every check carries USE-CANDIDATE; the first valid pair wins."""


@dataclass(frozen=True)
class AgentConfig:
    ta: float = 0.05
    """Pacing of ordinary connectivity checks (RFC 8445 §14.2: default 50 ms). The first check goes at once."""
    pace_triggered: bool = False
    """Also pace triggered and nominating checks by Ta (the RFC's letter). Off by default: a triggered check is
    one packet in answer to the peer's, and sending it at once is what makes connecting through NATs fast."""
    triggered_grace: float = 0.005
    """When the peer's check arrives on a pair whose own check left less than this long ago, the triggered check
    (RFC 8445 §7.3.1.4) waits until then for that check's answer, as the RFC's pacing of triggered checks allows:
    checks that cross (both sides checking one pair at once) then cost one round trip each instead of two, and a
    check the peer's NAT dropped delays the triggered one by at most this much. 0: trigger at once."""
    check_rto: float = 0.5
    """Initial retransmission timeout of a check; RFC 8445 §14.3 uses max(500 ms, N x Ta)."""
    check_max_sends: int = 7
    """Rc for checks (RFC 8489 §6.2.1); a check fails after the full schedule."""
    nomination_wait: float = 0.05
    """How long a higher-priority pair still in progress may delay nominating a valid lower one. A check unanswered
    for longer is most likely hopeless (a host pair across NATs): libnice waits seconds for those."""
    relay_nomination_wait: float = 1.0
    """The same, when the valid pair is relayed and the better one is direct: a direct pair through a NAT that
    filters by address often succeeds on its first retransmission (500 ms) once the peer's own check has opened
    the way, and a relay costs latency and server capacity for the whole call."""
    nomination: Nomination = Nomination.REGULAR
    lite: bool = False
    """ICE-lite (RFC 8445 §2.5): no checks of our own, always controlled; answer checks, accept nominations."""
    consent_interval: float = 5.0
    """RFC 7675 §5.1: consent checks every 4-6 s (this value +/- 20 %, randomised)."""
    consent_timeout: float = 30.0
    """RFC 7675 §5.1: consent is lost when no check succeeded for this long."""
    consent_rto: float = 0.5
    disconnected_after: float = 11.0
    """State becomes disconnected when no consent check succeeded for this long (two missed 4-6 s rounds);
    consent checks double as keepalives (RFC 7675 §5.1, RFC 8445 §11), so no separate keepalive timer runs."""
    keepalive: bool = True
    """False: no consent checks at all, so nothing keeps NAT mappings alive on an idle pair and nothing notices a
    dead one. Not RFC 7675 / RFC 8445 §11 conformant: it exists to test what NATs do to an agent that stays quiet."""
    lite_consent_use_candidate: bool = True
    """Facing an ICE-lite peer as the controlling agent, consent checks also carry USE-CANDIDATE (re-nominating the
    selected pair, which RFC 8445 §8.1.1 allows): some lite servers ignore consent checks without it and drop the
    session (elixir-webrtc/ex_ice#110)."""
    max_pairs: int = 100
    """RFC 8445 §6.1.2.5: a limit on the checklist size."""
    gather_rto: float = 0.5
    gather_max_sends: int = 7
    """Server-reflexive gathering retransmits like any STUN transaction (Rc = 7) so a lossy path still yields a
    srflx candidate; with trickle ICE it never delays the checks, only end-of-candidates."""
    gather_timeout: float | None = 8.0
    """The longest a STUN server may hold up end-of-candidates (RFC 8838 §8.2), in seconds from the request; None:
    the whole transaction schedule (RFC 8489 §6.2.1 with ``gather_rto`` 0.5 s, Rc 7, Rm 2: 32.5 s). 8 s covers the
    first five requests (sent at 0, 0.5, 1.5, 3.5, 7.5 s): a server ~0.5 s away, or four lost requests in a row,
    still yields a srflx candidate (in the simulation, 30 % loss connects as often as with no bound, where 5 s
    did not). Past it the request is abandoned and reported (:class:`~ice.agent.events.StunServerUnreachable`);
    ICE may still learn the mapping as a peer-reflexive candidate (RFC 8445 §7.2.5.3.1). Candidates gathered
    meanwhile trickle at once. A server whose host answers with ICMP port unreachable is reported at once (the
    asyncio layer calls :meth:`IceAgent.stun_server_unreachable`)."""
    nomination_timeout: float | None = 40.0
    """Controlled side: ICE fails when no nomination (USE-CANDIDATE, RFC 8445 §7.3.1.5) arrives this long after
    the later of our first valid pair and the last check the peer sent us; None disables it (wait forever, as
    RFC 8445 permits). A controlling agent still working sends checks (paced by Ta) or retransmits them, and its
    longest silence before nominating is one check transaction running its whole schedule: RFC 8489 §6.2.1 with
    RFC 8445 §14.3's RTO of 500 ms, Rc 7, Rm 16 is 39.5 s; 40 s covers it."""
    unsigned_401_fails_pair: bool = True
    """A check answered with 401 Unauthorized fails its pair at once (RFC 8445 §7.2.5.2.4: an unrecoverable
    error), even though a 401 to a check carries no MESSAGE-INTEGRITY (the peer could not verify ours, RFC 8489
    §9.1.3). RFC 8489 §9.1.3.3 would discard such a response and let the transaction run out (39.5 s, then
    "integrity violated"); only an on-path attacker, who sees the 96-bit transaction ID and could drop the check
    anyway, can forge one. False: the RFC 8489 behaviour (the 401 is remembered for the failure's reason)."""
    tcp: TcpConfig = field(default_factory=TcpConfig)
    """ICE-TCP (RFC 6544): whether remote TCP candidates are paired, direction preferences, paced connection
    attempts, frame limit (:class:`~ice.agent.tcp.TcpConfig`). Off by default: the agent stays UDP-only."""
    software: str | None = None

    def __post_init__(self) -> None:
        if self.ta < 0 or self.check_rto <= 0 or self.check_max_sends < 1:
            raise ValueError("ta >= 0, check_rto > 0 and check_max_sends >= 1")
        if (self.gather_timeout is not None and self.gather_timeout <= 0) or \
                (self.nomination_timeout is not None and self.nomination_timeout <= 0):
            raise ValueError("gather_timeout and nomination_timeout are > 0 (or None: no bound)")

    def with_consent_timeout(self, seconds: float) -> AgentConfig:
        """The same config with consent lost after ``seconds`` (RFC 7675 §5.1 allows at most 30) and the consent
        checks and the disconnected state scaled to it: a check every third of the timeout (at most every 5 s), so
        two go unanswered before the state says disconnected at half of it."""
        if not 0 < seconds <= 30:
            raise ValueError("consent_timeout is more than 0 and at most 30 seconds (RFC 7675 §5.1)")
        return replace(self, consent_timeout=seconds, consent_interval=min(self.consent_interval, seconds / 3),
                       disconnected_after=min(self.disconnected_after, seconds / 2))
