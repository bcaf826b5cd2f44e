"""Rule loading benchmark: all SigmaHQ rules to the first matched event, cold and warm, and
matching speed, each in fresh processes; optionally against another checkout of the project
(e.g. the last commit, to compare before/after in the same run).

    .venv/bin/python bench/load.py [--runs 5] [--baseline DIR] [--json]

- cold: an empty compiled-ruleset cache and an empty Hyperscan database cache (a fresh $HOME);
  with --baseline, the two trees' cold runs alternate, so that machine noise hits both alike;
- warm: the caches that the previous run of the same rules left;
- to_first_event_s: wall time of a child process from its start (interpreter included) until
  the first OTRF event is matched; load_s and engine_s split the in-process part;
- matching: indexed-engine events/s over all 56,563 OTRF events, first pass (cold memo tables)
  and second pass (warm), pinned to one core.

Medians over --runs runs; the machine (CPU count, load average) is printed with the figures,
since these runs share the machine with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SIGMA = SHARED / "sigma"
RULE_DIRS = [str(SIGMA / d) for d in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance")]
PLACEHOLDERS = {"known_cdcs": ["DC01.corp.example"]}
OTRF = SHARED / "datasets" / "otrf" / "jsonl"
FIRST_EVENT = OTRF / "defense_evasion" / "psh_mavinject_dll_notepad.jsonl"

# Run in a child with the project under test first on sys.path. Works on checkouts from before
# the cache existed (load_rules then has no cache_url).
_LOAD = r"""
import json, sys, time
started = time.perf_counter()
from cluster.build import build_engine, load_rules
from cluster.config import RulesConfig
imported = time.perf_counter()
config = RulesConfig(paths=tuple(sys.argv[1].split(",")), placeholders=json.loads(sys.argv[2]))
ruleset = load_rules(config)
loaded = time.perf_counter()
engine = build_engine(ruleset, config)
built = time.perf_counter()
with open(sys.argv[3], "rb") as f:
    event = json.loads(f.readline())
engine.match(event)
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported, "engine_s": built - loaded,
                  "first_match_s": done - built, "rules": len(ruleset.rules)}))
"""

_MATCH = r"""
import json, os, sys, time
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
from pathlib import Path
from cluster.build import build_engine, load_rules
from cluster.config import RulesConfig
from cluster.sources.files import read_events
config = RulesConfig(paths=tuple(sys.argv[1].split(",")), placeholders=json.loads(sys.argv[2]))
ruleset = load_rules(config)
engine = build_engine(ruleset, config)
events = [r.event for p in sorted(Path(sys.argv[3]).rglob("*.jsonl")) for r in read_events(p) if r.event is not None]
passes = []
matches = 0
for _ in range(2):
    started = time.perf_counter()
    matches = sum(len(engine.match_positions(e)) for e in events)
    passes.append(time.perf_counter() - started)
print(json.dumps({"events": len(events), "matches": matches, "first_pass_s": passes[0], "second_pass_s": passes[1]}))
"""


_PUSH = r"""
import json, sys, time
from cluster.config import RulesConfig
from cluster.kafka.live_rules import IncrementalRules
from detectors.rulefiles import read_rule_sources
config = RulesConfig(paths=tuple(sys.argv[1].split(",")), placeholders=json.loads(sys.argv[2]))
files, _ = read_rule_sources(config.paths)
compiler = IncrementalRules(config, files, "sigmaray.rules")
rule = ("title: pushed\nid: 22222222-0000-4000-8000-000000000001\nstatus: test\nlevel: high\n"
        "logsource: {product: windows, category: process_creation}\n"
        "detection:\n    sel: {CommandLine|contains: 'push-VALUE'}\n    condition: sel\n")
started = time.perf_counter()
compiler.build({})
first = time.perf_counter() - started
pushes = []
for v in range(int(sys.argv[3])):
    started = time.perf_counter()
    engine, ruleset = compiler.build({"pushed": rule.replace("VALUE", str(v))})
    pushes.append(time.perf_counter() - started)
    assert compiler.report.incremental, compiler.report
print(json.dumps({"first_build_s": first, "push_s": pushes, "rules": len(ruleset.rules),
                  "rebuilt_classes": compiler.report.rebuilt_classes, "reused_rules": compiler.report.reused_rules}))
"""


def _child(tree: Path, script: str, args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"benchmark child failed in {tree}:\n{done.stderr[-2000:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(row[key] for row in rows), 3)


def _load_medians(rows: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    return {key: _median(rows, key) for key in ("to_first_event_s", "import_s", "load_s", "engine_s", "first_match_s")} | {
        "rules": rows[0]["rules"], "runs": runs}


def measure_load(tree: Path, runs: int, warm: bool) -> dict[str, Any]:
    """Medians of `runs` child processes, each loading all rules and matching one event."""
    if not warm:
        return measure_cold({"tree": tree}, runs)["tree"]
    args = [",".join(RULE_DIRS), json.dumps(PLACEHOLDERS), str(FIRST_EVENT)]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sigmaray-bench-home-") as home:
        env = {**os.environ, "HOME": home, "SIGMARAY_RULE_CACHE": str(Path(home) / "rulesets")}
        _child(tree, _LOAD, args, env)  # fills the caches
        for _ in range(runs):
            wall, row = _child(tree, _LOAD, args, env)
            rows.append({**row, "to_first_event_s": wall})
    return _load_medians(rows, runs)


def measure_cold(trees: dict[str, Path], runs: int) -> dict[str, dict[str, Any]]:
    """Cold loads (empty caches every run) of each tree, alternating run by run (the order
    reversed every other run) so that machine noise hits all trees alike."""
    args = [",".join(RULE_DIRS), json.dumps(PLACEHOLDERS), str(FIRST_EVENT)]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="sigmaray-bench-home-") as home:
        env = {**os.environ, "HOME": home, "SIGMARAY_RULE_CACHE": str(Path(home) / "rulesets")}
        for run in range(runs):
            order = list(trees.items())
            for name, tree in order if run % 2 == 0 else order[::-1]:
                for path in sorted(Path(home).rglob("*"), reverse=True):
                    path.unlink() if path.is_file() else path.rmdir()
                wall, row = _child(tree, _LOAD, args, env)
                rows[name].append({**row, "to_first_event_s": wall})
    return {name: _load_medians(tree_rows, runs) for name, tree_rows in rows.items()}


def measure_matching(tree: Path, runs: int) -> dict[str, Any]:
    args = [",".join(RULE_DIRS), json.dumps(PLACEHOLDERS), str(OTRF)]
    rows = [_child(tree, _MATCH, args, dict(os.environ))[1] for _ in range(runs)]
    events = rows[0]["events"]
    return {"events": events, "matches": rows[0]["matches"],
            "first_pass_events_per_s": round(events / statistics.median(r["first_pass_s"] for r in rows)),
            "second_pass_events_per_s": round(events / statistics.median(r["second_pass_s"] for r in rows)),
            "runs": runs}


def measure_push(runs: int) -> dict[str, Any]:
    """A live push over all file rules: time from the new rule texts to the new engine
    (`IncrementalRules.build`, what a worker's background thread runs), without Kafka. The
    first push adds a rule, the others change it."""
    args = [",".join(RULE_DIRS), json.dumps(PLACEHOLDERS), str(runs + 1)]
    _, row = _child(ROOT, _PUSH, args, dict(os.environ))
    changes = row["push_s"][1:]
    return {"rules": row["rules"], "first_build_s": round(row["first_build_s"], 3),
            "add_one_rule_s": round(row["push_s"][0], 3),
            "change_one_rule_median_s": round(statistics.median(changes), 3),
            "change_one_rule_max_s": round(max(changes), 3), "rebuilt_classes": row["rebuilt_classes"],
            "reused_rules": row["reused_rules"], "runs": len(changes)}


def measure_scan(rsigma: Path | None, runs: int) -> dict[str, Any]:
    """Whole-process wall time of `sigmaray scan` (warm and cold caches) and, if given, of
    `rsigma engine eval`, over all OTRF events with all rules, pinned to one core, alternating
    run by run so that machine noise hits all alike. rsigma reads one rule folder and one NDJSON
    file: a folder of links to the four rule folders and the OTRF files concatenated."""
    taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    files = sorted(str(p) for p in OTRF.rglob("*.jsonl"))
    scan = [str(ROOT / ".venv" / "bin" / "sigmaray"), "scan", "--no-progress",
            *(arg for d in RULE_DIRS for arg in ("--rules", d)), "--placeholder", "known_cdcs=DC01.corp.example", *files]
    times: dict[str, list[float]] = {"sigmaray_warm_s": [], "sigmaray_cold_s": []}
    with tempfile.TemporaryDirectory(prefix="sigmaray-bench-scan-") as work:
        folder = Path(work) / "rules"
        folder.mkdir()
        for d in RULE_DIRS:
            (folder / Path(d).name).symlink_to(d)
        events = Path(work) / "otrf.jsonl"
        events.write_bytes(b"".join(Path(f).read_bytes() for f in files))
        warm_env = {**os.environ, "SIGMARAY_RULE_CACHE": str(Path(work) / "warm")}
        subprocess.run(scan, env=warm_env, capture_output=True, check=True)  # fills the cache
        if rsigma is not None:
            times["rsigma_s"] = []
        for run in range(runs):
            cold_home = Path(work) / f"home{run}"
            cold_env = {**os.environ, "HOME": str(cold_home), "SIGMARAY_RULE_CACHE": str(cold_home / "rulesets")}
            commands = {"sigmaray_warm_s": (scan, warm_env), "sigmaray_cold_s": (scan, cold_env)}
            if rsigma is not None:
                commands["rsigma_s"] = ([str(rsigma), "engine", "eval", "-r", str(folder), "-e", f"@{events}",
                                         "--output-format", "ndjson"], dict(os.environ))
            for name, (command, env) in commands.items():
                started = time.perf_counter()
                subprocess.run([*taskset, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=True)
                times[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(values), 2) for name, values in times.items()} | {"runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (medians; default 5)")
    parser.add_argument("--match-runs", type=int, default=3, help="runs of the matching benchmark (default 3)")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way (e.g. `git archive HEAD`)")
    parser.add_argument("--skip-matching", action="store_true")
    parser.add_argument("--rsigma", type=Path, help="an rsigma binary: compare whole-process scan times")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if not SIGMA.is_dir():
        raise SystemExit(f"reference data not found at {SHARED}")
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start",
        "python": platform.python_version(),
    }
    trees = {"current": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    for name, cold in measure_cold(trees, args.runs).items():  # alternating, so comparable
        result[name] = {"cold": cold}
    result["current"]["warm"] = measure_load(ROOT, args.runs, warm=True)
    result["current"]["live_push"] = measure_push(args.runs)
    if not args.skip_matching:
        for name, tree in trees.items():
            result[name]["matching"] = measure_matching(tree, args.match_runs)
    result["scan"] = measure_scan(args.rsigma, args.runs)
    result["load_average_at_end"] = round(os.getloadavg()[0], 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
