"""`sigmaray run`, `sigmaray status`, `sigmaray scale`: the cluster on Ray."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from cluster.cli_common import fail, run_guarded
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
    if address == "auto" and "RAY_ADDRESS" not in os.environ and _ADDRESS_FILE.is_file():
        # `sigmaray run` without --address started its own Ray and wrote where it is.
        address = _ADDRESS_FILE.read_text().strip() or "auto"
    if address not in (None, "auto", "local") and "RAY_AUTH_MODE" not in os.environ and _TOKEN.is_file():
        # Ray (2.59+) gives a local cluster a token in ~/.ray/auth_token but only sends it on its
        # own to a cluster it found by itself; `--address HOST:PORT` must ask for it, before Ray
        # is imported (its config is read at import).
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    from cluster.actors import NAMESPACE

    context = ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, logging_level="WARNING")
    _CONTEXT.update(context.address_info)
    return ray


_TOKEN = Path.home() / ".ray" / "auth_token"
_ADDRESS_FILE = Path.home() / ".cache" / "sigmaray" / "ray-address"
_CONTEXT: dict[str, Any] = {}  # the Ray instance the last _connect joined (address, metrics port)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ray = _connect(args.address or "local")  # a new local Ray unless told which cluster to join
    from cluster.actors import SUPERVISOR_NAME, Supervisor, config_to_dict

    supervisor = Supervisor.options(name=SUPERVISOR_NAME, lifetime="detached" if args.address else None).remote(
        config_to_dict(config)
    )
    try:
        workers = ray.get(supervisor.start.remote())
    except ray.exceptions.RayTaskError as error:  # e.g. a missing output topic: say why, no traceback
        cause = error.cause if getattr(error, "cause", None) is not None else error
        ray.kill(supervisor)
        return fail(f"the supervisor could not start: {cause}")
    print(f"sigmaray: supervisor started with {len(workers)} workers on {config.kafka.input_topics}", file=sys.stderr)
    print(f"sigmaray: Ray at {_CONTEXT.get('gcs_address')} (`sigmaray status --address {_CONTEXT.get('gcs_address')}`), "
          f"Prometheus metrics at http://{_CONTEXT.get('node_ip_address')}:{_CONTEXT.get('metrics_export_port')}/metrics",
          file=sys.stderr, flush=True)
    own_ray = not args.address
    if own_ray:  # so that `sigmaray status`, `scale` and `models` find this cluster by default
        _ADDRESS_FILE.parent.mkdir(parents=True, exist_ok=True)
        _ADDRESS_FILE.write_text(str(_CONTEXT.get("gcs_address", "")))
    deadline = time.monotonic() + args.for_seconds if args.for_seconds else None
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(5)
            _print_table(ray.get(supervisor.status.remote()))
    except KeyboardInterrupt:
        pass
    finally:
        if own_ray and _ADDRESS_FILE.is_file() and _ADDRESS_FILE.read_text().strip() == _CONTEXT.get("gcs_address"):
            _ADDRESS_FILE.unlink()
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
        skipped = {k: models.get(k) for k in ("events_without_time", "feature_errors") if models.get(k)}
        if skipped:  # counted skips are shown, never silent
            print(f"{'':<12} " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in skipped.items()))
    print(f"restarts: {status['restarts']}" + (f", last error: {status['last_error']}" if status.get("last_error") else ""))
