"""``icelab bench codec``: STUN codec ops/s, icelab vs aioice 0.13, same process, same inputs, same run.

Operations (an ICE connectivity check and its answer):
  build     Binding request with USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY, FINGERPRINT
  parse     parse it, check FINGERPRINT and MESSAGE-INTEGRITY, read USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE
  response  build a Binding success response with XOR-MAPPED-ADDRESS

icelab signs with an IntegrityKey prepared once per peer, as its agent does; aioice takes the raw key, as its API does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable

PASSWORD = b"ZoLFcOzHvXdQ8b2vkCeQPr"
USERNAME = "Sa2T:Hq9b"
PRIORITY = 1853824767
TIEBREAKER = 0x1234567890ABCDEF
MAPPED = ("192.0.2.1", 32853)


def measure(fn: Callable[[], object], seconds: float, rounds: int = 3) -> float:
    """Best of ``rounds`` runs of about ``seconds`` each, in ops/s."""
    n = 1000
    start = time.perf_counter()
    for _ in range(n):
        fn()
    once = (time.perf_counter() - start) / n
    batch = max(1000, int(seconds / max(once, 1e-9)))
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        best = max(best, batch / (time.perf_counter() - start))
    return best


def icelab_ops() -> dict[str, Callable[[], object]]:
    from ice.stun import IntegrityKey, Message, MessageClass, Method, parse
    from ice.stun.attributes import IceControlling, Priority, UseCandidate, Username, XorMappedAddress

    key = IntegrityKey(PASSWORD)
    tid = os.urandom(12)

    def build() -> bytes:
        return Message(
            Method.BINDING,
            MessageClass.REQUEST,
            tid,
            [Username(USERNAME), Priority(PRIORITY), IceControlling(TIEBREAKER), UseCandidate()],
        ).encode(key, fingerprint=True)

    data = build()

    def parse_verify() -> object:
        m = parse(data)
        if not m.check_integrity(key):
            raise AssertionError("integrity")
        return (m.get(Username), m.get(Priority), m.get(IceControlling), m.get(UseCandidate))

    def response() -> bytes:
        return Message(Method.BINDING, MessageClass.SUCCESS, tid, [XorMappedAddress(*MAPPED)]).encode()

    return {"build": build, "parse": parse_verify, "response": response}


def aioice_ops() -> dict[str, Callable[[], object]]:
    from aioice import stun

    tid = os.urandom(12)

    def build() -> bytes:
        m = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST, transaction_id=tid)
        m.attributes["USERNAME"] = USERNAME
        m.attributes["PRIORITY"] = PRIORITY
        m.attributes["ICE-CONTROLLING"] = TIEBREAKER
        m.attributes["USE-CANDIDATE"] = None
        m.add_message_integrity(PASSWORD)
        m.add_fingerprint()
        return bytes(m)

    data = build()

    def parse_verify() -> object:
        m = stun.parse_message(data)  # also checks FINGERPRINT and decodes every attribute
        if not m.check_message_integrity(PASSWORD):
            raise AssertionError("integrity")
        a = m.attributes
        return (a["USERNAME"], a["PRIORITY"], a["ICE-CONTROLLING"], a["USE-CANDIDATE"])

    def response() -> bytes:
        m = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE, transaction_id=tid)
        m.attributes["XOR-MAPPED-ADDRESS"] = MAPPED
        return bytes(m)

    return {"build": build, "parse": parse_verify, "response": response}


def cross_check() -> None:
    """Both codecs must understand each other's bytes, or the comparison means nothing."""
    from aioice import stun as astun

    from ice.stun import parse

    ours = icelab_ops()["build"]()
    theirs = aioice_ops()["build"]()
    assert astun.parse_message(ours).check_message_integrity(PASSWORD)  # type: ignore[arg-type]
    assert parse(theirs).check_integrity(PASSWORD)  # type: ignore[arg-type]


def main(args: argparse.Namespace) -> int:
    try:
        import aioice
    except ImportError:
        print("icelab bench codec: aioice is not installed; run ./icelab once to provision the dev extras",
              file=sys.stderr)
        return 2
    cross_check()
    seconds = float(getattr(args, "seconds", 0.4))
    impls = {"icelab": icelab_ops(), "aioice": aioice_ops()}
    results: dict[str, dict[str, float]] = {name: {} for name in impls}
    for op in ("build", "parse", "response"):
        for name, ops in impls.items():
            results[name][op] = round(measure(ops[op], seconds))
            if not args.json:
                print(f"  {op:<9} {name:<7} {results[name][op]:>12,.0f} ops/s", file=sys.stderr, flush=True)
    ratio = {op: round(results["icelab"][op] / results["aioice"][op], 2) for op in results["icelab"]}
    doc = {
        "benchmark": "codec",
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "aioice_version": getattr(aioice, "__version__", "0.13"),
        "ops_per_second": results,
        "ratio": ratio,
        "goal": "icelab at least 3x aioice on each operation",
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{'operation':<10} {'icelab ops/s':>14} {'aioice ops/s':>14} {'ratio':>7}")
        for op, r in ratio.items():
            print(f"{op:<10} {results['icelab'][op]:>14,.0f} {results['aioice'][op]:>14,.0f} {r:>6.2f}x")
        print(f"({doc['python']}; target ratio >= 3x)")
    return 0
