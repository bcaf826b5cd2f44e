"""The engine's input and output records: plain values only (they cross process boundaries)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

Ref = tuple[str, int, int]  # evidence: (topic, partition, offset)


@dataclass(frozen=True, slots=True)
class Hit:
    """One match of a detection rule (or of a correlation, when chained) on one event."""

    rule_id: str
    event_time_ms: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    partition: int = 0  # input partition: each has its own watermark
    ref: Ref | None = None


@dataclass(frozen=True, slots=True)
class CorrelationHit:
    """A correlation whose condition was met for one group.

    `value` is what met the condition: the event count, distinct value count, number of referenced
    rules seen (temporal) or matched in order (temporal_ordered), sum, average or percentile.
    `refs` are the contributing hits' evidence (at most the engine's `max_refs`, oldest first);
    `ref_count` is how many hits contributed in all.
    """

    correlation_id: str
    title: str
    level: str | None
    type: str
    name: str | None
    group: dict[str, Any]  # group-by name -> value
    first_event_ms: int
    last_event_ms: int
    value: float
    refs: tuple[Ref, ...]
    ref_count: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "title": self.title,
            "level": self.level,
            "type": self.type,
            "name": self.name,
            "group": dict(self.group),
            "first_event_ms": self.first_event_ms,
            "last_event_ms": self.last_event_ms,
            "value": self.value,
            "refs": [list(r) for r in self.refs],
            "ref_count": self.ref_count,
        }


DETECTION_KINDS = ("sigma", "anomaly")


def _mapping(data: Mapping[str, Any], name: str, optional: bool = False) -> dict[str, Any] | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"detection field {name!r} must be an object, not {type(value).__name__}")
    return dict(value)


def _text(data: Mapping[str, Any], name: str, optional: bool = True) -> str | None:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"detection field {name!r} must be a string, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection record (see the module docstring for the JSON form)."""

    SCHEMA_VERSION: ClassVar[int] = 1

    kind: str
    rule: dict[str, Any]
    ruleset_version: str
    entity: str | None
    event_time: str | None
    scores: dict[str, Any]
    model_version: str | None
    source: dict[str, Any]
    event: dict[str, Any]
    anomaly: dict[str, Any] | None = None
    truncated: dict[str, Any] | None = None

    @property
    def rule_id(self) -> str:
        return str(self.rule["id"])

    def to_dict(self) -> dict[str, Any]:
        """The record as the detections topic carries it (the key order workers have always written)."""
        out: dict[str, Any] = {
            "schema_version": self.SCHEMA_VERSION,
            "kind": self.kind,
            "rule": self.rule,
            "ruleset_version": self.ruleset_version,
            "entity": self.entity,
        }
        if self.anomaly is not None:
            out["anomaly"] = self.anomaly
        out.update(event_time=self.event_time, scores=self.scores, model_version=self.model_version,
                   source=self.source)
        if self.truncated is not None:
            out["truncated"] = self.truncated
        out["event"] = self.event
        return out

    def to_json(self) -> bytes:
        """The record as JSON (non-string keys in the event are written as strings; values orjson
        cannot write raise TypeError: the detector's output cutting replaces them)."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_dict(cls, data: Any) -> Detection:
        """A Detection from its JSON form; ValueError naming the problem for a malformed record or
        an unknown `schema_version`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a detection must be a JSON object, not {type(data).__name__}")
        version = data.get("schema_version", 1)
        if isinstance(version, bool) or version not in (cls.SCHEMA_VERSION, str(cls.SCHEMA_VERSION)):
            raise ValueError(f"unknown detection schema_version {version!r} (this version reads {cls.SCHEMA_VERSION})")
        kind = data.get("kind")
        if kind not in DETECTION_KINDS:
            raise ValueError(f"unknown detection kind {kind!r} (expected one of {', '.join(DETECTION_KINDS)})")
        rule = _mapping(data, "rule")
        assert rule is not None
        if not isinstance(rule.get("id"), str) or not rule["id"]:
            raise ValueError("detection rule has no id")
        source = _mapping(data, "source")
        event = _mapping(data, "event")
        scores = _mapping(data, "scores")
        anomaly = _mapping(data, "anomaly", optional=kind == "sigma")
        ruleset_version = _text(data, "ruleset_version", optional=False)
        assert source is not None and event is not None and scores is not None and ruleset_version is not None
        return cls(kind=kind, rule=rule, ruleset_version=ruleset_version, entity=_text(data, "entity"),
                   event_time=_text(data, "event_time"), scores=scores, model_version=_text(data, "model_version"),
                   source=source, event=event, anomaly=anomaly, truncated=_mapping(data, "truncated", optional=True))
