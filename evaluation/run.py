"""One evaluation run: events files, in event-time order, through the cluster's own code.

1. The files are merged in event-time order into one JSON-lines file (each merged line remembers
   its file and line of origin), because the cluster sees a stream in time order and so must the
   replay.
2. The merged file goes through `cluster.sources.replay.replay_files`: the workers' Detector and
   EntityScorer, and with its `alerts` callback one `correlator.Correlator` (the fused mode, with
   the anomaly scores and the criticality table). Nothing here matches rules or fuses alerts.
3. The ablations see the same detection records, in the same order, through their own
   `Correlator` built the way replay_files builds its one (`Correlator.from_ruleset`):
   *without criticality* gets them as they are; *without anomaly scores* gets them as a replay
   with the models switched off writes them (no `scores`, no anomaly detections).
4. The Sigma-only modes are the Sigma detections themselves (kind `sigma`).

Every alert keeps its evidence refs mapped back to (file, line) of origin, where the labels
decide whether it is a true positive.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from cluster.build import load_rules
from cluster.config import ClusterConfig, RulesConfig, config_from_dict
from cluster.processing.detector import OutputRecord
from cluster.sources.replay import replay_files
from correlator.criticality import Criticality
from correlator.fusion import Alert, FusionConfig, event_time_ms
from correlator.pipeline import Correlator
from correlator.settings import fusion_config_from_dict
from detectors.loader import Ruleset
from evaluation.labels import Labels
from models.eventtime import event_time_ms as record_time_ms

__all__ = ["AlertUnit", "FUSED_MODES", "MergedEvents", "RunResult", "SigmaHit", "merge_events", "run_files"]

FUSED_MODES = ("fused", "fused without anomaly scores", "fused without criticality")
EVIDENCE_REFS = 1_000_000
Origin = tuple[str, int]  # (events file as given, 1-based line)


@dataclass(slots=True)
class MergedEvents:
    path: str
    origins: list[Origin]  # merged line n (1-based) came from origins[n - 1]
    first_ms: int | None
    last_ms: int | None
    incident_first_ms: dict[str, int] = field(default_factory=dict)
    incident_events: Counter[str] = field(default_factory=Counter)

    def origin(self, offset: Any) -> Origin | None:
        if isinstance(offset, int) and 1 <= offset <= len(self.origins):
            return self.origins[offset - 1]
        return None


def evtx_as_jsonl(path: str, out_path: str) -> list[int]:
    """An EVTX file as JSON lines (flattened as the replay reads it; a record that cannot be read
    becomes a line that is not JSON, so the replay dead-letters it as it would the record); the
    record position of each line, for the labels."""
    from cluster.sources.files import read_events

    positions: list[int] = []
    with open(out_path, "wb") as out:
        for record in read_events(path):
            if record.event is not None:
                out.write(orjson.dumps(record.event) + b"\n")
            else:
                out.write(b"unreadable EVTX record: " + str(record.error).encode("utf-8", "replace") + b"\n")
            positions.append(record.line)
    return positions


def merge_events(files: Sequence[str], out_path: str, labels: Labels | None = None) -> MergedEvents:
    """Write the records of `files` to `out_path` in event-time order (a stable merge: equal times
    keep file and line order; a line without a readable time keeps the time of the line before it
    in its file, so bad records still reach the replay and are dead-lettered there). EVTX files
    are read as the replay reads them, and their lines are their record positions."""
    keys: list[tuple[int, int, int, int]] = []  # (time, file index, line, byte offset)
    incident_first: dict[str, int] = {}
    incident_events: Counter[str] = Counter()
    names = list(files)
    sources = list(files)
    positions: dict[int, list[int]] = {}
    for index, name in enumerate(names):
        if Path(name).suffix.lower() == ".evtx":
            sources[index] = f"{out_path}.{index}.jsonl"
            positions[index] = evtx_as_jsonl(name, sources[index])
    for index, source in enumerate(sources):
        name = names[index]
        mapped = positions.get(index)
        previous = 0
        with open(source, "rb") as f:
            offset, number = 0, 0
            for raw in f:
                number += 1
                line = mapped[number - 1] if mapped is not None else number
                if raw.strip():
                    time = None
                    try:
                        event = orjson.loads(raw)
                        if isinstance(event, dict):
                            time = record_time_ms(event)
                    except orjson.JSONDecodeError:
                        pass
                    time = previous if time is None else time
                    previous = time
                    keys.append((time, index, line, offset))
                    if labels is not None:
                        incident = labels.incident_at(name, line)
                        if incident is not None:
                            incident_events[incident] += 1
                            if incident not in incident_first or time < incident_first[incident]:
                                incident_first[incident] = time
                offset += len(raw)
    keys.sort()
    handles = [open(source, "rb") for source in sources]  # closed below, all at once
    try:
        with open(out_path, "wb") as out:
            for _, index, _, offset in keys:
                handle = handles[index]
                handle.seek(offset)
                raw = handle.readline()
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
    finally:
        for handle in handles:
            handle.close()
    origins = [(names[index], line) for _, index, line, _ in keys]
    return MergedEvents(out_path, origins, keys[0][0] if keys else None, keys[-1][0] if keys else None,
                        incident_first, incident_events)


@dataclass(frozen=True, slots=True)
class SigmaHit:
    rule_id: str
    title: str
    level: str
    entity: str
    time_ms: int
    origin: Origin | None


@dataclass(slots=True)
class AlertUnit:
    """One alert as an analyst sees it (all its Create/Update/Close findings together)."""

    alert_id: str
    entity: str
    rule_ids: tuple[str, ...]
    levels: tuple[str, ...]
    first_ms: int
    priority: int  # the most urgent priority it was emitted with, 1..4
    risk: float  # the highest risk it was emitted with (ranks alerts of one priority)
    origins: list[Origin] = field(default_factory=list)
    incident_ms: dict[str, int] = field(default_factory=dict)  # incident -> time of the first finding showing it


@dataclass(slots=True)
class RunResult:
    merged: MergedEvents
    sigma: list[SigmaHit]
    fused: dict[str, list[AlertUnit]]  # FUSED_MODES -> alerts
    risk_points: list[tuple[int, str, float]]  # fused mode: (time, host, host risk) at each emitted finding
    counts: dict[str, int]
    dead: list[str]
    seconds: float
    ruleset_version: str
    model: str


_RULESETS: dict[str, Ruleset] = {}


def _ruleset(rules: RulesConfig) -> Ruleset:
    """The ruleset `replay_files` builds from the same settings, loaded once per process (SigmaHQ
    takes seconds), for the ablation correlators."""
    key = repr(rules)
    if key not in _RULESETS:
        if len(_RULESETS) >= 4:
            _RULESETS.clear()
        _RULESETS[key] = load_rules(rules)
    return _RULESETS[key]


class _Units:
    """Folds a correlator's findings into AlertUnits."""

    def __init__(self, merged: MergedEvents, labels: Labels, points: list[tuple[int, str, float]] | None = None) -> None:
        self.merged = merged
        self.labels = labels
        self.units: dict[str, AlertUnit] = {}
        self.points = points

    def add(self, alert: Alert) -> None:
        explanation = alert.explanation or {}
        unit = self.units.get(alert.alert_id)
        risk = explanation.get("risk") or {}
        used = float(risk.get("used") or 0.0)
        if unit is None:
            first = explanation.get("first_seen_ms")
            levels = tuple(str(rule.get("level") or "") for rule in explanation.get("rules") or ())
            unit = self.units[alert.alert_id] = AlertUnit(alert.alert_id, alert.entity, alert.rule_ids, levels,
                                                          int(first) if isinstance(first, int) else 0,
                                                          alert.priority, used)
        unit.priority = min(unit.priority, alert.priority) if alert.activity_id != 3 else unit.priority
        unit.risk = max(unit.risk, used)
        seen = set(unit.origins)
        shown = int(explanation.get("last_seen_ms") or unit.first_ms)
        for ref in (explanation.get("evidence") or {}).get("refs") or ():
            origin = self.merged.origin(ref[2] if len(ref) > 2 else None)
            if origin is not None and origin not in seen:
                seen.add(origin)
                unit.origins.append(origin)
                incident = self.labels.incident_at(*origin)
                if incident is not None and incident not in unit.incident_ms:
                    unit.incident_ms[incident] = shown
        if self.points is not None and alert.activity_id != 3 and isinstance(risk.get("host"), int | float):
            self.points.append((int(explanation.get("last_seen_ms") or unit.first_ms), alert.entity, float(risk["host"])))


def _without_scores(record: dict[str, Any]) -> dict[str, Any] | None:
    """A detection as a replay with the models switched off writes it (None: it would not exist)."""
    if record.get("kind") == "anomaly":
        return None
    return {**record, "scores": {}, "model_version": None}


def run_files(files: Sequence[str], labels: Labels, *, rule_paths: Sequence[str] = (),
              criticality: Criticality | None = None, config: ClusterConfig | None = None,
              fusion_config: FusionConfig | None = None, work_dir: str | None = None,
              progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Replay `files` (merged in event-time order) through the cluster's code; see the module
    docstring. `progress(done, total)` gets the replay's position in merged lines."""
    config = config or config_from_dict({})
    if rule_paths:
        config = replace(config, rules=replace(config.rules, paths=tuple(rule_paths)))
    fusion = fusion_config or fusion_config_from_dict(config.correlator.fusion)
    # Truth is judged on all of an alert's evidence, not the first 50 refs its explanation keeps;
    # max_refs shapes only the explanation (no alert id, count or priority depends on it).
    fusion = replace(fusion, alerts=replace(fusion.alerts, max_refs=max(fusion.alerts.max_refs, EVIDENCE_REFS)))
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        merged = merge_events(list(files), os.path.join(tmp, "merged.jsonl"), labels)
        total = len(merged.origins)
        ruleset = _ruleset(config.rules)
        ablations = {"fused without anomaly scores": Correlator.from_ruleset(ruleset, fusion, criticality),
                     "fused without criticality": Correlator.from_ruleset(ruleset, fusion, None)}
        points: list[tuple[int, str, float]] = []
        units = {"fused": _Units(merged, labels, points), **{name: _Units(merged, labels) for name in ablations}}
        sigma: list[SigmaHit] = []
        detections_topic = config.kafka.detections_topic

        def write(output: OutputRecord, dead: bool) -> None:
            if dead or output.topic != detections_topic or not output.value:
                return
            record = orjson.loads(output.value)
            source = record.get("source") or {}
            if progress is not None and isinstance(source.get("offset"), int):
                progress(source["offset"], total)
            if record.get("kind") == "sigma":
                rule = record.get("rule") or {}
                sigma.append(SigmaHit(str(rule.get("id")), str(rule.get("title") or ""), str(rule.get("level") or ""),
                                      str(record.get("entity") or ""), event_time_ms(record.get("event_time")) or 0,
                                      merged.origin(source.get("offset"))))
            for alert in ablations["fused without criticality"].process(record):
                units["fused without criticality"].add(alert)
            stripped = _without_scores(record)
            if stripped is not None:
                for alert in ablations["fused without anomaly scores"].process(stripped):
                    units["fused without anomaly scores"].add(alert)

        result = replay_files(config, [merged.path], write, rule_paths=[str(p) for p in config.rules.paths],
                              alerts=units["fused"].add, fusion_config=fusion, criticality=criticality)
        for name, correlator in ablations.items():
            for alert in correlator.flush():
                units[name].add(alert)
        if progress is not None:
            progress(total, total)
        return RunResult(merged, sigma, {name: list(item.units.values()) for name, item in units.items()}, points,
                         dict(result.counts), list(result.dead), result.seconds, result.ruleset_version, result.model)


def default_rule_paths(shared: str | Path, shipped: str | Path) -> list[str]:
    """The full SigmaHQ set in `shared`/sigma (when there) and the shipped rules (correlations included)."""
    sigma = Path(shared) / "sigma"
    paths = [str(sigma / name) for name in ("rules", "rules-emerging-threats", "rules-threat-hunting", "rules-compliance")
             if (sigma / name).is_dir()]
    return [*paths, str(shipped)]
