"""Packet captures of a lab: a ``tcpdump`` per interface for the lab's whole life, sliced per cell afterwards."""

from __future__ import annotations

import select
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath

from ice.lab.mn import Lab
from ice.topology.spec import NodeKind, TopologySpec


@dataclass
class Capture:
    """``tcpdump -U -w`` on one interface of one node for the lab's whole life."""

    node: str
    interface: str
    path: FsPath
    """The whole-life capture; a cell's slice gets the same file name (:func:`capture_names`)."""
    proc: subprocess.Popen[bytes]
    side: str = ""
    """What the interface is, in words (``NAT nat-a's WAN side (public, 203.0.113.1/24)``)."""

    def slice(self, since: float, until: float, dest: FsPath) -> int:
        """Copy the packets captured in [since, until] (wall clock) into a pcap at ``dest``; return how many."""
        data = self.path.read_bytes() if self.path.exists() else b""
        if len(data) < 24:
            return 0
        kept = [record for t, record in pcap_records(data) if since <= t <= until]
        dest.write_bytes(data[:24] + b"".join(kept))
        return len(kept)


def pcap_records(data: bytes) -> Iterator[tuple[float, bytes]]:
    """(timestamp, whole record) of each packet of a pcap file (either byte order, micro- or nanoseconds); a
    record cut short by a writer still at work ends the walk."""
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    scale = 1e9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    header = struct.Struct(endian + "IIII")
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = header.unpack_from(data, pos)
        end = pos + 16 + incl
        if end > len(data):
            return
        yield sec + frac / scale, data[pos:end]
        pos = end


def capture_names(spec: TopologySpec) -> dict[tuple[int, str], tuple[str, str]]:
    """(link index, node) -> (pcap file name, what the interface is) for every interface worth capturing (not a
    switch's bridge ports): ``NAT-wan.pcap``/``NAT-lan.pcap`` by the NAT's link roles, ``HOST.pcap`` for a node with
    one interface, ``HOST-eth0.pcap``, ``HOST-eth1.pcap``... (in link order) for one with several."""
    out: dict[tuple[int, str], tuple[str, str]] = {}
    used: set[str] = set()
    for n in spec.nodes:
        if n.kind is NodeKind.SWITCH:
            continue
        ends = spec.ends(n.name)
        for k, (i, end) in enumerate(ends):
            link = spec.links[i]
            other = link.b if link.a is end else link.a
            peer = spec.node(other.node)
            towards = f"on switch {peer.name}" if peer.kind is NodeKind.SWITCH else f"linked to {peer.name}"
            where = f"{', '.join(end.addresses) or 'no address'}, {towards}"
            if end.role in ("wan", "lan") and n.kind in (NodeKind.NAT, NodeKind.ROUTER):
                name = f"{n.name}-{end.role}"
                if n.kind is NodeKind.NAT:
                    side = ("WAN side (public addresses, after translation)" if end.role == "wan"
                            else "LAN side (private addresses, before translation)")
                    what = f"NAT {n.name}'s {side}, {where}"
                else:
                    what = f"router {n.name}'s {end.role.upper()} side (no NAT), {where}"
            else:
                name = n.name if len(ends) == 1 else f"{n.name}-eth{k}"
                what = f"{n.kind.value} {n.name}" + (f", interface {k}" if len(ends) > 1 else "") + f", {where}"
            if name in used:  # two ends with one role: fall back to the link order
                name = f"{n.name}-eth{k}"
            used.add(name)
            out[(i, n.name)] = (f"{name}.pcap", what)
    return out


def start_captures(lab: Lab, directory: FsPath) -> list[Capture]:
    """A tcpdump on every interface of every host, NAT and router of ``lab`` (switches only forward)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return []
    caps: list[Capture] = []
    names = capture_names(lab.spec)
    for key, intf in lab.interfaces.items():
        if key not in names:
            continue
        node = key[1]
        name, side = names[key]
        path = directory / name
        argv = [tcpdump, "-i", intf, "-U", "--immediate-mode", "-n", "-s", "512", "-w", str(path)]
        proc = lab.popen(node, argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        caps.append(Capture(node, intf, path, proc, f"{side} (interface {intf})"))
    for cap in caps:  # tcpdump says "listening on IF" once its socket is bound: nothing before that is lost
        assert cap.proc.stderr is not None
        ready, _, _ = select.select([cap.proc.stderr], [], [], 5.0)
        if ready:
            cap.proc.stderr.readline()
    return caps


def pcap_count(path: FsPath) -> int:
    """Packets in a pcap file (for tests and reports)."""
    return sum(1 for _ in pcap_records(path.read_bytes()))
