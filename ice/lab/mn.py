"""Realise a :class:`TopologySpec` with Mininet nodes: namespaces, veth links, addresses, routes, NAT rules.

Only Mininet's ``Node`` and ``Link`` are used, never the ``Mininet`` object (its ``init()`` raises host-wide
sysctls and limits), never ``NAT``/``addNAT`` (they edit host files and the root namespace) and never ``mn -c``.
Links are created inside the nodes' namespaces, bridges live in switch nodes' own namespaces, and the NAT rules
are loaded in the NAT node's namespace, so a lab leaves nothing in the root namespace. Every lab has a short
unique name prefix (interface names stay within 15 characters) and :meth:`Lab.stop` removes exactly what the lab
made: its processes by PID, which takes their namespaces, links and rules with them.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from ice.errors import UserError
from ice.lab import netns
from ice.lab.nat.nft import NatInterfaces, compile_ruleset, sysctls
from ice.nat.behaviour import NatBehaviour, NatKind
from ice.topology.spec import LinkConditions, NodeKind, TopologySpec

_counter = 0


def new_prefix() -> str:
    """A short name prefix unique to this process and lab: ``i`` + base-36 PID + a per-process counter."""
    global _counter
    _counter += 1
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    n, pid36 = os.getpid(), ""
    while n:
        n, r = divmod(n, 36)
        pid36 = digits[r] + pid36
    return f"i{pid36[-4:]}{digits[_counter % 36]}"


def require_lab() -> None:
    """For a lab command before it isolates itself: root, or a user namespace it can create (ice.lab.userns)."""
    from ice.lab.userns import lab_problem

    problem = lab_problem()
    if problem is not None:
        raise UserError(f"the lab needs root or an unprivileged user namespace, and {problem}: run it as root "
                        "(sudo ./icelab ...)")


require_root = require_lab
"""The former name of :func:`require_lab` (the lab no longer needs root where user namespaces work)."""


def require_privileges() -> None:
    """For :meth:`Lab.build`: uid 0, either root or inside a user namespace."""
    if os.geteuid() == 0:
        return
    from ice.lab.userns import cached_problem

    problem = cached_problem()
    if problem is None:
        raise UserError("the lab creates network namespaces and netfilter rules: run it as root, or inside a user "
                        "namespace (./icelab commands enter one themselves; from Python, run under `unshare "
                        "--user --map-root-user --net --mount --pid --fork --mount-proc`)")
    raise UserError(f"the lab creates network namespaces and netfilter rules, and as a normal user {problem}: run "
                    "it as root (sudo ./icelab ...)")


@dataclass
class Lab:
    """A running lab. Use as a context manager: ``with Lab(spec) as lab: ...``."""

    spec: TopologySpec
    prefix: str = field(default_factory=new_prefix)
    nodes: dict[str, Any] = field(default_factory=dict)
    """Spec node name -> Mininet Node."""
    interfaces: dict[tuple[int, str], str] = field(default_factory=dict)
    """(link index, spec node name) -> interface name."""
    build_seconds: float = 0.0
    teardown_seconds: float = 0.0
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    nat_overrides: dict[str, NatBehaviour] = field(default_factory=dict)
    wires: dict[int, Any] = field(default_factory=dict)
    """Link index -> the Mininet node that carries a delayed link's forwarder."""
    forwarders: frozenset[int] = frozenset()
    """Links that get the delay forwarder even without a delay in the spec (a timeline gives them one mid-run)."""
    wire_procs: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    """Link index -> its forwarder process (its standard input takes ``set`` lines: ice/lab/wire.py)."""
    link_overrides: dict[int, LinkConditions] = field(default_factory=dict)
    """Link index -> the conditions :meth:`set_link` gave it (the spec's until then)."""

    def __enter__(self) -> Lab:
        self.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------- build

    def build(self) -> None:
        require_privileges()
        try:
            from mininet.link import Link
            from mininet.node import Node
        except ImportError:
            raise UserError("Debian's mininet is not importable: run ./icelab once to provision it") from None
        started = time.perf_counter()
        try:
            LabNode = _lab_node_class(Node)
            for i, n in enumerate(self.spec.nodes):
                self.nodes[n.name] = LabNode(f"{self.prefix}{i}", inNamespace=True)
            self.interfaces = interface_names(self.spec, {k: v.name for k, v in self.nodes.items()})
            for i, link in enumerate(self.spec.links):
                a, b = self.nodes[link.a.node], self.nodes[link.b.node]
                ia, ib = self.interfaces[(i, link.a.node)], self.interfaces[(i, link.b.node)]
                if (link.conditions is not None and link.conditions.delay_ms > 0) or i in self.forwarders:
                    wire = self.wires[i] = LabNode(f"{self.prefix}w{i}", inNamespace=True)
                    Link(a, wire, intfName1=ia, intfName2=f"{wire.name}-0")
                    Link(wire, b, intfName1=f"{wire.name}-1", intfName2=ib)
                else:
                    Link(a, b, intfName1=ia, intfName2=ib)
            for n in self.spec.nodes:
                self._configure(n.name)
            for i, wire in self.wires.items():
                self._start_wire(i, wire)
        except BaseException:
            self.stop()
            raise
        self.build_seconds = time.perf_counter() - started

    def _configure(self, name: str) -> None:
        self.run(name, " && ".join(node_commands(self.spec, name, self.interfaces)))
        if self.spec.node(name).kind is NodeKind.NAT:
            self.load_nat(name)

    def _start_wire(self, i: int, wire: Any) -> None:
        c = self.spec.links[i].conditions or LinkConditions()
        wire.cmd(f"ip link set lo up; ip link set {wire.name}-0 up; ip link set {wire.name}-1 up")
        proc = self.popen_node(wire, [sys.executable, "-m", "ice.lab.wire", f"{wire.name}-0", f"{wire.name}-1",
                                      "--delay-ms", str(c.delay_ms), "--jitter-ms", str(c.jitter_ms),
                                      "--seed", str(c.seed), "--control"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the delay forwarder on link {i} did not start")
        self.wire_procs[i] = proc

    # ------------------------------------------------------------------------------------ link conditions

    def link_conditions(self, i: int) -> LinkConditions:
        """The conditions link ``i`` has now (the spec's, unless :meth:`set_link` changed them)."""
        return self.link_overrides.get(i) or self.spec.links[i].conditions or LinkConditions()

    def set_link(self, i: int, conditions: LinkConditions) -> None:
        """Give link ``i`` other conditions while the lab runs: its loss rules (nft, each end's ingress) and its
        shaper (tbf, each end's egress) are replaced, and its forwarder takes the new delay (a link built without
        one cannot get a delay: build the lab with the link in ``forwarders``)."""
        before = self.link_conditions(i)
        link = self.spec.links[i]
        if (conditions.delay_ms, conditions.jitter_ms) != (before.delay_ms, before.jitter_ms):
            proc = self.wire_procs.get(i)
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise RuntimeError(f"link {i} has no delay forwarder, so its delay cannot change (the lab builds "
                                   "one for links in Lab.forwarders)")
            proc.stdin.write(f"set {conditions.delay_ms} {conditions.jitter_ms}\n")
            proc.stdin.flush()
            answer = proc.stdout.readline().strip()
            if answer != "ok":
                raise RuntimeError(f"the delay forwarder on link {i} answered {answer!r}")
        for end in (link.a, link.b):
            self.run(end.node, " && ".join(link_commands(self.interfaces[(i, end.node)], conditions, replace=True)))
        self.link_overrides[i] = conditions

    def reset_links(self) -> None:
        """Every link changed by :meth:`set_link` back to its spec's conditions."""
        for i in list(self.link_overrides):
            self.set_link(i, self.spec.links[i].conditions or LinkConditions())
            del self.link_overrides[i]

    def nat_interfaces(self, name: str) -> NatInterfaces:
        return nat_interfaces(self.spec, name, self.interfaces)

    def behaviour(self, name: str) -> NatBehaviour:
        """The behaviour NAT ``name`` runs now (the spec's, unless :meth:`set_nat` changed it)."""
        behaviour = self.nat_overrides.get(name) or self.spec.node(name).nat
        assert behaviour is not None, f"{name} is not a NAT"
        return behaviour

    def set_nat(self, name: str, behaviour: NatBehaviour) -> None:
        """Give NAT ``name`` another behaviour in place (reload its rules, flush conntrack): reusing a built lab
        across scenarios costs milliseconds instead of a rebuild."""
        if self.spec.node(name).kind is not NodeKind.NAT or behaviour.kind is NatKind.NONE:
            raise ValueError(f"{name} is a {self.spec.node(name).kind.value}; only NAT nodes take NAT presets")
        self.nat_overrides[name] = behaviour
        self.load_nat(name)

    def ruleset(self, name: str) -> str:
        return compile_ruleset(self.behaviour(name), self.nat_interfaces(name))

    def load_nat(self, name: str) -> None:
        """Load (or reload) the NAT's rules and timeouts in its namespace, then flush its conntrack table."""
        behaviour = self.behaviour(name)
        settings = " ".join(f"{k}={v}" for k, v in sysctls(behaviour).items())
        with tempfile.NamedTemporaryFile("w", suffix=".nft", prefix=f"{self.prefix}-", delete=False) as f:
            f.write(self.ruleset(name))
        try:
            # the rules first: they load nf_conntrack where it is a module, and its timeout sysctls exist only then
            self.run(name, f"nft -f {shlex.quote(f.name)} && sysctl -qw {settings} && conntrack -F 2>/dev/null; true")
            out = self.run(name, "nft list table ip icelab >/dev/null && echo loaded")
            if "loaded" not in out:
                raise RuntimeError(f"NAT {name}: the ruleset did not load: {out.strip()}")
        finally:
            os.unlink(f.name)

    def flush_conntrack(self, name: str) -> None:
        self.run(name, "conntrack -F 2>/dev/null; true")

    def reset(self) -> None:
        """Make the lab as good as new between scenarios: reload every NAT's rules (which empties its binding
        maps) and flush its conntrack table; much cheaper than rebuilding."""
        for n in self.spec.nodes:
            if n.kind is NodeKind.NAT:
                self.load_nat(n.name)

    # ------------------------------------------------------------------------------------------------ use

    def run(self, name: str, command: str) -> str:
        """Run a shell command in node ``name``; raise with its output if it fails."""
        node = self.nodes[name]
        out: str = node.cmd(f"( {command} ) 2>&1; echo __rc=$?")
        body, _, rc = out.rpartition("__rc=")
        if rc.strip() != "0":
            raise RuntimeError(f"{name}: `{command}` failed: {body.strip()}")
        return body

    def pid(self, name: str) -> int:
        return int(self.nodes[name].pid)

    def socket(self, name: str, family: socket.AddressFamily = socket.AF_INET,
               kind: socket.SocketKind = socket.SOCK_DGRAM) -> socket.socket:
        return netns.socket_in(self.pid(name), family, kind)

    def popen(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a program in node ``name``; :meth:`stop` terminates it (by PID) before the nodes go."""
        return self.popen_node(self.nodes[name], argv, **kwargs)

    def popen_node(self, node: Any, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("preexec_fn", netns.die_with_parent)
        proc = subprocess.Popen([*netns.nsenter(int(node.pid)), *argv], **kwargs)
        self.processes.append(proc)
        return proc

    @contextmanager
    def inside(self, name: str) -> Iterator[None]:
        with netns.inside(self.pid(name)):
            yield

    # ----------------------------------------------------------------------------------------------- stop

    def stop(self) -> None:
        """Stop what the lab started, by PID: first the processes run in it, then the node shells (SIGHUP to
        each shell's process group). The namespaces, links and rules go with the last process inside them."""
        started = time.perf_counter()
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
        every = [*self.nodes.values(), *self.wires.values()]
        for node in every:
            with suppress(Exception):  # teardown goes on for the other nodes whatever one of them does
                node.terminate()
        for node in every:
            shell = getattr(node, "shell", None)
            if shell is None:
                continue
            try:
                shell.wait(2)
            except subprocess.TimeoutExpired:
                shell.kill()
                shell.wait()
        self.nodes.clear()
        self.wires.clear()
        self.wire_procs.clear()
        self.teardown_seconds = time.perf_counter() - started


def _lab_node_class(node_class: Any) -> Any:
    """Mininet's Node whose shell dies with us (PR_SET_PDEATHSIG), whatever kills us."""

    class LabNode(node_class):  # type: ignore[misc]
        def _popen(self, cmd: list[str], **params: Any) -> Any:
            params.setdefault("preexec_fn", netns.die_with_parent)
            return super()._popen(cmd, **params)

    return LabNode


def interface_names(spec: TopologySpec, mn_names: dict[str, str]) -> dict[tuple[int, str], str]:
    """(link index, node) -> interface name: ``<mininet node name>-e<k>`` for the node's k-th link."""
    names: dict[tuple[int, str], str] = {}
    seen: dict[str, int] = {}
    for i, link in enumerate(spec.links):
        for end in (link.a, link.b):
            k = seen.get(end.node, 0)
            seen[end.node] = k + 1
            names[(i, end.node)] = f"{mn_names[end.node]}-e{k}"
    return names


def node_commands(spec: TopologySpec, name: str, interfaces: dict[tuple[int, str], str]) -> list[str]:
    """Shell commands that configure node ``name`` of a built topology (run inside its namespace)."""
    node = spec.node(name)
    cmds = ["ip link set lo up", "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"]
    ends = spec.ends(name)
    if node.kind is NodeKind.SWITCH:
        cmds += ["ip link add br0 type bridge", "ip link set br0 up",
                 "sysctl -qew net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-arptables=0"]
        cmds += [f"ip link set {interfaces[(i, name)]} master br0" for i, _ in ends]
    for i, end in ends:
        intf = interfaces[(i, name)]
        cmds += [f"ip addr add {cidr} dev {intf}" for cidr in end.addresses]
        cmds.append(f"ip link set {intf} up")
        conditions = spec.links[i].conditions
        if conditions is not None:
            cmds += link_commands(intf, conditions)
    cmds += [f"ip route add {dest} via {via}" for dest, via in node.routes]
    if node.kind in (NodeKind.NAT, NodeKind.ROUTER):
        cmds.append("sysctl -qw net.ipv4.ip_forward=1")
    return cmds


LINK_TABLE = "icelab_link"
"""The netdev table of the links' loss rules (a chain per interface, hooked at its ingress)."""


def link_commands(intf: str, conditions: LinkConditions, replace: bool = False) -> list[str]:
    """Shell commands (in the namespace holding ``intf``) that give one end of a link its conditions: loss at the
    end's ingress (nft; both ends together impair both directions) and the shaper at its egress (a ``tbf`` qdisc
    as the interface's root). With ``replace``, whatever an earlier call set is replaced (or removed)."""
    cmds: list[str] = []
    rule = conditions.loss_rule()
    chain = f"in_{intf.replace('-', '_')}"
    if rule or replace:
        cmds += [f"nft add table netdev {LINK_TABLE}",
                 f"nft add chain netdev {LINK_TABLE} {chain} "
                 f"'{{ type filter hook ingress device \"{intf}\" priority 0; policy accept; }}'"]
    if replace:
        cmds.append(f"nft flush chain netdev {LINK_TABLE} {chain}")
    if rule:
        cmds.append(f"nft add rule netdev {LINK_TABLE} {chain} {shlex.quote(rule)}")
    bucket = conditions.token_bucket()
    if bucket is not None:
        cmds.append(f"tc qdisc replace dev {intf} root tbf {bucket.tc_args()}")
    elif replace:
        cmds.append(f"{{ tc qdisc del dev {intf} root 2>/dev/null; true; }}")
    return cmds


def nat_interfaces(spec: TopologySpec, name: str, interfaces: dict[tuple[int, str], str]) -> NatInterfaces:
    """The WAN/LAN interface names, public address and LAN subnet of NAT node ``name``."""
    import ipaddress

    wan, lan = spec.nat_interfaces(name)
    index = {id(end): i for i, end in spec.ends(name)}
    public = wan.addresses[0].split("/")[0]
    subnet = str(ipaddress.ip_interface(lan.addresses[0]).network) if lan.addresses else None
    return NatInterfaces(interfaces[(index[id(wan)], name)], interfaces[(index[id(lan)], name)], public, subnet)
