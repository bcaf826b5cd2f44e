"""The engine's input and output records: plain values only (they cross process boundaries)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
