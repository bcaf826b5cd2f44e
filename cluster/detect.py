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
from models.entities import normalize
from models.eventtime import parse_time_ms


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


class BatchScorer(Protocol):
    """The anomaly-model hook (models.scorer.EntityScorer): entity scores of a batch of events,
    each computed before the model learns it."""

    def score_batch(
        self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None], matched: Sequence[bool]
    ) -> list[Any]:
        ...


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
    shadow_topic: str = ""  # where a shadow model's scores go ("" = not published)


class Detector:
    """Decode, route and match a batch; returns what to produce. Swappable ruleset."""

    def __init__(
        self,
        engine: SigmaEngine,
        ruleset_version: str,
        settings: DetectionSettings | None = None,
        scorer: BatchScorer | None = None,
    ) -> None:
        self.engine = engine
        self.ruleset_version = ruleset_version
        self.settings = settings or DetectionSettings()
        self.scorer = scorer

    def swap(self, engine: SigmaEngine, ruleset_version: str) -> None:
        """Install a new ruleset; callers swap between batches, so no event sees a mix."""
        self.engine = engine
        self.ruleset_version = ruleset_version

    def process(self, records: Sequence[InputRecord], scorer: BatchScorer | None = None) -> BatchResult:
        """`scorer` overrides the detector's own (a worker keeps one per owned partition)."""
        scorer = scorer if scorer is not None else self.scorer
        result = BatchResult()
        decoded: list[tuple[InputRecord, dict[str, Any], list[RuleMeta], str | None]] = []
        for record in records:
            if record.event is not None:
                event, error = record.event, None
            elif record.error is not None:
                event, error = None, record.error
            else:
                event, error = decode(record.value)
            if event is None:
                result.counts["dead_letter"] += 1
                result.outputs.append(self._dead_letter(record, error or "undecodable"))
                continue
            result.counts["events"] += 1
            decoded.append((record, event, self.engine.match(event), self._event_time(event, record)))
        scored: list[Any] = [None] * len(decoded)
        if scorer is not None and decoded:
            scored = scorer.score_batch(
                [d[1] for d in decoded], [parse_time_ms(d[3]) for d in decoded], [bool(d[2]) for d in decoded]
            )
        for (record, event, matches, event_time), scores in zip(decoded, scored):
            self._outputs(record, event, matches, event_time, scores, result, scorer)
        return result

    def _outputs(
        self, record: InputRecord, event: dict[str, Any], matches: list[RuleMeta], event_time: str | None,
        scores: Any, result: BatchResult, scorer: Any = None,
    ) -> None:
        entity = self._entity(event)
        source = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                  "timestamp_ms": record.timestamp_ms}
        entity_scores = scores.as_dict() if scores is not None else {}
        for meta in matches:
            result.counts["detections"] += 1
            result.rule_hits[meta.id] += 1
            detection = {
                "kind": "sigma",
                "rule": meta.to_dict(),
                "ruleset_version": self.ruleset_version,
                "entity": entity,
                "event_time": event_time,
                "scores": entity_scores,
                "model_version": getattr(scorer, "model_label", None),
                "source": source,
                "event": event,
            }
            result.outputs.append(self._detection(entity, detection))
        if scores is None:
            return
        for scored in scores.alerts():
            result.counts["anomalies"] += 1
            result.rule_hits[f"anomaly:{scored.entity_type}"] += 1
            detection = {
                "kind": "anomaly",
                "rule": {"id": f"sigmaray-anomaly-{scored.entity_type}",
                         "title": f"Unusual activity of {scored.entity_type} {scored.entity.split(':', 1)[1]}",
                         "level": "high" if scored.score >= 0.999 else "medium", "tags": []},
                "ruleset_version": self.ruleset_version,
                "entity": scored.entity.split(":", 1)[1] if scored.entity_type == "host" else entity,
                "anomaly": {"entity": scored.entity, "entity_type": scored.entity_type, "score": round(scored.score, 6),
                            "raw": scored.raw, "reasons": list(scored.reasons),
                            "features": {k: round(v, 4) for k, v in scored.features.items()}},
                "event_time": event_time,
                "scores": entity_scores,
                "model_version": getattr(scorer, "model_label", None),
                "source": source,
                "event": event,
            }
            result.outputs.append(self._detection(detection["entity"], detection))
        if scores.shadow and self.settings.shadow_topic:
            result.counts["shadow_scores"] += 1
            shadow = {"event_time": event_time, "entity": entity, "scores": scores.shadow, "active": entity_scores,
                      "model_version": getattr(scorer, "shadow_label", None), "source": source}
            result.outputs.append(OutputRecord(self.settings.shadow_topic, entity.encode() if entity else None,
                                               orjson.dumps(shadow)))

    def _detection(self, entity: str | None, detection: dict[str, Any]) -> OutputRecord:
        return OutputRecord(
            self.settings.detections_topic,
            entity.encode() if entity else None,
            orjson.dumps(detection, option=orjson.OPT_NON_STR_KEYS, default=str),
        )

    def _entity(self, event: Mapping[str, Any]) -> str | None:
        """The host, named as the models name it (WS-01.corp.example -> ws-01), so Sigma and
        anomaly detections of one host share a key on the detections topic."""
        for name in self.settings.entity_fields:
            value = event.get(name)
            if isinstance(value, str) and value:
                return normalize("host", value)
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
