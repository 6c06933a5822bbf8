"""One fuzzing campaign in a process of its own: ``python -m fuzz.run TARGET WORK SECONDS RUNS [libFuzzer flags]``.

``icelab fuzz`` starts it (ice/cli/fuzz.py) so that a crash, a hang or runaway memory in a target ends this
process, not the command that reports it. atheris instruments every ``ice`` module as it is imported (coverage of
the stack, not of the harness), then libFuzzer mutates inputs from the corpus directories it is given.

An exception out of a target is caught here: its input is saved under ``WORK/crashes/`` with the traceback beside
it (one file per distinct exception type and place), it is counted, and fuzzing goes on, so one campaign finds
every distinct bug it can. A hang (libFuzzer's ``-timeout``) or too much memory (``-rss_limit_mb``) ends the
process; libFuzzer saves that input under ``WORK/crashes/`` too. ``WORK/stats.json`` is rewritten about once a
second and when the campaign ends: inputs executed, exceptions, RSS after a warm-up (10 s, or a quarter of a
shorter campaign: the seed corpus loaded and run), at the end, and its peak.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from pathlib import Path


def rss_kb(field: str = "VmRSS") -> int:
    """Resident set size of this process (Linux /proc; ``VmHWM``: its peak so far), in KiB; 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: list[str]) -> None:
    name, work, seconds, runs = argv[0], Path(argv[1]), float(argv[2]), int(argv[3])
    libfuzzer = argv[4:]
    import atheris

    with atheris.instrument_imports(include=["ice"]):
        from fuzz.targets import TARGETS
    target = TARGETS[name]
    crashes = work / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    stats_path = work / "stats.json"
    seen: set[str] = set()
    state: dict[str, object] = {"target": name, "inputs": 0, "exceptions": 0, "distinct": 0, "crash_files": [],
                                "rss_start_kb": 0, "rss_end_kb": 0, "seconds": 0.0, "done": False}
    started = time.monotonic()
    next_write = started + 0.5
    count = 0
    exceptions = 0

    warm = min(10.0, seconds / 4)

    def write(done: bool) -> None:
        elapsed = time.monotonic() - started
        state.update(inputs=count, exceptions=exceptions, seconds=round(elapsed, 3), rss_end_kb=rss_kb(),
                     rss_peak_kb=rss_kb("VmHWM"), done=done)
        if not state["rss_start_kb"] and (elapsed >= warm or done):
            state["rss_start_kb"] = state["rss_end_kb"]  # after the warm-up: corpus loaded, caches filled
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, stats_path)

    def one(data: bytes) -> None:
        nonlocal count, exceptions, next_write
        count += 1
        try:
            target(data)
        except Exception as exc:  # the one thing a target may not do: let an exception out
            exceptions += 1
            tb = traceback.extract_tb(exc.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            signature = f"{type(exc).__name__} at {where}"
            if signature not in seen and len(seen) < 100:
                seen.add(signature)
                path = crashes / f"crash-{hashlib.sha1(data).hexdigest()}"
                path.write_bytes(data)
                path.with_suffix(".txt").write_text("".join(traceback.format_exception(exc)))
                state["distinct"] = len(seen)
                files: list[str] = state["crash_files"]  # type: ignore[assignment]
                files.append(str(path))
                print(f"icelab-fuzz: exception {signature}: input saved to {path}", file=sys.stderr, flush=True)
        if count & 255 == 0 or count >= runs:
            now = time.monotonic()
            if count >= runs or now - started >= seconds:
                write(True)
                sys.stderr.flush()
                os._exit(0)
            if now >= next_write:
                next_write = now + 1.0
                write(False)

    write(False)
    atheris.Setup([sys.argv[0], *libfuzzer], one)
    atheris.Fuzz()
    write(True)  # libFuzzer stopped on its own (e.g. -max_total_time): normally it exits before this


if __name__ == "__main__":
    main(sys.argv[1:])
