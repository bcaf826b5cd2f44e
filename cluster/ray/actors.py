"""Ray actors: a supervisor that owns the partition assignment, and the workers it runs.

Only plain values cross actor boundaries (config dicts, partition lists, metrics dicts).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import ray

from cluster.config import ClusterConfig, config_from_dict

SUPERVISOR_NAME = "sigmaray-supervisor"
NAMESPACE = "sigmaray"

# Ray's typing gaps, in one place. Its overloads of `ray.remote(...)` take task options only (not an
# actor's max_concurrency), and mypy does not apply class decorators: it sees an actor class as the
# plain class, without Ray's .remote and .options. So the actor classes here are decorated with
# `_ray_remote`, and callers reach them through `actor_class`.
_ray_remote: Callable[..., Any] = ray.remote


def actor_class(cls: type) -> Any:
    """`cls`, a class under @ray.remote, as what it is at run time: a Ray ActorClass (.remote,
    .options), which mypy does not see."""
    return cls


def config_to_dict(config: ClusterConfig) -> dict[str, Any]:
    data = asdict(config)
    for section in ("kafka", "rules"):
        for key, value in data[section].items():
            if isinstance(value, tuple):
                data[section][key] = list(value)
    return data


class _LoopActor:
    """A loop (PartitionLoop, CorrelatorLoop) run in a thread of its actor, with the calls both
    answer beside it (assign, ping, metrics, stop) and its counters exported through Ray's
    Prometheus endpoint, as the class's tables say:

    - COUNTERS: (metric, loop metrics attribute, description), tagged by worker;
    - LABELLED: (metric, tag, attribute holding a Counter, description), tagged by worker and tag;
    - GAUGES: (metric, attribute, description); a dict attribute is summed (lag per partition)."""

    COUNTERS: tuple[tuple[str, str, str], ...] = ()
    LABELLED: tuple[tuple[str, str, str, str], ...] = ()
    GAUGES: tuple[tuple[str, str, str], ...] = ()

    loop: Any

    def _start(self, loop: Any, worker: str) -> None:
        self.loop = loop
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=f"loop-{worker}", daemon=True)
        self.thread.start()
        self.exporter = threading.Thread(target=self._export, name=f"metrics-{worker}", daemon=True)
        self.exporter.start()

    def _run(self) -> None:
        try:
            self.loop.run(self.stop_event)
        except Exception as error:  # reported through ping(); the supervisor replaces us
            self.error = f"{type(error).__name__}: {error}"

    def _export(self) -> None:
        from ray.util.metrics import Counter, Gauge

        counters = [(Counter(name, description=text, tag_keys=("worker",)), attribute)
                    for name, attribute, text in self.COUNTERS]
        labelled = [(Counter(name, description=text, tag_keys=("worker", tag)), tag, attribute)
                    for name, tag, attribute, text in self.LABELLED]
        gauges = [(Gauge(name, description=text, tag_keys=("worker",)), attribute)
                  for name, attribute, text in self.GAUGES]
        sent: dict[tuple[str, str], int] = {}  # (attribute, label) -> what the endpoint has
        worker = self.loop.metrics.worker
        tags = {"worker": worker}

        def publish(counter: Any, key: tuple[str, str], value: int, counter_tags: dict[str, str]) -> None:
            if value > sent.get(key, 0):  # Prometheus counters take increments
                counter.inc(value - sent.get(key, 0), tags=counter_tags)
                sent[key] = value

        while not self.stop_event.wait(2.0):
            metrics = self.loop.metrics
            for counter, attribute in counters:
                publish(counter, (attribute, ""), getattr(metrics, attribute), tags)
            for counter, tag, attribute in labelled:
                for label, value in list(getattr(metrics, attribute).items()):
                    publish(counter, (attribute, label), value, {"worker": worker, tag: label})
            for gauge, attribute in gauges:
                value = getattr(metrics, attribute)
                gauge.set(sum(value.values()) if isinstance(value, dict) else value, tags=tags)

    def assign(self, partitions: list[tuple[str, int]]) -> bool:
        """Returns once the loop runs with the new assignment (False if it did not within 60 s)."""
        return self.loop.assign([tuple(p) for p in partitions], wait=60)

    def ping(self) -> dict[str, Any]:
        return {"alive": self.thread.is_alive(), "error": self.error}

    def pid(self) -> int:
        return os.getpid()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)


@_ray_remote(max_concurrency=4)
class PartitionWorker(_LoopActor):
    """Runs a PartitionLoop (cluster/kafka/partition_loop.py): it owns partitions of the input
    topics and writes detections."""

    COUNTERS = (
        ("sigmaray_events_in_total", "events_in", "records consumed"),
        ("sigmaray_detections_out_total", "detections_out", "detections produced"),
        ("sigmaray_anomalies_out_total", "anomalies_out", "anomaly detections produced"),
        ("sigmaray_dead_letters_total", "dead_letters", "records sent to the dead-letter topic"),
        ("sigmaray_redelivered_batches_total", "redelivered_batches",
         "batches processed again after a failed delivery or commit"),
        ("sigmaray_truncated_total", "truncated", "outputs cut down to fit their topic's size limit"),
    )
    LABELLED = (
        ("sigmaray_rule_hits_total", "rule", "rule_hits", "detections per rule"),
        ("sigmaray_dead_letters_by_stage_total", "stage", "dead_letters_by_stage", "dead letters per failing stage"),
    )
    GAUGES = (
        ("sigmaray_batch_latency_ms", "last_batch_ms", "last batch processing time"),
        ("sigmaray_consumer_lag", "lag", "records behind the high watermark"),
    )

    def __init__(self, config: dict[str, Any], worker: str) -> None:
        from cluster.kafka.partition_loop import PartitionLoop  # Kafka clients live in this process

        self._start(PartitionLoop(config_from_dict(config), worker), worker)

    def model_command(self, command: str, name: str = "") -> dict[str, Any]:
        return self.loop.model_command(command, name)

    def metrics(self) -> dict[str, Any]:
        data: dict[str, Any] = self.loop.metrics.to_dict()
        if self.loop.models is not None:
            data["models"] = self.loop.models.metrics()
        return data


@_ray_remote(max_concurrency=4)
class CorrelatorWorker(_LoopActor):
    """Runs a CorrelatorLoop (cluster/kafka/correlator_loop.py): it owns partitions of the
    detections and repartition topics, and writes fused alerts."""

    COUNTERS = (
        ("sigmaray_correlator_detections_in_total", "detections_in", "detections and correlation records read"),
        ("sigmaray_correlator_hits_in_total", "hits_in", "repartitioned hits read"),
        ("sigmaray_correlator_dead_letters_total", "dead_letters", "records dead-lettered"),
        ("sigmaray_correlator_redelivered_batches_total", "redelivered_batches", "batches processed again"),
    )
    LABELLED = (("sigmaray_alerts_out_total", "priority", "alerts_by_priority", "alerts written, by priority"),)
    GAUGES = (("sigmaray_correlator_lag", "lag", "records behind the high watermark"),)

    def __init__(self, config: dict[str, Any], worker: str) -> None:
        from cluster.kafka.correlator_loop import CorrelatorLoop  # Kafka clients live in this process

        self._start(CorrelatorLoop(config_from_dict(config), worker), worker)

    def metrics(self) -> dict[str, Any]:
        return self.loop.status()


@_ray_remote(max_concurrency=4)
class WebhookForwarder:
    """Runs an AlertForwarder (cluster/kafka/alert_forwarder.py): the alerts topic to the SOAR's
    webhook. The HMAC secret is read here, from the environment variable the config names
    (`correlator.webhook.secret_env`), never passed through Ray."""

    def __init__(self, config: dict[str, Any], worker: str) -> None:
        from cluster.kafka.alert_forwarder import AlertForwarder, webhook_secret

        parsed = config_from_dict(config)
        self.forwarder = AlertForwarder(parsed, webhook_secret(parsed))
        self.worker = worker
        self.stop_event = threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name=worker, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.forwarder.run(self.stop_event)
        except Exception as error:  # reported through ping(); the supervisor replaces us
            self.error = f"{type(error).__name__}: {error}"

    def assign(self, partitions: list[tuple[str, int]]) -> bool:
        return True  # its consumer group assigns the alerts topic's partitions

    def ping(self) -> dict[str, Any]:
        return {"alive": self.thread.is_alive(), "error": self.error}

    def pid(self) -> int:
        return os.getpid()

    def metrics(self) -> dict[str, Any]:
        return {"worker": self.worker, **self.forwarder.stats()}

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(60)


class _Pool:
    """Actors of one kind and the topics whose partitions they share."""

    def __init__(self, actor: type, prefix: str, topics: list[str]) -> None:
        self.actor = actor
        self.prefix = prefix
        self.topics = topics
        self.members: dict[str, Any] = {}


@_ray_remote(max_concurrency=4)
class Supervisor:
    """Assigns every input partition to exactly one PartitionWorker, and every partition of the
    detections and repartition topics to exactly one CorrelatorWorker; replaces dead actors."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.parsed = config_from_dict(config)
        kafka = self.parsed.kafka
        self.pool = _Pool(PartitionWorker, "worker", list(kafka.input_topics))
        self.correlator_pool = _Pool(CorrelatorWorker, "correlator",
                                     [kafka.detections_topic, self.parsed.correlator.repartition_topic])
        self.webhook_pool = _Pool(WebhookForwarder, "webhook", [])  # no partitions: a consumer group of its own
        self.workers = self.pool.members  # the same table, by the name status and scale use
        self.generation = 0
        self.restarts = 0
        # False until a rebalance has gone through: a failed one (broker down) is retried by the
        # watch, or the partitions of a replaced worker would stay unowned.
        self.balanced = False
        self.last_error: str | None = None  # current only: cleared by the next quiet watch round
        self.topics_pending = False  # the correlator's topics are still to be created (broker was down)
        self.worker_errors: list[str] = []  # why replaced workers were replaced
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.monitor = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> list[str]:
        """Starts the workers. A missing output topic is an error; an unreachable broker is not:
        the workers wait for it and the watch assigns partitions once it answers."""
        self._check_output_topics()
        correlators = self.parsed.correlator.instances if self.parsed.correlator.enabled else 0
        self.topics_pending = bool(correlators)
        if correlators:
            try:
                self._ensure_correlator_topics()
                self.topics_pending = False
            except Exception as error:  # broker unreachable now: the watch creates them once it answers
                self.last_error = f"correlator topics: {type(error).__name__}: {error}"
        try:
            self.scale(self.parsed.workers, correlators)
        except Exception as error:  # the rebalance needs topic metadata; retried by the watch
            self.last_error = f"{type(error).__name__}: {error}"
        if correlators and self.parsed.correlator.webhook.url:
            self._start(self.webhook_pool)
        self.monitor.start()
        return sorted(self.workers) + sorted(self.correlator_pool.members) + sorted(self.webhook_pool.members)

    def _ensure_correlator_topics(self) -> None:
        """The correlators' topics: the repartition topic is internal (Kafka Streams creates its
        own too), with as many partitions as the detections topic; alerts likewise; verdicts and
        the alerts' dead letters take one. Existing topics are left as they are."""
        from cluster.kafka.client import create_topics, existing_topics

        kafka = self.parsed.kafka
        settings = self.parsed.correlator
        existing = existing_topics(kafka)
        spread = existing.get(kafka.detections_topic, 1)
        wanted = {settings.repartition_topic: spread, settings.alerts_topic: spread, settings.verdicts_topic: 1,
                  settings.alerts_dead_letter_topic: 1}
        missing = {topic: count for topic, count in wanted.items() if topic not in existing}
        if missing:
            create_topics(kafka, missing, exist_ok=True)

    def _check_output_topics(self) -> None:
        """Workers produce to these; a missing one would stall every batch, so say so up front."""
        from cluster.kafka.client import missing_topics

        kafka = self.parsed.kafka
        missing = missing_topics(kafka, [kafka.detections_topic, kafka.dead_letter_topic])
        if missing:  # None: broker unreachable now; workers wait for it and report the outage in status
            raise RuntimeError(f"output topic(s) {', '.join(missing)} do not exist on {kafka.bootstrap_servers}: "
                               "create them (or enable auto.create.topics.enable on the broker)")

    def partitions(self, pool: _Pool | None = None) -> list[tuple[str, int]]:
        from cluster.kafka.client import partitions

        return partitions(self.parsed.kafka, (pool or self.pool).topics)

    def _start(self, pool: _Pool) -> None:
        self.generation += 1
        name = f"{pool.prefix}-{self.generation}"
        cpus = self.parsed.ray.actor_cpus if pool.topics else 0  # the webhook forwarder only waits on I/O
        pool.members[name] = actor_class(pool.actor).options(
            name=f"sigmaray-{name}", namespace=NAMESPACE, num_cpus=cpus
        ).remote(self.config, name)

    def scale(self, count: int | None = None, correlators: int | None = None) -> list[str]:
        """Change the number of workers and/or correlators on a running cluster, then reassign
        partitions. Returns the names of both."""
        with self.lock:
            for pool, wanted in ((self.pool, count), (self.correlator_pool, correlators)):
                if wanted is None:
                    continue
                while len(pool.members) < wanted:
                    self._start(pool)
                while len(pool.members) > wanted:
                    name = sorted(pool.members)[-1]
                    actor = pool.members.pop(name)
                    ray.get(actor.stop.remote(), timeout=60)
                    ray.kill(actor)
            self._rebalance()
            return sorted(self.workers) + sorted(self.correlator_pool.members)

    def _rebalance(self) -> None:
        self.balanced = False
        for pool in (self.pool, self.correlator_pool):
            names = sorted(pool.members)
            if not names or not pool.topics:
                continue
            plan: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
            for i, partition in enumerate(self.partitions(pool)):
                plan[names[i % len(names)]].append(partition)
            # Release first, then grant: one owner per partition at any time.
            released: dict[str, list[tuple[str, int]]] = {n: [] for n in names}
            for step in (released, plan):
                applied = ray.get([pool.members[n].assign.remote(step[n]) for n in names], timeout=120)
                if not all(applied):
                    raise RuntimeError(f"a {pool.prefix} did not apply its assignment within 60 s")
        self.balanced = True

    def _watch(self) -> None:
        while not self.stop_event.wait(2.0):
            try:
                if self.topics_pending:
                    self._ensure_correlator_topics()
                    self.topics_pending = False
                    self.balanced = False  # the repartition topic's partitions now exist
                self._replace_dead()
                if not self.balanced:
                    with self.lock:
                        if not self.stop_event.is_set():
                            self._rebalance()
                self.last_error = None  # a quiet round: what went wrong before has recovered
            except Exception as error:  # e.g. the broker is down during a rebalance: try again
                self.last_error = f"{type(error).__name__}: {error}"

    def _replace_dead(self) -> None:
        dead: dict[str, str] = {}
        for name, worker in self._everyone().items():
            try:
                health = ray.get(worker.ping.remote(), timeout=10)
                if not health["alive"]:
                    dead[name] = f"{name}: {health['error']}"
            except Exception as error:  # the actor process is gone (killed, crashed, node lost) or hangs
                dead[name] = f"{name}: {type(error).__name__}"
        if not dead:
            return
        # The table changes only under the lock, and not at all once shutdown has begun.
        with self.lock:
            if self.stop_event.is_set():
                return
            for name, reason in dead.items():
                pool = next((p for p in (self.pool, self.correlator_pool, self.webhook_pool) if name in p.members),
                            self.pool)
                worker = pool.members.pop(name, None)
                if worker is None:
                    continue  # scaled away meanwhile
                self.worker_errors.append(reason)
                try:
                    ray.kill(worker)
                except Exception:
                    pass  # already gone
                self.restarts += 1
                self._start(pool)
            self._rebalance()

    def _everyone(self) -> dict[str, Any]:
        return {**self._snapshot(), **dict(self.correlator_pool.members), **dict(self.webhook_pool.members)}

    def _snapshot(self) -> dict[str, Any]:
        """A copy of the worker table to iterate while calls to the workers wait (dict() copies in
        one step under the GIL; iterating the live table across a ray.get is what raced before)."""
        return dict(self.workers)

    def model_command(self, command: str, name: str = "") -> dict[str, Any]:
        """Applies a model command on every worker (between their batches) and remembers it, so
        workers started later run the same models."""
        with self.lock:
            replies = {n: ray.get(w.model_command.remote(command, name), timeout=120)
                       for n, w in sorted(self._snapshot().items())}
            errors = {n: r["error"] for n, r in replies.items() if "error" in r}
            if not errors:
                models = self.config.setdefault("models", {})
                first: dict[str, Any] = next(iter(replies.values()), {})
                if first.get("model"):
                    models["model"] = first["model"].split("@")[0]
                models["shadow"] = (first.get("shadow") or "").split("@")[0]
            return {"workers": replies, "errors": errors}

    def worker_pids(self) -> dict[str, int]:
        return {name: ray.get(actor.pid.remote(), timeout=30) for name, actor in sorted(self._everyone().items())}

    def status(self) -> dict[str, Any]:
        tables: dict[str, list[dict[str, Any]]] = {"workers": [], "correlators": [], "webhook": []}
        for key, members in (("workers", self._snapshot()), ("correlators", dict(self.correlator_pool.members)),
                             ("webhook", dict(self.webhook_pool.members))):
            for name, actor in sorted(members.items()):
                try:
                    tables[key].append(ray.get(actor.metrics.remote(), timeout=10))
                except Exception as error:
                    tables[key].append({"worker": name, "error": str(error)})
        return {**tables, "restarts": self.restarts, "last_error": self.last_error,
                "replaced": list(self.worker_errors[-5:])}

    def shutdown(self) -> None:
        """Stops the watch, lets every worker finish its batch, then ends the worker processes.
        Safe while the watch is replacing a worker: the table is taken over under the lock, and
        the watch changes nothing once the stop is set."""
        self.stop_event.set()
        with self.lock:
            workers = self._everyone()
            for pool in (self.pool, self.correlator_pool, self.webhook_pool):
                pool.members.clear()
        for worker in workers.values():
            try:
                ray.get(worker.stop.remote(), timeout=60)
            except Exception:
                pass  # already dead
            try:
                ray.kill(worker)
            except Exception:
                pass
