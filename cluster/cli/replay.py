"""`sigmaray replay`: files through the exact processing code the PartitionWorkers run."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from cluster.cli.common import fail, run_guarded
from cluster.config import ClusterConfig, load_config
from cluster.processing.detector import OutputRecord
from cluster.sources.replay import replay_files

if TYPE_CHECKING:
    from correlator.fusion import Alert


def register(commands: Any) -> None:
    replay = commands.add_parser(
        "replay",
        help="run files (JSON lines, EVTX) through the cluster's processing code, no broker needed",
        description="Reads the files in order, as fast as possible or at --rate events/s, and writes "
        "the records the cluster would produce to its detections topic, one JSON object per line. "
        "Undecodable records are counted as dead letters and reported at the end. With --workers N the files "
        "are spread over N Ray actors that write to --output DIR instead. With --alerts the detections go, in "
        "order, through the correlator (the ruleset's correlation rules, then fusion) and the alerts are written "
        "instead, one OCSF Detection Finding per line.",
    )
    replay.add_argument("files", nargs="+", metavar="FILE")
    replay.add_argument("--config", metavar="FILE", help="cluster YAML (its rules settings are used)")
    replay.add_argument("--rules", action="append", metavar="PATH", help="rule paths (override the config)")
    replay.add_argument("--rate", type=float, default=0, help="events per second (default: as fast as possible)")
    replay.add_argument("--no-models", action="store_true", help="Sigma only: no entity scores or anomaly detections")
    replay.add_argument("--model", metavar="NAME", help="the anomaly model (default: the config's models.model)")
    replay.add_argument("--workers", type=int, default=0, metavar="N",
                        help="run on N Ray actors in parallel, each file its own entity state like a partition "
                             "(default 0: in this process, writing to stdout)")
    replay.add_argument("--output", default="sigmaray-replay", metavar="DIR",
                        help="with --workers: where each worker writes detections-<worker>.jsonl (default ./sigmaray-replay)")
    replay.add_argument("--address", metavar="ADDR", help="with --workers: a running Ray cluster (default: a new local Ray)")
    replay.add_argument("--alerts", action="store_true",
                        help="write the correlator's alerts (OCSF Detection Findings, one JSON per line) instead of "
                             "the detections; not with --workers")
    replay.set_defaults(run=lambda args: run_guarded(_replay, args))


def _replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.workers and args.alerts:
        # Alerts need every detection in one correlator, in order; the Ray workers each see a share.
        return fail("--alerts is not supported with --workers: replay in this process (drop --workers), "
                    "or correlate the workers' detections files afterwards")
    if args.workers:
        return _replay_on_ray(args, config)
    out = sys.stdout

    def write(output: OutputRecord, dead: bool) -> None:
        if not dead and not args.alerts:  # dead letters are counted and the first ones listed at the end
            assert output.value is not None  # a detection, never a tombstone
            out.write(output.value.decode() + "\n")

    def alert(item: Alert) -> None:
        out.write(orjson.dumps(item.ocsf).decode() + "\n")

    # One entity state for the whole replay: the files play the part of one partition.
    result = replay_files(config, args.files, write, rule_paths=args.rules or (), rate=args.rate, model=args.model,
                          models=not args.no_models, alerts=alert if args.alerts else None)
    out.flush()
    counts = result.counts
    print(
        f"replayed {counts['events']} events in {result.seconds:.1f}s: "
        f"{counts['detections']} detections, {counts['anomalies']} anomalies, {counts['dead_letter']} dead letters "
        f"(ruleset {result.ruleset_version}, model {result.model})",
        file=sys.stderr,
    )
    if args.alerts:
        stats = result.correlator
        by_priority = ", ".join(f"{label} {result.alerts[label]}" for label in ("P1", "P2", "P3", "P4"))
        skipped = f", {stats['skipped_total']} skipped" if stats.get("skipped_total") else ""
        print(
            f"{counts['events']} events → {counts['detections'] + counts['anomalies']} detections → "
            f"{sum(result.alerts.values())} alerts ({by_priority}; "
            f"{stats['counts'].get('correlation_hits', 0)} correlation hits{skipped})",
            file=sys.stderr,
        )
    for line in result.dead:
        print(f"  dead letter {line}", file=sys.stderr)
    return 0


def _replay_on_ray(args: argparse.Namespace, config: ClusterConfig) -> int:
    from cluster.ray.connect import connect, replay_on_workers

    missing = [path for path in args.files if not Path(path).is_file()]
    if missing:
        return fail(f"no such file: {missing[0]}")
    connect(args.address or "local")
    reports = replay_on_workers(config, args.files, args.workers, args.output, args.rate, args.rules or [],
                                args.model, not args.no_models)
    output = str(Path(args.output).resolve())
    counts: Counter[str] = Counter()
    for report in reports:
        counts.update(report["counts"])
        print(f"{report['worker']:<4} {report['files']:>3} files  {report['counts'].get('events', 0):>9,} events  "
              f"{report['counts'].get('detections', 0):>7,} detections  {report['counts'].get('anomalies', 0):>6,} anomalies  "
              f"{report['counts'].get('dead_letter', 0):>5,} dead letters  {report['seconds']:.1f}s  "
              f"→ {report['outputs']['detections']}",
              file=sys.stderr)
        for line in report["dead"]:
            print(f"     dead letter {line}", file=sys.stderr)
    print(f"replayed {counts['events']} events on {len(reports)} Ray workers: {counts['detections']} detections, "
          f"{counts['anomalies']} anomalies, {counts['dead_letter']} dead letters (ruleset {reports[0]['ruleset']}, "
          f"model {reports[0]['model']}; each file its own entity state, as a partition); outputs in {output}",
          file=sys.stderr)
    return 0
