"""The processing middle of a worker: records in, detection and dead-letter records out.

No Kafka and no Ray here (Quix Streams' rule: I/O at the edges), so the same code runs in a
PartitionWorker, in `sigmaray scan`-like replays and in tests on a plain list of records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from detectors.engine import SigmaEngine
from detectors.ir import RuleMeta


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed record, as plain values (Kafka message objects cannot cross actors)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None
    event: dict[str, Any] | None = None  # already decoded (file sources); value is then unused
    error: str | None = None  # why a source could not decode it (goes to the dead letters)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class EntityScorer(Protocol):
    """The anomaly-model hook: scores of the event's entities, computed before learning."""

    def score(self, event: Mapping[str, Any], event_time: str | None, matches: Sequence[RuleMeta]) -> dict[str, float]:
        ...


class NoScorer:
    """The default hook until the models are wired in: no scores."""

    def score(self, event: Mapping[str, Any], event_time: str | None, matches: Sequence[RuleMeta]) -> dict[str, float]:
        return {}


@dataclass(slots=True)
class BatchResult:
    outputs: list[OutputRecord] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    rule_hits: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class DetectionSettings:
    detections_topic: str = "sigmaray.detections"
    dead_letter_topic: str = "sigmaray.dead-letter"
    entity_fields: tuple[str, ...] = ("Computer", "host", "hostname")
    time_fields: tuple[str, ...] = ("TimeCreated_SystemTime", "UtcTime", "@timestamp", "timestamp")


class Detector:
    """Decode, route and match a batch; returns what to produce. Swappable ruleset."""

    def __init__(
        self,
        engine: SigmaEngine,
        ruleset_version: str,
        settings: DetectionSettings | None = None,
        scorer: EntityScorer | None = None,
    ) -> None:
        self.engine = engine
        self.ruleset_version = ruleset_version
        self.settings = settings or DetectionSettings()
        self.scorer: EntityScorer = scorer or NoScorer()

    def swap(self, engine: SigmaEngine, ruleset_version: str) -> None:
        """Install a new ruleset; callers swap between batches, so no event sees a mix."""
        self.engine = engine
        self.ruleset_version = ruleset_version

    def process(self, records: Sequence[InputRecord]) -> BatchResult:
        result = BatchResult()
        for record in records:
            self._one(record, result)
        return result

    def _one(self, record: InputRecord, result: BatchResult) -> None:
        if record.event is not None:
            event, error = record.event, None
        elif record.error is not None:
            event, error = None, record.error
        else:
            event, error = decode(record.value)
        if event is None:
            result.counts["dead_letter"] += 1
            result.outputs.append(self._dead_letter(record, error or "undecodable"))
            return
        result.counts["events"] += 1
        matches = self.engine.match(event)
        event_time = self._event_time(event, record)
        scores = self.scorer.score(event, event_time, matches)
        entity = self._entity(event)
        for meta in matches:
            result.counts["detections"] += 1
            result.rule_hits[meta.id] += 1
            detection = {
                "rule": meta.to_dict(),
                "ruleset_version": self.ruleset_version,
                "entity": entity,
                "event_time": event_time,
                "scores": scores,
                "source": {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                           "timestamp_ms": record.timestamp_ms},
                "event": event,
            }
            result.outputs.append(
                OutputRecord(
                    self.settings.detections_topic,
                    entity.encode() if entity else None,
                    orjson.dumps(detection, option=orjson.OPT_NON_STR_KEYS, default=str),
                )
            )

    def _entity(self, event: Mapping[str, Any]) -> str | None:
        for name in self.settings.entity_fields:
            value = event.get(name)
            if isinstance(value, str) and value:
                return value.lower()
        return None

    def _event_time(self, event: Mapping[str, Any], record: InputRecord) -> str | None:
        """Event time comes from the record itself, never from the wall clock."""
        for name in self.settings.time_fields:
            value = event.get(name)
            if isinstance(value, str) and value:
                return value
        if record.timestamp_ms is not None:
            return f"{record.timestamp_ms}ms"
        return None

    def _dead_letter(self, record: InputRecord, error: str) -> OutputRecord:
        headers = (
            ("error", error.encode("utf-8", "replace")[:1000]),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        )
        return OutputRecord(self.settings.dead_letter_topic, record.key, record.value or b"", headers)


def decode(value: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object from a record value, or the reason it is not one."""
    if value is None:
        return None, "empty record (tombstone)"
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        return None, f"invalid JSON: {error}"
    if not isinstance(event, dict):
        return None, f"JSON {type(event).__name__} is not an object"
    return event, None
