"""The agent's cached ``next_timeout()``: never stale, and not recomputed by ``send`` (virtual clock only)."""

from __future__ import annotations

import random

from agent_net import Net, exchange

from ice.agent import AgentConfig, AgentState, Candidate, CandidateType, IceAgent, Nomination
from ice.agent.session import IceSession

A1, B1 = ("10.0.0.1", 1000), ("10.0.0.2", 2000)


class CheckedAgent(IceAgent):
    """An agent whose every ``next_timeout()`` answer is compared with a fresh computation."""

    asked = 0

    def next_timeout(self) -> float | None:
        cached = super().next_timeout()
        assert cached == self._next_timeout(), "the cached deadline went stale"
        self.asked += 1
        return cached


def _checked(agent: IceAgent) -> None:
    """The same check on an agent something else made (a session's streams)."""
    cached = agent.next_timeout

    def next_timeout() -> float | None:
        at = cached()
        assert at == agent._next_timeout(), "the cached deadline went stale"
        return at

    agent.next_timeout = next_timeout  # type: ignore[method-assign]


def _pair(cfg_a: AgentConfig | None = None, controlling_b: bool = False, seed: int = 1,
          kind: type[IceAgent] = CheckedAgent) -> tuple[Net, CheckedAgent, CheckedAgent]:
    net = Net()
    a = kind(True, cfg_a or AgentConfig(), rng=random.Random(seed))
    b = kind(controlling_b, AgentConfig(), rng=random.Random(seed + 100))
    net.attach(a, A1)
    net.attach(b, B1)
    return net, a, b  # type: ignore[return-value]


def _connected(*xs: IceAgent) -> bool:
    return all(x.selected is not None and x.state in (AgentState.CONNECTED, AgentState.COMPLETED) for x in xs)


def test_cached_deadline_follows_a_whole_session_lifetime() -> None:
    """Connect, lose a check, consent, outage to disconnected and failed, restart: the network asks every agent's
    deadline at every step, and each answer must equal a fresh computation."""
    net, a, b = _pair()
    net.drop = lambda s, d, data: net.now < 0.3 and s == A1  # A's first checks are lost: retransmissions, triggers
    exchange(net, a, b)
    net.run(3.0, stop=lambda: _connected(a, b))
    assert _connected(a, b)
    net.drop = None
    net.run(net.now + 12.0)  # consent checks on their randomised timer
    net.drop = lambda s, d, data: True
    net.run(net.now + 40.0)  # disconnected, then consent lost
    assert a.state is AgentState.FAILED
    net.drop = None
    a.restart(net.now)
    b.restart(net.now)
    exchange(net, a, b)
    net.run(net.now + 3.0, stop=lambda: _connected(a, b))
    assert _connected(a, b)
    a.close()
    assert a.next_timeout() is None
    assert a.asked > 100 and b.asked > 100


def test_cached_deadline_through_a_role_conflict_and_aggressive_nomination() -> None:
    net, a, b = _pair(controlling_b=True)
    exchange(net, a, b)
    net.run(2.0, stop=lambda: _connected(a, b))
    assert _connected(a, b) and a.controlling != b.controlling
    net, a, b = _pair(AgentConfig(nomination=Nomination.AGGRESSIVE))
    exchange(net, a, b)
    net.run(2.0, stop=lambda: _connected(a, b))
    assert _connected(a, b)


def test_a_stream_moving_the_shared_pacer_invalidates_the_other_streams_deadline() -> None:
    """Streams of one session share Ta: stream 0's check moves the pacer, so stream 1's cached deadline (which
    waits for that Ta slot) must move too, though nothing was called on stream 1."""
    session = IceSession(True, streams=2, config=AgentConfig(), rng=random.Random(5))
    s0, s1 = session.stream(0), session.stream(1)
    for i, stream in enumerate((s0, s1)):
        stream.add_host_candidate(("10.0.0.1", 6000 + i))
        _checked(stream)
    session.set_remote_credentials(0.0, "abcd", "x" * 22)
    s1.add_remote_candidate(0.0, Candidate("9", 1, "udp", 9000, "10.0.0.9", 9000, CandidateType.HOST))
    first = s1.next_timeout()
    assert first is not None  # stream 1 checked at once and now waits for its retransmission
    s0.add_remote_candidate(0.0, Candidate("8", 1, "udp", 8000, "10.0.0.8", 8000, CandidateType.HOST))
    s1.add_remote_candidate(0.0, Candidate("7", 1, "udp", 7000, "10.0.0.7", 7000, CandidateType.HOST))
    at = s1.next_timeout()
    assert at == 0.05  # the next Ta slot, stream 1's second pair waits for it
    s0.handle_timeout(at)  # stream 0 takes that slot (nothing is called on stream 1)
    assert s1.next_timeout() == at + 0.05


def test_send_does_not_recompute_the_deadline_and_a_timeout_does() -> None:
    net, a, b = _pair(kind=IceAgent)
    exchange(net, a, b)
    net.run(2.0, stop=lambda: _connected(a, b))
    before = a.next_timeout()  # computed once here
    calls = 0
    compute = a._next_timeout

    def counted() -> float | None:
        nonlocal calls
        calls += 1
        return compute()

    a._next_timeout = counted  # type: ignore[method-assign]
    for _ in range(100):
        assert a.send(b"data")
        assert a.next_timeout() == before
    a.handle_datagram(net.now, A1, B1, b"data")  # application data moves no deadline either
    assert calls == 0
    assert before is not None
    a.handle_timeout(before)  # the consent check goes out: the deadline moves
    after = a.next_timeout()
    assert calls == 1 and after is not None and after > before
