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
from ice.topology.spec import NodeKind


@dataclass
class Capture:
    """``tcpdump -U -w`` on one interface of one node for the lab's whole life."""

    node: str
    interface: str
    path: FsPath
    proc: subprocess.Popen[bytes]

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


def start_captures(lab: Lab, directory: FsPath) -> list[Capture]:
    """A tcpdump on every interface of every host, NAT and router of ``lab`` (switches only forward)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return []
    caps: list[Capture] = []
    for (_, node), intf in lab.interfaces.items():
        if lab.spec.node(node).kind is NodeKind.SWITCH:
            continue
        path = directory / f"{node}-{intf}.pcap"
        argv = [tcpdump, "-i", intf, "-U", "--immediate-mode", "-n", "-s", "512", "-w", str(path)]
        proc = lab.popen(node, argv,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        caps.append(Capture(node, intf, path, proc))
    for cap in caps:  # tcpdump says "listening on IF" once its socket is bound: nothing before that is lost
        assert cap.proc.stderr is not None
        ready, _, _ = select.select([cap.proc.stderr], [], [], 5.0)
        if ready:
            cap.proc.stderr.readline()
    return caps


def pcap_count(path: FsPath) -> int:
    """Packets in a pcap file (for tests and reports)."""
    return sum(1 for _ in pcap_records(path.read_bytes()))
