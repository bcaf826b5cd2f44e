"""The processing middle of a worker: records in, detection and dead-letter records out.

No Kafka and no Ray here (Quix Streams' rule: I/O at the edges), so the same code runs in a
PartitionWorker, in `sigmaray scan`-like replays and in tests on a plain list of records.

A record's content never makes `Detector.process` raise: a record that fails at one stage goes
to the dead-letter topic with the stage and why in its headers, and the batch goes on. A worker
that raised on a record would crash, restart, read the same record and crash again.

    decode  not a JSON object (or a tombstone)   the record is dead-lettered
    time    reading its event time raised        dead-lettered; its Sigma detections still go out
    match   the Sigma engine raised              dead-lettered
    score   the entity scorer raised on it       dead-lettered; its Sigma detections still go out
    output  its detection could not be built     dead-lettered

A failure after matching still lets the event's Sigma detections out (without entity scores):
whoever can make the time parser or the scorer fail must not thereby evade every rule.

Each record is counted once, as `events` (processed) or `dead_letter` (with
`dead_letter.<stage>` beside it), so events + dead_letter == records in. Outputs larger than
their topic takes are cut down to fit (cluster/processing/output_size.py), counted as `truncated`.
Each detection is a typed, versioned `Detection` record (cluster/processing/records.py,
`schema_version` 1), the form the correlator reads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from cluster.processing.output_size import IDENTITY_FIELDS, fit_document, fit_value, record_bytes
from cluster.processing.records import Detection
from detectors.engine import SigmaEngine
from detectors.ir import RuleMeta
from models.entities import DEFAULT_ENTITY_FIELDS, normalize
from models.eventtime import parse_time_ms, sane_time_ms

STAGES: tuple[str, ...] = ("decode", "time", "match", "score", "output")
# Stages the partition loop adds: `crash` (the record killed its worker, cluster/state/attempts.py) and
# `produce` (the broker refused an output for good).
MAX_ERROR_BYTES = 1000  # the `error` header: why, not the record again
_CUT: tuple[tuple[str, bytes], ...] = (("truncated", b"true"),)


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
    error_stage: str = "decode"  # the stage named in that dead letter (the loop's `crash`, say)
    recovered: str | None = None  # file sources: why the event was salvaged from a damaged EVTX chunk


@dataclass(frozen=True, slots=True)
class OutputRecord:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (a dead-lettered tombstone stays one)
    headers: tuple[tuple[str, bytes], ...] = ()


class BatchScorer(Protocol):
    """The anomaly-model hook (models.scorer.EntityScorer): entity scores of a batch of events,
    each computed before the model learns it."""

    def score_batch(
        self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None], matched: Sequence[bool]
    ) -> Sequence[Any]:
        ...


@dataclass(slots=True)
class BatchResult:
    """What to produce, and counts: events, dead_letter, dead_letter.<stage>, detections,
    anomalies, shadow_scores, bad_time (an event time that is not a time, replaced by the broker
    timestamp), truncated (outputs cut to their topic's size limit)."""

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
    # Per output topic, the largest record it takes, in bytes (cluster/kafka/topic_limits.py reads
    # them from the broker); a topic not listed, or listed with 0, has no limit.
    max_message_bytes: dict[str, int] = field(default_factory=dict)

    def limit(self, topic: str) -> int:
        return self.max_message_bytes.get(topic, 0)


@dataclass(slots=True)
class _Item:
    """A decoded record on its way through the batch."""

    record: InputRecord
    event: dict[str, Any]
    matches: Sequence[RuleMeta] = ()
    event_time: str | None = None
    time_ms: int | None = None
    entity_scores: dict[str, float] | None = None  # None: not scored
    alerts: Sequence[Any] = ()
    shadow: dict[str, float] | None = None
    failure: tuple[str, str] | None = None  # (stage, why): the record goes to the dead letters


class Detector:
    """Decode, route and match a batch; returns what to produce. Swappable ruleset."""

    def __init__(
        self,
        engine: SigmaEngine,
        ruleset_version: str,
        settings: DetectionSettings | None = None,
        scorer: BatchScorer | None = None,
        quiet_rules: frozenset[str] = frozenset(),
    ) -> None:
        self.engine = engine
        self.ruleset_version = ruleset_version
        self.settings = settings or DetectionSettings()
        self.scorer = scorer
        # Rules that raise no alert of their own (the base rules of `generate: false`
        # correlations, such as "a network logon"): their matches still go out as detections, but
        # the models learn from such events, since they learn from everything not alerted on.
        self.quiet_rules = quiet_rules
        self._keep: dict[str, frozenset[str]] = {}  # rule id ("" for anomalies) -> the event fields a cut keeps
        self._keep_engine: SigmaEngine | None = None

    def swap(self, engine: SigmaEngine, ruleset_version: str, quiet_rules: frozenset[str] = frozenset()) -> None:
        """Install a new ruleset; callers swap between batches, so no event sees a mix."""
        self.engine = engine
        self.ruleset_version = ruleset_version
        self.quiet_rules = quiet_rules

    def _alerting(self, item: _Item) -> bool:
        """Whether a rule that alerts matched the event (the models do not learn from it)."""
        if not self.quiet_rules:
            return bool(item.matches)
        return any(meta.id not in self.quiet_rules for meta in item.matches)

    def process(self, records: Sequence[InputRecord], scorer: BatchScorer | None = None) -> BatchResult:
        """`scorer` overrides the detector's own (a worker keeps one per owned partition)."""
        scorer = scorer if scorer is not None else self.scorer
        result = BatchResult()
        items: list[_Item] = []
        for record in records:
            event, error = _decoded(record)
            if event is None:
                stage = record.error_stage if record.error is not None and record.event is None else "decode"
                self._dead_letter(result, record, None, stage, error or "undecodable")
                continue
            item = _Item(record, event)
            try:
                item.event_time, item.time_ms, bad = self._event_time(event, record)
                if bad:
                    result.counts["bad_time"] += 1
            except Exception as error:  # noqa: BLE001 - any failure of one record is that record's
                item.failure = ("time", _why(error))
            try:
                item.matches = self.engine.match(event)
            except Exception as error:  # noqa: BLE001
                self._dead_letter(result, record, event, "match", _why(error))
                continue
            items.append(item)
        if scorer is not None:
            self._score(scorer, [item for item in items if item.failure is None])
        counts, hits = result.counts, result.rule_hits
        shadow_topic = self.settings.shadow_topic
        for item in items:
            if item.matches or item.alerts or (item.shadow and shadow_topic):
                try:
                    outputs, truncated = self._outputs(item, scorer)
                except Exception as error:  # noqa: BLE001 - all of the record's outputs, or none
                    if item.failure is None:
                        item.failure = ("output", _why(error))
                else:
                    result.outputs.extend(outputs)
                    if item.matches:
                        counts["detections"] += len(item.matches)
                        hits.update(meta.id for meta in item.matches)
                    if item.alerts:
                        counts["anomalies"] += len(item.alerts)
                        hits.update(f"anomaly:{scored.entity_type}" for scored in item.alerts)
                    if item.shadow and shadow_topic:
                        counts["shadow_scores"] += 1
                    if truncated:
                        counts["truncated"] += truncated
            if item.failure is None:
                counts["events"] += 1
            else:
                self._dead_letter(result, item.record, item.event, *item.failure)
        return result

    def _score(self, scorer: BatchScorer, items: list[_Item]) -> None:
        if not items:
            return
        try:
            scored = scorer.score_batch([i.event for i in items], [i.time_ms for i in items],
                                        [self._alerting(i) for i in items])
            if len(scored) != len(items):
                raise ValueError(f"the scorer returned {len(scored)} scores for {len(items)} events")
        except Exception:  # noqa: BLE001 - one event's fault, most likely: find it
            # One at a time, to dead-letter only the culprit(s) and keep the others' scores.
            # Caveat: the failed call may have changed the scorer's state before it raised
            # (entities touched, features learned for the events before the culprit), so those
            # events are learned twice now, and this batch's scores can differ slightly from a
            # run without the failure. Checkpointing the scorer before every batch to avoid it
            # would cost every batch for a failure that should not happen.
            for item in items:
                try:
                    _read_scores(item, scorer.score_batch([item.event], [item.time_ms], [self._alerting(item)])[0])
                except Exception as error:  # noqa: BLE001
                    item.failure = ("score", _why(error))
            return
        for item, scores in zip(items, scored, strict=True):
            try:
                _read_scores(item, scores)
            except Exception as error:  # noqa: BLE001
                item.failure = ("score", _why(error))

    def _outputs(self, item: _Item, scorer: Any) -> tuple[list[OutputRecord], int]:
        """The record's detections, anomaly detections and shadow scores, and how many of them
        had to be cut to fit their topic."""
        record, event = item.record, item.event
        entity = self._entity(event)
        # Where the original is: a detection whose event was cut points to the whole one.
        source = {"topic": record.topic, "partition": record.partition, "offset": record.offset,
                  "timestamp_ms": record.timestamp_ms}
        if record.recovered:  # the evidence may hold a damaged byte: the analyst is told (as `scan` does)
            source["recovered"] = record.recovered
        model_version = getattr(scorer, "model_label", None) if item.entity_scores is not None else None
        scores = item.entity_scores if item.entity_scores is not None else {}
        outputs: list[OutputRecord] = []
        for meta in item.matches:
            detection = Detection(kind="sigma", rule=meta.to_dict(), ruleset_version=self.ruleset_version,
                                  entity=entity, event_time=item.event_time, scores=scores,
                                  model_version=model_version, source=source, event=event)
            outputs.append(self._fitted(self.settings.detections_topic, entity, detection.to_dict(),
                                        self._fields_kept(meta)))
        for scored in item.alerts:
            alert_entity = scored.entity.split(":", 1)[1] if scored.entity_type == "host" else entity
            detection = Detection(
                kind="anomaly",
                rule={"id": f"sigmaray-anomaly-{scored.entity_type}",
                      "title": f"Unusual activity of {scored.entity_type} {scored.entity.split(':', 1)[1]}",
                      "level": "high" if scored.score >= 0.999 else "medium", "tags": []},
                ruleset_version=self.ruleset_version,
                entity=alert_entity,
                anomaly={"entity": scored.entity, "entity_type": scored.entity_type, "score": round(scored.score, 6),
                         "raw": scored.raw, "reasons": list(scored.reasons),
                         "features": {k: round(v, 4) for k, v in scored.features.items()}},
                event_time=item.event_time,
                scores=scores,
                model_version=model_version,
                source=source,
                event=event,
            )
            outputs.append(self._fitted(self.settings.detections_topic, alert_entity, detection.to_dict(),
                                        self._fields_kept(None)))
        if item.shadow and self.settings.shadow_topic:
            shadow = {"event_time": item.event_time, "entity": entity, "scores": item.shadow,
                      "active": scores, "model_version": getattr(scorer, "shadow_label", None),
                      "source": source}
            outputs.append(self._fitted(self.settings.shadow_topic, entity, shadow, ()))
        return outputs, sum(1 for output in outputs if output.headers == _CUT)

    def _fitted(self, topic: str, entity: str | None, document: dict[str, Any],
                keep: frozenset[str] | tuple[str, ...]) -> OutputRecord:
        """`document` as a record of `topic`, cut down to the topic's limit if it is over."""
        # Sized as if with the `truncated` header, which a cut record carries (as a cut dead letter
        # does), so a consumer can tell a cut record without parsing it.
        fitted = fit_document(document, entity.encode("utf-8", "replace") if entity else None,
                              self.settings.limit(topic), keep, _CUT)
        return OutputRecord(topic, fitted.key, fitted.value, _CUT if fitted.truncated is not None else ())

    def _fields_kept(self, meta: RuleMeta | None) -> frozenset[str]:
        """The event fields a cut keeps longest: identity, time, entities, and those the rule
        reads (so the detection still shows why it fired). Built once per ruleset."""
        if self._keep_engine is not self.engine:
            rule_fields: dict[str, set[str]] = {}
            for rule in self.engine.rules:
                rule_fields.setdefault(rule.meta.id, set()).update(rule.fields)
            common = frozenset((*IDENTITY_FIELDS, *self.settings.time_fields, *self.settings.entity_fields,
                                *(f for names in DEFAULT_ENTITY_FIELDS.values() for f in names)))
            self._keep = {rule: common | fields for rule, fields in rule_fields.items()}
            self._keep[""] = common
            self._keep_engine = self.engine
        return self._keep.get(meta.id if meta is not None else "", self._keep[""])

    def _entity(self, event: Mapping[str, Any]) -> str | None:
        """The host, named as the models name it (WS-01.corp.example -> ws-01), so Sigma and
        anomaly detections of one host share a key on the detections topic."""
        for name in self.settings.entity_fields:
            value = event.get(name)
            if isinstance(value, str) and value:
                return normalize("host", value)
        return None

    def _event_time(self, event: Mapping[str, Any], record: InputRecord) -> tuple[str | None, int | None, bool]:
        """(the time as the detection shows it, as ms, whether the event carried a time that is
        not one). Event time comes from the record itself, never from the wall clock: the first
        time field that reads as a time between 1970 and 2500, else the broker timestamp. An
        event whose time is garbage is still matched (dropping it would let anyone who can
        corrupt UtcTime evade every rule); it is counted as bad_time."""
        bad = False
        for name in self.settings.time_fields:
            value = event.get(name)
            if isinstance(value, str) and value:
                parsed = parse_time_ms(value)
                if parsed is not None:
                    return value, parsed, bad
                bad = True
        if record.timestamp_ms is not None:
            broker = sane_time_ms(record.timestamp_ms)
            if broker is not None:
                return f"{broker}ms", broker, bad
            bad = True
        return None, None, bad

    def _dead_letter(self, result: BatchResult, record: InputRecord, event: Mapping[str, Any] | None, stage: str,
                     error: str) -> None:
        """The record as it came (a tombstone stays a null value), with why, at which stage and
        from where; cut to the dead-letter topic's limit, keeping the prefix of the value."""
        headers = [
            ("error", _cut_utf8(error, MAX_ERROR_BYTES)),
            ("stage", stage.encode()),
            ("source.topic", record.topic.encode("utf-8", "replace")),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        value = record.value
        if value is None and event is not None:  # a file source's record: its event is the value
            try:
                value = orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS, default=str)
            except TypeError:
                value = None
        key = record.key
        limit = self.settings.limit(self.settings.dead_letter_topic)
        if limit and record_bytes(key, value, headers) > limit:
            headers += [("truncated", b"true"), ("original.bytes", str(len(value or b"")).encode())]
            key, value, fitted, _ = fit_value(key, value, headers, limit)
            headers = list(fitted)
            result.counts["truncated"] += 1
        result.outputs.append(OutputRecord(self.settings.dead_letter_topic, key, value, tuple(headers)))
        result.counts["dead_letter"] += 1
        result.counts[f"dead_letter.{stage}"] += 1


def _decoded(record: InputRecord) -> tuple[dict[str, Any] | None, str | None]:
    if record.event is not None:
        if isinstance(record.event, dict):
            return record.event, None
        return None, f"event is a {type(record.event).__name__}, not an object"
    if record.error is not None:
        return None, record.error
    try:
        return decode(record.value)
    except Exception as error:  # noqa: BLE001 - a value decode() does not expect (not bytes)
        return None, _why(error)


def _read_scores(item: _Item, scores: Any) -> None:
    """An event's scores read out now, so a scorer's failure on them is a `score` failure (and
    all of them or none: a record dead-lettered at `score` goes out unscored)."""
    entity_scores, alerts, shadow = scores.as_dict(), scores.alerts(), scores.shadow
    item.entity_scores, item.alerts, item.shadow = entity_scores, alerts, shadow


def _why(error: BaseException) -> str:
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:  # noqa: BLE001 - an exception whose str() raises
        return type(error).__name__


def _cut_utf8(text: str, limit: int) -> bytes:
    """At most `limit` bytes of UTF-8, never half a character."""
    return text.encode("utf-8", "replace")[:limit].decode("utf-8", "ignore").encode()


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
