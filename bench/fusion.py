"""Fusion benchmark: detections/s of correlator.fusion.FusionEngine on one core, and its memory.

200,000 synthetic detections shaped as workers write them (sigma and anomaly kinds, ATT&CK tags,
entity scores, users in the event, source refs), over 2,000 hosts, 1,000 users and 300 rules,
event time advancing ~50 ms per detection (so alerts are created, updated and closed), with a
criticality table of 200 assets. Generation is not timed; `process` (and the final close) is.

- `detections_per_s`: that stream, the median of `--runs` runs (each run a fresh engine), by the
  wall clock; `cpu_detections_per_s` by the process's CPU time, which a machine busy with other
  work disturbs less;
- `noisy`: the same stream where one noisy rule (low level, fires on any host) makes up
  `--noisy-share` of the detections, the flood a chatty rule makes: long-lived alerts with large
  counts, and every hit still updates host and user risk;
- `memory`: bytes of FusionEngine state per tracked entity (host or user), by tracemalloc, over
  `--memory-detections` detections naming a fifth as many distinct hosts and as many users (each
  about five times): the engine's whole state (risk tables, open alerts with their explanations,
  the dedupe window) and the risk tables alone, both divided by the entities tracked.

The generated detections are frozen out of the garbage collector (`gc.freeze`) before timing:
they stand for a stream a consumer decodes and drops, and scanning 200,000 held records in each
full collection would measure the benchmark, not the engine (`--no-freeze` measures that too).

Compiled (scripts/build_native.py) when built; `SIGMARAY_PURE=1` runs the Python source
(`native` in the output says which ran).

Usage: .venv/bin/python bench/fusion.py [--detections 200000] [--seed 0] [--runs 5] [--noisy-share 0.5]
       [--memory-detections 20000] [--no-freeze]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from correlator import native  # noqa: E402
from correlator.criticality import Criticality  # noqa: E402
from correlator.fusion import FusionEngine  # noqa: E402

TACTICS = ["execution", "persistence", "privilege-escalation", "defense-evasion", "credential-access", "discovery",
           "lateral-movement", "collection", "command-and-control", "exfiltration", "impact"]
LEVELS = ["informational", "low", "medium", "medium", "high", "high", "critical"]
NOISY_RULE = {"id": "rule-noisy", "title": "Noisy rule (process creation by cmd.exe)", "level": "low",
              "tags": ["attack.execution", "attack.t1059.003"]}


def synthetic(count: int, seed: int, noisy_share: float = 0.0) -> list[dict[str, Any]]:
    """The benchmark stream; with `noisy_share`, that share of the detections is NOISY_RULE (the
    stream without it is the same as before the option existed)."""
    rng = random.Random(seed)
    rules = []
    for index in range(300):
        tags = [f"attack.{rng.choice(TACTICS)}" for _ in range(rng.randint(1, 2))]
        tags += [f"attack.t{rng.randint(1000, 1600)}" + (f".{rng.randint(1, 9):03d}" if rng.random() < 0.5 else "")]
        rules.append({"id": f"rule-{index:04d}", "title": f"Synthetic rule {index}", "level": rng.choice(LEVELS),
                      "tags": tags})
    noisy = random.Random(seed + 1)  # its own generator: the rest of the stream does not change
    start = 1_796_000_000_000
    out = []
    for offset in range(count):
        host = f"ws-{int(rng.paretovariate(1.2)) % 2000:04d}"
        user = f"user{rng.randrange(1000)}"
        now = start + offset * 50
        score = round(rng.random(), 4)
        record: dict[str, Any] = {
            "kind": "sigma", "rule": rules[int(rng.paretovariate(1.1)) % 300], "ruleset_version": "bench",
            "entity": host, "event_time": now, "scores": {f"host:{host}": score},
            "model_version": "hst@1",
            "source": {"topic": "sigmaray.events", "partition": offset % 12, "offset": offset, "timestamp_ms": now},
            "event": {"EventID": 1, "Image": "C:\\Windows\\System32\\cmd.exe", "TargetUserName": user},
        }
        if rng.random() < 0.1:
            record["kind"] = "anomaly"
            record["rule"] = {"id": "sigmaray-anomaly-host", "title": f"Unusual activity of host {host}",
                              "level": "high", "tags": []}
            record["anomaly"] = {"entity": f"host:{host}", "entity_type": "host", "score": 0.999, "raw": 0.3,
                                 "reasons": ["rate_1m=0.9 (usually 0.2 ± 0.1)"], "features": {}}
        if noisy_share and noisy.random() < noisy_share:
            record["kind"] = "sigma"
            record["rule"] = NOISY_RULE
            record.pop("anomaly", None)
        out.append(record)
    return out


def many_entities(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` detections naming about count / 5 distinct hosts and as many users, each about five
    times, a minute apart: the state grows with the entities (memory per entity)."""
    rng = random.Random(seed)
    entities = max(1, count // 5)
    rules = [{"id": f"rule-{index:04d}", "title": f"Synthetic rule {index}", "level": rng.choice(LEVELS),
              "tags": [f"attack.{rng.choice(TACTICS)}", f"attack.t{rng.randint(1000, 1600)}"]} for index in range(300)]
    start = 1_796_000_000_000
    out = []
    for offset in range(count):
        host = f"host-{rng.randrange(entities):06d}"
        now = start + offset * 1000
        out.append({"kind": "sigma", "rule": rules[rng.randrange(300)], "entity": host, "event_time": now,
                    "scores": {f"host:{host}": round(rng.random(), 4)},
                    "source": {"topic": "sigmaray.events", "partition": offset % 12, "offset": offset,
                               "timestamp_ms": now},
                    "event": {"TargetUserName": f"user{rng.randrange(entities):06d}"}})
    return out


def criticality_table() -> Criticality:
    lines = ["type,name,criticality,role,owner"] + [f"host,ws-{i:04d},{'critical' if i % 10 == 0 else 'high'},"
                                                    f"server,team{i % 7}" for i in range(0, 2000, 10)]
    criticality, errors = Criticality.from_text("\n".join(lines))
    assert not errors
    return criticality


def _pipeline(criticality: Criticality) -> Any:
    """The whole correlator as the actors run it: record validation, routing to the shipped
    correlation rules, fusion (`correlator.Correlator`)."""
    from correlator.pipeline import Correlator
    from detectors.rulefiles import load_rules_from_paths
    from detectors.shipped import shipped_rules_path

    return Correlator.from_ruleset(load_rules_from_paths([shipped_rules_path()]), criticality=criticality)


def timed(detections: list[dict[str, Any]], criticality: Criticality,
          pipeline: bool = False) -> tuple[float, float, Counter[str], FusionEngine]:
    """Wall-clock and CPU seconds of one run (a fresh engine, or a fresh whole correlator), its
    alerts by activity, the fusion engine."""
    correlator = _pipeline(criticality) if pipeline else None
    engine = correlator.fusion if correlator is not None else FusionEngine(criticality=criticality)
    activities: Counter[str] = Counter()
    process = correlator.process if correlator is not None else engine.process
    started, cpu_started = time.perf_counter(), time.process_time()
    for detection in detections:
        for alert in process(detection):
            activities[alert.activity] += 1
    for alert in (correlator.flush() if correlator is not None else engine.close_all()):
        activities[alert.activity] += 1
    if correlator is not None:
        assert not correlator.stats()["skipped_total"], correlator.stats()["skipped"]  # every record valid
    return time.perf_counter() - started, time.process_time() - cpu_started, activities, engine


def throughput(detections: list[dict[str, Any]], criticality: Criticality, runs: int,
               pipeline: bool = False) -> dict[str, Any]:
    """Medians over `runs`: wall clock (the figure), and CPU time, which a busy machine disturbs less."""
    seconds, cpu_seconds = [], []
    engine = None
    for _ in range(runs):
        del engine
        gc.collect()  # the last run's engine goes now, not in a full collection during this run
        elapsed, cpu, activities, engine = timed(detections, criticality, pipeline)
        seconds.append(elapsed)
        cpu_seconds.append(cpu)
    median = statistics.median(seconds)
    return {"detections": len(detections), "seconds": round(median, 3),
            "detections_per_s": round(len(detections) / median),
            "runs_detections_per_s": [round(len(detections) / value) for value in seconds],
            "cpu_detections_per_s": round(len(detections) / statistics.median(cpu_seconds)),
            "alerts": dict(activities), "skipped": engine.stats()["skipped_total"],
            "entities": engine.stats()["entities"]}


def memory(count: int, seed: int, criticality: Criticality) -> dict[str, Any]:
    """Engine state bytes per tracked entity: what freeing the engine (and its risk tables alone)
    gives back, by tracemalloc, after a run over many distinct entities."""
    detections = many_entities(count, seed)
    gc.collect()
    tracemalloc.start()
    engine = FusionEngine(criticality=criticality)
    for detection in detections:
        engine.process(detection)
    gc.collect()
    stats = engine.stats()
    entities = sum(stats["entities"].values())
    with_engine = tracemalloc.get_traced_memory()[0]
    tables = engine.tables
    engine.tables = {}
    del tables
    gc.collect()
    tables_bytes = with_engine - tracemalloc.get_traced_memory()[0]
    del engine
    gc.collect()
    engine_bytes = with_engine - tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"detections": len(detections), "entities": stats["entities"], "open_alerts": stats["open_alerts"],
            "engine_bytes": engine_bytes, "engine_bytes_per_entity": round(engine_bytes / entities),
            "risk_table_bytes": tables_bytes, "risk_table_bytes_per_entity": round(tables_bytes / entities)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--noisy-share", type=float, default=0.5)
    parser.add_argument("--memory-detections", type=int, default=20_000)
    parser.add_argument("--no-freeze", action="store_true", help="leave the generated detections to the collector")
    args = parser.parse_args()
    criticality = criticality_table()
    detections = synthetic(args.detections, args.seed)
    noisy = synthetic(args.detections, args.seed, args.noisy_share)
    # The whole correlator gets the same detections as workers write them: event times as
    # ISO-8601 text (the record schema). Made before the freeze, like the other inputs.
    as_written = [{**d, "event_time": datetime.fromtimestamp(d["event_time"] / 1000, UTC).isoformat()} for d in detections]
    if not args.no_freeze:
        gc.freeze()
    result = {"benchmark": "fusion", **throughput(detections, criticality, args.runs),
              "gc_frozen_input": not args.no_freeze, "native": native.status()}
    # The whole correlator on the same detections, in the same run: validation and routing on top.
    result["pipeline"] = throughput(as_written, criticality, args.runs, pipeline=True)
    del as_written
    result["pipeline_to_fusion"] = round(result["pipeline"]["detections_per_s"] / result["detections_per_s"], 3)
    del detections
    result["noisy"] = {"share": args.noisy_share, **throughput(noisy, criticality, args.runs)}
    del noisy
    gc.unfreeze()
    result["memory"] = memory(args.memory_detections, args.seed, criticality)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
