"""`Correlator`: the one code path from detection records to alerts. The cluster's correlator
actors, `sigmaray replay --alerts` and `sigmaray eval` all run it, so what a replay shows is what
the cluster alerts on.

For each detection record (the dicts workers produce to the detections topic):

1. the record is validated (`Detection.from_dict`, the typed, versioned detection record defined
   here and written by the workers (cluster/processing/records.py): its schema version,
   kind, rule, source, event); a bad one is a counted skip with its reason (`stats()["skipped"]`),
   never an exception;
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

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from correlator.correlations import CorrelationEngine, suppressed_rule_ids
from correlator.criticality import Criticality
from correlator.fusion import Alert, FusionConfig, FusionEngine, event_time_ms
from correlator.records import Detection, Hit

if TYPE_CHECKING:
    from detectors.correlation import CorrelationSpec
    from detectors.loader import Ruleset

__all__ = ["STATE_VERSION", "Correlator"]

STATE_VERSION = 1


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
        name -> id, for aliases naming rules by name; `engine_options` go to CorrelationEngine
        (allowed_lateness_ms, max_groups, partitions, ...)."""
        specs = list(correlations)
        self.correlations = CorrelationEngine(specs, rule_names=rule_names, **engine_options)
        self.fusion = FusionEngine(config, criticality=criticality)
        self.suppressed = suppressed_rule_ids(specs)
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.watermark: int | None = None  # the latest event time seen

    @classmethod
    def from_ruleset(cls, ruleset: Ruleset, config: FusionConfig | None = None,
                     criticality: Criticality | None = None, **engine_options: Any) -> Correlator:
        """A Correlator over the ruleset's correlation rules (aliases may name rules by `name`)."""
        names = {rule.meta.name: rule.meta.id for rule in ruleset.rules if rule.meta.name}
        return cls(ruleset.correlations, config, criticality, rule_names=names, **engine_options)

    def process(self, detection: Mapping[str, Any]) -> list[Alert]:
        """One detection record; the alerts it gives (Create/Update/Close), in order."""
        self.counts["received"] += 1
        try:
            record = Detection.from_dict(detection)
        except ValueError as error:
            self.skipped[str(error)] += 1
            return []
        self.counts[record.kind] += 1
        out: list[Alert] = []
        rule_id = record.rule_id
        time = self._time(record.event_time, record.source)
        if record.kind == "sigma" and rule_id in self.correlations.rule_ids:
            hit = self._hit(record.source, rule_id, record.event, time)
            if hit is None:
                self.counts["no_event_time"] += 1
            else:
                self.counts["correlation_inputs"] += 1
                for result in self.correlations.process(hit):
                    out += self._correlated(result)
        if rule_id in self.suppressed:
            self.counts["suppressed_base"] += 1
        else:
            out = self.fusion.process(detection) + out
        self.counts["alerts"] += len(out)
        return out

    def _correlated(self, result: Any) -> list[Alert]:
        """A correlation hit becomes an alert, unless it is a step of a chain whose own rule says
        `generate: false` (it still fed the chain inside the correlation engine)."""
        self.counts["correlation_hits"] += 1
        if result.correlation_id in self.suppressed:
            self.counts["suppressed_steps"] += 1
            return []
        return self.fusion.process_correlation(result)

    def process_many(self, detections: Iterable[Mapping[str, Any]]) -> list[Alert]:
        out: list[Alert] = []
        for detection in detections:
            out += self.process(detection)
        return out

    def flush(self) -> list[Alert]:
        """End of input: evaluate every open correlation window, then close every open alert."""
        out: list[Alert] = []
        for result in self.correlations.flush():
            out += self._correlated(result)
        out += self.fusion.close_all()
        self.counts["alerts"] += len(out)
        return out

    def stats(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
                "correlations": self.correlations.stats(), "fusion": self.fusion.stats()}

    def state_dict(self) -> dict[str, Any]:
        """Both engines' state and the counts, as plain (JSON-serializable) data."""
        return {"version": STATE_VERSION, "correlations": self.correlations.state_dict(),
                "fusion": self.fusion.state_dict(), "counts": dict(self.counts), "skipped": dict(self.skipped),
                "watermark": self.watermark}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown correlator pipeline state version {state.get('version')!r}")
        self.correlations.load_state_dict(state["correlations"])
        self.fusion.load_state_dict(state["fusion"])
        self.counts = Counter(state.get("counts", {}))
        self.skipped = Counter(state.get("skipped", {}))
        self.watermark = state.get("watermark")

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
    def _hit(source: Mapping[str, Any], rule_id: str, event: Mapping[str, Any], time: int | None) -> Hit | None:
        if time is None:
            return None
        partition = source.get("partition")
        partition = partition if isinstance(partition, int) and not isinstance(partition, bool) else 0
        offset = source.get("offset")
        ref = (str(source.get("topic")), partition, offset) if isinstance(offset, int) else None
        return Hit(rule_id, time, event, partition, ref)
