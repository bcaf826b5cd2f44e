"""`sigmaray scan`: match JSON-lines or .evtx files offline, one JSON object per match."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any, TextIO

import orjson

from cluster.build import build_engine, load_rules
from cluster.cli.common import add_rule_options, rules_config_from_args, run_guarded
from cluster.cli.progress import Progress
from cluster.sources.files import read_events
from detectors.cache import CacheOutcome


def register(commands: Any) -> None:
    scan = commands.add_parser(
        "scan",
        help="match events in files against rules and print one JSON line per match",
        description="FILE is JSON lines (one event per line) or .evtx. Matches go to stdout as JSON "
        "lines; progress and a summary go to stderr. Malformed lines and corrupt EVTX records "
        "are counted and reported, never fatal.",
    )
    add_rule_options(scan)
    scan.add_argument("files", nargs="+", metavar="FILE", help="JSON-lines or .evtx file")
    scan.add_argument("--mapping", metavar="FILE", help="logsource mapping YAML (default: the built-in Windows mapping)")
    scan.add_argument("--mode", choices=("indexed", "plain"), default="indexed", help="engine mode (default: indexed)")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    scan.set_defaults(run=lambda args: run_guarded(_scan, args))


def _scan(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cache = CacheOutcome()
    ruleset = load_rules(rules_config_from_args(args), outcome=cache)
    loaded = time.perf_counter() - started
    for rejection in ruleset.rejections[:20]:
        print(f"sigmaray: rule rejected: {rejection.path}: {rejection.reason}", file=sys.stderr)
    if len(ruleset.rejections) > 20:
        print(f"sigmaray: ... {len(ruleset.rejections) - 20} more rejected rules (see `sigmaray rules check`)", file=sys.stderr)
    engine = build_engine(ruleset, rules_config_from_args(args), mode=args.mode)
    out: TextIO = sys.stdout
    progress = Progress(sys.stderr, enabled=not args.no_progress)
    events = matches = recovered = 0
    skipped: Counter[str] = Counter()
    first_skips: list[str] = []
    per_rule: Counter[str] = Counter()
    for path in args.files:
        progress.start_file(path)
        for record in read_events(path):
            progress.tick()
            if record.event is None:
                skipped[record.file] += 1
                if len(first_skips) < 10:
                    first_skips.append(f"{record.file}:{record.line}: {record.error}")
                continue
            events += 1
            source: dict[str, Any] = {"file": record.file, "line": record.line}
            if record.recovered:  # parsed from an EVTX chunk that failed its checksums
                recovered += 1
                source["recovered"] = record.recovered
            for meta in engine.match(record.event):
                matches += 1
                per_rule[meta.title] += 1
                out.write(
                    orjson.dumps(
                        {
                            "rule": meta.to_dict(),
                            "source": source,
                            "event": record.event,
                        },
                        option=orjson.OPT_NON_STR_KEYS,
                        default=str,
                    ).decode()
                    + "\n"
                )
    progress.finish()
    out.flush()
    elapsed = time.perf_counter() - started
    total_skipped = sum(skipped.values())
    err = sys.stderr
    err.write(
        f"scanned {events} events from {len(args.files)} file(s) with {len(ruleset.rules)} rules "
        f"in {elapsed:.1f}s: {matches} matches, {total_skipped} skipped records, "
        + (f"{recovered} records recovered from damaged EVTX chunks, " if recovered else "")
        + f"{engine.stats.rule_errors} rule errors, {engine.stats.unrouted} events with no rule for their logsource\n"
    )
    err.write(f"  rules loaded in {loaded:.2f}s, {_cache_note(cache)}\n")
    for line in first_skips:
        err.write(f"  skipped {line}\n")
    if total_skipped > len(first_skips):
        err.write(f"  ... and {total_skipped - len(first_skips)} more skipped records\n")
    if engine.stats.last_rule_error:
        err.write(f"  last rule error: {engine.stats.last_rule_error}\n")
    for title, count in per_rule.most_common(10):
        err.write(f"  {count:6d}  {title}\n")
    return 0


def _cache_note(cache: CacheOutcome) -> str:
    if not cache.url:
        return "compiled-ruleset cache off"
    if cache.hit:
        return f"from the compiled-ruleset cache ({cache.url})"
    return f"compiled and cached in {cache.url}" + (f" (the cached file was not used: {cache.reason})" if cache.reason else "")
