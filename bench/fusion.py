"""Fusion benchmark: detections/s of correlator.fusion.FusionEngine on one core.

200,000 synthetic detections shaped as workers write them (sigma and anomaly kinds, ATT&CK tags,
entity scores, users in the event, source refs), over 2,000 hosts, 1,000 users and 300 rules,
event time advancing ~50 ms per detection (so alerts are created, updated and closed), with a
criticality table of 200 assets. Generation is not timed; `process` (and the final close) is.

Usage: .venv/bin/python bench/fusion.py [--detections 200000] [--seed 0]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from correlator.criticality import Criticality  # noqa: E402
from correlator.fusion import FusionEngine  # noqa: E402

TACTICS = ["execution", "persistence", "privilege-escalation", "defense-evasion", "credential-access", "discovery",
           "lateral-movement", "collection", "command-and-control", "exfiltration", "impact"]
LEVELS = ["informational", "low", "medium", "medium", "high", "high", "critical"]


def synthetic(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rules = []
    for index in range(300):
        tags = [f"attack.{rng.choice(TACTICS)}" for _ in range(rng.randint(1, 2))]
        tags += [f"attack.t{rng.randint(1000, 1600)}" + (f".{rng.randint(1, 9):03d}" if rng.random() < 0.5 else "")]
        rules.append({"id": f"rule-{index:04d}", "title": f"Synthetic rule {index}", "level": rng.choice(LEVELS),
                      "tags": tags})
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
        out.append(record)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    detections = synthetic(args.detections, args.seed)
    lines = ["type,name,criticality,role,owner"] + [f"host,ws-{i:04d},{'critical' if i % 10 == 0 else 'high'},"
                                                    f"server,team{i % 7}" for i in range(0, 2000, 10)]
    criticality, errors = Criticality.from_text("\n".join(lines))
    assert not errors
    engine = FusionEngine(criticality=criticality)
    activities: Counter[str] = Counter()
    process = engine.process
    started = time.perf_counter()
    for detection in detections:
        for alert in process(detection):
            activities[alert.activity] += 1
    for alert in engine.close_all():
        activities[alert.activity] += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "benchmark": "fusion", "detections": len(detections), "seconds": round(elapsed, 3),
        "detections_per_s": round(len(detections) / elapsed), "alerts": dict(activities),
        "skipped": engine.stats()["skipped_total"], "entities": engine.stats()["entities"],
    }))


if __name__ == "__main__":
    main()
