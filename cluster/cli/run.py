"""`sigmaray run`, `sigmaray status`, `sigmaray scale`: the cluster on Ray."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from cluster.cli.common import run_guarded
from cluster.config import load_config


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="start the detection cluster (supervisor + PartitionWorkers) on Ray",
        description="Starts a local Ray instance (or joins one with --address), a named supervisor "
        "actor and its PartitionWorkers, and prints status every few seconds until Ctrl-C.",
    )
    run.add_argument("--config", metavar="FILE", help="cluster YAML (every key has a default; see cluster/config.py)")
    run.add_argument("--address", metavar="ADDR", help="join an existing Ray cluster (e.g. auto)")
    run.add_argument("--for-seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    run.set_defaults(run=lambda args: run_guarded(_run, args))

    status = commands.add_parser("status", help="per-worker metrics of a running cluster")
    status.add_argument("--address", default="auto", metavar="ADDR", help="Ray address (default: auto)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=lambda args: run_guarded(_status, args))

    scale = commands.add_parser("scale", help="change the number of PartitionWorkers (and correlators) of a running cluster")
    scale.add_argument("workers", type=int, nargs="?", help="PartitionWorkers (omit to keep them)")
    scale.add_argument("--correlators", type=int, metavar="N", help="CorrelatorWorkers")
    scale.add_argument("--address", default="auto", metavar="ADDR")
    scale.set_defaults(run=lambda args: run_guarded(_scale, args))


def _run(args: argparse.Namespace) -> int:
    from cluster.kafka.client import check_access
    from cluster.ray.actors import SUPERVISOR_NAME
    from cluster.ray.connect import CONTEXT, LOOPBACK, SupervisorHandle, connect, forget_address, remember_address

    config = load_config(args.config)
    # Refused credentials or TLS fail here, named, before any actor starts: librdkafka clients
    # would otherwise retry them forever. A broker that does not answer yet is waited for as before.
    check_access(config.kafka, timeout=10)
    connect(args.address or "local", config.ray.host)  # a new local Ray unless told which cluster to join
    supervisor, workers = SupervisorHandle.start(config, name=SUPERVISOR_NAME, detached=bool(args.address))
    print(f"sigmaray: supervisor started {', '.join(workers)} on {config.kafka.input_topics}", file=sys.stderr)
    own_ray = not args.address
    reach = " (this machine only: see README \"Exposing metrics\")" if own_ray and config.ray.host == LOOPBACK else ""
    print(f"sigmaray: Ray at {CONTEXT.get('gcs_address')} (`sigmaray status --address {CONTEXT.get('gcs_address')}`), "
          f"Prometheus metrics at http://{CONTEXT.get('node_ip_address')}:{CONTEXT.get('metrics_export_port')}/metrics"
          f"{reach}", file=sys.stderr, flush=True)
    if own_ray:
        remember_address()
    from cluster.console.server import start_console

    console = start_console(config, status=lambda: supervisor.status(timeout=10))
    deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(5)
            _print_table(supervisor.status())
    except KeyboardInterrupt:
        pass
    finally:
        if own_ray:
            forget_address()
        if console is not None:
            console.stop()
    supervisor.shutdown()
    return 0


def _status(args: argparse.Namespace) -> int:
    from cluster.ray.connect import SupervisorHandle, connect

    connect(args.address)
    status = SupervisorHandle.find(args.address).status()
    if args.json:
        print(orjson.dumps(status).decode())
    else:
        _print_table(status)
    return 0


def _scale(args: argparse.Namespace) -> int:
    from cluster.ray.connect import SupervisorHandle, connect

    if args.workers is None and args.correlators is None:
        print("sigmaray scale: give a number of workers and/or --correlators N", file=sys.stderr)
        return 2
    if any(n is not None and n < (1 if n is args.workers else 0) for n in (args.workers, args.correlators)):
        print("sigmaray scale: at least 1 worker, and 0 or more correlators", file=sys.stderr)
        return 2
    connect(args.address)
    names = SupervisorHandle.find(args.address).scale(args.workers, args.correlators)
    print(f"sigmaray: {len(names)} actors: {', '.join(names)}")
    return 0


def _print_table(status: dict[str, Any]) -> None:
    print(f"{'worker':<12} {'events in':>10} {'detections':>10} {'anomalies':>9} {'dead':>6} {'lag':>8} "
          f"{'batch ms':>9} {'entities':>9} {'model':<10} partitions")
    for row in status["workers"]:
        if "error" in row and "events_in" not in row:
            print(f"{row['worker']:<12} error: {row['error']}")
            continue
        models = row.get("models") or {}
        print(
            f"{row['worker']:<12} {row['events_in']:>10} {row['detections_out']:>10} {row.get('anomalies_out', 0):>9} "
            f"{row['dead_letters']:>6} {sum(row['lag'].values()):>8} {row['last_batch_ms']:>9} "
            f"{models.get('entities', '-'):>9} {models.get('model') or '-':<10} {', '.join(row['partitions'])}"
        )
        for line in _details(row, models):
            print(f"{'':<12} {line}")
    rejected = _rejections(status["workers"])
    for line in rejected[:10]:
        print(f"rule rejected: {line}")
    if len(rejected) > 10:
        print(f"... and {len(rejected) - 10} more rejected rules (`sigmaray status --json`)")
    correlators = status.get("correlators") or []
    if correlators:
        print(f"{'correlator':<14} {'detections':>10} {'hits':>8} {'alerts':>8} {'P1/P2/P3/P4':>15} {'dead':>6} "
              f"{'lag':>8} {'entities':>9} {'groups':>7} partitions")
    for row in correlators:
        if "error" in row and "detections_in" not in row:
            print(f"{row['worker']:<14} error: {row['error']}")
            continue
        state = row.get("state") or {}
        by_priority = row.get("alerts_by_priority") or {}
        priorities = "/".join(str(by_priority.get(f"P{n}", 0)) for n in range(1, 5))
        print(f"{row['worker']:<14} {row['detections_in']:>10} {row['hits_in']:>8} {row['alerts_out']:>8} "
              f"{priorities:>15} {row['dead_letters']:>6} {sum(row['lag'].values()):>8} "
              f"{state.get('entities', '-'):>9} {state.get('groups', '-'):>7} {', '.join(row['partitions'])}")
        details = [f"error: {row['last_error']}"] if row.get("last_error") else []
        details += [f"skipped ({count}): {reason}" for reason, count in sorted((state.get("skipped") or {}).items())]
        counted = {k: v for k, v in (state.get("correlation_hits") or {}).items() if v}
        if counted:
            details.append("correlation hits " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counted.items()))
        details += [f"criticality: {line}" for line in row.get("criticality_errors") or []]
        details += [f"{p}: rebuilding state up to offset {u}" for p, u in sorted((state.get("replaying") or {}).items())]
        for line in details[:10]:
            print(f"{'':<14} {line}")
    print(f"restarts: {status['restarts']}" + (f", last error: {status['last_error']}" if status.get("last_error") else ""))


def _details(row: dict[str, Any], models: dict[str, Any]) -> list[str]:
    """The lines under a worker's row: current errors and every counted skip, never silent."""
    lines = []
    if row.get("last_error"):
        lines.append(f"error: {row['last_error']}")
    stages = row.get("dead_letters_by_stage") or {}
    if stages:
        lines.append("dead letters by stage: " + ", ".join(f"{k} {v}" for k, v in sorted(stages.items())))
    counted = {k: row.get(k) for k in ("truncated", "replayed") if row.get(k)}
    counted |= {k: models.get(k) for k in ("events_without_time", "feature_errors") if models.get(k)}
    if counted:
        lines.append(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counted.items()))
    for rule, why in sorted((row.get("degraded_rules") or {}).items()):
        lines.append(f"degraded rule {rule}: {why}")
    for partition, why in sorted((row.get("isolating") or {}).items()):
        lines.append(f"{partition}: {why}")
    for partition, until in sorted((models.get("replaying") or {}).items()):
        lines.append(f"{partition}: rebuilding model state up to offset {until}")
    return lines


def _rejections(rows: list[dict[str, Any]]) -> list[str]:
    """Rules the workers refused (files or the rules topic), once each."""
    seen: dict[str, None] = {}
    for row in rows:
        for item in row.get("ruleset_rejections") or []:
            where = item.get("id") or item.get("path") or "?"
            seen[f"{where}: {item.get('reason', '')}"] = None
    return list(seen)
