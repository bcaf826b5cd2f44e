"""Joining or starting a Ray, and the running cluster's supervisor as plain calls.

The CLI and the demo reach Ray only through here: `connect` joins (or starts) a Ray,
`SupervisorHandle` starts, finds and talks to the supervisor actor. Only plain values come back.

Ray is imported inside the functions, not at the top: Ray reads its authentication settings
when it is imported, and `connect` must be able to ask for token auth first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from cluster.config import ClusterConfig
from detectors.errors import ConfigError, SigmaRayError

LOOPBACK = "127.0.0.1"  # config ray.host's default: a Ray that sigmaray starts serves this machine only
TOKEN = Path.home() / ".ray" / "auth_token"
ADDRESS_FILE = Path.home() / ".cache" / "sigmaray" / "ray-address"  # where `sigmaray run` left its own Ray
CONTEXT: dict[str, Any] = {}  # the Ray the last `connect` joined: gcs_address, node_ip_address, metrics port


class ClusterError(SigmaRayError):
    """No cluster where one was expected, or a supervisor that could not start; the text says why."""


def connect(address: str | None, host: str = LOOPBACK) -> dict[str, Any]:
    """Joins the Ray at `address` ("auto": the one `sigmaray run` recorded, or Ray's own search);
    "local" starts a new one on this machine, listening on `host`. Returns Ray's address info."""
    if address == "auto" and "RAY_ADDRESS" not in os.environ and ADDRESS_FILE.is_file():
        address = ADDRESS_FILE.read_text().strip() or "auto"
    if address not in (None, "auto", "local") and "RAY_AUTH_MODE" not in os.environ and TOKEN.is_file():
        # Ray (2.59+) gives a local cluster a token in ~/.ray/auth_token but only sends it on its
        # own to a cluster it found by itself; `--address HOST:PORT` must ask for it, before Ray
        # is imported (its config is read at import).
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray

    from cluster.ray.actors import NAMESPACE

    options: dict[str, Any] = {"namespace": NAMESPACE, "include_dashboard": False, "logging_level": "WARNING"}
    if address == "local":
        context = init_local_ray(host, **options)
    elif address is not None and address.rpartition(":")[0] in (LOOPBACK, "localhost"):
        with _node_ip_mode(loopback=True):  # a Ray that listens on 127.0.0.1 only (ray.host)
            context = ray.init(address=address, **options)
    else:
        context = ray.init(address=address, **options)
    CONTEXT.update(context.address_info)
    return dict(context.address_info)


def init_local_ray(host: str, **options: Any) -> Any:
    """`ray.init` of a new Ray on this machine whose endpoints listen on `host` (config `ray.host`)."""
    import ray

    with _node_ip_mode(loopback=host == LOOPBACK):
        # A RayContext, with address_info: "local" is never a Ray Client connection, which is
        # the other kind of BaseContext that ray.init is typed to return.
        context: Any = ray.init(address="local", **options)
    node_ip = context.address_info["node_ip_address"]
    if host == LOOPBACK and node_ip != LOOPBACK:  # a Ray upgrade changed this: never expose silently
        ray.shutdown()
        raise ConfigError(f"ray.host is {LOOPBACK} but Ray started on {node_ip}, with its metrics on every interface")
    CONTEXT.update(context.address_info)
    return context


def shutdown() -> None:
    import ray

    ray.shutdown()


def is_connected() -> bool:
    import ray

    return bool(ray.is_initialized())


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


def remember_address() -> None:
    """So that `sigmaray status`, `scale` and `models` find this cluster without --address."""
    ADDRESS_FILE.parent.mkdir(parents=True, exist_ok=True)
    ADDRESS_FILE.write_text(str(CONTEXT.get("gcs_address", "")))


def forget_address() -> None:
    if ADDRESS_FILE.is_file() and ADDRESS_FILE.read_text().strip() == CONTEXT.get("gcs_address"):
        ADDRESS_FILE.unlink()


class SupervisorHandle:
    """The supervisor actor of a running cluster, as plain calls that return plain values."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def start(cls, config: ClusterConfig, name: str | None = None, detached: bool = False) -> tuple[SupervisorHandle, list[str]]:
        """Creates the supervisor (named, so the CLI finds it) and starts its workers. A supervisor
        that cannot start (a missing output topic) is a ClusterError with the cause, no traceback."""
        import ray

        from cluster.ray.actors import Supervisor, actor_class, config_to_dict

        options: dict[str, Any] = {}
        if name:
            options["name"] = name
        if detached:
            options["lifetime"] = "detached"
        actor = actor_class(Supervisor).options(**options).remote(config_to_dict(config))
        try:
            workers = ray.get(actor.start.remote())
        except ray.exceptions.RayTaskError as error:
            cause = error.cause if getattr(error, "cause", None) is not None else error
            ray.kill(actor)
            raise ClusterError(f"the supervisor could not start: {cause}") from None
        return cls(actor), list(workers)

    @classmethod
    def find(cls, address: str | None = None) -> SupervisorHandle:
        import ray

        from cluster.ray.actors import SUPERVISOR_NAME

        try:
            return cls(ray.get_actor(SUPERVISOR_NAME))
        except ValueError:
            raise ClusterError(f"no running sigmaray cluster at {address or 'this Ray'} "
                               "(start one with `sigmaray run`)") from None

    def status(self, timeout: float | None = None) -> dict[str, Any]:
        import ray

        return dict(ray.get(self.actor.status.remote(), timeout=timeout))

    def scale(self, workers: int | None = None, correlators: int | None = None) -> list[str]:
        """New numbers of PartitionWorkers and/or CorrelatorWorkers (None: unchanged); the names
        of both after the rebalance."""
        import ray

        return list(ray.get(self.actor.scale.remote(workers, correlators)))

    def model_command(self, command: str, name: str = "", timeout: float = 300) -> dict[str, Any]:
        import ray

        return dict(ray.get(self.actor.model_command.remote(command, name), timeout=timeout))

    def worker_pids(self) -> dict[str, int]:
        import ray

        return dict(ray.get(self.actor.worker_pids.remote(), timeout=30))

    def shutdown(self, timeout: float | None = None) -> None:
        import ray

        ray.get(self.actor.shutdown.remote(), timeout=timeout)

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


def replay_on_workers(config: ClusterConfig, files: list[str], workers: int, output: str, rate: float,
                      rule_paths: list[str], model: str | None, models: bool) -> list[dict[str, Any]]:
    """`sigmaray replay --workers N`: the files spread over N FileWorker actors (each file its own
    entity state, as a partition); returns each worker's report."""
    import ray

    from cluster.ray.actors import actor_class, config_to_dict
    from cluster.ray.file_workers import FileWorker, spread

    # Workers may run elsewhere (another directory, another node): they get absolute paths, made
    # absolute without resolving symlinks, so a record's source names the file as it was given.
    shares = [share for share in spread([os.path.abspath(p) for p in files], workers) if share]
    config = replace(config, rules=replace(config.rules, paths=tuple(os.path.abspath(p) for p in config.rules.paths)))
    actors = [actor_class(FileWorker).remote(config_to_dict(config), f"w{i}") for i in range(len(shares))]
    share_rate = rate / len(shares) if rate else 0
    rules = [os.path.abspath(p) for p in rule_paths]
    return list(ray.get([w.run.remote(share, os.path.abspath(output), share_rate, rules, model, models)
                         for w, share in zip(actors, shares, strict=True)]))
