"""`sigmaray eval`: Sigma-only against fused alerting on labeled events; it parses and prints,
the work is in the `evaluation` package."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from cluster.cli.common import fail, run_guarded
from cluster.cli.progress import Progress


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "eval",
        help="measure alert volume, precision and incident recall: Sigma-only against fused alerting",
        description="Replays labeled events in event-time order through the cluster's own code (the workers' "
        "detector and entity scorer, then the correlator) and prints one table: rows are the modes (Sigma-only, "
        "Sigma-only deduplicated per rule, entity and hour, fused, fused without anomaly scores, fused without "
        "criticality), columns alerts/day, alerts/incident, precision, incident recall (any priority and P1-P2), "
        "median time to detect, P1 precision, precision@k and the reduction against Sigma-only at equal recall. "
        "Labels (JSON lines or CSV) name incidents as whole files or line ranges: see evaluation/labels.py.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scenario", metavar="NAME", help="a built-in scenario (see --list)")
    source.add_argument("--events", nargs="+", metavar="FILE", help="events files (JSON lines, EVTX); with --labels")
    source.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    parser.add_argument("--seed", type=int, default=0, help="the scenario's seed (default 0)")
    parser.add_argument("--labels", metavar="FILE", help="incident labels for --events (.jsonl or .csv)")
    parser.add_argument("--rules", action="append", metavar="PATH",
                        help="rule paths (default: SigmaHQ from ../shared when there, plus the shipped rules/)")
    parser.add_argument("--criticality", metavar="FILE", help="asset/identity criticality CSV or YAML "
                        "(a scenario brings its own)")
    parser.add_argument("--config", metavar="FILE", help="cluster YAML: its models and correlator.fusion settings")
    parser.add_argument("--k", type=int, default=20, help="k of precision@k (default 20)")
    parser.add_argument("--keep", metavar="DIR", help="with --scenario: write the generated files here and keep them")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--report", metavar="DIR", help="write DIR/report.md with PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    parser.set_defaults(run=lambda args: run_guarded(_eval, args))


def _eval(args: argparse.Namespace) -> int:
    from evaluation import SCENARIOS, EvalOptions, LabelError, evaluate_files, evaluate_scenario, write_report

    if args.list:
        for name, spec in SCENARIOS.items():
            print(f"{name:<18} {spec.description}")
        return 0
    if not args.scenario and not args.events:
        return fail("give --scenario NAME (see --list) or --events FILE... --labels FILE")
    if args.events and not args.labels:
        return fail("--events needs --labels FILE (which events belong to incidents)")
    if args.scenario and args.labels:
        return fail("--labels goes with --events; a scenario brings its own labels")
    config = None
    if args.config:
        from cluster.config import load_config

        config = load_config(args.config)
    bar = Progress(sys.stderr, enabled=not args.no_progress and not args.json)

    def progress(done: int, total: int) -> None:
        # The replay reports its position in merged lines: the bar redraws every 1% of them, and
        # its rate counts from the replay's start, not from the scenario generation or rule loading.
        if bar.count == 0:
            bar.started = time.perf_counter()
        bar.every = max(total // 100, 1)
        bar.start_file(f"{100 * done // max(total, 1):3d}% of {total:,} events")
        while bar.count < done:
            bar.tick()

    options = EvalOptions(rule_paths=args.rules or (), criticality=args.criticality, config=config, k=args.k,
                          progress=progress)
    try:
        if args.scenario:
            evaluation = evaluate_scenario(args.scenario, args.seed, options, out_dir=args.keep)
        else:
            evaluation = evaluate_files(args.events, args.labels, options)
    except (LabelError, KeyError, ValueError) as error:
        bar.finish()
        return fail(str(error).strip("'\""))
    bar.finish()
    table = evaluation.table
    if args.json:
        print(orjson.dumps(table.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        meta = table.meta
        where = f"scenario {meta['scenario']} (seed {meta['seed']})" if "scenario" in meta else f"{len(meta['files'])} file(s)"
        print(f"{where}: {meta['events']:,} events over {meta['days']:.1f} days, {meta['incidents']} incidents "
              f"({meta['incident_events']:,} events), {meta['detections']:,} detections, {meta['anomalies']:,} anomalies; "
              f"ruleset {meta['ruleset_version']}, model {meta['model']}")
        print(table.render())
        same = meta.get("equal_volume") or {}
        if same:
            parts = [f"{mode}: recall {same[mode]['recall']:.2f}, precision "
                     f"{'-' if same[mode]['precision'] is None else format(same[mode]['precision'], '.2f')}"
                     for mode in ("fused", "fused without anomaly scores")]
            print(f"at equal volume ({same['alerts']} most urgent alerts each): " + "; ".join(parts))
    if args.report:
        command = "sigmaray eval " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "sigmaray eval"
        path = write_report(evaluation, args.report, command)
        print(f"report: {path}", file=sys.stderr)
    return 0
