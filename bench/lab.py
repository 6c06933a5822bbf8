"""``icelab bench lab``: how fast the lab builds, resets, tears down and probes (root).

Reported per topology: median build, reset (reload NAT rules + flush conntrack) and teardown times over a few
rounds; per preset: the probe's build and probe time without the mapping-timeout check (which waits on purpose).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

ROUNDS = 5
PROBED = ("full-cone", "port-restricted-cone", "symmetric", "linux-masquerade")


def main(args: argparse.Namespace) -> int:
    from ice.cli import isolate
    from ice.lab.mn import Lab, require_lab
    from ice.lab.nat import preset
    from ice.lab.probe import probe
    from ice.topology.registry import Topologies

    require_lab()
    isolate()
    rounds = int(getattr(args, "rounds", None) or ROUNDS)
    topologies: dict[str, dict[str, float]] = {}
    for name, topo in Topologies().all().items():
        builds, resets, teardowns = [], [], []
        for _ in range(rounds):
            lab = Lab(topo.spec())
            with lab:
                t = time.perf_counter()
                lab.reset()
                resets.append(time.perf_counter() - t)
            builds.append(lab.build_seconds)
            teardowns.append(lab.teardown_seconds)
        topologies[name] = {
            "nodes": len(topo.spec().nodes),
            "build_ms": round(statistics.median(builds) * 1000, 1),
            "reset_ms": round(statistics.median(resets) * 1000, 1),
            "teardown_ms": round(statistics.median(teardowns) * 1000, 1),
        }
        if not args.json:
            r = topologies[name]
            print(f"  {name:<12} {r['nodes']:>2} nodes  build {r['build_ms']:>6.1f} ms  reset {r['reset_ms']:>5.1f} ms"
                  f"  teardown {r['teardown_ms']:>5.1f} ms", file=sys.stderr, flush=True)
    probes = {}
    for name in PROBED:
        r = probe(name, preset(name), timeout_check=False)
        probes[name] = {"ok": r.ok, "build_ms": round(r.build_seconds * 1000, 1),
                        "probe_ms": round(r.probe_seconds * 1000, 1)}
    doc = {"benchmark": "lab", "rounds": rounds, "topologies": topologies, "probes": probes}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        for name, p in probes.items():
            print(f"  probe {name:<22} build {p['build_ms']:>6.1f} ms  probe {p['probe_ms']:>7.1f} ms  "
                  f"{'conforms' if p['ok'] else 'MISMATCH'}")
    return 0
