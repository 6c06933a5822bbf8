"""``icelab fuzz``: coverage-guided fuzzing of the stack with atheris (libFuzzer for Python), one target at a time.

The targets are in fuzz/targets.py, their seed corpora in fuzz/corpus/TARGET/ (docs/robustness.md). Each campaign
runs in a child process (fuzz/run.py), so a crash, a hang or runaway memory in the target is reported here rather
than ending this command, and the child's memory can be measured. What a campaign learns (new corpus entries) and
the inputs that broke the stack go to a work directory, ``results/fuzz/TARGET/`` by default.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ice.cli.common import repo_root
from ice.errors import UserError

if TYPE_CHECKING:
    from ice.cli.common import Subparsers

DEFAULT_MAX_LEN = 4096
"""libFuzzer's -max_len for targets that do not set their own (fuzz.targets.MAX_LEN)."""


def _targets(root: Path) -> tuple[list[str], dict[str, int]]:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module: Any = importlib.import_module("fuzz.targets")
    return list(module.TARGETS), dict(module.MAX_LEN)


def _check_atheris() -> None:
    try:
        importlib.import_module("atheris")
    except ImportError:
        raise UserError("atheris is not installed: run ./icelab once to provision the dev extras "
                        "(or pip install atheris)") from None


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _artifacts(crashes: Path, prefix: str) -> list[str]:
    return sorted(str(p) for p in crashes.glob(f"{prefix}-*") if p.suffix != ".txt")


def run_campaign(root: Path, name: str, seconds: float, runs: int, work: Path, max_len: int, timeout: int,
                 rss_limit_mb: int, progress: bool) -> dict[str, Any]:
    """Fuzz ``name`` in a child process until ``seconds`` or ``runs`` inputs, whichever comes first."""
    corpus = work / "corpus"
    crashes = work / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    stats_path = work / "stats.json"
    stats_path.unlink(missing_ok=True)
    before_corpus = sum(1 for _ in corpus.iterdir())
    before = {p.name for p in crashes.iterdir()}
    seeds = root / "fuzz" / "corpus" / name
    cmd = [sys.executable, "-m", "fuzz.run", name, str(work), str(seconds), str(runs),
           str(corpus), *([str(seeds)] if seeds.is_dir() else []),
           f"-max_len={max_len}", f"-timeout={timeout}", f"-rss_limit_mb={rss_limit_mb}",
           f"-artifact_prefix={crashes}{os.sep}", f"-max_total_time={int(seconds) + 120}",
           "-print_final_stats=0", "-print_pcs=0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
           "ICELAB_NATIVE": "0"}  # the sources: atheris guides itself by bytecode coverage (ice/native.py)
    log_path = work / "fuzz.log"
    started = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        next_report = started + 10.0
        try:
            while child.poll() is None:
                time.sleep(0.2)
                if progress and time.monotonic() >= next_report:
                    next_report += 10.0
                    _progress(name, stats_path, time.monotonic() - started)
        except BaseException:
            child.kill()
            child.wait()
            raise
    stats: dict[str, Any] = {}
    try:
        stats = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        pass
    new = [p for p in crashes.iterdir() if p.name not in before]
    hangs = [str(p) for p in new if p.name.startswith("timeout-")]
    ooms = [str(p) for p in new if p.name.startswith(("oom-", "leak-"))]
    fatal = [str(p) for p in new if p.name.startswith("crash-") and p.suffix != ".txt"
             and str(p) not in stats.get("crash_files", [])]
    inputs = int(stats.get("inputs", 0))
    elapsed = float(stats.get("seconds", time.monotonic() - started)) or 1e-9
    return {
        "target": name,
        "inputs": inputs,
        "seconds": round(elapsed, 1),
        "execs_per_s": round(inputs / elapsed),
        "new_corpus": sum(1 for _ in corpus.iterdir()) - before_corpus,
        "exceptions": int(stats.get("exceptions", 0)) + len(fatal),
        "hangs": len(hangs),
        "out_of_memory": len(ooms),
        "crash_files": [*stats.get("crash_files", []), *fatal, *hangs, *ooms],
        "rss_start_kb": int(stats.get("rss_start_kb", 0)),
        "rss_end_kb": int(stats.get("rss_end_kb", 0)),
        "rss_peak_kb": int(stats.get("rss_peak_kb", 0)),
        "completed": bool(stats.get("done")) and child.returncode == 0,
        "exit_code": child.returncode,
        "log": str(log_path),
    }


def _progress(name: str, stats_path: Path, elapsed: float) -> None:
    try:
        s = json.loads(stats_path.read_text())
    except (OSError, ValueError):
        print(f"icelab fuzz {name}: starting ({elapsed:.0f} s)", file=sys.stderr, flush=True)
        return
    rate = s["inputs"] / max(s["seconds"], 1e-9)
    print(f"icelab fuzz {name}: {s['inputs']:,} inputs in {s['seconds']:.0f} s ({rate:,.0f}/s), "
          f"{s['exceptions']} exceptions, RSS {s['rss_end_kb']:,} KiB", file=sys.stderr, flush=True)


def _summary(r: dict[str, Any]) -> str:
    lines = [f"{r['target']}: {r['inputs']:,} inputs in {r['seconds']:g} s ({r['execs_per_s']:,}/s), "
             f"{r['new_corpus']} new corpus entries, {r['exceptions']} exceptions, {r['hangs']} hangs, "
             f"{r['out_of_memory']} out of memory; RSS {r['rss_start_kb']:,} KiB after the warm-up, "
             f"{r['rss_end_kb']:,} KiB at the end (peak {r['rss_peak_kb']:,} KiB)"]
    if not r["completed"] and not r["crash_files"]:
        lines.append(f"  the fuzzer stopped early (exit {r['exit_code']}): see {r['log']}")
    lines += [f"  input saved: {path}" for path in r["crash_files"]]
    return "\n".join(lines)


def _write_figures(path: Path, results: list[dict[str, Any]], commit: str) -> None:
    """Merge the campaigns into ``path`` (target -> figures), the file docs/robustness.md and benches read."""
    try:
        figures: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        figures = {}
    date = datetime.date.today().isoformat()
    for r in results:
        figures[r["target"]] = {
            "inputs": r["inputs"], "seconds": r["seconds"], "execs_per_s": r["execs_per_s"],
            "exceptions": r["exceptions"], "hangs": r["hangs"], "out_of_memory": r["out_of_memory"],
            "rss_start_kb": r["rss_start_kb"], "rss_end_kb": r["rss_end_kb"], "new_corpus": r["new_corpus"],
            "date": date, "commit": commit, "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(),
        }
        if r["rss_peak_kb"]:
            figures[r["target"]]["rss_peak_kb"] = r["rss_peak_kb"]
    path.write_text(json.dumps(dict(sorted(figures.items())), indent=2) + "\n")


def replay(root: Path, name: str, paths: list[str]) -> int:
    """Run saved inputs through the target in this process; an exception shows its traceback (exit 1)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module: Any = importlib.import_module("fuzz.targets")
    target = module.TARGETS[name]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.suffix != ".txt")
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or directory to replay")
    failed = 0
    for f in files:
        try:
            target(f.read_bytes())
        except Exception:
            import traceback

            failed += 1
            print(f"{f}: the {name} target raised:", file=sys.stderr)
            traceback.print_exc()
    print(f"replayed {len(files)} inputs through {name}: {failed} raised")
    return 1 if failed else 0


def cmd_fuzz(args: argparse.Namespace) -> int:
    root = repo_root()
    names, max_lens = _targets(root)
    if args.list or args.target == "list":
        print("\n".join(names))
        return 0
    if args.target is None:
        raise UserError(f"name a target to fuzz (one of {', '.join(names)}, or all)")
    if args.target != "all" and args.target not in names:
        raise UserError(f"there is no fuzz target {args.target!r}: the targets are {', '.join(names)} (or all)")
    chosen = names if args.target == "all" else [args.target]
    if args.replay:
        if args.target == "all":
            raise UserError("--replay needs one target, not all")
        return replay(root, args.target, args.replay)
    if args.seconds <= 0 or (args.runs is not None and args.runs <= 0):
        raise UserError("--seconds and --runs must be positive")
    _check_atheris()
    commit = _git_commit(root)  # the code measured (the checkout may move on while a long campaign runs)
    results = []
    for name in chosen:
        work = Path(args.work) / name if args.work else root / "results" / "fuzz" / name
        result = run_campaign(root, name, args.seconds, args.runs or 2**62, work,
                              max_lens.get(name, DEFAULT_MAX_LEN), args.timeout, args.rss_limit_mb,
                              progress=not args.json and args.seconds > 15)
        results.append(result)
        if not args.json:
            print(_summary(result), flush=True)
    if args.figures:
        _write_figures(Path(args.figures), results, commit)
    if args.json:
        print(json.dumps(results[0] if args.target != "all" else {r["target"]: r for r in results}, indent=2))
    bad = any(r["exceptions"] or r["hangs"] or r["out_of_memory"] or not r["completed"] for r in results)
    return 1 if bad else 0


def add_parser(sub: Subparsers) -> None:
    f = sub.add_parser("fuzz", help="coverage-guided fuzzing of the stack (atheris), one target at a time")
    f.add_argument("target", nargs="?", help="the target (see --list), or all of them in turn")
    f.add_argument("--list", action="store_true", help="name the targets")
    f.add_argument("--seconds", type=float, default=60.0, help="time per target (default 60)")
    f.add_argument("--runs", type=int, help="stop a target after this many inputs (if sooner than --seconds)")
    f.add_argument("--json", action="store_true", help="the summary as JSON")
    f.add_argument("--work", metavar="DIR", help="where new corpus entries, crashes and logs go "
                                                 "(default results/fuzz/TARGET)")
    f.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it counts as a hang")
    f.add_argument("--rss-limit-mb", type=int, default=2048, help="memory that counts as running away (MiB)")
    f.add_argument("--figures", metavar="FILE", help="merge the results into this JSON file (fuzz/figures.json)")
    f.add_argument("--replay", nargs="+", metavar="PATH", help="run these inputs (files or directories) through "
                                                               "the target here, with tracebacks, instead of fuzzing")
    f.set_defaults(func=cmd_fuzz)
