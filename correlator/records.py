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
        an unknown `schema_version` (`check_detection`)."""
        kind = check_detection(data)
        source = _mapping(data, "source")
        event = _mapping(data, "event")
        scores = _mapping(data, "scores")
        assert source is not None and event is not None and scores is not None
        return cls(kind=kind, rule=dict(data["rule"]), ruleset_version=data["ruleset_version"],
                   entity=data.get("entity"), event_time=data.get("event_time"), scores=scores,
                   model_version=data.get("model_version"), source=source, event=event,
                   anomaly=_mapping(data, "anomaly", optional=True),
                   truncated=_mapping(data, "truncated", optional=True))


_KNOWN_VERSIONS = frozenset({Detection.SCHEMA_VERSION, str(Detection.SCHEMA_VERSION)})


def check_detection(data: Any) -> str:
    """Check a detection record in its JSON form without copying it; its kind, or ValueError
    naming the problem (a malformed record or an unknown `schema_version`). What passes is what
    `Detection.from_dict` accepts: the correlator checks each record once, here, and hands the
    same dict on (copying six mappings per record cost more than the check).

    >>> check_detection({"kind": "sigma", "rule": {"id": "r"}, "ruleset_version": "v", "source": {},
    ...                  "event": {}, "scores": {}})
    'sigma'
    >>> check_detection({"kind": "sigma", "rule": {"id": "r"}, "ruleset_version": "v", "source": None})
    Traceback (most recent call last):
    ...
    ValueError: detection field 'source' must be an object, not NoneType
    """
    if type(data) is not dict and not isinstance(data, Mapping):  # JSON gives dicts: no ABC check for them
        raise ValueError(f"a detection must be a JSON object, not {type(data).__name__}")
    get = data.get
    version = get("schema_version", 1)
    if type(version) is bool or version not in _KNOWN_VERSIONS:
        raise ValueError(f"unknown detection schema_version {version!r} (this version reads {Detection.SCHEMA_VERSION})")
    kind = get("kind")
    if kind not in DETECTION_KINDS:
        raise ValueError(f"unknown detection kind {kind!r} (expected one of {', '.join(DETECTION_KINDS)})")
    for name in ("rule", "source", "event", "scores"):
        value = get(name)
        if type(value) is not dict and not isinstance(value, Mapping):
            raise ValueError(f"detection field {name!r} must be an object, not {type(value).__name__}")
    rule_id = data["rule"].get("id")
    if type(rule_id) is not str or not rule_id:
        raise ValueError("detection rule has no id")
    for name, optional in (("anomaly", kind == "sigma"), ("truncated", True)):
        value = get(name)
        if not (value is None and optional) and not isinstance(value, Mapping):
            raise ValueError(f"detection field {name!r} must be an object, not {type(value).__name__}")
    if type(get("ruleset_version")) is not str:
        raise ValueError(f"detection field 'ruleset_version' must be a string, not "
                         f"{type(get('ruleset_version')).__name__}")
    for name in ("entity", "event_time", "model_version"):
        value = get(name)
        if value is not None and type(value) is not str:
            raise ValueError(f"detection field {name!r} must be a string, not {type(value).__name__}")
    return kind


def correlation_hit_from_dict(data: Any) -> CorrelationHit:
    """A CorrelationHit from its `to_dict()` form (the repartition stage writes it back to the
    detections topic); ValueError naming the problem for a malformed one."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a correlation hit must be a JSON object, not {type(data).__name__}")
    try:
        refs = tuple((str(r[0]), int(r[1]), int(r[2])) for r in data.get("refs") or ())
        group = data["group"]
        if not isinstance(group, Mapping) or not isinstance(data["correlation_id"], str):
            raise TypeError("group must be an object and correlation_id a string")
        return CorrelationHit(correlation_id=data["correlation_id"], title=str(data.get("title") or ""),
                              level=data.get("level"), type=str(data.get("type") or ""), name=data.get("name"),
                              group=dict(group), first_event_ms=int(data["first_event_ms"]),
                              last_event_ms=int(data["last_event_ms"]), value=float(data.get("value") or 0),
                              refs=refs, ref_count=int(data.get("ref_count") or len(refs)))
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise ValueError(f"malformed correlation hit: {type(error).__name__}: {error}") from None


VERDICTS = ("tp", "fp", "benign")  # true positive, false positive, benign (true but expected)
_VERDICT_NAMES = {"tp": "tp", "true_positive": "tp", "true-positive": "tp", "fp": "fp", "false_positive": "fp",
                  "false-positive": "fp", "benign": "benign"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """An analyst's verdict on an alert, as the verdicts topic carries it (JSON, keyed by alert id).

    `verdict_id` makes applying it idempotent (a correlator that reads the topic again after a
    restart applies each verdict once). An `fp` verdict with `suppress` (the default) adds a
    scoped suppression (the alert's rules on its entity, for `suppress_hours`, or the feedback
    default) and lowers those rules' weight on that entity. `time` is when the analyst gave it
    (ISO-8601, written at the edge: the CLI or the console).

    >>> v = Verdict.from_dict({"alert_id": "a1", "verdict": "false_positive", "verdict_id": "x", "reason": "admin"})
    >>> v.verdict, Verdict.from_dict(v.to_dict()) == v
    ('fp', True)
    >>> Verdict.from_dict({"alert_id": "a1", "verdict": "maybe", "verdict_id": "x"})
    Traceback (most recent call last):
    ValueError: unknown verdict 'maybe' (expected one of tp, fp, benign)
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    alert_id: str
    verdict: str  # one of VERDICTS
    verdict_id: str
    reason: str = ""
    analyst: str = ""
    time: str = ""
    suppress: bool = True
    suppress_hours: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.SCHEMA_VERSION, "alert_id": self.alert_id, "verdict": self.verdict,
                "verdict_id": self.verdict_id, "reason": self.reason, "analyst": self.analyst, "time": self.time,
                "suppress": self.suppress, "suppress_hours": self.suppress_hours}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Verdict:
        if not isinstance(data, Mapping):
            raise ValueError(f"a verdict must be a JSON object, not {type(data).__name__}")
        version = data.get("schema_version", 1)
        if isinstance(version, bool) or version not in (cls.SCHEMA_VERSION, str(cls.SCHEMA_VERSION)):
            raise ValueError(f"unknown verdict schema_version {version!r} (this version reads {cls.SCHEMA_VERSION})")
        verdict = _VERDICT_NAMES.get(str(data.get("verdict", "")).lower())
        if verdict is None:
            raise ValueError(f"unknown verdict {data.get('verdict')!r} (expected one of {', '.join(VERDICTS)})")
        for name in ("alert_id", "verdict_id"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"verdict field {name!r} must be a non-empty string")
        hours = data.get("suppress_hours")
        if hours is not None and (isinstance(hours, bool) or not isinstance(hours, int | float) or hours <= 0):
            raise ValueError("verdict field 'suppress_hours' must be a positive number")
        suppress = data.get("suppress", True)
        if not isinstance(suppress, bool):
            raise ValueError("verdict field 'suppress' must be true or false")
        return cls(alert_id=data["alert_id"], verdict=verdict, verdict_id=data["verdict_id"],
                   reason=str(data.get("reason") or ""), analyst=str(data.get("analyst") or ""),
                   time=str(data.get("time") or ""), suppress=suppress,
                   suppress_hours=float(hours) if hours is not None else None)
