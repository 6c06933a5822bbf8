"""A cell's bulk phase: N MB from A to B over the selected pair once the cell connected, measured as Mbit/s, loss
and round-trip time, in the kernel lab and (as a model figure) in the sim.

The datagrams are the agent protocol's bulk datagrams (docs/agent-protocol.md, Bulk data: ``7f 62 6c 6b``, a
sequence number, padding; :data:`ice.aio.peer.BULK_MAGIC`), counted at the receiver by the same
:class:`~ice.aio.peer.BulkCounter` as ``icelab peer`` and summed up by the same :class:`~ice.agents.pair.BulkRun`
as ``icelab bench throughput``. Unlike the benchmark's unpaced burst, the phase keeps a window of datagrams in
flight: B answers each with a small acknowledgement (``7f 61 63 6b`` and the sequence number), which frees a slot
of A's window and gives a round-trip time. Paths keep order, so an acknowledgement also frees the slots of the
datagrams sent before it that are still unacknowledged (they, or their acknowledgements, were lost); a datagram
not acknowledged within ``ack_timeout`` frees its slot too.
Nothing is sent again: loss is what B did not count. A shaped link (``bandwidth_mbit``) thus runs at its rate
with its queue never overflowing, and the round-trip time includes the queue the window builds in the shaper.

:class:`BulkTransfer` is the phase without I/O; each back-end drives it on its own clock (:mod:`ice.scenario.lab`
in real time over the Connections, :mod:`ice.scenario.sim` on the sim's virtual clock).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ice.agents.pair import BulkReceived, BulkRun, BulkSent
from ice.aio.peer import BULK_MAGIC, BULK_SEQ, BulkCounter

ACK_MAGIC = b"\x7fack"
"""The first four bytes of an acknowledgement; the acknowledged sequence number follows (8 bytes in all)."""
MAX_MB = 50.0
"""The largest bulk phase a cell may ask for."""


@dataclass(frozen=True)
class BulkSettings:
    """How the bulk phase sends (the same in both back-ends)."""

    size: int = 1200
    """Bytes per datagram (the benchmark's size: a typical WebRTC payload)."""
    window: int = 32
    """Datagrams in flight at most (38 KB: less than a shaped link's queue, ice.topology.spec.TokenBucket)."""
    ack_timeout: float = 1.0
    """Seconds after which a datagram without acknowledgement no longer holds a slot of the window."""
    deadline: float = 60.0
    """The phase ends after this many seconds whatever is left to send (the figures then say so)."""
    bins: int = 20
    """Intervals of the receiver's throughput series (the reports' chart)."""


BULK = BulkSettings()


@dataclass(frozen=True)
class BulkPhase:
    """The cell option ``bulk = { mb = 2, mbit = [5, 10.5], max_loss_pct = 1 }``: how much to send and, optionally,
    the band the measured throughput must fall in and the loss it may have."""

    mb: float
    """Megabytes (10^6 bytes of payload) from A to B."""
    mbit: tuple[float, float] | None = None
    """[low, high]: the Mbit/s of payload the receiver must measure (both back-ends)."""
    max_loss_pct: float | None = None
    """The loss (percent of the datagrams sent) the phase may have."""

    def __post_init__(self) -> None:
        if not 0 < self.mb <= MAX_MB:
            raise ValueError(f"bulk mb is more than 0 and at most {MAX_MB:g}")
        if self.mbit is not None and not 0 <= self.mbit[0] <= self.mbit[1]:
            raise ValueError("bulk mbit is [low, high] with 0 <= low <= high")
        if self.max_loss_pct is not None and not 0 <= self.max_loss_pct <= 100:
            raise ValueError("bulk max_loss_pct is 0 to 100")

    @classmethod
    def parse(cls, value: object) -> BulkPhase:
        """The cell option's table; ValueError saying what is wrong."""
        if isinstance(value, BulkPhase):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"bulk is a table such as {{ mb = 2, mbit = [5, 10.5] }}, not {value!r}")
        unknown = sorted(set(value) - {"mb", "mbit", "max_loss_pct"})
        if unknown:
            raise ValueError(f"bulk knows mb, mbit and max_loss_pct, not {', '.join(unknown)}")
        mb = value.get("mb")
        if not _number(mb):
            raise ValueError(f"bulk needs mb = MEGABYTES (a number), not {mb!r}")
        band = value.get("mbit")
        if band is not None and not (isinstance(band, (list, tuple)) and len(band) == 2
                                     and all(_number(x) for x in band)):
            raise ValueError(f"bulk mbit is [low, high] in Mbit/s, not {band!r}")
        loss = value.get("max_loss_pct")
        if loss is not None and not _number(loss):
            raise ValueError(f"bulk max_loss_pct is a number, not {loss!r}")
        assert isinstance(mb, (int, float))
        return cls(float(mb), None if band is None else (float(band[0]), float(band[1])),
                   None if loss is None else float(loss))

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mb": self.mb}
        if self.mbit is not None:
            doc["mbit"] = list(self.mbit)
        if self.max_loss_pct is not None:
            doc["max_loss_pct"] = self.max_loss_pct
        return doc

    def count(self, settings: BulkSettings = BULK) -> int:
        """Datagrams the phase sends."""
        return max(2, math.ceil(self.mb * 1e6 / settings.size))

    def verdict(self, figures: Mapping[str, Any]) -> str:
        """Why the measured figures miss the cell's band ("" when they do not)."""
        rate = figures.get("mbit_per_s")
        if self.mbit is not None:
            low, high = self.mbit
            if rate is None:
                return f"bulk: nothing measured (expected {low:g} to {high:g} Mbit/s)"
            if not low <= rate <= high:
                return f"bulk: {rate:g} Mbit/s, expected {low:g} to {high:g}"
        loss = figures.get("loss_pct")
        if self.max_loss_pct is not None and (loss is None or loss > self.max_loss_pct):
            return f"bulk: loss {loss:g} %, expected at most {self.max_loss_pct:g} %"
        return ""


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_bulk(data: bytes) -> bool:
    """Is ``data`` a bulk datagram or an acknowledgement (a straggler of the bulk phase, not the timeline's
    stream)?"""
    return len(data) >= 8 and data[:4] in (BULK_MAGIC, ACK_MAGIC)


def ack_for(data: bytes) -> bytes | None:
    """The acknowledgement of a bulk datagram (None: ``data`` is not one)."""
    return ACK_MAGIC + data[4:8] if data[:4] == BULK_MAGIC and len(data) >= 8 else None


class BulkTransfer:
    """One bulk phase without I/O: A's window and round-trip times, B's counts, on the back-end's clock. The
    back-end sends what :meth:`to_send` returns from A, hands B's arrivals to :meth:`on_receiver` (and sends the
    acknowledgement it returns from B), A's arrivals to :meth:`on_sender`, and calls :meth:`on_timeout` at
    :meth:`next_timeout`, until :attr:`done`."""

    def __init__(self, count: int, now: float, settings: BulkSettings = BULK) -> None:
        self.count = count
        self.settings = settings
        self.started = now
        self.next_seq = 0
        self.in_flight: dict[int, float] = {}
        """Sequence number -> when A sent it (until acknowledged or given up)."""
        self.rtts: list[float] = []
        self.given_up = 0
        self.last_sent_at = now
        self.received = BulkCounter()
        self.arrivals: list[tuple[float, int]] = []
        """(time, bytes) of every datagram B counted: the throughput series."""
        self._payload = bytearray(settings.size)
        self._payload[:4] = BULK_MAGIC

    @property
    def done(self) -> bool:
        """Everything sent, and nothing in flight."""
        return self.next_seq >= self.count and not self.in_flight

    def to_send(self, now: float) -> list[bytes]:
        """A's next datagrams: as many as the window has free slots."""
        out = []
        while self.next_seq < self.count and len(self.in_flight) < self.settings.window:
            BULK_SEQ.pack_into(self._payload, 4, self.next_seq)
            out.append(bytes(self._payload))
            self.in_flight[self.next_seq] = now
            self.next_seq += 1
        if out:
            self.last_sent_at = now
        return out

    def unsent(self, datagrams: int) -> None:
        """The last ``datagrams`` of what :meth:`to_send` returned could not be sent (no pair): they do not count
        as sent."""
        for seq in range(self.next_seq - datagrams, self.next_seq):
            self.in_flight.pop(seq, None)
        self.next_seq -= datagrams

    def on_receiver(self, now: float, data: bytes) -> bytes | None:
        """A datagram arrived at B: counted when it is a bulk datagram, whose acknowledgement is returned."""
        ack = ack_for(data)
        if ack is not None:
            self.received.add(data, now)
            self.arrivals.append((now, len(data)))
        return ack

    def on_sender(self, now: float, data: bytes) -> bool:
        """A datagram arrived at A: an acknowledgement frees its slot and gives a round-trip time. True when the
        window has room again."""
        if data[:4] != ACK_MAGIC or len(data) < 8:
            return False
        (seq,) = BULK_SEQ.unpack_from(data, 4)
        sent = self.in_flight.pop(seq, None)
        if sent is None:
            return False
        self.rtts.append(now - sent)
        for earlier in [s for s in self.in_flight if s < seq]:  # the path keeps order: lost, or their ack was
            del self.in_flight[earlier]
            self.given_up += 1
        return True

    def next_timeout(self) -> float | None:
        """When the oldest datagram in flight is given up."""
        return min(self.in_flight.values()) + self.settings.ack_timeout if self.in_flight else None

    def on_timeout(self, now: float) -> None:
        for seq, sent in list(self.in_flight.items()):
            if now - sent >= self.settings.ack_timeout:
                del self.in_flight[seq]
                self.given_up += 1

    def run(self) -> BulkRun:
        """The phase as the benchmark sums a burst up (Mbit/s and loss at the receiver)."""
        r = self.received
        return BulkRun(self.settings.size, BulkSent(self.next_seq, self.last_sent_at - self.started),
                       BulkReceived(r.count, r.size, r.first_at, r.last_at, r.reordered))

    def figures(self, path: str, now: float) -> dict[str, Any]:
        """The results.json record: what was sent and counted, Mbit/s of payload at the receiver, loss, the
        round-trip times, and the receiver's throughput in :attr:`BulkSettings.bins` intervals."""
        run = self.run()
        rate = run.mbit_per_s
        doc: dict[str, Any] = {
            "path": path,
            "size": self.settings.size,
            "sent": run.sent.count,
            "received": run.received.count,
            "complete": self.done,
            "seconds": round(now - self.started, 3),
            "mbit_per_s": None if rate is None else round(rate, 2),
            "loss_pct": round(run.loss * 100, 2),
            "reordered": run.received.reordered,
            "rtt_ms_median": round(statistics.median(self.rtts) * 1000, 2) if self.rtts else None,
            "rtt_ms_min": round(min(self.rtts) * 1000, 2) if self.rtts else None,
            "rtt_ms_max": round(max(self.rtts) * 1000, 2) if self.rtts else None,
        }
        doc["series"] = self.series()
        return doc

    def series(self) -> dict[str, Any]:
        """The receiver's Mbit/s of payload in equal intervals from its first datagram to its last."""
        if len(self.arrivals) < 2:
            return {"interval_s": 0.0, "mbit_per_s": []}
        first, last = self.arrivals[0][0], self.arrivals[-1][0]
        span = max(last - first, 1e-9)
        bins = self.settings.bins
        width = span / bins
        totals = [0] * bins
        for at, size in self.arrivals:
            totals[min(bins - 1, int((at - first) / width))] += size
        return {"interval_s": round(width, 6), "mbit_per_s": [round(b * 8 / width / 1e6, 2) for b in totals]}


__all__ = ["ACK_MAGIC", "BULK", "MAX_MB", "BulkPhase", "BulkSettings", "BulkTransfer", "ack_for", "is_bulk"]
