"""Models benchmark: feature extraction + scoring speed per core, and memory per entity.

0. Estimators: our compiled HalfSpaceTrees against River's, same rows and seed, one run.
1. Speed: the generator's realistic Windows stream (background + attacks), scored in batches of
   500 exactly as a PartitionWorker does (EntityScorer.score_batch), one process, one core.
   Modes run interleaved chunk by chunk in the same run (the machine is noisy): `features`
   (entities + features only, no model), and each model named by --models. Reports events/s
   (median of the chunks) and the ratio between modes.
2. Memory: a scorer filled with one million distinct entities (its cap); reports the growth of
   the process's resident memory, bytes per entity, and the scoring speed while filling, when
   every event brings two never-seen entities (the entity table's worst case).

Usage: .venv/bin/python bench/models.py [--events 200000] [--models hst,sad-rate] [--entities 1000000]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.datasets.generator import default_otrf_root, generate  # noqa: E402
from models.eventtime import event_time_ms  # noqa: E402
from models.scorer import EntityScorer, ScorerConfig  # noqa: E402

BATCH = 500


class FeaturesOnly(EntityScorer):
    """The scorer's per-event work without any model: the cost of the features themselves."""

    def score_batch(self, events: Any, times_ms: Any, matched: Any) -> list[Any]:
        self.features_of(events, times_ms)
        return []


def speed(count: int, models: list[str], chunk: int) -> dict[str, Any]:
    events = list(generate(count, seed=1, attack_share=0.01, otrf_root=default_otrf_root(ROOT)))
    times = [event_time_ms(e) for e in events]
    scorers: dict[str, EntityScorer] = {"features": FeaturesOnly(ScorerConfig())}
    for name in models:
        scorers[name] = EntityScorer(ScorerConfig(model=name))
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    for start in range(0, count, chunk):
        part = events[start:start + chunk]
        part_times = times[start:start + chunk]
        for name, scorer in scorers.items():
            began = time.perf_counter()
            for offset in range(0, len(part), BATCH):
                scorer.score_batch(part[offset:offset + BATCH], part_times[offset:offset + BATCH],
                                   [False] * len(part[offset:offset + BATCH]))
            rates[name].append(len(part) / (time.perf_counter() - began))
    medians = {name: round(statistics.median(r)) for name, r in rates.items()}
    entities = {name: len(s.table) for name, s in scorers.items()}
    return {"events": count, "chunk": chunk, "events_per_s": medians, "entities": entities,
            "ratio_to_features": {n: round(medians[n] / medians["features"], 3) for n in models}}


def estimators(rows: int = 50_000, features: int = 10) -> dict[str, Any]:
    """Our HalfSpaceTrees batch form against River's HalfSpaceTrees, same rows, same seed, in one
    run: rows/s of score-then-learn, and whether the scores are identical."""
    import math

    import numpy as np
    from river import anomaly

    from models.estimators.hst import HalfSpaceTrees

    names = tuple(f"f{i}" for i in range(features))
    X = np.random.default_rng(0).random((rows, features))
    dicts = [dict(zip(names, r.tolist(), strict=True)) for r in X]
    began = time.perf_counter()
    river = anomaly.HalfSpaceTrees(seed=1)
    river_scores = []
    for x in dicts:
        river_scores.append(river.score_one(x))
        river.learn_one(x)
    river_s = time.perf_counter() - began
    HalfSpaceTrees(names, seed=1).score_learn_many(X[:10], np.ones(10, dtype=bool), math.inf, 10)  # load the compiled loop
    began = time.perf_counter()
    ours = HalfSpaceTrees(names, seed=1)
    allow = np.ones(rows, dtype=bool)
    parts, pos = [], 0
    while pos < rows:
        scores, _ = ours.score_learn_many(X[pos:], allow[pos:], math.inf, rows)
        parts.append(scores)
        pos += len(scores)
    ours_s = time.perf_counter() - began
    return {"rows": rows, "features": features, "river_rows_per_s": round(rows / river_s),
            "ours_rows_per_s": round(rows / ours_s), "speedup": round(river_s / ours_s, 1),
            "identical_scores": bool(np.array_equal(np.concatenate(parts), np.asarray(river_scores)))}


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory(entities: int) -> dict[str, Any]:
    """Resident memory of a scorer holding `entities` entities (no tracemalloc: it would double it)."""
    scorer = EntityScorer(ScorerConfig(max_entities=entities))
    start_ms = 1_795_000_000_000
    gc.collect()
    before = _rss_bytes()
    made = 0
    per_round = 10_000
    # Every event names a new user and a new source address (on one of 50,000 hosts): the table
    # fills with `entities` entities of three types.
    seconds = 0.0
    while len(scorer.table) < entities:
        events = [{"Channel": "Security", "EventID": 4624, "Computer": f"WS-{n % 50_000:05d}",
                   "TargetUserName": f"user{n:07d}", "LogonType": "3",
                   "IpAddress": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"} for n in range(made, made + per_round)]
        times = [start_ms + n for n in range(made, made + per_round)]
        began = time.perf_counter()
        scorer.score_batch(events, times, [False] * per_round)
        seconds += time.perf_counter() - began
        made += per_round
    del events
    gc.collect()
    grown = _rss_bytes() - before
    held = len(scorer.table)
    return {"entities": held, "events": made, "rss_growth_mib": round(grown / 2**20, 1),
            "bytes_per_entity": round(grown / held), "evicted": scorer.table.stats.capped,
            # every event brings two entities never seen before: the worst case for the table
            "events_per_s_new_entities": round(made / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--models", default="hst,sad-rate", help="loda is River's, one row at a time: slow")
    parser.add_argument("--entities", type=int, default=1_000_000)
    args = parser.parse_args()
    import json

    result: dict[str, Any] = {"estimators": estimators(),
                              "speed": speed(args.events, [m for m in args.models.split(",") if m], args.chunk)}
    if args.entities:
        result["memory"] = memory(args.entities)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
