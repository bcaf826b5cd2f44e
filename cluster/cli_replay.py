"""`sigmaray replay`: files through the exact processing code the PartitionWorkers run."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from cluster.cli_common import run_guarded
from cluster.config import load_config
from cluster.detect import DetectionSettings, Detector
from cluster.file_source import file_records
from cluster.rulefiles import load_rules_from_paths
from detectors.engine import SigmaEngine


def register(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="run files (JSON lines, EVTX) through the cluster's processing code, no broker needed",
        description="Reads the files in order, as fast as possible or at --rate events/s, and writes "
        "the records the cluster would produce to its detections topic, one JSON object per line. "
        "Undecodable records are counted as dead letters and reported at the end.",
    )
    replay.add_argument("files", nargs="+", metavar="FILE")
    replay.add_argument("--config", metavar="FILE", help="cluster YAML (its rules settings are used)")
    replay.add_argument("--rules", action="append", metavar="PATH", help="rule paths (override the config)")
    replay.add_argument("--rate", type=float, default=0, help="events per second (default: as fast as possible)")
    replay.add_argument("--no-models", action="store_true", help="Sigma only: no entity scores or anomaly detections")
    replay.add_argument("--model", metavar="NAME", help="the anomaly model (default: the config's models.model)")
    replay.set_defaults(run=lambda args: run_guarded(_replay, args))


def _replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    paths = args.rules or list(config.rules.paths)
    ruleset = load_rules_from_paths(paths, config.rules.pipelines, config.rules.placeholders)
    scorer = None
    if config.models.enabled and not args.no_models:
        from dataclasses import replace

        from cluster.partition_models import scorer_config
        from models.scorer import EntityScorer

        models = replace(config.models, model=args.model) if args.model else config.models
        # One scorer for the whole replay: the files play the part of one partition.
        scorer = EntityScorer(scorer_config(models))
    detector = Detector(SigmaEngine(ruleset.rules), ruleset.version, DetectionSettings(), scorer)
    counts: Counter[str] = Counter()
    dead: list[str] = []
    started = time.perf_counter()
    out = sys.stdout
    for batch in file_records(args.files, args.rate, config.processing.batch_size):
        result = detector.process(batch)
        counts.update(result.counts)
        for output in result.outputs:
            if output.topic == detector.settings.dead_letter_topic:
                headers = dict(output.headers)
                if len(dead) < 10:
                    dead.append(f"{headers['source.topic'].decode()}:{headers['source.offset'].decode()}: "
                                f"{headers['error'].decode(errors='replace')}")
                continue
            out.write(output.value.decode() + "\n")
    out.flush()
    print(
        f"replayed {counts['events']} events in {time.perf_counter() - started:.1f}s: "
        f"{counts['detections']} detections, {counts['anomalies']} anomalies, {counts['dead_letter']} dead letters "
        f"(ruleset {ruleset.version}, model {scorer.model_label if scorer else 'off'})",
        file=sys.stderr,
    )
    for line in dead:
        print(f"  dead letter {line}", file=sys.stderr)
    return 0
