"""The Kafka edge of a correlator actor: detections in, fused OCSF alerts out.

A correlator owns partitions of two topics, assigned by the supervisor like the workers' input
partitions, and keeps one `correlator.Correlator` per owned partition
(cluster/state/partition_correlators.py):

- **detections** (keyed by entity): each record goes through `Correlator.route`: its own alerts
  go to the alerts topic (OCSF Detection Finding JSON, keyed by alert id, headers `activity` and
  `priority`), and its hit for each correlation component it feeds goes to the **repartition
  topic**, keyed by the component and the group-by values its correlations share
  (correlator/routing.py), so every correlation group has exactly one owner whatever host its
  hits came from (Kafka Streams' repartition topic);
- **repartition** (keyed by correlation group): `Correlator.correlate` evaluates the windows;
  each correlation hit goes back to the detections topic as a `kind: correlation` record keyed
  by its entity, where the owner of that entity fuses it into the entity's risk and alerts.

So per-entity risk has one owner (the detections partition of the entity), and each
correlation group has one owner (the repartition partition of its key).

Commit order, per batch (the workers' AtLeastOnce protocol, cluster/kafka/checkpoint.py):
alerts, repartitioned hits and correlation records are produced and acknowledged, then the state
is snapshotted (saved when `correlator.checkpoint_interval_s` is due), then the offsets are
committed. After a crash the state is restored from its checkpoint and replayed to the committed
offset with outputs suppressed; records after it are processed again, so an alert may be
emitted twice: the same alert id and count, an idempotent update for a SOAR. A detection
delivered twice upstream is fused once (the fusion engine remembers the sources it has seen),
and a repartitioned hit delivered twice is counted once (the correlation engine skips a hit
whose evidence reference it has seen).

The correlator always runs at least once: its outputs are idempotent by alert id, so the
exactly-once transactions of the workers would buy nothing here.

Every correlator also reads the whole **verdicts** topic (no group: each applies a verdict to
the partitions it owns; the owner of the alert's entity is the one that knows the alert), and
reloads the **criticality** file when it changes, without a restart.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from cluster.build import build_correlator, load_criticality_file, load_rules, rule_cache_url
from cluster.config import ClusterConfig
from cluster.kafka import client as kafka
from cluster.kafka.checkpoint import AtLeastOnce
from cluster.processing.detector import BatchResult, InputRecord, OutputRecord
from cluster.state.checkpoints import CheckpointStore
from cluster.state.partition_correlators import PartitionCorrelators
from correlator.fusion import Alert
from correlator.pipeline import Correlator, correlation_record
from correlator.records import Verdict
from correlator.routing import Routed

Partition = tuple[str, int]
MAX_VERDICTS_KEPT = 10_000  # verdicts re-applied to partitions acquired later (idempotent by verdict id)
CRITICALITY_CHECK_S = 5.0


@dataclass(slots=True)
class CorrelatorMetrics:
    worker: str
    detections_in: int = 0
    hits_in: int = 0  # repartitioned hits
    alerts_out: int = 0
    hits_out: int = 0  # hits sent to the repartition topic
    correlations_out: int = 0  # correlation hits sent back to the detections topic
    dead_letters: int = 0
    dead_letters_by_stage: Counter[str] = field(default_factory=Counter)
    alerts_by_priority: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    redelivered_batches: int = 0
    replayed: int = 0
    transient_errors: int = 0
    pauses: int = 0
    producer_restarts: int = 0
    last_batch_ms: float = 0.0
    partitions: list[Partition] = field(default_factory=list)
    lag: dict[str, int] = field(default_factory=dict)
    verdicts: Counter[str] = field(default_factory=Counter)  # outcome -> count
    criticality_entries: int = 0
    criticality_errors: list[str] = field(default_factory=list)
    ruleset_version: str = ""
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "role": "correlator", "detections_in": self.detections_in,
                "hits_in": self.hits_in, "alerts_out": self.alerts_out, "hits_out": self.hits_out,
                "correlations_out": self.correlations_out, "dead_letters": self.dead_letters,
                "dead_letters_by_stage": dict(self.dead_letters_by_stage),
                "alerts_by_priority": dict(sorted(self.alerts_by_priority.items())), "batches": self.batches,
                "redelivered_batches": self.redelivered_batches, "replayed": self.replayed,
                "transient_errors": self.transient_errors, "pauses": self.pauses,
                "producer_restarts": self.producer_restarts, "last_batch_ms": round(self.last_batch_ms, 2),
                "partitions": [f"{t}[{p}]" for t, p in self.partitions], "lag": dict(self.lag),
                "verdicts": dict(self.verdicts), "criticality_entries": self.criticality_entries,
                "criticality_errors": list(self.criticality_errors[:10]), "ruleset_version": self.ruleset_version,
                "last_error": self.last_error}


def alert_output(topic: str, alert: Alert) -> OutputRecord:
    """An alert as the alerts topic carries it."""
    return OutputRecord(topic, alert.alert_id.encode(), orjson.dumps(alert.ocsf),
                        (("activity", alert.activity.encode()), ("priority", str(alert.priority).encode())))


class CorrelatorLoop:
    """Correlates and fuses the partitions it is assigned until stopped."""

    def __init__(self, config: ClusterConfig, worker: str) -> None:
        self.config = config
        settings = config.correlator
        self.detections_topic = config.kafka.detections_topic
        self.repartition_topic = settings.repartition_topic
        self.metrics = CorrelatorMetrics(worker)
        self.criticality, errors = load_criticality_file(config)
        self._criticality_seen = self._criticality_stamp()
        self._criticality_next = time.monotonic() + CRITICALITY_CHECK_S
        self._note_criticality(errors)
        store = CheckpointStore(config.models.checkpoint_url, f"{config.kafka.group_id}.correlator")
        self.states = PartitionCorrelators(store, settings.checkpoint_interval_s, self._build)
        self.live: Any = None
        # One load: with a rules topic the live build reads the files too (loading them first as
        # well cost a whole second compile at every start, taking a core from the workers).
        if config.rules.topic:
            from cluster.kafka.live_rules import LiveRules

            self.live = LiveRules(config.kafka, config.rules)
            self.live.catch_up()
            _engine, self.ruleset = self.live.build()
        else:
            self.ruleset = load_rules(config.rules, cache_url=rule_cache_url(config.models))
        self.metrics.ruleset_version = self.ruleset.version
        self.consumer = kafka.consumer(
            config.kafka, f"{config.kafka.group_id}.correlator",
            **{"enable.auto.commit": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
               "queued.max.messages.kbytes": 16384, "client.id": f"sigmaray-{worker}"})
        self.worker = worker
        self.verdicts: Any = None  # opened once the broker answers and the topic exists (`_read_verdicts`)
        self._verdicts_next = 0.0
        self.verdict_log: OrderedDict[str, Verdict] = OrderedDict()
        self.batch_bytes = 1_000_000
        self.floor: dict[Partition, int] = {}
        self._owned: set[Partition] = set()
        self._pending: list[Partition] | None = None
        self._applied: threading.Event | None = None
        self._lock = threading.Lock()
        self.checkpoint = AtLeastOnce(self)

    # -- building ---------------------------------------------------------------------------

    def _build(self) -> Correlator:
        return build_correlator(self.config, self.ruleset, self.criticality)

    def _verdicts_consumer(self, worker: str) -> Any:
        """Reads the whole verdicts topic from its start; never commits (every correlator reads all).
        None while the broker does not answer or the topic does not exist (tried again later)."""
        topic = self.config.correlator.verdicts_topic
        try:
            found = kafka.existing_topics(self.config.kafka).get(topic)
        except KafkaException as error:
            self.metrics.last_error = f"verdicts topic {topic}: {error}"
            return None
        if not found:
            self.metrics.last_error = f"verdicts topic {topic} does not exist: verdicts are not read yet"
            return None
        consumer = kafka.consumer(self.config.kafka, f"{self.config.kafka.group_id}.verdicts-reader",
                                  **{"enable.auto.commit": False, "client.id": f"sigmaray-{worker}-verdicts"})
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(found)])
        return consumer

    # -- assignment (the supervisor releases before it grants) ---------------------------------

    def assign(self, partitions: list[Partition], wait: float = 0) -> bool:
        applied = threading.Event()
        with self._lock:
            self._pending = list(partitions)
            self._applied = applied
        return applied.wait(wait) if wait else False

    def _apply_assignment(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
            applied, self._applied = self._applied, None
        if pending is None:
            return
        try:
            for partition in self._owned - set(pending):
                self.states.release(partition)
                self.floor.pop(partition, None)
            acquired = [p for p in pending if p not in self._owned]
            if acquired:
                for tp in kafka.committed_offsets(self.consumer, [TopicPartition(t, p) for t, p in acquired]):
                    if tp.error is not None:
                        raise KafkaException(tp.error)
                    partition = (tp.topic, tp.partition)
                    self.floor[partition] = tp.offset
                    self.states.assign(partition, tp.offset)
                    self._apply_verdicts_to(partition)
            self._owned = set(pending)
            self.consumer.assign([TopicPartition(t, p, self.states.next_offset[(t, p)]) for t, p in pending])
        except KafkaException:
            with self._lock:
                if self._pending is None:
                    self._pending, self._applied = pending, applied
            raise
        self.metrics.partitions = list(pending)
        if applied is not None:
            applied.set()

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
                    self.metrics.transient_errors += 1
                    self.metrics.last_error = str(kafka_error)
                    time.sleep(0.5)
                    self._restart_from_checkpoints()
                if time.monotonic() >= next_lag:
                    self.update_lag()
                    next_lag = time.monotonic() + 5
        finally:
            self.checkpoint.flush(10)
            try:
                self.states.save_all()  # the last batch was committed: hand over a fresh state
            except Exception as error:
                self.metrics.last_error = f"final checkpoint: {error}"
            self.consumer.close()
            if self.verdicts is not None:
                self.verdicts.close()
            if self.live is not None:
                self.live.close()

    def _restart_from_checkpoints(self) -> None:
        try:
            positions = []
            for partition in self._owned:
                committed = max(self.floor.get(partition, 0), 0)
                positions.append(TopicPartition(*partition, self.states.rebuild(partition, committed)))
            self.consumer.assign(positions)
        except KafkaException as error:
            self.metrics.last_error = str(error)

    def run_once(self) -> int:
        """One batch: consume, correlate and fuse, produce, flush, commit. Returns records consumed."""
        self._apply_assignment()
        self._read_verdicts()
        self._reload_criticality()
        self._swap_rules()
        if not self.metrics.partitions:
            time.sleep(0.05)
            return 0
        processing = self.config.processing
        records: list[InputRecord] = []
        for message in self.consumer.consume(processing.batch_size, processing.batch_timeout_ms / 1000):
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    self.metrics.transient_errors += 1
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            _type, timestamp = message.timestamp()
            records.append(InputRecord(topic, partition, offset, message.value(), message.key(), timestamp))
        if not records:
            return 0
        return len(records) if self.checkpoint.commit(records, time.perf_counter()) else 0

    # -- processing (called by the commit protocol) ---------------------------------------------

    def process(self, records: list[InputRecord]) -> BatchResult:
        result = BatchResult()
        alerts_topic = self.config.correlator.alerts_topic
        for record in records:
            partition = (record.topic, record.partition)
            correlator = self.states.states.get(partition)
            if correlator is None:
                continue  # released between consume and process: its next owner reads it
            replaying = self.states.replaying(partition, record.offset)
            outputs = result.outputs if not replaying else []
            if replaying:
                result.counts["replayed"] += 1
            result.counts["hits" if record.topic == self.repartition_topic else "detections"] += 1
            try:
                data = orjson.loads(record.value) if record.value is not None else None
            except orjson.JSONDecodeError as error:
                if not replaying:
                    result.outputs.append(self._dead_letter(record, f"not JSON: {error}"))
                    result.counts["dead_letter"] += 1
                continue
            if record.topic == self.repartition_topic:
                try:
                    routed = Routed.from_dict(data, (record.key or b"").decode("utf-8", "replace"))
                except ValueError as error:
                    if not replaying:
                        result.outputs.append(self._dead_letter(record, str(error)))
                        result.counts["dead_letter"] += 1
                    continue
                for hit in correlator.correlate(routed):
                    row = correlation_record(hit)
                    outputs.append(OutputRecord(self.detections_topic, str(row["entity"]).encode(),
                                                orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS)))
                    result.counts["correlations"] += 0 if replaying else 1
                continue
            if isinstance(data, dict) and "source" in data and isinstance(data["source"], dict):
                # The evidence of a correlation record names the detection's own input record.
                data["source"].setdefault("timestamp_ms", record.timestamp_ms)
            alerts, routed_hits = correlator.route(data if isinstance(data, dict) else {"schema_version": None},
                                                   partition=record.partition)
            for alert in alerts:
                outputs.append(alert_output(alerts_topic, alert))
                if not replaying:
                    result.counts["alerts"] += 1
                    result.rule_hits[f"P{alert.priority}"] += 1
            for item in routed_hits:
                outputs.append(OutputRecord(self.repartition_topic, item.key.encode(),
                                            orjson.dumps(item.to_dict(), option=orjson.OPT_NON_STR_KEYS)))
                result.counts["hits_out"] += 0 if replaying else 1
        return result

    def _dead_letter(self, record: InputRecord, reason: str) -> OutputRecord:
        self.metrics.dead_letters_by_stage["correlator"] += 1
        return OutputRecord(self.config.kafka.dead_letter_topic, record.key, record.value,
                            (("error", reason.encode()[:1000]), ("stage", b"correlator"),
                             ("source.topic", record.topic.encode()), ("source.partition", str(record.partition).encode()),
                             ("source.offset", str(record.offset).encode())))

    def snapshot_state(self, records: list[InputRecord]) -> None:
        last: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            last[key] = max(last.get(key, -1), record.offset)
        for partition, offset in last.items():
            if partition in self.states.states:
                self.states.processed(partition, offset)
        if self.states.checkpoint_due():
            try:
                self.states.save_all()
            except Exception as error:  # storage down: keep processing; the next save retries
                self.states.errors.append(f"checkpoint save: {type(error).__name__}: {error}")
                self.metrics.last_error = self.states.errors[-1]

    def commit_offsets(self, records: list[InputRecord]) -> None:
        """Commits each partition's next offset, never below what is already committed."""
        last: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            last[key] = max(last.get(key, -1), record.offset)
        kafka.commit_next(self.consumer, last, self.floor)

    def rewind(self, records: list[InputRecord]) -> None:
        """The unit was not delivered: back to each partition's last saved state, replayed to the
        unit's start without outputs (the state must not apply the unit twice)."""
        first: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        for partition, offset in first.items():
            if partition in self.states.states:
                offset = self.states.rebuild(partition, offset)
            self.consumer.seek(TopicPartition(*partition, offset))

    def count(self, result: BatchResult, started: float) -> None:
        counts = result.counts
        metrics = self.metrics
        metrics.batches += 1
        metrics.detections_in += counts["detections"] - min(counts["replayed"], counts["detections"])
        metrics.hits_in += counts["hits"]
        metrics.alerts_out += counts["alerts"]
        metrics.hits_out += counts["hits_out"]
        metrics.correlations_out += counts["correlations"]
        metrics.dead_letters += counts["dead_letter"]
        metrics.replayed += counts["replayed"]
        metrics.alerts_by_priority.update(result.rule_hits)
        metrics.last_batch_ms = (time.perf_counter() - started) * 1000
        metrics.last_error = ""

    # -- verdicts, criticality, rules (between batches) -----------------------------------------

    def _read_verdicts(self) -> None:
        if self.verdicts is None:
            if time.monotonic() < self._verdicts_next:
                return
            self._verdicts_next = time.monotonic() + 10
            self.verdicts = self._verdicts_consumer(self.worker)
            if self.verdicts is None:
                return
        for message in self.verdicts.consume(500, 0):
            if message.error() is not None:
                continue
            try:
                verdict = Verdict.from_dict(orjson.loads(message.value() or b"null"))
            except (ValueError, orjson.JSONDecodeError) as error:
                self.metrics.verdicts[f"invalid: {str(error)[:80]}"] += 1
                continue
            self.verdict_log[verdict.verdict_id] = verdict
            while len(self.verdict_log) > MAX_VERDICTS_KEPT:
                self.verdict_log.popitem(last=False)
            for partition in self._owned:
                self._apply(partition, verdict)

    def _apply_verdicts_to(self, partition: Partition) -> None:
        for verdict in self.verdict_log.values():
            self._apply(partition, verdict)

    def _apply(self, partition: Partition, verdict: Verdict) -> None:
        correlator = self.states.states.get(partition)
        if correlator is None or partition[0] != self.detections_topic:
            return  # alerts (and so verdicts) belong to the owners of entities
        outcome = correlator.apply_verdict(verdict)
        if outcome != "unknown alert":
            self.metrics.verdicts[outcome] += 1

    def _criticality_stamp(self) -> tuple[float, int] | None:
        path = self.config.correlator.criticality
        if not path:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_mtime, stat.st_size

    def _reload_criticality(self) -> None:
        if not self.config.correlator.criticality or time.monotonic() < self._criticality_next:
            return
        self._criticality_next = time.monotonic() + CRITICALITY_CHECK_S
        stamp = self._criticality_stamp()
        if stamp is None or stamp == self._criticality_seen:
            return
        self._criticality_seen = stamp
        criticality, errors = load_criticality_file(self.config)
        if not len(criticality) and errors:  # unreadable: keep the lookup we have
            self._note_criticality(errors)
            return
        self.criticality = criticality
        for correlator in self.states.states.values():
            correlator.fusion.set_criticality(criticality)
        self._note_criticality(errors)

    def _note_criticality(self, errors: list[str]) -> None:
        self.metrics.criticality_entries = len(self.criticality)
        self.metrics.criticality_errors = list(errors)

    def _swap_rules(self) -> None:
        if self.live is None:
            return
        self.live.poll()
        self.live.rebuild_in_background()
        ready = self.live.take_ready()
        if ready is not None:
            _engine, self.ruleset = ready
            self.states.rebuild_all(self._build)
            self.metrics.ruleset_version = self.ruleset.version

    def update_lag(self) -> None:
        lag = kafka.consumer_lag(self.consumer, self.metrics.partitions)
        if lag is not None:  # None: broker unreachable, keep the last known lag
            self.metrics.lag = lag

    def status(self) -> dict[str, Any]:
        return {**self.metrics.to_dict(), "state": self.states.metrics()}
