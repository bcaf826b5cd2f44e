"""`Correlator`: the one code path from detection records to alerts. The cluster's correlator
actors, `sigmaray replay --alerts` and `sigmaray eval` all run it, so what a replay shows is what
the cluster alerts on.

For each detection record (the dicts workers produce to the detections topic):

1. the record is checked once (`check_detection`: what `Detection.from_dict` accepts, the typed,
   versioned detection record the workers write (cluster/processing/records.py): its schema
   version, kind, rule, source, event); a bad one is a counted skip with its reason
   (`stats()["skipped"]`), never an exception;
2. a Sigma detection becomes a `Hit` (rule id, event time, the event as fields, the source
   partition and (topic, partition, offset) as evidence) for the `CorrelationEngine` (a record
   without a usable event time, nor a source timestamp, takes the latest event time seen, as
   FusionEngine does; counted as `time_from_watermark`); each
   `CorrelationHit` it gives goes to `FusionEngine.process_correlation`;
3. the detection goes to `FusionEngine.process`, unless its rule is the base rule of a
   correlation with `generate: false` (`suppressed_rule_ids`): such a rule raises no alert of its
   own, it only counts for its correlations.

Pure: no I/O, no wall clock; `flush()` ends the input (closes open correlation windows and every
open alert), `state_dict()` / `load_state_dict()` checkpoint both engines.

>>> from correlator import Correlator
>>> correlator = Correlator()          # no correlation rules: fusion only
>>> record = {"schema_version": 1, "kind": "sigma", "rule": {"id": "r1", "title": "T", "level": "high", "tags": []},
...           "ruleset_version": "v1", "entity": "ws-01", "event_time": "2026-11-30T10:00:00Z", "scores": {},
...           "model_version": None, "source": {"topic": "t", "partition": 0, "offset": 1}, "event": {}}
>>> [alert.activity for alert in correlator.process(record)], correlator.process({"schema_version": 99})
(['Create'], [])
>>> correlator.stats()["skipped"]
{'unknown detection schema_version 99 (this version reads 1)': 1}
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from correlator.correlations import CorrelationEngine, suppressed_rule_ids
from correlator.criticality import Criticality
from correlator.fusion import HOST_GROUP_FIELDS, Alert, FusionConfig, FusionEngine, event_time_ms
from correlator.records import CorrelationHit, Detection, Hit, Verdict, check_detection, correlation_hit_from_dict
from correlator.routing import Routed, Router

if TYPE_CHECKING:
    from detectors.correlation import CorrelationSpec
    from detectors.loader import Ruleset

__all__ = ["STATE_VERSION", "Correlator", "correlation_entity", "correlation_record"]

STATE_VERSION = 2  # 2: one correlation engine per component, the alert index and applied verdicts
MAX_INDEXED_ALERTS = 200_000  # alerts a verdict can still reach (the least recently updated go first)
MAX_VERDICTS = 100_000  # verdict ids remembered so a verdict read twice applies once


def _time_ms(value: Any) -> int | None:
    """A detection's event time as ms: ISO-8601, a number of ms, or the workers' "<ms>ms" (a
    broker timestamp standing in for a missing event time)."""
    if isinstance(value, str) and value.endswith("ms") and value[:-2].isdigit():
        return int(value[:-2])
    return event_time_ms(value)


class Correlator:
    """Detections in, alerts out: correlation rules, then fusion. See the module docstring."""

    def __init__(self, correlations: Iterable[CorrelationSpec] = (), config: FusionConfig | None = None,
                 criticality: Criticality | None = None, *, rule_names: Mapping[str, str] | None = None,
                 **engine_options: Any) -> None:
        """`correlations`: the correlation rules (a Ruleset's `.correlations`); `rule_names`: rule
        name -> id, for aliases naming rules by name; `engine_options` go to each CorrelationEngine
        (allowed_lateness_ms, max_groups, partitions, ...)."""
        specs = list(correlations)
        self.router = Router(specs, rule_names)
        # One engine per component (a chain, or a correlation alone): a hit routed to a component
        # feeds only that component's correlations, wherever the component is evaluated.
        self.engines = {component.id: CorrelationEngine(component.specs, rule_names=rule_names, **engine_options)
                        for component in self.router.components}
        self.fusion = FusionEngine(config, criticality=criticality)
        self.suppressed = suppressed_rule_ids(specs)
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.watermark: int | None = None  # the latest event time seen
        # alert id -> (rule ids, entity): what a verdict on that alert applies to
        self.alert_index: OrderedDict[str, tuple[tuple[str, ...], str]] = OrderedDict()
        self.verdicts_applied: OrderedDict[str, str] = OrderedDict()  # verdict id -> outcome (idempotence)

    @classmethod
    def from_ruleset(cls, ruleset: Ruleset, config: FusionConfig | None = None,
                     criticality: Criticality | None = None, **engine_options: Any) -> Correlator:
        """A Correlator over the ruleset's correlation rules (aliases may name rules by `name`)."""
        names = {rule.meta.name: rule.meta.id for rule in ruleset.rules if rule.meta.name}
        return cls(ruleset.correlations, config, criticality, rule_names=names, **engine_options)

    # -- the whole path, in one process ----------------------------------------------------------

    def process(self, detection: Mapping[str, Any]) -> list[Alert]:
        """One detection record; the alerts it gives (Create/Update/Close), in order. The three
        stages the cluster runs on separate owners (`route`, `correlate`, `fuse_correlation`),
        run here one after the other."""
        alerts, routed = self.route(detection)
        for item in routed:
            for hit in self.correlate(item):
                alerts += self.fuse_correlation(hit)
        return alerts

    def process_many(self, detections: Iterable[Mapping[str, Any]]) -> list[Alert]:
        out: list[Alert] = []
        for detection in detections:
            out += self.process(detection)
        return out

    def flush(self) -> list[Alert]:
        """End of input: evaluate every open correlation window, then close every open alert."""
        out: list[Alert] = []
        for engine in self.engines.values():
            for result in engine.flush():
                if self._generates(result):
                    out += self.fuse_correlation(result)
        closed = self._indexed(self.fusion.close_all())
        self.counts["alerts"] += len(closed)
        return out + closed

    # -- the stages (the cluster runs each on the owner of its key) -------------------------------

    def route(self, detection: Mapping[str, Any], partition: int | None = None) -> tuple[list[Alert], list[Routed]]:
        """Stage 1, on the owner of the detection's entity: the alerts of the detection itself,
        and its hit for each correlation component it feeds (to `correlate` on the owner of
        `Routed.key`). A `kind: correlation` record (a correlation hit written back keyed by
        its entity, `correlation_record`) is fused here.

        `partition`: the partition the hits are said to come from, for the correlation
        engine's per-partition watermarks (default: the detection's input partition). After a
        repartition the order that holds is that of the routing stage's own partition (one
        producer per partition keeps it), not that of the input partitions, whose records were
        split by entity and interleaved again: the cluster passes its detections partition."""
        self.counts["received"] += 1
        if (type(detection) is dict or isinstance(detection, Mapping)) and detection.get("kind") == "correlation":
            try:
                hit = correlation_hit_from_dict(detection.get("correlation"))
            except ValueError as error:
                self.skipped[str(error)] += 1
                return [], []
            self.counts["correlation"] += 1
            return self.fuse_correlation(hit), []
        try:
            kind = check_detection(detection)
        except ValueError as error:
            self.skipped[str(error)] += 1
            return [], []
        self.counts[kind] += 1
        routed: list[Routed] = []
        rule_id: str = detection["rule"]["id"]
        source: Mapping[str, Any] = detection["source"]
        time = self._time(detection.get("event_time"), source)
        if kind == "sigma" and rule_id in self.router.rule_ids:
            rule_hit = self._hit(source, rule_id, detection["event"], time, partition)
            if rule_hit is None:
                self.counts["no_event_time"] += 1
            else:
                self.counts["correlation_inputs"] += 1
                routed = self.router.route(rule_hit)
        if rule_id in self.suppressed:
            self.counts["suppressed_base"] += 1
            return [], routed
        # checked once, timed once: fusion takes both (without a time, it counts the skip itself)
        fused = self.fusion.fuse(detection, time) if time is not None else self.fusion.process(detection)
        alerts = self._indexed(fused)
        self.counts["alerts"] += len(alerts)
        return alerts, routed

    def correlate(self, routed: Routed) -> list[CorrelationHit]:
        """Stage 2, on the owner of `routed.key`: the correlation hits that raise alerts (steps of
        a chain whose rule says `generate: false` only feed the chain)."""
        engine = self.engines.get(routed.component)
        if engine is None:  # the ruleset changed under a hit in flight
            self.skipped[f"no correlation component {routed.component!r} in this ruleset"] += 1
            return []
        return [hit for hit in engine.process(routed.hit) if self._generates(hit)]

    def fuse_correlation(self, hit: CorrelationHit) -> list[Alert]:
        """Stage 3, on the owner of the correlation's entity: the hit's alerts."""
        alerts = self._indexed(self.fusion.process_correlation(hit))
        self.counts["alerts"] += len(alerts)
        return alerts

    def _generates(self, result: CorrelationHit) -> bool:
        self.counts["correlation_hits"] += 1
        if result.correlation_id in self.suppressed:
            self.counts["suppressed_steps"] += 1
            return False
        return True

    # -- analyst feedback -----------------------------------------------------------------------

    def apply_verdict(self, verdict: Verdict) -> str:
        """An analyst's verdict; returns what it did: `applied`, `recorded` (tp: nothing to tune),
        `duplicate` (this verdict id was applied before) or `unknown alert` (not an alert of this
        correlator: in a cluster every correlator reads every verdict and the owner applies it).
        A false positive (or benign) suppresses the alert's rules on its entity (for
        `suppress_hours`, default `feedback.fp_suppression_ms`) and lowers their weight there
        (`FusionEngine.false_positive`), which later explanations show; with `suppress: false`
        it only lowers the weight."""
        if verdict.verdict_id in self.verdicts_applied:
            return "duplicate"
        target = self.alert_index.get(verdict.alert_id)
        if target is None:
            self.counts["verdicts_unknown_alert"] += 1
            return "unknown alert"
        rule_ids, entity = target
        outcome = "recorded"
        if verdict.verdict in ("fp", "benign"):
            reason = f"{verdict.verdict} verdict on alert {verdict.alert_id}" + (f": {verdict.reason}"
                                                                                 if verdict.reason else "")
            duration = int(verdict.suppress_hours * 3_600_000) if verdict.suppress_hours else None
            for rule_id in rule_ids:
                if verdict.suppress:
                    self.fusion.false_positive(rule_id, entity, reason, duration_ms=duration)
                else:  # keep alerting, with less weight
                    self.fusion.lower_weight(rule_id, entity)
            outcome = "applied"
        self.counts[f"verdicts_{verdict.verdict}"] += 1
        self.verdicts_applied[verdict.verdict_id] = outcome
        while len(self.verdicts_applied) > MAX_VERDICTS:
            self.verdicts_applied.popitem(last=False)
        return outcome

    def _indexed(self, alerts: list[Alert]) -> list[Alert]:
        for alert in alerts:
            self.alert_index[alert.alert_id] = (alert.rule_ids, alert.entity)
            self.alert_index.move_to_end(alert.alert_id)
        while len(self.alert_index) > MAX_INDEXED_ALERTS:
            self.alert_index.popitem(last=False)
        return alerts

    # -- state --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
                "routing": self.router.stats(), "correlations": self._correlation_stats(), "fusion": self.fusion.stats()}

    def _correlation_stats(self) -> dict[str, Any]:
        """The engines' stats summed (per correlation under `correlations`), as one engine gives them."""
        total: dict[str, Any] = {"hits_in": 0, "ignored": 0, "too_late": 0, "duplicates": 0, "too_late_by_rule": Counter(),
                                 "watermark": None, "partitions": 0, "groups": 0, "fired": 0, "evicted": 0,
                                 "expired": 0, "missing_field": self.router.counts["missing_field"],
                                 "correlations": {}, "components": len(self.engines)}
        for engine in self.engines.values():
            stats = engine.stats()
            for name in ("hits_in", "ignored", "too_late", "duplicates", "groups", "fired", "evicted", "expired",
                         "missing_field"):
                total[name] += stats[name]
            total["too_late_by_rule"].update(stats["too_late_by_rule"])
            total["partitions"] = max(total["partitions"], stats["partitions"])
            if stats["watermark"] is not None:
                total["watermark"] = stats["watermark"] if total["watermark"] is None \
                    else min(total["watermark"], stats["watermark"])
            total["correlations"].update(stats["correlations"])
        total["too_late_by_rule"] = dict(total["too_late_by_rule"])
        return total

    def state_dict(self) -> dict[str, Any]:
        """Every engine's state, the alert index, applied verdicts and the counts, as plain
        (JSON-serializable) data."""
        return {"version": STATE_VERSION,
                "correlations": {component: engine.state_dict() for component, engine in self.engines.items()},
                "fusion": self.fusion.state_dict(), "counts": dict(self.counts), "skipped": dict(self.skipped),
                "watermark": self.watermark,
                "alert_index": [[alert_id, list(rules), entity] for alert_id, (rules, entity) in self.alert_index.items()],
                "verdicts": [[verdict_id, outcome] for verdict_id, outcome in self.verdicts_applied.items()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores a `state_dict()`. A correlation component the saved state has but this
        ruleset has not is dropped (counted); a new one starts empty."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown correlator pipeline state version {state.get('version')!r} "
                             f"(this version reads {STATE_VERSION})")
        for component, engine_state in state["correlations"].items():
            engine = self.engines.get(component)
            if engine is None:
                self.counts["state_components_dropped"] += 1
                continue
            engine.load_state_dict(engine_state)
        self.fusion.load_state_dict(state["fusion"])
        self.counts = Counter(state.get("counts", {}))
        self.skipped = Counter(state.get("skipped", {}))
        self.watermark = state.get("watermark")
        self.alert_index = OrderedDict((alert_id, (tuple(rules), entity))
                                       for alert_id, rules, entity in state.get("alert_index", ()))
        self.verdicts_applied = OrderedDict((verdict_id, outcome) for verdict_id, outcome in state.get("verdicts", ()))

    def _time(self, event_time: str | None, source: Mapping[str, Any]) -> int | None:
        """The record's event time (else its source timestamp, else the latest seen), in ms."""
        time = _time_ms(event_time)
        if time is None:
            time = _time_ms(source.get("timestamp_ms"))
        if time is None:
            if self.watermark is not None:
                self.counts["time_from_watermark"] += 1
            return self.watermark
        if self.watermark is None or time > self.watermark:
            self.watermark = time
        return time

    @staticmethod
    def _hit(source: Mapping[str, Any], rule_id: str, event: Mapping[str, Any], time: int | None,
             partition: int | None = None) -> Hit | None:
        if time is None:
            return None
        if partition is None:
            partition = source.get("partition")
            partition = partition if isinstance(partition, int) and not isinstance(partition, bool) else 0
        offset = source.get("offset")
        ref = (str(source.get("topic")), partition, offset) if isinstance(offset, int) else None
        return Hit(rule_id, time, event, partition, ref)


def correlation_record(hit: CorrelationHit) -> dict[str, Any]:
    """A correlation hit as the detections topic carries it back to its entity's owner
    (`kind: correlation`, keyed by `entity`), where `Correlator.route` fuses it."""
    return {"schema_version": Detection.SCHEMA_VERSION, "kind": "correlation", "entity": correlation_entity(hit),
            "event_time": hit.last_event_ms, "correlation": hit.to_dict()}


def correlation_entity(hit: CorrelationHit) -> str:
    """The entity a correlation hit belongs to, as `FusionEngine.process_correlation` reads it:
    the group's host field (HOST_GROUP_FIELDS), else its values joined by `|`."""
    host = next((hit.group[name] for name in HOST_GROUP_FIELDS if hit.group.get(name)), None)
    return host if isinstance(host, str) else "|".join(str(value) for value in hit.group.values())
