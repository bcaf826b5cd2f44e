"""The Kafka edge of a worker: consume a batch, detect, then commit it through its checkpoint.

How a unit is committed (outputs → state → offsets) is `cluster/kafka/checkpoint.py`: at least
once (default; a crash can repeat a batch but never lose one) or exactly once
(`processing.guarantee: exactly_once`; one transaction per partition, readers use
read_committed). Committed offsets only move forward, in both: a batch replayed to rebuild
model state (records before the committed offset, outputs suppressed) commits nothing.

A record whose processing raises is dead-lettered by the detector (with the stage that failed);
a record that takes the whole process down is found by the attempt log (cluster/state/attempts.py)
and dead-lettered with stage `crash` after a few restarts. Only failures of the broker or of
the process restart the loop.

Kafka clients are created here, inside the process that uses them: they cannot be pickled.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from cluster.build import build_detector, detection_settings, quiet_rules
from cluster.config import ClusterConfig
from cluster.kafka import client as kafka
from cluster.kafka.checkpoint import Checkpoint, checkpoint_for
from cluster.kafka.live_rules import LiveRules
from cluster.processing.detector import BatchResult, Detector, InputRecord
from cluster.state.attempts import AttemptLog, Decision, Marker, Mode
from cluster.state.partition_models import PartitionModels

Partition = tuple[str, int]
@dataclass(slots=True)
class LoopMetrics:
    worker: str
    events_in: int = 0
    detections_out: int = 0
    anomalies_out: int = 0
    dead_letters: int = 0
    batches: int = 0
    redelivered_batches: int = 0
    replayed: int = 0  # records processed again only to rebuild model state (not in events_in)
    truncated: int = 0  # outputs cut down to fit their topic's size limit
    transient_errors: int = 0
    pauses: int = 0
    producer_restarts: int = 0
    last_batch_ms: float = 0.0
    partitions: list[tuple[str, int]] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    rule_hits: Counter[str] = field(default_factory=Counter)
    dead_letters_by_stage: Counter[str] = field(default_factory=Counter)
    ruleset_version: str = ""
    ruleset_rejections: list[dict[str, Any]] = field(default_factory=list)
    isolating: dict[str, str] = field(default_factory=dict)  # partition -> why its records go one by one
    degraded_rules: dict[str, str] = field(default_factory=dict)  # rule id -> why its matches are incomplete
    last_error: str = ""  # current only: cleared by the next batch that commits

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "events_in": self.events_in,
            "detections_out": self.detections_out,
            "anomalies_out": self.anomalies_out,
            "dead_letters": self.dead_letters,
            "dead_letters_by_stage": dict(self.dead_letters_by_stage),
            "batches": self.batches,
            "redelivered_batches": self.redelivered_batches,
            "replayed": self.replayed,
            "truncated": self.truncated,
            "transient_errors": self.transient_errors,
            "pauses": self.pauses,
            "producer_restarts": self.producer_restarts,
            "last_batch_ms": round(self.last_batch_ms, 2),
            "partitions": [f"{t}[{p}]" for t, p in self.partitions],
            "lag": dict(self.lag),
            "top_rules": dict(self.rule_hits.most_common(10)),
            "ruleset_version": self.ruleset_version,
            "ruleset_rejections": list(self.ruleset_rejections[:20]),
            "isolating": dict(self.isolating),
            "degraded_rules": dict(self.degraded_rules),
            "last_error": self.last_error,
        }


def _rejections(ruleset: Any) -> list[dict[str, Any]]:
    return [r.to_dict() for r in getattr(ruleset, "rejections", [])]


class PartitionLoop:
    """Processes the partitions it is assigned until stopped."""

    def __init__(self, config: ClusterConfig, worker: str) -> None:
        self.config = config
        self.models = (PartitionModels(config.models, config.kafka.group_id, config.rules.mapping)
                       if config.models.enabled else None)
        self.attempts = AttemptLog(config.models.checkpoint_url, config.kafka.group_id)
        self.live: LiveRules | None = None
        shadow_topic = self._existing(config, config.models.shadow_topic)
        if config.rules.topic:
            self.live = LiveRules(config.kafka, config.rules)
            self.live.catch_up()
            engine, ruleset = self.live.build()
            self.detector = Detector(engine, ruleset.version, detection_settings(config, shadow_topic),
                                     quiet_rules=quiet_rules(ruleset))
        else:
            self.detector, ruleset = build_detector(config, shadow_topic=shadow_topic)
        self.metrics = LoopMetrics(worker, ruleset_version=ruleset.version, ruleset_rejections=_rejections(ruleset))
        self._read_output_limits()
        self.consumer = kafka.consumer(
            config.kafka, config.kafka.group_id,
            **{
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "queued.max.messages.kbytes": 16384,
                "client.id": f"sigmaray-{worker}",
            },
        )
        self._pending: list[Partition] | None = None
        self._applied: threading.Event | None = None
        self._lock = threading.Lock()
        self._model_commands: list[tuple[str, str, threading.Event, dict[str, Any]]] = []
        self._owned: set[Partition] = set()
        self.floor: dict[Partition, int] = {}  # highest committed offset: commits never go below it
        self._isolate: dict[Partition, tuple[int, int]] = {}  # until offset (exclusive), deaths
        self._poison: dict[Partition, Decision] = {}  # the record at this offset killed its workers
        self.checkpoint: Checkpoint = checkpoint_for(self)  # outputs → state → offsets, per guarantee

    # -- output size limits -------------------------------------------------------------------

    def _read_output_limits(self) -> None:
        """Each output topic's size limit, read from the broker (a detection embeds its event, so
        a large event would otherwise have nowhere to go). With the broker down, the producer's
        own limit holds until the next assignment reads them again."""
        settings = self.detector.settings
        from cluster.kafka.topic_limits import message_limits

        topics = [t for t in (settings.detections_topic, settings.dead_letter_topic, settings.shadow_topic) if t]
        try:
            limits = message_limits(kafka.settings(self.config.kafka), topics, timeout=10)
            self._limits_read = True
        except Exception as error:  # broker unreachable or no permission to describe configs
            fallback = int(self.config.kafka.client.get("message.max.bytes", 1_000_000))
            limits = {t: fallback for t in topics}
            self._limits_read = False
            if hasattr(self, "metrics"):
                self.metrics.last_error = f"output size limits: {type(error).__name__}: {error}"
        settings.max_message_bytes = dict(limits)
        # The broker applies a topic's limit to a whole batch of records, not to each record: a
        # producer batch must never be larger than the smallest output limit.
        self.batch_bytes = min([1_000_000, *[v for v in limits.values() if v > 0]])

    # -- assignment ---------------------------------------------------------------------------

    def assign(self, partitions: list[Partition], wait: float = 0) -> bool:
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
        missing = kafka.missing_topics(config.kafka, [topic], timeout=15)
        # None: the broker is unreachable now; assume the operator created it.
        return "" if missing else topic

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
            if not self._limits_read:
                before = self.batch_bytes
                self._read_output_limits()
                if self.batch_bytes != before:  # between batches: nothing is in flight
                    self.checkpoint.resize(self.batch_bytes)
            self.checkpoint.assigned(pending)
            self.consumer.assign(self._positions(pending))
        except KafkaException:
            with self._lock:  # try again next batch unless a newer assignment came meanwhile
                if self._pending is None:
                    self._pending, self._applied = pending, applied
            raise
        self.metrics.partitions = pending
        if applied is not None:
            applied.set()

    def _positions(self, partitions: list[Partition]) -> list[TopicPartition]:
        """Where to consume each partition from: the committed offsets, or with models where
        each partition's model state says (PartitionModels explains why). Partitions let go are
        released cleanly; partitions taken are checked in the attempt log."""
        for partition in self._owned - set(partitions):
            self._release(partition)
        acquired = [p for p in partitions if p not in self._owned]
        committed: dict[Partition, int] = {}
        if acquired:
            for tp in self._committed([TopicPartition(t, p) for t, p in acquired]):
                if tp.error is not None:
                    raise KafkaException(tp.error)
                committed[(tp.topic, tp.partition)] = tp.offset
        for partition in acquired:
            self._acquire(partition, committed[partition])
        self._owned = set(partitions)
        if self.models is None:
            return [TopicPartition(t, p) for t, p in partitions]
        return [TopicPartition(t, p, self.models.next_offset[(t, p)]) if self.models.next_offset[(t, p)] >= 0
                else TopicPartition(t, p) for t, p in partitions]

    def _committed(self, partitions: list[TopicPartition], timeout: float = 30) -> list[TopicPartition]:
        return kafka.committed_offsets(self.consumer, partitions, timeout)

    def _acquire(self, partition: Partition, committed: int) -> None:
        self.floor[partition] = committed  # negative: nothing committed yet
        if self.models is not None:
            self.models.assign(partition, committed)
        decision = self.attempts.acquired(partition, committed)
        name = f"{partition[0]}[{partition[1]}]"
        if decision.mode is Mode.POISON:
            self._poison[partition] = decision
            self._isolate[partition] = (committed + self.config.processing.batch_size, decision.deaths)
            self.metrics.isolating[name] = f"{decision.describe()}: that record goes to the dead letters"
        elif decision.mode is Mode.ISOLATE:
            self._isolate[partition] = (committed + self.config.processing.batch_size, decision.deaths)
            self.metrics.isolating[name] = f"{decision.describe()}: processing one record at a time"

    def _release(self, partition: Partition) -> None:
        if self.models is not None:
            self.models.release(partition)
        self.attempts.released(partition, max(self.floor.get(partition, 0), 0))
        for table in (self.floor, self._isolate, self._poison):
            table.pop(partition, None)
        self.metrics.isolating.pop(f"{partition[0]}[{partition[1]}]", None)

    # -- the loop -----------------------------------------------------------------------------

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
            self.checkpoint.flush(10)
            if self.models is not None:
                try:
                    self.models.save_all()  # the last batch was committed: hand over a fresh state
                except Exception as error:
                    self.metrics.last_error = f"final checkpoint: {error}"
            for partition in list(self._owned):  # a clean stop is no death
                self.attempts.released(partition, max(self.floor.get(partition, 0), 0))
            self.consumer.close()
            if self.live is not None:
                self.live.close()

    def _restart_from_committed(self) -> None:
        try:
            partitions = [TopicPartition(t, p) for t, p in self.metrics.partitions]
            if partitions:
                committed = self._committed(partitions)
                for tp in committed:
                    key = (tp.topic, tp.partition)
                    self.floor[key] = max(self.floor.get(key, tp.offset), tp.offset)
                if self.models is not None:
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
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            # Set on every message that is not an error (the client types them Optional for those).
            assert topic is not None and partition is not None and offset is not None
            records.append(
                InputRecord(topic, partition, offset, message.value(), message.key(),
                            timestamp if timestamp_type else None)
            )
        if not records:
            return 0
        done = 0
        rewound: set[Partition] = set()
        for unit in self._units(records):
            if {(r.topic, r.partition) for r in unit} & rewound:
                continue  # consumed again after the seek
            ok = self._handle(unit)
            if not ok:
                rewound.update((r.topic, r.partition) for r in unit)
                continue
            done += len(unit)
            self._after_isolated(unit)
        return done

    def _units(self, records: list[InputRecord]) -> list[list[InputRecord]]:
        """The batch as units that commit on their own: one unit for everything, except that a
        partition under suspicion (cluster/state/attempts.py) has its live records one per unit, and
        the record that killed its workers becomes a dead letter (stage `crash`)."""
        if not self._isolate:
            return [records]
        common: list[InputRecord] = []
        tails: list[list[InputRecord]] = []
        by_partition: dict[Partition, list[InputRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        for partition, batch in by_partition.items():
            if partition not in self._isolate:
                common.extend(batch)
                continue
            until, _deaths = self._isolate[partition]
            floor = self.floor.get(partition, -1)
            poison = self._poison.get(partition)
            rest: list[InputRecord] = []
            for record in batch:
                if record.offset < floor:
                    common.append(record)  # replayed for model state: no outputs, nothing to isolate
                elif record.offset < until:
                    if poison is not None and record.offset == poison.offset:
                        record = dataclasses.replace(
                            record, error=f"the worker died {poison.deaths} times processing this record",
                            error_stage="crash")
                    tails.append([record])
                else:
                    rest.append(record)
            if rest:
                tails.append(rest)
        return ([common] if common else []) + tails

    def _after_isolated(self, unit: list[InputRecord]) -> None:
        """Bookkeeping for a committed unit of a partition under suspicion."""
        if not self._isolate:
            return
        for partition in {(r.topic, r.partition) for r in unit}:
            if partition not in self._isolate:
                continue
            until, _deaths = self._isolate[partition]
            last = max(r.offset for r in unit if (r.topic, r.partition) == partition)
            poison = self._poison.get(partition)
            if poison is not None and last >= poison.offset:
                del self._poison[partition]
            if last + 1 >= until:  # past the suspect range: back to whole batches
                del self._isolate[partition]
                self.metrics.isolating.pop(f"{partition[0]}[{partition[1]}]", None)
                self.attempts.save(partition, Marker(last + 1, 1))

    def _handle(self, records: list[InputRecord]) -> bool:
        """Process, deliver and commit one unit; False when it was rewound to be processed again."""
        for partition in {(r.topic, r.partition) for r in records}:
            if partition in self._isolate and len(records) == 1 and records[0].offset >= self.floor.get(partition, -1):
                self.attempts.in_flight(partition, records[0].offset, self._isolate[partition][1])
        return self.checkpoint.commit(records, time.perf_counter())

    def process(self, records: list[InputRecord]) -> BatchResult:
        if self.models is None:
            return self.detector.process(records)
        total = BatchResult()
        by_partition: dict[Partition, list[InputRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        for partition, batch in by_partition.items():
            scorer = self.models.scorers.get(partition)
            replay = [r for r in batch if self.models.replaying(partition, r.offset)]
            if replay:  # rebuilds the state; the outputs were delivered the first time
                self.detector.process(replay, scorer)
                batch = batch[len(replay):]
            result = self.detector.process(batch, scorer) if batch else BatchResult()
            total.outputs.extend(result.outputs)
            total.counts.update(result.counts)
            total.rule_hits.update(result.rule_hits)
            total.counts["replayed"] += len(replay)
        return total

    def snapshot_state(self, records: list[InputRecord]) -> None:
        """The model state now reflects `records`; saved when a checkpoint is due."""
        if self.models is None:
            return
        last: dict[Partition, int] = {}
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
        lag = kafka.consumer_lag(self.consumer, self.metrics.partitions)
        if lag is not None:  # None: broker unreachable, keep the last known lag
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
            self.detector.swap(engine, ruleset.version, quiet_rules(ruleset))
            self.metrics.ruleset_version = ruleset.version
            self.metrics.ruleset_rejections = _rejections(ruleset)

    def count(self, result: BatchResult, started: float) -> None:
        counts = result.counts
        self.metrics.batches += 1
        self.metrics.events_in += counts["events"] + counts["dead_letter"]
        self.metrics.replayed += counts["replayed"]
        self.metrics.detections_out += counts["detections"]
        self.metrics.anomalies_out += counts["anomalies"]
        self.metrics.dead_letters += counts["dead_letter"]
        self.metrics.truncated += counts["truncated"]
        for key, value in counts.items():
            if key.startswith("dead_letter."):
                self.metrics.dead_letters_by_stage[key.split(".", 1)[1]] += value
        self.metrics.rule_hits.update(result.rule_hits)
        self.metrics.degraded_rules = self.detector.engine.degraded_rules()
        self.metrics.last_batch_ms = (time.perf_counter() - started) * 1000
        self.metrics.last_error = ""  # a committed batch: whatever went wrong before has recovered

    def commit_offsets(self, records: list[InputRecord]) -> None:
        """Commits each partition's next offset, never below what is already committed."""
        last: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            last[key] = max(last.get(key, -1), record.offset)
        kafka.commit_next(self.consumer, last, self.floor)

    def rewind(self, records: list[InputRecord]) -> None:
        first: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        for (topic, partition), offset in first.items():
            if self.models is not None and (topic, partition) in self.models.scorers:
                offset = self.models.rebuild((topic, partition), offset)
            self.consumer.seek(TopicPartition(topic, partition, offset))
