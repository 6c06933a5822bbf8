"""The agents a cell can name: icelab's own, the built-in foreign adapters, or any command.

A cell side is ``"icelab"``, ``"aioice"``, ``"libnice"``, ``"pion"`` or ``{ command = "..." }``. The built-in
adapters live in ``ice/agents/peers/`` (docs/agents.md); adding one is one entry in :data:`BUILTIN`.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PEERS = Path(__file__).resolve().parent / "peers"


def _python_module_missing(module: str, how: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if importlib.util.find_spec(module) is not None else f"the Python package {module} is " \
                                                                          f"missing ({how})"
    return check


def _libnice_missing() -> str | None:
    if importlib.util.find_spec("gi") is None:
        return "PyGObject (gi) is missing (Debian: python3-gi; the venv needs --system-site-packages)"
    try:
        import gi  # type: ignore[import-untyped]

        gi.require_version("Nice", "0.1")
    except (ImportError, ValueError) as exc:
        return f"libnice's GObject introspection data is missing (Debian: gir1.2-nice-0.1): {exc}"
    return None


def pion_binary() -> str | None:
    """The pion adapter built by scripts/provision.sh (``icelab-pion-agent`` beside the running Python)."""
    beside = Path(sys.executable).parent / "icelab-pion-agent"
    return str(beside) if beside.exists() else shutil.which("icelab-pion-agent")


@dataclass(frozen=True)
class AgentSpec:
    """How to start one agent, and why it cannot start here (None: it can)."""

    name: str
    """``icelab``, a built-in foreign agent's name, or ``command``."""
    argv: tuple[str, ...]
    missing: str | None = None
    """Why it is not installed (the cell is ``not-installed`` with this reason)."""

    @property
    def foreign(self) -> bool:
        return self.name != "icelab"

    @property
    def label(self) -> str:
        """How reports name it: the built-in name, or the command."""
        return self.name if self.name != "command" else shlex.join(self.argv)


@dataclass(frozen=True)
class Builtin:
    """A built-in agent: its argv (run with the harness's Python where it is a script) and its install check."""

    argv: Callable[[], tuple[str, ...]]
    missing: Callable[[], str | None]
    about: str


BUILTIN: dict[str, Builtin] = {
    "icelab": Builtin(lambda: (sys.executable, "-m", "ice.cli", "peer"), lambda: None,
                      "icelab's own agent (ice/aio/peer.py)"),
    "aioice": Builtin(lambda: (sys.executable, str(PEERS / "aioice_agent.py")),
                      _python_module_missing("aioice", "pip install aioice; ./icelab installs it with the dev extras"),
                      "aioice 0.13 (Python asyncio), from PyPI"),
    "libnice": Builtin(lambda: (sys.executable, str(PEERS / "libnice_agent.py")), _libnice_missing,
                       "libnice 0.1.21 (C, GLib) through GObject introspection, from Debian"),
    "pion": Builtin(lambda: (pion_binary() or "icelab-pion-agent",),
                    lambda: None if pion_binary() else "icelab-pion-agent is not built (./icelab builds it from "
                                                       "Debian's pion/ice v2 sources: golang-github-pion-ice.v2-dev)",
                    "pion/ice v2.3.1 (Go), built offline from Debian's sources"),
}
"""The agents a cell may name; the order is the order reports and ``icelab agent list`` use."""

FOREIGN = tuple(name for name in BUILTIN if name != "icelab")


def resolve(side: str | Mapping[str, object]) -> AgentSpec:
    """A cell side's agent; ValueError with what is accepted."""
    if isinstance(side, str):
        builtin = BUILTIN.get(side)
        if builtin is None:
            raise ValueError(f"agent {side!r} is not one of {', '.join(BUILTIN)} (or {{ command = \"...\" }})")
        return AgentSpec(side, builtin.argv(), builtin.missing())
    if isinstance(side, Mapping):
        command = side.get("command")
        extra = sorted(set(side) - {"command"})
        if extra or not isinstance(command, str) or not command.strip():
            raise ValueError("a command agent is { command = \"PROGRAM ARGS...\" }")
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise ValueError(f"the command {command!r} cannot be split into words: {exc}") from None
        found = shutil.which(argv[0])
        return AgentSpec("command", argv, None if found else f"{argv[0]} is not an executable here")
    raise ValueError(f"an agent is a name or {{ command = \"...\" }}, not {side!r}")


def side_json(side: str | Mapping[str, object]) -> str | dict[str, object]:
    """A side as the cell's JSON echoes it."""
    return side if isinstance(side, str) else dict(side)


__all__ = ["BUILTIN", "FOREIGN", "AgentSpec", "Builtin", "pion_binary", "resolve", "side_json"]
