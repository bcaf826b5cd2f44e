"""How a unit of records is committed: its outputs, the state that reflects it, its offsets, in a
fixed order (Quix Streams' checkpoint). One protocol, two guarantees:

- `AtLeastOnce`: produce the outputs and wait until the broker has acknowledged every one
  (flush) → the model state now reflects the unit (snapshot, saved when a checkpoint is due) →
  commit the input offsets. A crash between two steps repeats the unit, never loses it.
- `ExactlyOnce`: per partition, one transaction holds the outputs and the next input offset
  (a transactional producer per owned partition, fenced by the next owner) → then the state.
  Readers use `read_committed`; a crash aborts the transaction, and nothing appears twice.

In both, committed offsets never move backwards: records replayed only to rebuild model state
(before the committed offset) commit nothing. An output the broker refuses for good (too large,
invalid) is replaced by a cut-down dead letter (stage `produce`) rather than retried forever.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, Protocol

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from cluster.config import ClusterConfig
from cluster.kafka import client as kafka
from cluster.processing.detector import BatchResult, InputRecord, OutputRecord

Partition = tuple[str, int]


class PartitionLoop(Protocol):
    """What the protocol needs of a loop: the workers' PartitionLoop and the CorrelatorLoop."""

    config: ClusterConfig
    metrics: Any  # worker, pauses, dead_letters(_by_stage), last_error, redelivered_batches, ... counters
    consumer: Any  # confluent_kafka.Consumer
    batch_bytes: int
    floor: dict[Partition, int]

    def process(self, records: list[InputRecord]) -> BatchResult: ...

    def snapshot_state(self, records: list[InputRecord]) -> None: ...

    def commit_offsets(self, records: list[InputRecord]) -> None: ...

    def rewind(self, records: list[InputRecord]) -> None: ...

    def count(self, result: BatchResult, started: float) -> None: ...

# Delivery errors that no retry can fix: the record itself is refused. Such an output is
# replaced by a cut-down dead letter; every other delivery error repeats the unit.
PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.RECORD_LIST_TOO_LARGE,
}
REFUSED_VALUE_BYTES = 64 * 1024  # what a refused output keeps of its value in the dead letter


def checkpoint_for(loop: PartitionLoop) -> Checkpoint:
    """The commit protocol of the loop's `processing.guarantee`."""
    if loop.config.processing.guarantee == "exactly_once":
        return ExactlyOnce(loop)
    return AtLeastOnce(loop)


class Checkpoint(ABC):
    """Commits units of records for a PartitionLoop: outputs, state and offsets, in order."""

    def __init__(self, loop: PartitionLoop) -> None:
        self.loop = loop
        self.refused: list[tuple[OutputRecord, KafkaError]] = []
        self.delivery_errors: list[str] = []

    @abstractmethod
    def commit(self, records: list[InputRecord], started: float) -> bool:
        """Process and commit one unit; False when it was rewound to be processed again."""

    def assigned(self, partitions: list[Partition]) -> None:  # noqa: B027 - optional hook
        """The loop owns these partitions now (between batches)."""

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Waits for what is in flight (at stop)."""

    @abstractmethod
    def resize(self, batch_bytes: int) -> None:
        """New producer batch size (the output topics' limits changed; between batches)."""

    def producer_settings(self) -> dict[str, Any]:
        return {"linger.ms": 5, "batch.size": self.loop.batch_bytes}

    # -- producing, shared by both guarantees --------------------------------------------------

    def produce_to(self, producer: Producer, output: OutputRecord, pause: bool) -> None:
        loop = self.loop
        paused = False
        while True:
            try:
                producer.produce(output.topic, value=output.value, key=output.key, headers=list(output.headers) or None,
                                 on_delivery=lambda error, _message: self._on_delivery(error, output))
                break
            except BufferError:  # max_in_flight outputs unacknowledged: stop fetching until they drain
                if pause and not paused:
                    loop.consumer.pause(loop.consumer.assignment())
                    loop.metrics.pauses += 1
                    paused = True
                producer.poll(0.1)
            except KafkaException as error:  # refused before sending (larger than the client's limit)
                kafka_error = error.args[0] if error.args else None
                if kafka_error is None or kafka_error.code() not in PERMANENT:
                    raise
                self.refused.append((output, kafka_error))
                break
        if paused:
            loop.consumer.resume(loop.consumer.assignment())

    def _on_delivery(self, error: KafkaError | None, output: OutputRecord) -> None:
        if error is None:
            return
        if error.code() in PERMANENT:
            self.refused.append((output, error))
        else:
            self.delivery_errors.append(str(error))

    def refused_letter(self, output: OutputRecord, error: Any) -> OutputRecord:
        """A dead letter for an output the broker would not take: the start of its value and
        where its input came from, so the original can be fetched."""
        metrics = self.loop.metrics
        metrics.dead_letters += 1
        metrics.dead_letters_by_stage["produce"] += 1
        headers = dict(output.headers)
        source: dict[str, Any] = {}
        if "source.topic" not in headers and output.value:
            try:
                source = orjson.loads(output.value).get("source") or {}
            except (orjson.JSONDecodeError, AttributeError):
                source = {}
        value = output.value[:REFUSED_VALUE_BYTES] if output.value is not None else None
        new_headers: list[tuple[str, bytes]] = [
            ("error", f"refused by the broker: {error}".encode()[:1000]),
            ("stage", b"produce"),
            ("output.topic", output.topic.encode()),
            ("original.bytes", str(len(output.value or b"")).encode()),
        ]
        for name in ("source.topic", "source.partition", "source.offset"):
            field = name.split(".", 1)[1]
            if name in headers:
                new_headers.append((name, headers[name]))
            elif field in source:
                new_headers.append((name, str(source[field]).encode()))
        return OutputRecord(self.loop.config.kafka.dead_letter_topic, output.key, value, tuple(new_headers))


class AtLeastOnce(Checkpoint):
    """Outputs flushed → state snapshot → offsets committed. One idempotent producer."""

    def __init__(self, loop: PartitionLoop) -> None:
        super().__init__(loop)
        processing = loop.config.processing
        # Memory stays bounded: at most max_in_flight unacknowledged outputs in the producer
        # (produce pauses fetching while they back up) and a capped prefetch in the consumer.
        self.settings = {"queue.buffering.max.messages": processing.max_in_flight, "queue.buffering.max.kbytes": 65536,
                         "enable.idempotence": True, "client.id": f"sigmaray-{loop.metrics.worker}",
                         **self.producer_settings()}
        self.producer = kafka.producer(loop.config.kafka, **self.settings)

    def commit(self, records: list[InputRecord], started: float) -> bool:
        loop = self.loop
        result = loop.process(records)
        if not self._deliver(result.outputs, records):  # 1. outputs
            return False
        try:
            loop.snapshot_state(records)  # 2. state
            loop.commit_offsets(records)  # 3. offsets
        except KafkaException as error:
            if error.args and error.args[0].fatal():
                raise
            # Outputs are delivered but the offsets are not: process again (at least once).
            loop.rewind(records)
            loop.metrics.redelivered_batches += 1
            loop.metrics.transient_errors += 1
            time.sleep(0.5)
            return False
        loop.count(result, started)
        return True

    def _deliver(self, outputs: list[OutputRecord], records: list[InputRecord]) -> bool:
        """Produce and wait for acknowledgement. Outputs the broker refuses for good are replaced
        by cut-down dead letters; anything else rewinds the unit."""
        loop = self.loop
        pending = outputs
        for _attempt in range(2):  # the second round only carries replacements of refused outputs
            self.refused.clear()
            for output in pending:
                self.produce_to(self.producer, output, pause=True)
                self.producer.poll(0)
            remaining = self.producer.flush(loop.config.processing.flush_timeout_s)
            if remaining or self.delivery_errors:
                # Not acknowledged: rewind to the unit's start so it is processed again.
                loop.rewind(records)
                loop.metrics.last_error = (self.delivery_errors[-1] if self.delivery_errors
                                           else f"{remaining} outputs unacknowledged")
                self.delivery_errors.clear()
                loop.metrics.redelivered_batches += 1
                if remaining:
                    self._replace_producer()
                return False
            if not self.refused:
                return True
            pending = [self.refused_letter(output, error) for output, error in self.refused]
        loop.rewind(records)  # even the cut-down dead letters were refused: a broker problem
        loop.metrics.last_error = f"refused outputs: {self.refused[0][1]}"
        loop.metrics.redelivered_batches += 1
        return False

    def _replace_producer(self) -> None:
        """A producer that could not deliver for a whole flush timeout can be wedged (librdkafka keeps
        asking one broker for its idempotence PID, even across a broker restart): start a fresh one.
        Its unacknowledged outputs are purged; the unit is processed again, so at worst they
        arrive twice (at least once)."""
        old = self.producer
        self.producer = kafka.producer(self.loop.config.kafka, **self.settings)
        self.loop.metrics.producer_restarts += 1
        try:
            old.purge()
            old.flush(0)
        except KafkaException:
            pass  # it is being dropped either way

    def flush(self, timeout: float) -> None:
        self.producer.flush(timeout)

    def resize(self, batch_bytes: int) -> None:
        self.settings["batch.size"] = batch_bytes
        self._replace_producer()


class ExactlyOnce(Checkpoint):
    """Per partition: outputs and offsets in one transaction → state. A transactional producer
    per owned partition; its id is derived from group, topic and partition, so a replacement
    worker's init fences a dead owner's open transaction."""

    def __init__(self, loop: PartitionLoop) -> None:
        super().__init__(loop)
        self.producers: dict[Partition, Producer] = {}

    def assigned(self, partitions: list[Partition]) -> None:
        loop = self.loop
        for key in set(self.producers) - set(partitions):
            self.producers.pop(key).flush(10)
        for topic, partition in partitions:
            if (topic, partition) in self.producers:
                continue
            producer = kafka.producer(
                loop.config.kafka,
                **{"transactional.id": f"sigmaray-{loop.config.kafka.group_id}-{topic}-{partition}",
                   "client.id": f"sigmaray-{loop.metrics.worker}-{partition}", **self.producer_settings()},
            )
            producer.init_transactions(60)
            self.producers[(topic, partition)] = producer

    def commit(self, records: list[InputRecord], started: float) -> bool:
        loop = self.loop
        by_partition: dict[Partition, list[InputRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        ok = True
        for key, batch in by_partition.items():
            result = loop.process(batch)
            end = batch[-1].offset + 1
            if end <= loop.floor.get(key, -1):
                # Only replayed to rebuild model state: nothing to publish and nothing to commit.
                # Committing here would move the committed offset backwards.
                loop.snapshot_state(batch)
                loop.count(result, started)
                continue
            if not self._transaction(key, batch, result.outputs, end):  # 1 + 3. outputs and offsets
                ok = False
                continue
            loop.floor[key] = end
            loop.snapshot_state(batch)  # 2. after the commit: the state never runs ahead of it
            loop.count(result, started)
        return ok

    def _transaction(self, key: Partition, batch: list[InputRecord], outputs: list[OutputRecord], end: int) -> bool:
        """One transaction: the partition's outputs and its next offset. An output the broker
        refuses for good is replaced by a cut-down dead letter and the transaction retried."""
        loop = self.loop
        producer = self.producers[key]
        for _attempt in range(3):
            self.refused.clear()
            try:
                producer.begin_transaction()
                for output in outputs:
                    self.produce_to(producer, output, pause=False)
                offsets = [TopicPartition(key[0], key[1], end)]
                producer.send_offsets_to_transaction(offsets, loop.consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(60)
                return True
            except KafkaException as error:
                kafka_error = error.args[0] if error.args else None
                abortable = kafka_error is not None and (kafka_error.txn_requires_abort() or kafka_error.retriable())
                if not abortable:
                    raise  # fenced or fatal: the supervisor replaces this worker
                try:
                    producer.abort_transaction(30)
                except KafkaException:
                    pass  # the next begin_transaction fails the same way and we come back here
                if self.refused:  # the same outputs, minus what the broker will never take
                    refused = {id(output) for output, _error in self.refused}
                    letters = [self.refused_letter(output, err) for output, err in self.refused]
                    outputs = [o for o in outputs if id(o) not in refused] + letters
                    continue
                loop.metrics.last_error = str(kafka_error)
                break
        loop.rewind(batch)
        loop.metrics.redelivered_batches += 1
        loop.metrics.transient_errors += 1
        time.sleep(0.5)
        return False

    def flush(self, timeout: float) -> None:
        for producer in self.producers.values():
            producer.flush(timeout)

    def resize(self, batch_bytes: int) -> None:
        # Transactional producers are made per assignment; the next ones take the new size.
        pass
