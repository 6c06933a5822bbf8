#!/usr/bin/env python3
"""libnice behind the icelab agent protocol, version 1 (docs/agent-protocol.md; the mapping is in docs/agents.md).

libnice is a C library: this adapter reaches it through GObject introspection (Debian: python3-gi and
gir1.2-nice-0.1) and runs it on a GLib main loop, which also watches standard input. Receiving data needs
``nice_agent_attach_recv``, whose callback GObject introspection cannot bind, so that one call (and the matching
``nice_agent_send``) goes through ctypes. Commands on standard input, reports on standard output, libnice's own
debug output on standard error with ``ICELAB_AGENT_DEBUG=1``. Needs nothing of icelab.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from adapter_lines import (  # type: ignore[import-not-found]  # a sibling of this script
    BULK_MAGIC,
    BULK_SEQ,
    BULK_SIZES,
    BulkCounter,
    bindable,
    candidate_problem,
    out,
)

DEBUG = bool(os.environ.get("ICELAB_AGENT_DEBUG"))
if DEBUG:
    os.environ.setdefault("G_MESSAGES_DEBUG", "all")  # libnice's STUN messages, through GLib's default handler

try:
    import gi  # type: ignore[import-untyped]

    gi.require_version("Nice", "0.1")
    from gi.repository import GLib, Nice  # type: ignore[import-untyped]

    LIBNICE = ctypes.CDLL("libnice.so.10")
except (ImportError, ValueError, OSError) as exc:  # pragma: no cover - depends on the machine
    print(f"error libnice is not usable here ({exc}): install python3-gi and gir1.2-nice-0.1", flush=True)
    sys.exit(2)

FEATURES = "trickle stun turn-udp turn-tcp relay-only aggressive lite restart role-conflict bulk transports"
COMPONENT = 1
BULK_CHUNK = 64  # datagrams sent per turn of the main loop (consent checks and commands get theirs in between)

RECV_CB = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                           ctypes.POINTER(ctypes.c_char), ctypes.c_void_p)
LIBNICE.nice_agent_attach_recv.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p,
                                           RECV_CB, ctypes.c_void_p]
LIBNICE.nice_agent_attach_recv.restype = ctypes.c_int
LIBNICE.nice_agent_send.argtypes = [ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_char_p]
LIBNICE.nice_agent_send.restype = ctypes.c_int
LIBNICE.nice_debug_enable.argtypes = [ctypes.c_int]
LIBGLIB = ctypes.CDLL("libglib-2.0.so.0")
LIBGLIB.g_main_context_default.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.restype = ctypes.c_void_p
ctypes.pythonapi.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]

# libnice's message when it changes roles (RFC 8445 section 7.3.1.1), after a 487 or a conflicting request.
ROLE_SWITCH = re.compile(r'changing agent role to "(controlling|controlled)"')
STATES = {"connecting": "checking", "connected": "connected", "ready": "completed", "failed": "failed",
          "disconnected": "disconnected"}


def libnice_version() -> str:
    """libnice has no version call: Debian's package version, else the shared library's file name."""
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libnice10"], capture_output=True, text=True,
                           timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        v = ""
    if v:
        return v.split("-")[0].split(":")[-1]
    return "unknown"


def watch_roles(handler: Any) -> None:
    """libnice emits no signal when it switches roles, and its controlling-mode property keeps the role the
    application set, so the switch is read from libnice's own debug message: its debug output (without the STUN
    part, NICE_DEBUG=libnice) is turned on and routed to ``handler`` instead of standard error."""
    GLib.log_set_handler("libnice", GLib.LogLevelFlags.LEVEL_DEBUG, handler, None)
    LIBNICE.nice_debug_enable(1 if DEBUG else 0)


def resolve(host: str) -> str:
    """libnice wants IP addresses for its STUN and TURN servers."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return str(socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)[0][4][0])


def sdp(agent: Any, candidate: Any) -> str:
    return str(agent.generate_local_candidate_sdp(candidate)).removeprefix("a=candidate:")


class BulkSender:
    """One bulk send: COUNT datagrams through nice_agent_send, BULK_CHUNK per turn of the main loop."""

    def __init__(self, adapter: Adapter, count: int, size: int) -> None:
        self.adapter, self.count, self.size = adapter, count, size
        self.payload = bytearray(size)
        self.payload[:4] = BULK_MAGIC
        self.seq = self.sent = 0
        self.start = time.monotonic()

    def chunk(self) -> bool:
        """Up to BULK_CHUNK datagrams; False (the idle source is removed) after the last, with bulk-sent."""
        a = self.adapter
        end = min(self.count, self.seq + BULK_CHUNK)
        for seq in range(self.seq, end):
            BULK_SEQ.pack_into(self.payload, 4, seq)
            if LIBNICE.nice_agent_send(a.ptr, a.sid, COMPONENT, self.size, bytes(self.payload)) == self.size:
                self.sent += 1
        self.seq = end
        if end < self.count:
            return True
        a.bulk_sending = False
        out(f"bulk-sent {self.sent} {time.monotonic() - self.start:.6f}")
        return False


@dataclass
class Settings:
    role: str = ""
    binds: list[str] = field(default_factory=list)
    stun: tuple[str, int] | None = None
    turn: list[tuple[str, int, str, str, str]] = field(default_factory=list)
    nomination: str = "regular"
    lite: bool = False
    relay_only: bool = False
    trickle: bool = True
    echo: bool = False
    transports: str = "udp"


class Adapter:
    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.s = Settings()
        self.agent: Any = None
        self.ptr: int = 0
        self.sid = 0
        self.pending: list[str] = []  # remote-* lines received before start
        self.held: list[str] = []  # local candidates held back (trickle off) or remote ones before credentials
        self.held_remote: list[Any] = []
        self.gathering = False
        self.remote_credentials: tuple[str, str] | None = None
        self.restarting = False
        self.selected: tuple[str, str] | None = None
        self.controlling = False
        self.buffer = b""
        self.recv_cb = RECV_CB(self.on_recv)  # kept alive as long as the agent
        self.bulk_in = BulkCounter()
        self.bulk_sending = False

    # -- settings -------------------------------------------------------------------------------------------------

    def set(self, words: list[str]) -> str:
        if self.agent is not None:
            return "unsupported settings are taken before start"
        if not words:
            return "unsupported set needs a name"
        name, args = words[0], words[1:]
        value = args[0] if len(args) == 1 else None
        s = self.s
        if name == "role":
            if value not in ("controlling", "controlled"):
                return "unsupported role must be controlling or controlled"
            s.role = value
        elif name == "bind":
            try:
                s.binds.append(str(ipaddress.ip_address(value or "")))
            except ValueError:
                return "unsupported bind needs one IP address"
        elif name == "stun":
            if len(args) != 2 or not args[1].isdigit():
                return "unsupported stun needs HOST PORT"
            if s.stun is not None:
                return "unsupported libnice takes one STUN server"
            s.stun = (args[0], int(args[1]))
        elif name == "turn":
            if len(args) != 5 or not args[1].isdigit() or args[4] not in ("udp", "tcp"):
                return "unsupported turn needs HOST PORT USER PASSWORD udp|tcp"
            s.turn.append((args[0], int(args[1]), args[2], args[3], args[4]))
        elif name == "nomination":
            if value not in ("regular", "aggressive"):
                return "unsupported nomination must be regular or aggressive"
            s.nomination = value
        elif name in ("lite", "relay-only", "trickle", "echo"):
            if value not in ("on", "off"):
                return f"unsupported {name} must be on or off"
            on = value == "on"
            if name == "lite":
                s.lite = on
            elif name == "relay-only":
                s.relay_only = on
            elif name == "trickle":
                s.trickle = on
            else:
                s.echo = on
        elif name == "transports":
            if value not in ("udp", "tcp", "both"):
                return "unsupported transports must be udp, tcp or both"
            s.transports = value
        elif name == "tcp-types":
            if value is None or sorted(value.split(",")) != ["active", "passive"]:
                return ("unsupported libnice gathers one active and one passive TCP candidate per address, never so, "
                        "and cannot leave either out")
        elif name == "consent-timeout":
            return "unsupported libnice 0.1.21 has no consent timeout setting (its own is fixed, about 10 s)"
        else:
            return f"unsupported unknown setting {name}"
        return "ok"

    # -- start ----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.agent is not None:
            out("error start was already sent")
            return
        s = self.s
        if not s.role:
            out("error start before set role: taking controlled")
            s.role = "controlled"
        # Trickle always: libnice then waits for peer_candidate_gathering_done before declaring failure (RFC 8838).
        # Consent freshness always: RFC 7675 checks on the selected pair, failed when consent is lost.
        options = Nice.AgentOption.ICE_TRICKLE | Nice.AgentOption.CONSENT_FRESHNESS
        if s.nomination == "regular":
            options |= Nice.AgentOption.REGULAR_NOMINATION
        if s.lite:
            options |= Nice.AgentOption.LITE_MODE
        agent = Nice.Agent.new_full(GLib.MainContext.default(), Nice.Compatibility.RFC5245, options)
        self.agent = agent
        self.ptr = int(ctypes.pythonapi.PyCapsule_GetPointer(agent.__gpointer__, None))
        self.controlling = s.role == "controlling"
        agent.props.controlling_mode = self.controlling
        agent.props.upnp = False
        agent.props.ice_tcp = s.transports != "udp"  # RFC 6544: libnice gathers active and passive candidates
        agent.props.ice_udp = s.transports != "tcp"
        agent.props.force_relay = s.relay_only
        for ip in s.binds:
            address = Nice.Address.new()
            if not bindable(ip) or not address.set_from_string(ip):
                out(f"error cannot bind to {ip}: no such address here")
                sys.exit(2)
            agent.add_local_address(address)
        self.sid = agent.add_stream(1)
        if not s.lite:
            stun = s.stun
            if stun is None and not s.relay_only:
                # a TURN server answers Binding requests too (RFC 8656): server-reflexive candidates from it
                stun = next(((host, port) for host, port, _, _, transport in s.turn if transport == "udp"), None)
            if stun is not None:
                agent.props.stun_server = resolve(stun[0])
                agent.props.stun_server_port = stun[1]
            for host, port, user, password, transport in s.turn:
                kind = Nice.RelayType.UDP if transport == "udp" else Nice.RelayType.TCP
                if not agent.set_relay_info(self.sid, COMPONENT, resolve(host), port, user, password, kind):
                    out(f"error libnice refused the TURN server {host}:{port}")
        agent.connect("new-candidate-full", self.on_candidate)
        agent.connect("candidate-gathering-done", self.on_gathering_done)
        agent.connect("component-state-changed", self.on_state)
        agent.connect("new-selected-pair-full", self.on_selected)
        watch_roles(self.on_log)
        if LIBNICE.nice_agent_attach_recv(self.ptr, self.sid, COMPONENT, LIBGLIB.g_main_context_default(),
                                          self.recv_cb, None) == 0:
            out("error nice_agent_attach_recv failed")
        self.print_credentials()
        self.gathering = True
        if not agent.gather_candidates(self.sid):
            out("error libnice could not gather candidates (no usable address?)")
            self.gathering = False

    def print_credentials(self) -> None:
        _, ufrag, pwd = self.agent.get_local_credentials(self.sid)
        out(f"local-credentials {ufrag} {pwd}")

    # -- libnice signals ------------------------------------------------------------------------------------------

    def on_candidate(self, agent: Any, candidate: Any) -> None:
        if not self.gathering:
            return
        line = f"local-candidate {sdp(agent, candidate)}"
        if self.s.trickle:
            out(line)
        else:
            self.held.append(line)

    def on_gathering_done(self, agent: Any, stream_id: int) -> None:
        if not self.gathering:
            return
        for line in self.held:
            out(line)
        self.held = []
        self.gathering = False
        out("local-end-of-candidates")

    def on_state(self, agent: Any, stream_id: int, component_id: int, state: int) -> None:
        nick = Nice.ComponentState(state).value_nick
        if nick == "disconnected" and self.selected is None:
            return  # the initial state, or a restart: not a loss of connectivity
        if nick in STATES:
            out(f"state {STATES[nick]}")

    def on_selected(self, agent: Any, stream_id: int, component_id: int, local: Any, remote: Any) -> None:
        pair = (sdp(agent, local), sdp(agent, remote))
        if pair != self.selected:
            self.selected = pair
            out(f"selected {pair[0]} | {pair[1]}")

    def on_log(self, domain: str, level: Any, message: str, _data: Any = None) -> None:
        """libnice's debug messages: the only place a role switch shows (see watch_roles); forwarded to standard
        error with ICELAB_AGENT_DEBUG."""
        match = ROLE_SWITCH.search(message)
        if match and match.group(1) != ("controlling" if self.controlling else "controlled"):
            self.controlling = match.group(1) == "controlling"
            out(f"role {match.group(1)}")
        if DEBUG:
            sys.stderr.write(f"{domain}: {message}\n")

    def on_recv(self, _agent: Any, _stream: int, _component: int, length: int, buf: Any, _data: Any) -> None:
        if length >= 8:
            header = ctypes.string_at(buf, 8)
            if header[:4] == BULK_MAGIC:
                self.bulk_in.add(header, length)
                return
        data = ctypes.string_at(buf, length)
        out("recv " + data.decode(errors="replace").replace("\n", " "))
        if self.s.echo:
            self.send(data)

    # -- commands -------------------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.agent is None or self.selected is None:
            out("error send before a pair is selected")
            return
        if LIBNICE.nice_agent_send(self.ptr, self.sid, COMPONENT, len(data), data) < 0:
            out("error libnice could not send")

    def start_bulk(self, rest: str) -> None:
        words = rest.split()
        if len(words) != 2 or not all(w.isdigit() for w in words) or int(words[0]) < 1 \
                or int(words[1]) not in BULK_SIZES:
            out("error bulk takes COUNT SIZE (COUNT at least 1, SIZE 8 to 1472 bytes)")
        elif self.agent is None or self.selected is None:
            out("error bulk before a pair is selected")
        elif self.bulk_sending:
            out("error bulk while a bulk send is still running")
        else:
            self.bulk_sending = True
            sender = BulkSender(self, int(words[0]), int(words[1]))
            GLib.idle_add(sender.chunk, priority=GLib.PRIORITY_DEFAULT)

    def remote(self, verb: str, rest: str) -> None:
        agent = self.agent
        if verb == "remote-credentials":
            words = rest.split()
            if len(words) not in (2, 3) or (len(words) == 3 and words[2] != "lite"):
                out("error remote-credentials needs UFRAG PWD [lite]")
                return
            creds = (words[0], words[1])
            if creds == self.remote_credentials:
                return
            if self.remote_credentials is not None and not self.restarting:
                self.restart()  # the peer restarted (RFC 8445 section 2.4): a new generation on our side too
            self.restarting = False
            self.remote_credentials = creds
            agent.set_remote_credentials(self.sid, *creds)
            held, self.held_remote = self.held_remote, []
            if held:
                agent.set_remote_candidates(self.sid, COMPONENT, held)
        elif verb == "remote-candidate":
            rest = rest.removeprefix("candidate:")
            problem = candidate_problem(rest)
            if problem:
                out(f"error bad remote candidate: {problem}")
                return
            candidate = agent.parse_remote_candidate_sdp(self.sid, "a=candidate:" + rest)
            if candidate is None:
                out("error libnice cannot parse the remote candidate")
            elif self.remote_credentials is None or self.restarting:
                self.held_remote.append(candidate)  # checks need the peer's credentials first
            elif agent.set_remote_candidates(self.sid, COMPONENT, [candidate]) < 0:
                out("error libnice refused the remote candidate")
        else:  # remote-end-of-candidates
            agent.peer_candidate_gathering_done(self.sid)

    def restart(self) -> None:
        """A new generation: new credentials, the same local candidates printed again (libnice keeps them)."""
        if self.agent is None:
            out("error restart before start")
            return
        if not self.agent.restart_stream(self.sid):
            out("error libnice could not restart the stream")
            return
        self.restarting = True
        self.selected = None
        self.print_credentials()
        for candidate in self.agent.get_local_candidates(self.sid, COMPONENT):
            out(f"local-candidate {sdp(self.agent, candidate)}")
        out("local-end-of-candidates")

    def handle(self, line: str) -> bool:
        """Runs one command line; True on quit."""
        verb, _, rest = line.partition(" ")
        if verb == "set":
            out(self.set(rest.split()))
        elif verb == "start":
            self.start()
            pending, self.pending = self.pending, []
            for old in pending:
                self.handle(old)
        elif verb in ("remote-credentials", "remote-candidate", "remote-end-of-candidates"):
            if self.agent is None:
                self.pending.append(line)
            else:
                self.remote(verb, rest)
        elif verb == "send":
            self.send(rest.encode())
        elif verb == "bulk":
            self.start_bulk(rest)
        elif verb == "bulk-report":
            out(self.bulk_in.line())
            self.bulk_in = BulkCounter()
        elif verb == "restart":
            self.restart()
        elif verb == "quit":
            return True
        elif not line:
            out("error empty line")
        else:
            out(f"error unknown command {verb}")
        return False

    def on_stdin(self, fd: int, _condition: Any) -> bool:
        chunk = os.read(fd, 65536)
        if not chunk:
            self.loop.quit()
            return False
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            try:
                if self.handle(raw.decode(errors="replace").rstrip("\r")):
                    self.loop.quit()
                    return False
            except Exception as exc:
                out(f"error {exc!r}")
        return True


def main() -> None:
    out(f"hello icelab-agent/1 libnice {libnice_version()}")
    out(f"features {FEATURES}")
    loop = GLib.MainLoop.new(GLib.MainContext.default(), False)
    adapter = Adapter(loop)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP, adapter.on_stdin)
    loop.run()
    if adapter.agent is not None:
        adapter.agent.remove_stream(adapter.sid)
    sys.exit(0)


if __name__ == "__main__":
    main()
