"""What the benchmarks that run every ICE stack against itself share (``bench connect``, ``bench throughput``): the
``--peers`` choice, a process's CPU time and the ratio of icelab to the best foreign stack."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ice.agents.registry import BUILTIN, FOREIGN, resolve


def choose(peers: str) -> list[str]:
    """``--peers all|NAME,...``: icelab first, then the foreign stacks named; UserError for an unknown or missing
    one."""
    from ice.errors import UserError

    names = list(BUILTIN) if peers == "all" else ["icelab", *[p for p in peers.split(",") if p and p != "icelab"]]
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise UserError(f"--peers takes 'all' or names from {', '.join(FOREIGN)} (comma-separated), not "
                        f"{', '.join(unknown)}")
    missing = {n: resolve(n).missing for n in names if resolve(n).missing}
    if missing:
        raise UserError("not installed: " + "; ".join(f"{n}: {why}" for n, why in missing.items()))
    return names


def ratio(results: Mapping[str, object], key: str, higher_is_better: bool = False) -> dict[str, object]:
    """icelab's ``key`` over the best foreign stack's (the lowest, or the highest with ``higher_is_better``);
    stacks whose result has no ``key`` (an ``error``) are left out. ``ratio`` is None without both sides."""
    foreign = {n: float(r[key]) for n, r in results.items()
               if n != "icelab" and isinstance(r, Mapping) and isinstance(r.get(key), (int, float))}
    ours = results.get("icelab")
    if not foreign or not isinstance(ours, Mapping) or not isinstance(ours.get(key), (int, float)):
        return {"ratio": None, "fastest_foreign": None}
    fastest = (max if higher_is_better else min)(foreign, key=lambda n: foreign[n])
    return {"ratio": round(float(ours[key]) / foreign[fastest], 4) if foreign[fastest] else None,
            "fastest_foreign": fastest}


def cpu_seconds(pid: int | None) -> float:
    """Seconds on CPU of all the process's threads so far (schedstat is in ns); 0 when it is gone."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return total / 1e9
