"""`sigmaray bench engine`: indexed engine vs plain per-rule mode, same events, same run."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any

import orjson

from cluster.build import build_engine
from cluster.cli.common import add_rule_options, load_rules_from_args, rules_config_from_args, run_guarded
from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.literals import available_backends as literal_backends


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks")
    sub = bench.add_subparsers(dest="bench_command", metavar="WHAT")
    sub.required = True
    engine = sub.add_parser(
        "engine",
        help="events/s of the indexed engine and of the plain per-rule mode",
        description="Pins itself to one core and decodes all events first. Each pass runs a fresh "
        "indexed engine (cold caches; events_per_s) and a fresh plain engine (baseline_events_per_s) "
        "over all events, alternating every 1,000 events so machine noise hits both alike; speedup "
        "is the median of the per-pass ratios. A second indexed pass gives warm_events_per_s. Rule loading "
        "and compilation are timed separately (compile_s), and so is building the index (engine_build_s). "
        "Exits 1 if the modes disagree.",
    )
    add_rule_options(engine)
    engine.add_argument("--events", action="append", required=True, metavar="FILE", help="JSON lines or .evtx; repeat for more")
    engine.add_argument("--repeat", type=int, default=3, help="passes of both modes (default 3; medians reported)")
    engine.add_argument("--json", action="store_true", help="print one JSON object")
    engine.set_defaults(run=lambda args: run_guarded(_bench, args))


def _expand(paths: list[str]) -> list[str]:
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, _dirs, names in sorted(os.walk(path)):
                files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith((".jsonl", ".json", ".evtx")))
        else:
            files.append(path)
    return files


def _pass(engine: SigmaEngine, events: list[dict[str, Any]]) -> tuple[float, int]:
    match = engine.match_positions
    matches = 0
    started = time.perf_counter()
    for event in events:
        matches += len(match(event))
    return time.perf_counter() - started, matches


def _interleaved(indexed: SigmaEngine, plain: SigmaEngine, events: list[dict[str, Any]],
                 chunk: int = 1000) -> tuple[float, float, int, int]:
    """Both modes over the same events, alternating chunk by chunk, so that a noisy neighbour
    slows both alike and their ratio stays meaningful. Returns seconds and matches per mode."""
    indexed_s = plain_s = 0.0
    indexed_matches = plain_matches = 0
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        seconds, found = _pass(indexed, part)
        indexed_s += seconds
        indexed_matches += found
        seconds, found = _pass(plain, part)
        plain_s += seconds
        plain_matches += found
    return indexed_s, plain_s, indexed_matches, plain_matches


def _bench(args: argparse.Namespace) -> int:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    started = time.perf_counter()
    ruleset = load_rules_from_args(args)
    compile_s = time.perf_counter() - started
    events = [r.event for f in _expand(args.events) for r in read_events(f) if r.event is not None]
    rules = rules_config_from_args(args)

    indexed_times: list[float] = []
    plain_times: list[float] = []
    ratios: list[float] = []
    warm_times: list[float] = []
    build_times: list[float] = []
    matches = baseline_matches = 0
    for _ in range(max(1, args.repeat)):
        built = time.perf_counter()
        engine = build_engine(ruleset, rules, mode="indexed")
        build_times.append(time.perf_counter() - built)
        plain = build_engine(ruleset, rules, mode="plain")
        seconds, plain_seconds, matches, baseline_matches = _interleaved(engine, plain, events)
        indexed_times.append(seconds)
        plain_times.append(plain_seconds)
        ratios.append(plain_seconds / seconds)
        # A second pass over the same events: caches hold every field value (steady state).
        warm_times.append(_pass(engine, events)[0])
        literal_backend = engine.literal_backend or literal_backends()[0]

    indexed_s = statistics.median(indexed_times)
    plain_s = statistics.median(plain_times)
    result = {
        "rules": len(ruleset.rules),
        "events": len(events),
        "events_per_s": round(len(events) / indexed_s, 1),
        "baseline_events_per_s": round(len(events) / plain_s, 1),
        "matches": matches,
        "baseline_matches": baseline_matches,
        "speedup": round(statistics.median(ratios), 1),
        "warm_events_per_s": round(len(events) / statistics.median(warm_times), 1),
        "literal_backend": literal_backend,
        "compile_s": round(compile_s, 2),
        "engine_build_s": round(statistics.median(build_times), 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rejected": len(ruleset.rejections),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "python": platform.python_version(),
    }
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        for key, value in result.items():
            print(f"{key:>22}: {value}")
    return 0 if matches == baseline_matches else 1
