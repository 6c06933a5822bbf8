"""A cell: two ICE agents (on the hosts ``a`` and ``b`` of a topology), a NAT behaviour for each of the topology's
NAT roles, link conditions and agent options. Cells are data: scenario files hold them as TOML tables (or a Python
module's ``cells()`` returns them), workers receive them as JSON, reports echo them.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ice.errors import UserError
from ice.nat.behaviour import Filtering, NatBehaviour, NatKind, SynAnswer, TcpBehaviour, preset
from ice.nat.behaviour import Mapping as MappingBehaviour

if TYPE_CHECKING:
    from ice.scenario.bulk import BulkPhase
    from ice.scenario.timeline import Step

GRID_GROUPS = ("rfc4787", "special")
"""Groups shown as the NAT A x NAT B grid (rows: the cell's first NAT role, columns: its second); the others are
listed below it."""

NAT_FIELDS: dict[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(NatBehaviour) if f.name != "description"}
"""The NatBehaviour fields a cell may override by name (``hairpinning``, ``port_preservation``,
``mapping_timeout``, ``filtering``...)."""

_ENUMS: dict[str, type[enum.Enum]] = {"mapping": MappingBehaviour, "filtering": Filtering, "kind": NatKind}


class PathKind(enum.Enum):
    """Where a cell's data ends up flowing."""

    DIRECT = "direct"
    """The selected pair has no relayed candidate."""
    RELAY = "relay"
    """The selected pair goes through TURN."""
    NONE = "none"
    """ICE fails."""


def _field_value(name: str, value: object) -> object:
    """A TOML/JSON value as the NatBehaviour field ``name`` holds it; ValueError saying what is expected."""
    if name in _ENUMS:
        choices = [e.value for e in _ENUMS[name]] + [e.name.lower() for e in _ENUMS[name]]
        shorts = {getattr(e, "short", None): e for e in _ENUMS[name]}
        if isinstance(value, str) and value in shorts:
            return shorts[value]
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return _ENUMS[name](value)
        except ValueError:
            raise ValueError(f"{name} is {value!r}, not one of {', '.join(str(c) for c in choices)}") from None
    if name in ("hairpinning", "port_preservation", "inbound_refresh"):
        if not isinstance(value, bool):
            raise ValueError(f"{name} is true or false, not {value!r}")
        return value
    if name == "mapping_timeout":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"mapping_timeout is a whole number of seconds, not {value!r}")
        return value
    if name == "port_range":
        if value is None:
            return None
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)):
            raise ValueError(f"port_range is [low, high], not {value!r}")
        return (value[0], value[1])
    if name == "allowed_tcp_ports":
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value)):
            raise ValueError(f"allowed_tcp_ports is a list of port numbers, not {value!r}")
        return tuple(value)
    if name == "tcp":
        return _tcp_value(value)
    raise ValueError(f"{name} cannot be set from a scenario")  # pragma: no cover - NAT_FIELDS lists the names


@dataclass(frozen=True)
class TcpChanges:
    """A cell's changes to its preset's TCP section (RFC 5382), e.g. ``tcp = { unsolicited_syn = "rst" }``: the
    fields not named keep the preset's values."""

    changes: tuple[tuple[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {k: _json_value(v) for k, v in self.changes}


def _tcp_value(value: object) -> TcpChanges:
    """A TOML/JSON table as changes to the TCP section (RFC 5382), e.g. ``{ unsolicited_syn = "rst" }``."""
    if isinstance(value, TcpChanges):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"tcp is a table such as {{ unsolicited_syn = \"rst\" }}, not {value!r}")
    fields = [f.name for f in dataclasses.fields(TcpBehaviour)]
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} is not a TCP field; valid fields: {', '.join(fields)}")
    changes: dict[str, object] = {}
    for key, v in value.items():
        if key in ("mapping", "filtering"):
            changes[key] = _field_value(key, v)
        elif key == "unsolicited_syn":
            try:
                changes[key] = SynAnswer(v)
            except ValueError:
                raise ValueError(f"tcp unsolicited_syn is {v!r}, not one of "
                                 f"{', '.join(a.value for a in SynAnswer)}") from None
        elif key in ("port_preservation", "simultaneous_open"):
            if not isinstance(v, bool):
                raise ValueError(f"tcp {key} is true or false, not {v!r}")
            changes[key] = v
        else:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"tcp {key} is a whole number of seconds, not {v!r}")
            changes[key] = v
    TcpBehaviour(**changes)  # type: ignore[arg-type]  # a bad value fails here, with the reason
    return TcpChanges(tuple(changes.items()))


@dataclass(frozen=True)
class NatChoice:
    """A role's NAT: a preset, optionally with some :class:`NatBehaviour` fields overridden by name."""

    preset: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, value: object) -> NatChoice:
        """``"eim-eif"`` or ``{preset = "eim-eif", hairpinning = false}``; ValueError saying what is wrong."""
        if isinstance(value, NatChoice):
            return value
        if isinstance(value, str):
            choice = cls(value)
        elif isinstance(value, Mapping):
            table = dict(value)
            name = table.pop("preset", None)
            if not isinstance(name, str):
                raise ValueError("a NAT table needs preset = \"NAME\" (e.g. { preset = \"eim-eif\", "
                                 "hairpinning = false })")
            unknown = sorted(set(table) - set(NAT_FIELDS))
            if unknown:
                raise ValueError(f"{', '.join(unknown)} is not a NAT field; valid fields: {', '.join(NAT_FIELDS)}")
            choice = cls(name, tuple((k, _field_value(k, v)) for k, v in table.items()))
        else:
            raise ValueError(f"a NAT is a preset name or a table with a preset, not {value!r}")
        choice.behaviour()  # a bad preset or an impossible combination fails here, with the reason
        return choice

    def behaviour(self) -> NatBehaviour:
        try:
            base = preset(self.preset)
        except UserError as exc:
            raise ValueError(str(exc)) from None
        if not self.overrides:
            return base
        changes = dict(self.overrides)
        tcp = changes.pop("tcp", None)
        try:
            if isinstance(tcp, TcpChanges):
                base = base.with_tcp(**dict(tcp.changes))
            return base.with_(**changes)
        except ValueError as exc:
            raise ValueError(f"{self.preset} with {self._text()}: {exc}") from None

    def _text(self) -> str:
        return ", ".join(f"{k}={str(_json_value(v)).lower()}" for k, v in self.overrides)

    @property
    def label(self) -> str:
        """``eim-eif``, or ``eim-eif (hairpinning=false)`` with overrides."""
        return f"{self.preset} ({self._text()})" if self.overrides else self.preset

    @property
    def slug(self) -> str:
        """The label as a cell-name part (only characters a cell name may hold): ``eim-eif``, or
        ``eim-eif+hairpinning=false``, ``eim-eif+port_range=40000-40999``, ``...+allowed_tcp_ports=443.3478``."""
        return "+".join([self.preset, *(f"{k}={_slug_value(k, v)}" for k, v in self.overrides)])

    def as_json(self) -> str | dict[str, Any]:
        if not self.overrides:
            return self.preset
        return {"preset": self.preset, **{k: _json_value(v) for k, v in self.overrides}}


def _slug_value(name: str, v: object) -> str:
    if isinstance(v, TcpChanges):
        return ".".join(f"{k}.{str(x).lower()}" for k, x in v.as_json().items())
    if isinstance(v, tuple):
        return ("-" if name == "port_range" else ".").join(str(x) for x in v)
    return str(_json_value(v)).lower()


def _json_value(v: object) -> Any:
    if isinstance(v, TcpChanges):
        return v.as_json()
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple):
        return list(v)
    return v


CELL_NAME = re.compile(r"[A-Za-z0-9._+=-]+")
"""What a cell name may hold (and it may not start with ``.``): it keys pins, names artifact directories and is
a word of the repro command."""

CELL_OPTIONS = ("turn", "relay_only", "nomination", "trickle", "controlling", "loss", "delay_ms", "group", "agent_a",
                "agent_b", "lite", "kill", "consent_timeout", "restart", "server", "timeline", "restart_on_failure",
                "keepalive", "bandwidth_mbit", "bulk", "transports", "udp_blocked", "tcp_types_a", "tcp_types_b")
"""What a cell may set besides its name, topology and NATs."""

TCP_TYPES = ("active", "passive", "so")
"""The tcptypes of RFC 6544 §4.1, each side's TCP host candidates by default."""

BUILTIN_AGENTS = ("icelab", "aioice", "libnice", "pion")
"""The agents a cell side may name (ice/agents/registry.py starts them); any other program is a command."""


@dataclass(frozen=True)
class AgentSide:
    """The ICE agent on one side of a cell: a built-in one, or a command speaking the agent protocol
    (docs/agent-protocol.md)."""

    name: str = "icelab"
    """A built-in agent's name, or ``command``."""
    command: str = ""

    @classmethod
    def parse(cls, value: object) -> AgentSide:
        """``"pion"`` or ``{ command = "./my-agent --flag" }``; ValueError saying what is accepted."""
        if isinstance(value, AgentSide):
            return value
        if isinstance(value, str) and value in BUILTIN_AGENTS:
            return cls(value)
        if isinstance(value, Mapping) and set(value) == {"command"} and isinstance(value["command"], str) \
                and value["command"].strip():
            return cls("command", value["command"].strip())
        raise ValueError(f"an agent is one of {', '.join(BUILTIN_AGENTS)} or {{ command = \"PROGRAM ARGS\" }}, "
                         f"not {value!r}")

    @property
    def foreign(self) -> bool:
        return self.name != "icelab"

    @property
    def label(self) -> str:
        return self.command if self.name == "command" else self.name

    def as_json(self) -> str | dict[str, str]:
        return {"command": self.command} if self.name == "command" else self.name


@dataclass(frozen=True)
class Cell:
    """One cell of a scenario suite."""

    name: str
    topology: str
    """The topology's name (built in, an entry point, or a ``--topologies`` directory)."""
    nats: tuple[tuple[str, NatChoice], ...] = ()
    """(role, NAT) for the topology's roles the cell sets; the others keep the topology's default."""
    turn: bool = True
    """A TURN server on the public segment (both peers allocate)."""
    loss: float = 0.0
    """Packet loss on A's access link (each direction), passed to the topology as a link condition."""
    delay_ms: float = 0.0
    """One-way delay on A's access link."""
    nomination: str = ""
    """"regular" (RFC 8445 §8.1.1), "aggressive" (RFC 5245 §8.1.1.2), or "" for each agent's own default (icelab's
    is regular; a foreign agent is told only what a cell names)."""
    relay_only: bool = False
    """Both peers offer relayed candidates only (the privacy policy)."""
    trickle: bool = True
    """Candidates are signalled as gathered (RFC 8838), or all at once when gathering ends."""
    controlling: str = "a"
    """Which agent starts controlling: "a", "b", "both" or "neither" (the last two are role conflicts, RFC 8445
    §7.3.1.1)."""
    group: str = ""
    """Where reports show the cell: ``rfc4787`` and ``special`` are the NAT A x NAT B grid; other groups are
    listed below it. Empty: the scenario file's name (the loaders fill it in)."""
    agent_a: AgentSide = AgentSide()
    """The agent on host ``a``."""
    agent_b: AgentSide = AgentSide()
    lite: str = ""
    """The side that is an ICE-lite agent (RFC 8445 §2.5): "a", "b" or "" (none)."""
    kill: str = ""
    """After both selected a pair, this side's agent is killed; the other must report consent lost (RFC 7675)."""
    consent_timeout: float = 0.0
    """With ``kill``: the survivor declares consent lost after this many seconds without a response instead of
    RFC 7675's 30 (0: the RFC's 30 s)."""
    restart: bool = False
    """After both selected a pair, both sides restart ICE (RFC 8445 §9) and must select a pair again."""
    timeline: tuple[Step, ...] = ()
    """What happens after both selected a pair and passed data (:mod:`ice.scenario.timeline`)."""
    restart_on_failure: bool = False
    """The application's policy during the timeline: restart ICE on both sides when either agent fails."""
    keepalive: bool = True
    """False: icelab's agents send no consent checks (``AgentConfig.keepalive``): what an idle pair's NAT mappings
    do without them."""
    server: str = "icelab"
    """The STUN/TURN server on the public segment: icelab's own, or ``coturn`` (Debian's, a TURN server with
    long-term credentials; ``turn = false`` cells get srflx candidates from it too)."""
    bandwidth_mbit: float = 0.0
    """A's access link's rate each way in Mbit/s (a token bucket filter: ``tbf`` in the lab, its model in the sim;
    0: not shaped)."""
    bulk: BulkPhase | None = None
    """After both selected a pair and passed data: N MB from A to B, measured (:mod:`ice.scenario.bulk`)."""
    transports: str = "udp"
    """The candidates icelab's agents gather: "udp" (the default), "tcp" (ICE-TCP only, RFC 6544: TCP host and
    server-reflexive candidates, relayed ones through TURN) or "both"."""
    udp_blocked: bool = False
    """UDP between the peers' sides is dropped (rules in the peers' hosts: whatever a peer sends over UDP to
    anything but the STUN/TURN server, and what it receives from anything else); the server stays reachable."""
    tcp_types_a: tuple[str, ...] = TCP_TYPES
    """The tcptypes of A's TCP host candidates (RFC 6544 §4.1): "active", "passive", "so". A foreign agent is told
    them (``set tcp-types``) only when they are not all three; otherwise it gathers what it gathers (libnice: active
    and passive), and the reasoning still counts all three, so a stack without one shows as a known failure."""
    tcp_types_b: tuple[str, ...] = TCP_TYPES

    def __post_init__(self) -> None:
        if not CELL_NAME.fullmatch(self.name) or self.name.startswith("."):
            raise ValueError(f"cell name {self.name!r} may hold only letters, digits and . _ + = - (not first: .); "
                             "it names files, artifact directories and shell words")
        if self.controlling not in ("a", "b", "both", "neither"):
            raise ValueError("controlling is 'a', 'b', 'both' or 'neither'")
        if self.nomination not in ("", "regular", "aggressive"):
            raise ValueError("nomination is 'regular' or 'aggressive'")
        if self.lite not in ("", "a", "b") or self.kill not in ("", "a", "b"):
            raise ValueError("lite and kill name a side: 'a' or 'b'")
        if self.server not in ("icelab", "coturn"):
            raise ValueError("server is 'icelab' or 'coturn'")
        if not 0 <= self.consent_timeout <= 30:
            raise ValueError("consent_timeout is 0 (RFC 7675's 30 s) to 30 seconds")
        if not 0 <= self.loss < 1:
            raise ValueError("loss is a fraction in [0, 1)")
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if self.bandwidth_mbit < 0:
            raise ValueError("bandwidth_mbit must be >= 0 (0: not shaped)")
        if self.transports not in ("udp", "tcp", "both"):
            raise ValueError(f"transports is 'udp', 'tcp' or 'both', not {self.transports!r}")
        for key in ("tcp_types_a", "tcp_types_b"):
            types = getattr(self, key)
            if not types or not set(types) <= set(TCP_TYPES) or len(set(types)) != len(types):
                raise ValueError(f"{key} lists tcptypes among {', '.join(TCP_TYPES)}, each once, not {list(types)!r}")
        if self.transports != "udp" and (self.lite or self.kill or self.restart):
            raise ValueError("transports 'tcp' and 'both' go with no lite, kill or restart (a foreign agent "
                             "is told `set transports`, and refuses it if it has no ICE-TCP)")
        if self.bulk is not None and self.in_processes:
            raise ValueError("bulk runs between icelab's own agents in the harness (no foreign agent, lite, kill, "
                             "restart or coturn)")

    @property
    def tcp(self) -> bool:
        """Does the cell use ICE-TCP (or block UDP between the peers)?"""
        return self.transports != "udp" or self.udp_blocked

    @property
    def nomination_mode(self) -> str:
        """What icelab's own agent does: the cell's nomination, regular by default."""
        return self.nomination or "regular"

    @property
    def agents(self) -> dict[str, AgentSide]:
        return {"a": self.agent_a, "b": self.agent_b}

    @property
    def in_processes(self) -> bool:
        """Does the cell run its agents as processes on the agent protocol (a foreign agent, or what only that
        path has: lite, kill, restart, coturn)? Such cells run in the kernel lab only."""
        return self.agent_a.foreign or self.agent_b.foreign or bool(self.lite or self.kill or self.restart) \
            or self.server != "icelab"

    def nat(self, role: str) -> NatChoice | None:
        return next((c for r, c in self.nats if r == role), None)

    def behaviours(self) -> dict[str, NatBehaviour]:
        """The NAT behaviour of every role the cell sets."""
        return {role: choice.behaviour() for role, choice in self.nats}

    @property
    def labels(self) -> dict[str, str]:
        return {role: choice.label for role, choice in self.nats}

    def link(self) -> dict[str, float]:
        """The link conditions the topology builder gets (only those that are set)."""
        return {k: v for k, v in (("loss", self.loss), ("delay_ms", self.delay_ms),
                                  ("bandwidth_mbit", self.bandwidth_mbit)) if v}

    @property
    def lossy(self) -> bool:
        return self.loss > 0

    @property
    def grid_position(self) -> tuple[str, str] | None:
        """(row, column) in the NAT A x NAT B grid: the labels of the first two roles (one role: itself twice)."""
        labels = list(self.labels.values())
        if self.group not in GRID_GROUPS or not labels:
            return None
        return labels[0], labels[1] if len(labels) > 1 else labels[0]

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "topology": self.topology,
                               "nats": {role: choice.as_json() for role, choice in self.nats}}
        for key in CELL_OPTIONS:
            value = getattr(self, key)
            if key == "timeline":
                if not value:
                    continue  # no timeline: nothing to echo (an empty one is not a valid table)
                value = [step.as_json() for step in value]
            if key == "bulk":
                if value is None:
                    continue
                value = value.as_json()
            if key in ("transports", "udp_blocked", "tcp_types_a", "tcp_types_b"):
                if not self.tcp:
                    continue  # a UDP-only cell echoes what it always did
                value = list(value) if isinstance(value, tuple) else value
            doc[key] = value.as_json() if isinstance(value, AgentSide) else value
        return doc

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "") -> Cell:
        """A cell from its TOML/JSON table; anything wrong is a :class:`UserError` naming the cell and the place."""
        name = table.get("name")
        here = f"{where}: " if where else ""
        if not isinstance(name, str):
            raise UserError(f"{here}a cell needs name = \"...\" (got {name!r})")
        here = f"{here}cell {name}: "
        unknown = sorted(set(table) - {"name", "topology", "nats", *CELL_OPTIONS})
        if unknown:
            raise UserError(f"{here}unknown key {', '.join(unknown)}; a cell has name, topology, nats and "
                            f"{', '.join(CELL_OPTIONS)}")
        nats = table.get("nats", {})
        if not isinstance(nats, Mapping):
            raise UserError(f"{here}nats is a table of role = preset (e.g. nats = {{ nat_a = \"eim-eif\" }})")
        choices = []
        for role, nat in nats.items():
            try:
                choices.append((str(role), NatChoice.parse(nat)))
            except ValueError as exc:
                raise UserError(f"{here}NAT role {role}: {exc}") from None
        options: dict[str, Any] = {}
        types: dict[str, tuple[type, ...]] = {"turn": (bool,), "relay_only": (bool,), "trickle": (bool,),
                                              "nomination": (str,), "controlling": (str,), "group": (str,),
                                              "loss": (int, float), "delay_ms": (int, float), "lite": (str,),
                                              "kill": (str,), "consent_timeout": (int, float), "restart": (bool,),
                                              "server": (str,), "restart_on_failure": (bool,), "keepalive": (bool,),
                                              "bandwidth_mbit": (int, float), "transports": (str,),
                                              "udp_blocked": (bool,)}
        if "bulk" in table:
            from ice.scenario.bulk import BulkPhase

            try:
                options["bulk"] = BulkPhase.parse(table["bulk"])
            except ValueError as exc:
                raise UserError(f"{here}{exc}") from None
        if "timeline" in table:
            from ice.scenario.timeline import parse_timeline

            try:
                options["timeline"] = parse_timeline(table["timeline"])
            except ValueError as exc:
                raise UserError(f"{here}{exc}") from None
        for key in ("tcp_types_a", "tcp_types_b"):
            if key in table:
                raw_types = table[key]
                if not isinstance(raw_types, list) or not all(isinstance(t, str) for t in raw_types):
                    raise UserError(f"{here}{key} is a list such as [\"active\", \"so\"], not {raw_types!r}")
                options[key] = tuple(raw_types)
        for key in ("agent_a", "agent_b"):
            if key in table:
                try:
                    options[key] = AgentSide.parse(table[key])
                except ValueError as exc:
                    raise UserError(f"{here}{key}: {exc}") from None
        for key in types:
            if key in table:
                raw: Any = table[key]
                if not isinstance(raw, types[key]) or (isinstance(raw, bool) and bool not in types[key]):
                    raise UserError(f"{here}{key} is {raw!r}; expected a {types[key][0].__name__}")
                options[key] = raw
        for key in ("loss", "delay_ms", "consent_timeout", "bandwidth_mbit"):
            if key in options:
                options[key] = float(options[key])
        topology = table.get("topology")
        if not isinstance(topology, str):
            raise UserError(f"{here}topology = \"NAME\" is missing (`icelab topo list` names them)")
        try:
            return cls(name, topology, tuple(choices), **options)
        except ValueError as exc:
            raise UserError(f"{here}{exc}") from None
