"""`sigmaray run`, `sigmaray status`, `sigmaray scale`: the cluster on Ray."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from cluster.cli_common import fail, run_guarded
from cluster.config import load_config
from detectors.errors import ConfigError

LOOPBACK = "127.0.0.1"  # config ray.host's default: a Ray that sigmaray starts serves this machine only


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


def _connect(address: str | None, host: str = LOOPBACK) -> Any:
    """Joins the Ray at `address`; "local" starts a new one on this machine, listening on `host`."""
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

    options: dict[str, Any] = {"namespace": NAMESPACE, "include_dashboard": False, "logging_level": "WARNING"}
    if address == "local":
        context = init_local_ray(host, **options)
    elif address is not None and address.rpartition(":")[0] in (LOOPBACK, "localhost"):
        with _node_ip_mode(loopback=True):  # a Ray that listens on 127.0.0.1 only (ray.host)
            context = ray.init(address=address, **options)
    else:
        context = ray.init(address=address, **options)
    _CONTEXT.update(context.address_info)
    return ray


def init_local_ray(host: str, **options: Any) -> Any:
    """`ray.init` of a new Ray on this machine whose endpoints listen on `host` (config `ray.host`)."""
    import ray

    with _node_ip_mode(loopback=host == LOOPBACK):
        context = ray.init(address="local", **options)
    node_ip = context.address_info["node_ip_address"]
    if host == LOOPBACK and node_ip != LOOPBACK:  # a Ray upgrade changed this: never expose silently
        ray.shutdown()
        raise ConfigError(f"ray.host is {LOOPBACK} but Ray started on {node_ip}, with its metrics on every interface")
    return context


@contextmanager
def _node_ip_mode(loopback: bool) -> Iterator[None]:
    """Which IP the `ray.init` inside takes for this machine: 127.0.0.1 or its network address.

    Ray 2.60 binds its HTTP endpoints (the node's Prometheus metrics export, the dashboard's and
    the autoscaler's metrics) to 127.0.0.1 when the node IP is the loopback address and to every
    interface otherwise; its other ports (GCS, raylet, workers) follow the node IP. It takes the
    loopback IP only in its single-machine mode, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which it
    reads once at import: hence the module setting, for one call. The processes a new Ray starts
    get the IP as an argument. A driver joining such a Ray needs the mode too: otherwise Ray
    turns 127.0.0.1 in the address into the network address, where nothing listens.
    """
    from ray._private import ray_constants

    multi_node = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = not loopback
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = multi_node


_TOKEN = Path.home() / ".ray" / "auth_token"
_ADDRESS_FILE = Path.home() / ".cache" / "sigmaray" / "ray-address"
_CONTEXT: dict[str, Any] = {}  # the Ray instance the last _connect joined (address, metrics port)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    ray = _connect(args.address or "local", config.ray.host)  # a new local Ray unless told which cluster to join
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
    own_ray = not args.address
    reach = " (this machine only: see README \"Exposing metrics\")" if own_ray and config.ray.host == LOOPBACK else ""
    print(f"sigmaray: Ray at {_CONTEXT.get('gcs_address')} (`sigmaray status --address {_CONTEXT.get('gcs_address')}`), "
          f"Prometheus metrics at http://{_CONTEXT.get('node_ip_address')}:{_CONTEXT.get('metrics_export_port')}/metrics"
          f"{reach}", file=sys.stderr, flush=True)
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
        for line in _details(row, models):
            print(f"{'':<12} {line}")
    rejected = _rejections(status["workers"])
    for line in rejected[:10]:
        print(f"rule rejected: {line}")
    if len(rejected) > 10:
        print(f"... and {len(rejected) - 10} more rejected rules (`sigmaray status --json`)")
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
