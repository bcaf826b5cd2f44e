"""`sigmaray run`, `sigmaray status`, `sigmaray scale`: the cluster on Ray."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from cluster.cli_common import run_guarded
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

    scale = commands.add_parser("scale", help="change the number of PartitionWorkers of a running cluster")
    scale.add_argument("workers", type=int)
    scale.add_argument("--address", default="auto", metavar="ADDR")
    scale.set_defaults(run=lambda args: run_guarded(_scale, args))


def _connect(address: str | None) -> Any:
    import ray

    from cluster.actors import NAMESPACE

    ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, logging_level="WARNING")
    return ray


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ray = _connect(args.address)
    from cluster.actors import SUPERVISOR_NAME, Supervisor, config_to_dict

    supervisor = Supervisor.options(name=SUPERVISOR_NAME, lifetime="detached" if args.address else None).remote(
        config_to_dict(config)
    )
    workers = ray.get(supervisor.start.remote())
    print(f"sigmaray: supervisor started with {len(workers)} workers on {config.kafka.input_topics}", file=sys.stderr)
    deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(5)
            _print_table(ray.get(supervisor.status.remote()))
    except KeyboardInterrupt:
        pass
    ray.get(supervisor.shutdown.remote())
    return 0


def _status(args: argparse.Namespace) -> int:
    ray = _connect(args.address)
    from cluster.actors import SUPERVISOR_NAME

    status = ray.get(ray.get_actor(SUPERVISOR_NAME).status.remote())
    if args.json:
        print(orjson.dumps(status).decode())
    else:
        _print_table(status)
    return 0


def _scale(args: argparse.Namespace) -> int:
    ray = _connect(args.address)
    from cluster.actors import SUPERVISOR_NAME

    names = ray.get(ray.get_actor(SUPERVISOR_NAME).scale.remote(args.workers))
    print(f"sigmaray: {len(names)} workers: {', '.join(names)}")
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
        if row.get("last_error"):
            print(f"{'':<12} last error: {row['last_error']}")
    print(f"restarts: {status['restarts']}" + (f", last error: {status['last_error']}" if status.get("last_error") else ""))
