"""A cell's timeline: what happens to the network after both agents selected a pair, and what must follow.

A timeline is a list of steps, run in order once the cell has connected and passed data. Each step may wait
(``after`` seconds) and then does one thing:

- ``block = "direct"`` / ``unblock = "direct"``: UDP between the peers themselves (anything not to or from the
  STUN/TURN server) is dropped at the peers' hosts, both ways or one (``direction = "a-to-b"`` / ``"b-to-a"``);
  ``block = "turn"``: everything to and from the server;
- ``nat_reboot = "NODE"``: that NAT node (``nat-a``, as ``icelab topo check`` and the artifacts name it) loses
  every mapping (the lab reloads its rules and flushes its conntrack table; the sim rebuilds its model);
- ``turn_restart = true``: the TURN server restarts and forgets every allocation; a client learns it from the
  437 its next request gets and allocates again (RFC 8656 §8);
- ``restart = true``: both agents restart ICE (RFC 8445 §9), as an application does on a network change;
- ``link_loss = FRACTION``: host ``a``'s access link loses this fraction of packets each way on top of its own
  conditions (0: back to them);
- ``link = { loss = FRACTION, delay_ms = MS, jitter_ms = MS, bandwidth_mbit = MBIT }``: host ``a``'s access link
  gets these conditions (those not named keep their value; the link starts with the spec's, normally none; a loss
  of 1 is a dead link; a bandwidth of 0 unshaped); the lab replaces the link's nft loss rules and tbf qdiscs and
  tells its delay forwarder, the sim replaces the link's conditions in its model;
- ``renumber = "a"`` / ``"b"``: that peer's host interface gets another address of its subnet (the old one is
  removed, the default route follows): its sockets on the old address are dead and packets to it vanish. The
  peer's stack notices (icelab's ``Connection``: a send failing because its local address is gone), gathers
  again on the new address and restarts ICE (RFC 8445 §9); the other side restarts when the new credentials
  arrive through the cell's signalling (RFC 8839 §4.4.1.1.1);
- ``stream = "off"`` / ``"on"``: the data stream stops (the pair goes idle: only the agents' own consent checks,
  if any, cross the NATs) or resumes;
- ``on = "disconnected" | "failed" | "checking" | "connected" | "completed" | "selected"`` with ``within =
  SECONDS`` (and ``side = "a"`` / ``"b"``; either by default): wait until an agent enters that ICE state
  (RFC 8445 §6.1.3, ``disconnected`` and ``failed`` as consent freshness has them, RFC 7675 §5.1) or selects a new
  pair after the previous action, and record how long after that action it came (the time to detect). The steps
  after it run upon that event: ``{ on = "failed", within = 8 }, { unblock = "direct" }`` unblocks as soon as
  consent is lost. The agents' states are looked at every ``TICK``, before the restart policy acts;
- ``expect = "direct" | "relay" | "none"`` with ``within = SECONDS``: wait until the data stream flows both ways on
  that kind of path (``none``: one direction or both has been silent for a second) and record how long it took,
  how many datagrams were lost each way since the previous action and whether both sides restarted ICE since it;
  ``restarted = true`` also requires that restart (a path that came back without one is not the recovery the
  step expects).

Throughout the timeline each side sends a small datagram every ``TICK`` on its selected pair; the counts say how
many were lost. With the cell's ``restart_on_failure``, the application's policy is to restart ICE on both sides
when either agent reports ``failed`` (consent lost, RFC 7675 §5.1, or every pair failed), at most once per
``RESTART_HOLDOFF``. Both back-ends run the same steps through :class:`TimelineNetwork`: the kernel lab in real
time, the simulation on its virtual clock.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ice.agent import AgentState, IceAgent
from ice.scenario.cell import PathKind

TICK = 0.05
"""Seconds between two data datagrams of each side's stream."""
FRESH = 1.0
"""Data flows when each side received a datagram within this many seconds; otherwise the path is ``none``."""
RESTART_HOLDOFF = 2.0
"""The restart-on-failure policy restarts ICE at most this often."""

ACTIONS = ("block", "unblock", "nat_reboot", "turn_restart", "restart", "link_loss", "stream", "expect", "link",
           "renumber", "on")
EVENTS = ("checking", "connected", "completed", "disconnected", "failed", "selected")
"""What an ``on`` step waits for: an ICE state (:class:`ice.agent.AgentState` values) or a newly selected pair."""
SIDES = ("either", "a", "b")
BLOCKABLE = ("direct", "turn")
DIRECTIONS = ("both", "a-to-b", "b-to-a")
LINK_FIELDS = ("loss", "delay_ms", "jitter_ms", "bandwidth_mbit")
"""What a ``link`` step may change (:class:`ice.topology.spec.LinkConditions` fields)."""


def parse_link_change(value: object) -> tuple[tuple[str, float], ...]:
    """A ``link`` step's table as (field, value) pairs in :data:`LINK_FIELDS` order; ValueError saying what is
    wrong."""
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"link is a table of {', '.join(LINK_FIELDS)} (e.g. {{ delay_ms = 80, bandwidth_mbit = 2 "
                         f"}}), not {value!r}")
    unknown = sorted(set(value) - set(LINK_FIELDS))
    if unknown:
        raise ValueError(f"link changes {', '.join(LINK_FIELDS)}, not {', '.join(unknown)}")
    for key, x in value.items():
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0:
            raise ValueError(f"link {key} is a number >= 0, not {x!r}")
    if value.get("loss", 0) > 1:
        raise ValueError(f"link loss is a fraction in [0, 1] (1: a dead link), not {value['loss']!r}")
    if "jitter_ms" in value and ("delay_ms" not in value or value["jitter_ms"] > value["delay_ms"]):
        raise ValueError("link jitter_ms goes with a delay_ms at least as large")
    return tuple((k, float(value[k])) for k in LINK_FIELDS if k in value)


@dataclass(frozen=True)
class Step:
    """One step of a timeline (see the module docstring)."""

    action: str
    """One of :data:`ACTIONS`."""
    target: str = ""
    """``direct``/``turn`` for block and unblock, the NAT node for nat_reboot, the path for expect."""
    after: float = 0.0
    direction: str = "both"
    within: float = 0.0
    link: tuple[tuple[str, float], ...] = ()
    """The ``link`` step's changes: (field, value) pairs."""
    restarted: bool = False
    """expect: both sides must have restarted ICE since the previous action."""
    side: str = "either"
    """on: which agent must report the event."""

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.after:
            doc["after"] = self.after
        doc[self.action] = True if self.action in ("restart", "turn_restart") else \
            float(self.target) if self.action == "link_loss" else dict(self.link) if self.action == "link" else \
            self.target
        if self.direction != "both":
            doc["direction"] = self.direction
        if self.action in ("expect", "on"):
            doc["within"] = self.within
            if self.restarted:
                doc["restarted"] = True
        if self.side != "either":
            doc["side"] = self.side
        return doc

    @property
    def label(self) -> str:
        what = {"restart": "restart ICE", "turn_restart": "restart the TURN server",
                "expect": f"expect {self.target}{' after an ICE restart' if self.restarted else ''} within "
                          f"{self.within:g} s",
                "link": "link " + " ".join(f"{k}={v:g}" for k, v in self.link),
                "on": f"on {self.target}" + (f" ({self.side})" if self.side != "either" else "") +
                      f" within {self.within:g} s"}.get(
            self.action, f"{self.action} {self.target}" + (f" ({self.direction})" if self.direction != "both"
                                                            else ""))
        return (f"after {self.after:g} s: " if self.after else "") + what

    @classmethod
    def parse(cls, table: object) -> Step:
        """One step from its TOML/JSON table; ValueError saying what is wrong."""
        if not isinstance(table, Mapping):
            raise ValueError(f"a timeline step is a table such as {{ after = 1, block = \"direct\" }}, not {table!r}")
        doc = dict(table)
        after = doc.pop("after", 0)
        if isinstance(after, bool) or not isinstance(after, (int, float)) or after < 0:
            raise ValueError(f"after is a number of seconds >= 0, not {after!r}")
        direction = doc.pop("direction", "both")
        within = doc.pop("within", None)
        restarted = doc.pop("restarted", False)
        side = doc.pop("side", "either")
        actions = [k for k in doc if k in ACTIONS]
        unknown = sorted(set(doc) - set(ACTIONS))
        if unknown:
            raise ValueError(f"a timeline step knows after, direction, within, restarted, side and one of "
                             f"{', '.join(ACTIONS)}; "
                             f"not {', '.join(unknown)}")
        if len(actions) != 1:
            raise ValueError(f"a timeline step does exactly one of {', '.join(ACTIONS)} (got "
                             f"{', '.join(actions) or 'none'})")
        action = actions[0]
        value = doc[action]
        if action in ("block", "unblock"):
            if value not in BLOCKABLE:
                raise ValueError(f"{action} is one of {', '.join(BLOCKABLE)}, not {value!r}")
            if direction not in DIRECTIONS:
                raise ValueError(f"direction is one of {', '.join(DIRECTIONS)}, not {direction!r}")
            if value == "turn" and direction != "both":
                raise ValueError("the server is blocked both ways (direction applies to direct)")
        elif direction != "both":
            raise ValueError("direction goes with block and unblock")
        if action == "nat_reboot" and (not isinstance(value, str) or not value):
            raise ValueError(f"nat_reboot names a NAT node of the cell's topology (e.g. \"nat-a\"), not {value!r}")
        if action in ("restart", "turn_restart") and value is not True:
            raise ValueError(f"{action} = true")
        if action == "link_loss" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < 1):
            raise ValueError(f"link_loss is a fraction in [0, 1), not {value!r}")
        link = parse_link_change(value) if action == "link" else ()
        if action == "stream" and value not in ("on", "off"):
            raise ValueError(f"stream is on or off, not {value!r}")
        if action == "expect":
            if value not in {p.value for p in PathKind}:
                raise ValueError(f"expect is direct, relay or none, not {value!r}")
            if isinstance(within, bool) or not isinstance(within, (int, float)) or within <= 0:
                raise ValueError("an expect step needs within = SECONDS (> 0)")
        elif action == "on":
            if value not in EVENTS:
                raise ValueError(f"on is one of {', '.join(EVENTS)}, not {value!r}")
            if isinstance(within, bool) or not isinstance(within, (int, float)) or within <= 0:
                raise ValueError("an on step needs within = SECONDS (> 0)")
        elif within is not None:
            raise ValueError("within goes with expect and on")
        if side not in SIDES or (side != "either" and action != "on"):
            raise ValueError(f"side is a or b and goes with on, not {side!r}")
        if restarted is not False and (action != "expect" or restarted is not True):
            raise ValueError("restarted = true goes with expect")
        if action == "renumber" and value not in ("a", "b"):
            raise ValueError(f"renumber names a peer, \"a\" or \"b\", not {value!r}")
        return cls(action, "" if action in ("restart", "turn_restart", "link") else str(value), float(after),
                   str(direction), float(within or 0), link, bool(restarted), str(side))


def changes_delay(steps: tuple[Step, ...]) -> bool:
    """Does a ``link`` step change the delay (the lab then splices a delay forwarder into host a's link)?"""
    return any(s.action == "link" and any(k in ("delay_ms", "jitter_ms") for k, _ in s.link) for s in steps)


def parse_timeline(value: object) -> tuple[Step, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("timeline is a non-empty list of steps, e.g. [{ after = 1, block = \"direct\" }, "
                         "{ expect = \"relay\", within = 30 }]")
    steps = []
    for i, table in enumerate(value, 1):
        try:
            steps.append(Step.parse(table))
        except ValueError as exc:
            raise ValueError(f"timeline step {i}: {exc}") from None
    return tuple(steps)


@dataclass
class StepResult:
    step: Step
    at: float
    """Seconds since the timeline began when the step was done (or, for expect, met or given up)."""
    ok: bool = True
    took: float | None = None
    """expect: seconds from the previous action until the path was the expected one."""
    observed: str | None = None
    """expect: the path at the end of the step."""
    detail: str | None = None
    """renumber: the address change (``10.0.1.2 -> 10.0.1.254``)."""
    lost: dict[str, int] | None = None
    """expect: datagrams sent since the previous action that did not arrive, each way."""
    restarted: bool | None = None
    """expect: did both sides restart ICE (new local credentials) since the previous action?"""
    seen_by: str | None = None
    """on: the side(s) that reported the event (``a``, ``b``, ``a,b``)."""

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"step": self.step.label, "at_s": round(self.at, 3), "ok": self.ok}
        if self.step.action == "expect":
            doc["observed"] = self.observed
            doc["took_s"] = None if self.took is None else round(self.took, 3)
            if self.lost is not None:
                doc["lost"] = self.lost
            if self.restarted is not None:
                doc["restarted"] = self.restarted
        if self.step.action == "on":
            doc["took_s"] = None if self.took is None else round(self.took, 3)
            doc["seen_by"] = self.seen_by
        if self.detail is not None:
            doc["detail"] = self.detail
        return doc


@dataclass(frozen=True)
class Mark:
    """The stream's counts and both sides' local ufrags just before an action: what the expect steps after it
    compare with (datagrams lost since, an ICE restart since)."""

    sent: dict[str, int]
    received: dict[str, int]
    ufrags: tuple[str, str]


@dataclass
class TimelineNetwork(abc.ABC):
    """What a back-end gives the timeline: its clock, its network actions, the two agents and the data stream.
    The stream and the restart policy are here; the back-ends supply the primitives."""

    restart_on_failure: bool = False
    sent: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    received: dict[str, int] = field(default_factory=lambda: {"a": 0, "b": 0})
    last_received: dict[str, float | None] = field(default_factory=lambda: {"a": None, "b": None})
    restarts: int = 0
    streaming: bool = True
    since: float = 0.0
    """When the last action was done: only data received after it says where the path is now."""
    _last_restart: float = -1e9
    seen: dict[str, set[str]] = field(default_factory=lambda: {"a": set(), "b": set()})
    """The ICE states each side entered since the last action (looked at every tick), and ``selected`` once it
    selected another pair than it had then: what ``on`` steps wait for."""
    _state_then: dict[str, str] = field(default_factory=dict)
    _selected_then: dict[str, object] = field(default_factory=dict)

    # ----------------------------------------------------------------------------- back-end primitives

    @abc.abstractmethod
    def now(self) -> float: ...

    @abc.abstractmethod
    async def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        """Let time pass (calling :meth:`tick` every :data:`TICK`), until ``stop()`` if given."""

    @abc.abstractmethod
    def block(self, what: str, direction: str, on: bool) -> None: ...

    @abc.abstractmethod
    def nat_reboot(self, role: str) -> None: ...

    @abc.abstractmethod
    def link_loss(self, loss: float) -> None:
        """Host ``a``'s access link loses ``loss`` of its packets each way, on top of its own conditions."""

    @abc.abstractmethod
    def set_link(self, changes: Mapping[str, float]) -> None:
        """Host ``a``'s access link gets these conditions (:data:`LINK_FIELDS`; the others keep their value)."""

    @abc.abstractmethod
    async def turn_restart(self) -> None:
        """The TURN server loses every allocation (a new server on the same address)."""

    @abc.abstractmethod
    def restart_agents(self) -> None:
        """ICE restart on both sides, new credentials and candidates signalled to the other."""

    @abc.abstractmethod
    def renumber(self, side: str) -> str:
        """Host ``side`` moves to a spare address of its subnet (``Fabric.spare_address``); returns ``"OLD -> NEW"``.
        Its stack notices and restarts ICE; the other side answers through the cell's signalling."""

    @abc.abstractmethod
    def ufrags(self) -> tuple[str, str]:
        """Both sides' current local ufrags (a new one means an ICE restart)."""

    @abc.abstractmethod
    def network_restarts(self) -> int:
        """ICE restarts a side did on its own because its network changed (each answered by the other side)."""

    @abc.abstractmethod
    def send(self, side: str, data: bytes) -> bool:
        """Send one datagram on ``side``'s selected pair (False: no pair, or consent lost)."""

    @abc.abstractmethod
    def relayed(self, side: str) -> bool:
        """Does ``side``'s selected pair have a relayed candidate?"""

    @abc.abstractmethod
    def agent(self, side: str) -> IceAgent:
        """``side``'s ICE agent."""

    def failed(self, side: str) -> bool:
        return self.agent(side).state is AgentState.FAILED

    def observe(self) -> None:
        """Note the states the agents entered since the last look (and a newly selected pair) for ``on`` steps."""
        for side in "ab":
            agent = self.agent(side)
            if agent.state.value != self._state_then.get(side):
                self._state_then[side] = agent.state.value
                self.seen[side].add(agent.state.value)
            if agent.selected is not None and agent.selected is not self._selected_then.get(side):
                self.seen[side].add("selected")

    def watch(self) -> None:
        """An action is about to happen: ``on`` steps after it see only what comes next."""
        self.seen = {"a": set(), "b": set()}
        self._state_then = {side: self.agent(side).state.value for side in "ab"}
        self._selected_then = {side: self.agent(side).selected for side in "ab"}

    # ----------------------------------------------------------------------------- shared behaviour

    def on_data(self, side: str) -> None:
        """A stream datagram arrived at ``side`` (the back-end calls this)."""
        self.received[side] += 1
        self.last_received[side] = self.now()

    def tick(self) -> None:
        """Every :data:`TICK`: each side sends its next datagram; the restart policy looks at the agents."""
        self.observe()
        for side in "ab":
            if self.streaming and self.send(side, b"t"):
                self.sent[side] += 1
        now = self.now()
        if self.restart_on_failure and (self.failed("a") or self.failed("b")) \
                and now - self._last_restart >= RESTART_HOLDOFF:
            self._last_restart = now
            self.restart()

    def restart(self) -> None:
        self.restarts += 1
        self.restart_agents()

    def path(self) -> PathKind | None:
        """Where data flows now: ``direct``/``relay`` once both sides received since the last action and within
        :data:`FRESH` (the selected pairs say which); ``none`` once a direction has been silent for :data:`FRESH`
        and that long has passed since the action (a session that works one way only is broken); None (not yet
        known) in between."""
        now = self.now()
        times = list(self.last_received.values())
        if all(t is not None and t >= self.since and now - t <= FRESH for t in times):
            return PathKind.RELAY if self.relayed("a") or self.relayed("b") else PathKind.DIRECT
        if now - self.since >= FRESH and any(t is None or now - t > FRESH for t in times):
            return PathKind.NONE
        return None

    def counts(self) -> dict[str, Any]:
        return {"sent": dict(self.sent), "received": {"a-to-b": self.received["b"], "b-to-a": self.received["a"]},
                "lost": {"a-to-b": max(0, self.sent["a"] - self.received["b"]),
                         "b-to-a": max(0, self.sent["b"] - self.received["a"])},
                "restarts": self.restarts, "network_restarts": self.network_restarts()}

    def mark(self) -> Mark:
        return Mark(dict(self.sent), dict(self.received), self.ufrags())

    def since_mark(self, mark: Mark) -> tuple[dict[str, int], bool]:
        """(datagrams lost each way, did both sides restart ICE) since ``mark``."""
        lost = {"a-to-b": max(0, self.sent["a"] - mark.sent["a"] - (self.received["b"] - mark.received["b"])),
                "b-to-a": max(0, self.sent["b"] - mark.sent["b"] - (self.received["a"] - mark.received["a"]))}
        now = self.ufrags()
        return lost, now[0] != mark.ufrags[0] and now[1] != mark.ufrags[1]


def _met(net: TimelineNetwork, want: PathKind, mark: Mark | None) -> Callable[[], bool]:
    """An expect step's stop condition: the path is ``want`` (and, given the mark of the previous action, both
    sides restarted ICE since it)."""
    return lambda: net.path() is want and (mark is None or net.since_mark(mark)[1])


def _seen_by(net: TimelineNetwork, step: Step) -> str:
    """The sides (``a``, ``b``, ``a,b``) that showed an on step's event since the last action ("": none yet)."""
    return ",".join(s for s in ("ab" if step.side == "either" else step.side) if step.target in net.seen[s])


async def run_timeline(steps: tuple[Step, ...], net: TimelineNetwork) -> list[StepResult]:
    """Run the steps in order; an expect step that is not met within its time ends the timeline."""
    results: list[StepResult] = []
    start = net.now()
    last_action = net.since = start
    mark = net.mark()
    net.watch()
    for step in steps:
        if step.after:
            await net.run_for(step.after)
        if step.action == "on":
            def event_seen(step: Step = step) -> bool:
                return bool(_seen_by(net, step))

            await net.run_for(step.within, stop=event_seen)
            net.observe()
            by = _seen_by(net, step)
            results.append(StepResult(step, net.now() - start, bool(by), net.now() - last_action if by else None,
                                      seen_by=by or None))
            if not by:
                break
            continue
        if step.action == "expect":
            want = PathKind(step.target)
            await net.run_for(step.within, stop=_met(net, want, mark if step.restarted else None))
            observed = net.path()
            lost, restarted = net.since_mark(mark)
            ok = observed is want and (restarted or not step.restarted)
            results.append(StepResult(step, net.now() - start, ok, net.now() - last_action if ok else None,
                                      observed.value if observed is not None else "changing", lost=lost,
                                      restarted=restarted))
            if not ok:
                break
            continue
        mark = net.mark()  # before the action: a restart it causes counts as after it
        net.watch()
        if step.action in ("block", "unblock"):
            net.block(step.target, step.direction, step.action == "block")
        elif step.action == "nat_reboot":
            net.nat_reboot(step.target)
        elif step.action == "turn_restart":
            await net.turn_restart()
        elif step.action == "restart":
            net.restart()
        elif step.action == "stream":
            net.streaming = step.target == "on"
        elif step.action == "link_loss":
            net.link_loss(float(step.target))
        elif step.action == "link":
            net.set_link(dict(step.link))
        detail = net.renumber(step.target) if step.action == "renumber" else None
        last_action = net.since = net.now()
        results.append(StepResult(step, last_action - start, detail=detail))
    return results


def timeline_verdict(results: list[StepResult], steps: tuple[Step, ...]) -> str:
    """Why the timeline failed ("" when every step was met)."""
    for r in results:
        if not r.ok and r.step.action == "on":
            return f"timeline: {r.step.label}: no agent reported it"
        if not r.ok and r.step.restarted and r.observed == r.step.target and not r.restarted:
            return f"timeline: {r.step.label}: the path was {r.observed}, but not after an ICE restart on both sides"
        if not r.ok:
            return f"timeline: {r.step.label}: the path was {r.observed} after {r.step.within:g} s"
    if len(results) < len(steps):
        return "timeline: it stopped early"
    return ""


__all__ = ["EVENTS", "FRESH", "LINK_FIELDS", "RESTART_HOLDOFF", "TICK", "Step", "StepResult", "TimelineNetwork",
           "changes_delay", "parse_link_change", "parse_timeline", "run_timeline", "timeline_verdict"]
