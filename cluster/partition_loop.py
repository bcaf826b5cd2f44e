"""The Kafka edge of a worker: consume a batch, detect, produce, flush, then commit.

At least once (default): outputs are produced and acknowledged before the input offsets that
produced them are committed, so a crash can repeat a batch but never lose one.

Exactly once (`processing.guarantee: exactly_once`): one transactional producer per owned
partition (transactional.id derived from group, topic and partition, so a replacement worker
fences a dead one's open transaction); each partition's outputs and its input offsets commit
in one transaction, and readers use read_committed.

Kafka clients are created here, inside the process that uses them: they cannot be pickled.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from cluster.config import ClusterConfig
from cluster.live_rules import LiveRules
from cluster.partition_models import PartitionModels
from cluster.detect import BatchResult, DetectionSettings, Detector, InputRecord
from cluster.rulefiles import load_rules_from_paths
from detectors.engine import SigmaEngine


@dataclass(slots=True)
class LoopMetrics:
    worker: str
    events_in: int = 0
    detections_out: int = 0
    anomalies_out: int = 0
    dead_letters: int = 0
    batches: int = 0
    redelivered_batches: int = 0
    transient_errors: int = 0
    pauses: int = 0
    producer_restarts: int = 0
    last_batch_ms: float = 0.0
    partitions: list[tuple[str, int]] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    rule_hits: Counter[str] = field(default_factory=Counter)
    ruleset_version: str = ""
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "events_in": self.events_in,
            "detections_out": self.detections_out,
            "anomalies_out": self.anomalies_out,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "redelivered_batches": self.redelivered_batches,
            "transient_errors": self.transient_errors,
            "pauses": self.pauses,
            "producer_restarts": self.producer_restarts,
            "last_batch_ms": round(self.last_batch_ms, 2),
            "partitions": [f"{t}[{p}]" for t, p in self.partitions],
            "lag": dict(self.lag),
            "top_rules": dict(self.rule_hits.most_common(10)),
            "ruleset_version": self.ruleset_version,
            "last_error": self.last_error,
        }


class PartitionLoop:
    """Processes the partitions it is assigned until stopped (at least once)."""

    def __init__(self, config: ClusterConfig, worker: str) -> None:
        self.config = config
        settings = DetectionSettings(config.kafka.detections_topic, config.kafka.dead_letter_topic,
                                     shadow_topic=self._existing(config, config.models.shadow_topic))
        self.models = PartitionModels(config.models, config.kafka.group_id) if config.models.enabled else None
        self.live: LiveRules | None = None
        if config.rules.topic:
            self.live = LiveRules(config.kafka.bootstrap_servers, config.rules.topic, config.rules.paths,
                                  config.rules.pipelines, config.rules.placeholders, config.kafka.client)
            self.live.catch_up()
            engine, ruleset = self.live.build()
        else:
            ruleset = load_rules_from_paths(config.rules.paths, config.rules.pipelines, config.rules.placeholders)
            engine = SigmaEngine(ruleset.rules)
        self.detector = Detector(engine, ruleset.version, settings)
        self.metrics = LoopMetrics(worker, ruleset_version=ruleset.version)
        common = {"bootstrap.servers": config.kafka.bootstrap_servers, **config.kafka.client}
        self.consumer = Consumer(
            {
                **common,
                "group.id": config.kafka.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "queued.max.messages.kbytes": 16384,
                "client.id": f"sigmaray-{worker}",
            }
        )
        self._common = common
        self.exactly_once = config.processing.guarantee == "exactly_once"
        # Memory stays bounded: at most max_in_flight unacknowledged outputs in the producer, and
        # a capped prefetch queue in the consumer; _produce pauses fetching while outputs back up.
        bounded = {"queue.buffering.max.messages": config.processing.max_in_flight, "queue.buffering.max.kbytes": 65536}
        self._producer_config = {**common, **bounded, "linger.ms": 5, "enable.idempotence": True,
                                 "client.id": f"sigmaray-{worker}"}
        self.producer = Producer(self._producer_config)
        self._transactional: dict[tuple[str, int], Producer] = {}
        self._pending: list[tuple[str, int]] | None = None
        self._applied: threading.Event | None = None
        self._lock = threading.Lock()
        self._delivery_errors: list[str] = []
        self._model_commands: list[tuple[str, str, threading.Event, dict[str, Any]]] = []

    def assign(self, partitions: list[tuple[str, int]], wait: float = 0) -> bool:
        """Takes effect between batches, so a batch never spans two assignments. With `wait`,
        blocks until the loop has applied it (the supervisor releases before it grants)."""
        applied = threading.Event()
        with self._lock:
            self._pending = list(partitions)
            self._applied = applied
        return applied.wait(wait) if wait else False

    @staticmethod
    def _existing(config: ClusterConfig, topic: str) -> str:
        """`topic` if the broker has it, else "": a shadow model's scores are then computed but not
        published (status says so), rather than wedging the producer on a topic that never comes."""
        if not topic or not config.models.enabled:
            return ""
        from confluent_kafka.admin import AdminClient

        try:
            metadata = AdminClient({"bootstrap.servers": config.kafka.bootstrap_servers, **config.kafka.client}).list_topics(
                topic, timeout=15)
        except KafkaException:
            return topic  # broker unreachable now: assume the operator created it
        info = metadata.topics.get(topic)
        return topic if info is not None and info.error is None else ""

    def model_command(self, command: str, name: str = "", wait: float = 60) -> dict[str, Any]:
        """shadow NAME | promote [NAME] | rollback, applied between batches to every owned
        partition's scorer, so no batch sees two models and no event is skipped."""
        done = threading.Event()
        reply: dict[str, Any] = {}
        with self._lock:
            self._model_commands.append((command, name, done, reply))
        if not done.wait(wait):
            return {"error": "not applied within the wait (a batch is stuck?)"}
        return reply

    def _apply_model_commands(self) -> None:
        with self._lock:
            commands, self._model_commands = self._model_commands, []
        for command, name, done, reply in commands:
            try:
                if self.models is None:
                    raise ValueError("models are disabled in this cluster's config (models.enabled: false)")
                reply.update(self.models.command(command, name))
                if not self.detector.settings.shadow_topic and reply.get("shadow"):
                    reply["warning"] = (f"shadow topic {self.config.models.shadow_topic!r} does not exist: "
                                        "shadow scores are computed but not published")
            except Exception as error:  # a bad name: reported to the caller, the loop goes on
                reply["error"] = f"{type(error).__name__}: {error}"
            done.set()

    def _apply_assignment(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            applied, self._applied = self._applied, None
        if pending is None:
            return
        try:
            if self.exactly_once:
                self._open_transactional(pending)
            self.consumer.assign(self._positions(pending))
        except KafkaException:
            with self._lock:  # try again next batch unless a newer assignment came meanwhile
                if self._pending is None:
                    self._pending, self._applied = pending, applied
            raise
        self.metrics.partitions = pending
        if applied is not None:
            applied.set()

    def _positions(self, partitions: list[tuple[str, int]]) -> list[TopicPartition]:
        """Where to consume each partition from. Without models: the committed offsets. With
        models: where each partition's model state says (PartitionModels explains why)."""
        if self.models is None:
            return [TopicPartition(t, p) for t, p in partitions]
        owned = set(self.models.scorers)
        for partition in owned - set(partitions):
            self.models.release(partition)
        acquired = [p for p in partitions if p not in owned]
        committed: dict[tuple[str, int], int] = {}
        if acquired:
            for tp in self.consumer.committed([TopicPartition(t, p) for t, p in acquired], timeout=30):
                if tp.error is not None:
                    raise KafkaException(tp.error)
                committed[(tp.topic, tp.partition)] = tp.offset
        for partition in acquired:
            self.models.assign(partition, committed[partition])
        return [TopicPartition(t, p, self.models.next_offset[(t, p)]) if self.models.next_offset[(t, p)] >= 0
                else TopicPartition(t, p) for t, p in partitions]

    def _open_transactional(self, partitions: list[tuple[str, int]]) -> None:
        """One transactional producer per owned partition; init fences the previous owner."""
        for key in set(self._transactional) - set(partitions):
            self._transactional.pop(key).flush(10)
        for topic, partition in partitions:
            if (topic, partition) in self._transactional:
                continue
            producer = Producer(
                {
                    **self._common,
                    "transactional.id": f"sigmaray-{self.config.kafka.group_id}-{topic}-{partition}",
                    "linger.ms": 5,
                    "client.id": f"sigmaray-{self.metrics.worker}-{partition}",
                }
            )
            producer.init_transactions(60)
            self._transactional[(topic, partition)] = producer

    def run(self, stop: threading.Event) -> None:
        next_lag = 0.0
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except KafkaException as error:
                    kafka_error = error.args[0] if error.args else None
                    if not isinstance(kafka_error, KafkaError) or kafka_error.fatal():
                        raise
                    # A seek or commit against a restarting broker: start again from the
                    # committed offsets (at least once) instead of ending the worker.
                    self.metrics.transient_errors += 1
                    self.metrics.last_error = str(kafka_error)
                    time.sleep(0.5)
                    self._restart_from_committed()
                if time.monotonic() >= next_lag:
                    self.update_lag()
                    next_lag = time.monotonic() + 5
        finally:
            self.producer.flush(10)
            for producer in self._transactional.values():
                producer.flush(10)
            if self.models is not None:
                try:
                    self.models.save_all()  # the last batch was committed: hand over a fresh state
                except Exception as error:
                    self.metrics.last_error = f"final checkpoint: {error}"
            self.consumer.close()
            if self.live is not None:
                self.live.close()

    def _replace_producer(self) -> None:
        """A producer that could not deliver for a whole flush timeout can be wedged (librdkafka keeps
        asking one broker for its idempotence PID, even across a broker restart): start a fresh one.
        Its unacknowledged outputs are purged; the batch is processed again, so at worst they
        arrive twice (at least once)."""
        old = self.producer
        self.producer = Producer(self._producer_config)
        self.metrics.producer_restarts += 1
        try:
            old.purge()
            old.flush(0)
        except KafkaException:
            pass  # it is being dropped either way

    def _restart_from_committed(self) -> None:
        try:
            partitions = [TopicPartition(t, p) for t, p in self.metrics.partitions]
            if self.models is not None and partitions:
                committed = self.consumer.committed(partitions, timeout=30)
                partitions = [TopicPartition(tp.topic, tp.partition,
                                             self.models.rebuild((tp.topic, tp.partition), max(tp.offset, 0)))
                              for tp in committed]
            self.consumer.assign(partitions)
        except KafkaException as error:
            self.metrics.last_error = str(error)

    def run_once(self) -> int:
        """One batch: consume, detect, produce, flush, commit. Returns records consumed."""
        self._apply_assignment()
        self._apply_model_commands()
        self._swap_rules()
        if not self.metrics.partitions:
            time.sleep(0.05)
            return 0
        processing = self.config.processing
        messages = self.consumer.consume(processing.batch_size, processing.batch_timeout_ms / 1000)
        records: list[InputRecord] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                # Broker down, leader moving...: librdkafka reconnects by itself; keep polling.
                self.metrics.transient_errors += 1
                continue
            timestamp_type, timestamp = message.timestamp()
            records.append(
                InputRecord(message.topic(), message.partition(), message.offset(), message.value(), message.key(),
                            timestamp if timestamp_type else None)
            )
        if not records:
            return 0
        started = time.perf_counter()
        if self.exactly_once:
            return self._transactional_batch(records, started)
        result = self._process(records)
        for output in result.outputs:
            self._produce(output.topic, output.key, output.value, list(output.headers))
        remaining = self.producer.flush(processing.flush_timeout_s)
        if remaining or self._delivery_errors:
            # Not acknowledged: rewind to the batch start so it is processed again.
            self._rewind(records)
            self.metrics.last_error = self._delivery_errors[-1] if self._delivery_errors else f"{remaining} outputs unacknowledged"
            self._delivery_errors.clear()
            self.metrics.redelivered_batches += 1
            if remaining:
                self._replace_producer()
            return 0
        try:
            if self.models is not None:
                self._models_processed(records)  # Quix order: outputs flushed, state saved, offsets committed
            self._commit(records)
        except KafkaException as error:
            if error.args and error.args[0].fatal():
                raise
            # Outputs are delivered but the offsets are not: process again (at least once).
            self._rewind(records)
            self.metrics.redelivered_batches += 1
            self.metrics.transient_errors += 1
            time.sleep(0.5)
            return 0
        self._count(result, started)
        return len(records)

    def _process(self, records: list[InputRecord]) -> BatchResult:
        if self.models is None:
            return self.detector.process(records)
        total = BatchResult()
        by_partition: dict[tuple[str, int], list[InputRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        for partition, batch in by_partition.items():
            scorer = self.models.scorers.get(partition)
            replay = [r for r in batch if self.models.replaying(partition, r.offset)]
            if replay:  # rebuilds the state; the outputs were delivered the first time
                self.detector.process(replay, scorer)
                batch = batch[len(replay):]
            result = self.detector.process(batch, scorer)
            total.outputs.extend(result.outputs)
            total.counts.update(result.counts)
            total.rule_hits.update(result.rule_hits)
            total.counts["events"] += len(replay)
        return total

    def _models_processed(self, records: list[InputRecord]) -> None:
        assert self.models is not None
        last: dict[tuple[str, int], int] = {}
        for record in records:
            last[(record.topic, record.partition)] = max(last.get((record.topic, record.partition), -1), record.offset)
        for partition, offset in last.items():
            self.models.processed(partition, offset)
        if self.models.checkpoint_due():
            try:
                self.models.save_all()
            except Exception as error:  # storage down: keep processing; the next save retries
                self.models.errors.append(f"checkpoint save: {type(error).__name__}: {error}")
                self.metrics.last_error = self.models.errors[-1]

    def update_lag(self) -> None:
        """Consumer lag per owned partition (high watermark minus position), for status and metrics."""
        lag: dict[str, int] = {}
        try:
            positions = self.consumer.position([TopicPartition(t, p) for t, p in self.metrics.partitions])
            for tp in positions:
                _low, high = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                lag[f"{tp.topic}[{tp.partition}]"] = max(high - tp.offset, 0) if tp.offset >= 0 else high
        except KafkaException:
            return  # broker unreachable: keep the last known lag
        self.metrics.lag = lag

    def _swap_rules(self) -> None:
        """Between batches: pick up rule changes, install a ruleset compiled in the background."""
        if self.live is None:
            return
        self.live.poll()
        self.live.rebuild_in_background()
        ready = self.live.take_ready()
        if ready is not None:
            engine, ruleset = ready
            self.detector.swap(engine, ruleset.version)
            self.metrics.ruleset_version = ruleset.version

    def _count(self, result: BatchResult, started: float) -> None:
        self.metrics.batches += 1
        self.metrics.events_in += result.counts["events"] + result.counts["dead_letter"]
        self.metrics.detections_out += result.counts["detections"]
        self.metrics.anomalies_out += result.counts["anomalies"]
        self.metrics.dead_letters += result.counts["dead_letter"]
        self.metrics.rule_hits.update(result.rule_hits)
        self.metrics.last_batch_ms = (time.perf_counter() - started) * 1000

    def _transactional_batch(self, records: list[InputRecord], started: float) -> int:
        by_partition: dict[tuple[str, int], list[InputRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        for key, batch in by_partition.items():
            producer = self._transactional[key]
            result = self._process(batch)
            try:
                producer.begin_transaction()
                for output in result.outputs:
                    while True:
                        try:
                            producer.produce(output.topic, value=output.value, key=output.key,
                                             headers=list(output.headers) or None)
                            break
                        except BufferError:
                            producer.poll(0.1)
                offsets = [TopicPartition(key[0], key[1], batch[-1].offset + 1)]
                producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(60)
            except KafkaException as error:
                kafka_error = error.args[0] if error.args else None
                if kafka_error is not None and (kafka_error.txn_requires_abort() or kafka_error.retriable()):
                    try:
                        producer.abort_transaction(30)
                    except KafkaException:
                        pass  # the next begin_transaction fails the same way and we come back here
                    self._rewind(batch)
                    self.metrics.redelivered_batches += 1
                    self.metrics.transient_errors += 1
                    time.sleep(0.5)
                    continue
                raise  # fenced or fatal: the supervisor replaces this worker
            if self.models is not None:
                self._models_processed(batch)  # after the commit: the state never runs ahead of it
            self._count(result, started)
        return len(records)

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        paused = False
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers or None, on_delivery=self._on_delivery)
                break
            except BufferError:  # max_in_flight outputs unacknowledged: stop fetching until they drain
                if not paused:
                    self.consumer.pause(self.consumer.assignment())
                    self.metrics.pauses += 1
                    paused = True
                self.producer.poll(0.1)
        if paused:
            self.consumer.resume(self.consumer.assignment())
        self.producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self._delivery_errors.append(str(error))

    def _commit(self, records: list[InputRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            last[key] = max(last.get(key, -1), record.offset)
        self.consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False)

    def _rewind(self, records: list[InputRecord]) -> None:
        first: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        for (topic, partition), offset in first.items():
            if self.models is not None and (topic, partition) in self.models.scorers:
                offset = self.models.rebuild((topic, partition), offset)
            self.consumer.seek(TopicPartition(topic, partition, offset))
