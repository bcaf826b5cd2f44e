"""The evidence events of an alert, fetched from Kafka by (topic, partition, offset) when its page
is opened: bounded in number and in time, so a slow or missing broker costs at most `timeout_s`.

The events are attacker-controlled: they are returned as data (decoded JSON, else text) for the
pages to escape, and cut to `max_bytes` each.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from cluster.config import ClusterConfig
from cluster.console.redact import Redactor
from cluster.kafka import client as kafka_client

__all__ = ["EvidenceEvent", "KafkaEvidence"]

Ref = tuple[str, int, int]
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # Kafka's rule; a replayed file's path is not a topic


@dataclass(frozen=True, slots=True)
class EvidenceEvent:
    topic: str
    partition: int
    offset: int
    event: Any = None  # the decoded JSON value (usually an object), or the text of a non-JSON one
    timestamp_ms: int | None = None
    error: str = ""  # why it is not shown: not a topic, not found in time, deleted by retention
    truncated: bool = False

    @property
    def ref(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def decode(value: bytes | None, max_bytes: int) -> tuple[Any, bool]:
    """(the value as JSON, else as text; whether it was cut)."""
    if value is None:
        return None, False
    if len(value) <= max_bytes:
        try:
            return orjson.loads(value), False
        except orjson.JSONDecodeError:
            return value.decode("utf-8", "replace"), False
    return value[:max_bytes].decode("utf-8", "replace"), True


class KafkaEvidence:
    """`fetch(refs)`: the input records, read with a consumer that joins no group and commits nothing."""

    def __init__(self, config: ClusterConfig, limit: int = 20, timeout_s: float = 5.0, max_bytes: int = 65536) -> None:
        self.config = config
        self.limit = limit
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.redact = Redactor.from_config(config)

    def fetch(self, refs: list[Ref]) -> list[EvidenceEvent]:
        refs = list(dict.fromkeys(refs))[: self.limit]
        out: dict[Ref, EvidenceEvent] = {}
        wanted = [ref for ref in refs if TOPIC_NAME.fullmatch(ref[0]) and ref[1] >= 0 and ref[2] >= 0]
        for ref in refs:
            if ref not in wanted:
                out[ref] = EvidenceEvent(*ref, error="not a Kafka record (a replayed file?)")
        if wanted:
            out.update(self._read(wanted))
        return [out.get(ref) or EvidenceEvent(*ref, error=f"not read within {self.timeout_s:g} s") for ref in refs]

    def _read(self, refs: list[Ref]) -> dict[Ref, EvidenceEvent]:
        found: dict[Ref, EvidenceEvent] = {}
        deadline = time.monotonic() + self.timeout_s
        try:
            consumer = kafka_client.consumer(self.config.kafka, f"sigmaray-console-evidence-{uuid.uuid4().hex[:12]}",
                                             **{"enable.auto.commit": False})
        except Exception as error:  # noqa: BLE001 - shown on the page instead of the events
            return {ref: EvidenceEvent(*ref, error=self.redact(f"no consumer: {error}")) for ref in refs}
        try:
            for ref in refs:  # one at a time: refs of one partition can be far apart
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                found[ref] = self._one(consumer, ref, left)
        finally:
            consumer.close()
        return found

    def _one(self, consumer: Any, ref: Ref, left: float) -> EvidenceEvent:
        topic, partition, offset = ref
        deadline = time.monotonic() + left
        try:  # the partition's first and next offsets say at once whether the record can be read
            low, high = consumer.get_watermark_offsets(kafka_client.TopicPartition(topic, partition), timeout=left)
        except Exception as error:  # noqa: BLE001 - KafkaException: no such topic or partition, broker down
            return EvidenceEvent(*ref, error=self.redact(f"cannot read {topic}[{partition}]: {error}"))
        if offset < low:
            return EvidenceEvent(*ref, error=f"deleted by retention (the partition now starts at offset {low})")
        if offset >= high:
            return EvidenceEvent(*ref, error=f"no such record (the partition ends at offset {high})")
        consumer.assign([kafka_client.TopicPartition(topic, partition, offset)])
        while (remaining := deadline - time.monotonic()) > 0:
            message = consumer.poll(min(remaining, 0.5))
            if message is None:
                continue
            failure = message.error()
            if failure is not None:
                if not failure.retriable():
                    return EvidenceEvent(*ref, error=self.redact(failure.str()))
                continue
            if message.topic() != topic or message.partition() != partition or message.offset() < offset:
                continue
            if message.offset() != offset:  # compacted or deleted between the two looks
                return EvidenceEvent(*ref, error=f"no record at this offset (the next is {message.offset()})")
            value, cut = decode(message.value(), self.max_bytes)
            _, stamp = message.timestamp()
            return EvidenceEvent(*ref, event=value, timestamp_ms=stamp if stamp > 0 else None, truncated=cut)
        return EvidenceEvent(*ref, error=f"not read within {self.timeout_s:g} s")
