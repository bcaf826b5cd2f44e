"""From a run's detections and alerts to the table's numbers, per mode.

Definitions (what a detection engineer would count):

- **An alert** of the Sigma-only mode is one Sigma detection; of the deduplicated mode, the
  detections of one rule on one entity in one clock hour; of a fused mode, one correlator alert
  (its Create, Updates and Close together). Since the correlator does risk-based alerting
  (correlator/priority.py), a fused mode's alerts are of two kinds: entity risk alerts (P1-P3,
  what is paged) and per-rule alerts recorded at P4 (risk contributions, visible and explained but
  not paged). Both are counted here (the alerts and alerts/day columns count every fused alert,
  P4 included); the reduction at equal recall and the equal-volume comparison below are where the
  priority decides. Alerts whose rules are all `informational` are not
  counted in any mode (Sigma: informational rules enrich events, they do not page anyone); they
  still feed the correlator's risk.
- **Priority**: a fused alert's is the most urgent it was emitted with; a Sigma-only alert's is
  its rule level (critical P1, high P2, medium P3, low P4).
- **True positive**: any evidence ref (file, line) of the alert lies in a labeled incident.
- **Incident recall**: incidents with at least one true-positive alert (at any priority, and at
  P1-P2) over all labeled incidents.
- **Time to detect**: from an incident's first event to the first alert finding that carries
  its evidence; the median over detected incidents.
- **precision@k**: alerts ranked by priority, then risk (fused) or time (Sigma).
- **Reduction at equal recall**: R is the mode's incident recall; N(R) is the fewest alerts the
  mode raises at a priority cutoff (P1, P1-P2, P1-P3, all) that still reaches recall R; the
  reduction is 1 - N_mode(R) / N_sigma-only(R). Sigma-only gets the same cutoffs by rule level,
  so the baseline is as strong as it can be made at that recall.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from evaluation.labels import Labels
from evaluation.run import FUSED_MODES, RunResult

__all__ = ["MODES", "ModeAlert", "Row", "equal_volume", "mode_alerts", "row"]

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LEVEL_PRIORITY = {"critical": 1, "high": 2, "medium": 3, "low": 4}
MODES = ("sigma-only", "sigma-only deduplicated", *FUSED_MODES)


@dataclass(slots=True)
class ModeAlert:
    first_ms: int
    priority: int
    rank: float  # higher first among one priority
    entity: str
    incident_ms: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Row:
    mode: str
    alerts: int
    alerts_per_day: float
    alerts_per_incident: float
    precision: float | None
    recall: float
    recall_p1_p2: float
    median_ttd_minutes: float | None
    p1_alerts: int
    p1_precision: float | None
    precision_at_k: float | None
    reduction: float | None  # vs Sigma-only at equal recall
    alerts_at_recall: int | None
    sigma_alerts_at_recall: int | None
    cutoff: str  # the priority cutoff that reached the recall with the fewest alerts

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


def mode_alerts(result: RunResult, labels: Labels) -> dict[str, list[ModeAlert]]:
    """Every mode's alerts, from one run."""
    def incident(origin: tuple[str, int] | None) -> str | None:
        return labels.incident_at(*origin) if origin is not None else None

    out: dict[str, list[ModeAlert]] = {}
    sigma: list[ModeAlert] = []
    groups: dict[tuple[str, str, int], ModeAlert] = {}
    for hit in result.sigma:
        priority = LEVEL_PRIORITY.get(hit.level.lower())
        if priority is None:  # informational (or no level): not an alert
            continue
        found = incident(hit.origin)
        alert = ModeAlert(hit.time_ms, priority, -hit.time_ms, hit.entity, {found: hit.time_ms} if found else {})
        sigma.append(alert)
        key = (hit.rule_id, hit.entity, hit.time_ms // HOUR_MS)
        group = groups.get(key)
        if group is None:
            groups[key] = ModeAlert(hit.time_ms, priority, -hit.time_ms, hit.entity, dict(alert.incident_ms))
        elif found and found not in group.incident_ms:
            group.incident_ms[found] = hit.time_ms
    out["sigma-only"] = sigma
    out["sigma-only deduplicated"] = list(groups.values())
    for mode in FUSED_MODES:
        out[mode] = [ModeAlert(unit.first_ms, unit.priority, unit.risk, unit.entity, dict(unit.incident_ms))
                     for unit in result.fused[mode] if any(level != "informational" for level in unit.levels)]
    return out


def _recall(alerts: Iterable[ModeAlert], incidents: int) -> float:
    found: set[str] = set()
    for alert in alerts:
        found.update(alert.incident_ms)
    return len(found) / incidents if incidents else 0.0


def _at_recall(alerts: Sequence[ModeAlert], incidents: int, target: float) -> tuple[int | None, str]:
    """The fewest alerts at a priority cutoff whose recall reaches `target`, and the cutoff."""
    for cutoff in (1, 2, 3, 4):
        chosen = [alert for alert in alerts if alert.priority <= cutoff]
        if _recall(chosen, incidents) >= target - 1e-12:
            return len(chosen), ("all" if cutoff == 4 else f"<=P{cutoff}")
    return None, "-"


def row(mode: str, alerts: Sequence[ModeAlert], sigma: Sequence[ModeAlert], labels: Labels, result: RunResult,
        k: int = 20) -> Row:
    incidents = len(labels.incidents)
    merged = result.merged
    span = (merged.last_ms - merged.first_ms) if merged.first_ms is not None and merged.last_ms is not None else 0
    days = max(span / DAY_MS, 1 / 24)
    true = [alert for alert in alerts if alert.incident_ms]
    recall = _recall(alerts, incidents)
    delays = []
    for name, first in merged.incident_first_ms.items():
        shown = [alert.incident_ms[name] for alert in alerts if name in alert.incident_ms]
        if shown:
            delays.append(max(min(shown) - first, 0) / 60_000)
    p1 = [alert for alert in alerts if alert.priority == 1]
    ranked = sorted(alerts, key=lambda alert: (alert.priority, -alert.rank))[:k]
    count, cutoff = _at_recall(alerts, incidents, recall)
    baseline, _ = _at_recall(sigma, incidents, recall)
    reduction = 1 - count / baseline if count is not None and baseline else None
    return Row(mode, len(alerts), len(alerts) / days, len(alerts) / incidents if incidents else float(len(alerts)),
               len(true) / len(alerts) if alerts else None, recall,
               _recall([alert for alert in alerts if alert.priority <= 2], incidents),
               statistics.median(delays) if delays else None, len(p1),
               sum(1 for alert in p1 if alert.incident_ms) / len(p1) if p1 else None,
               sum(1 for alert in ranked if alert.incident_ms) / len(ranked) if ranked else None,
               reduction, count, baseline, cutoff)


def equal_volume(alerts: dict[str, list[ModeAlert]], incidents: int, modes: Sequence[str],
                 paged: int = 3) -> dict[str, object]:
    """The modes compared at the same alert volume: each keeps its N most urgent alerts (priority,
    then risk), N the smallest number of alerts at P1..`paged` among the modes (the analyst's
    workload; every alert when a mode has none there). Does a mode's extra signal (the anomaly
    scores) buy precision or recall at the same analyst workload?

    N is the paged volume, not every alert: with the fused modes' P4 recorded items counted, the
    smallest total would keep nearly every alert of both modes, and the comparison would say
    nothing (the same recall and precision for any ranking)."""
    volume = min(sum(1 for alert in alerts[mode] if alert.priority <= paged) or len(alerts[mode]) for mode in modes)
    out: dict[str, object] = {"alerts": volume}
    for mode in modes:
        top = sorted(alerts[mode], key=lambda alert: (alert.priority, -alert.rank))[:volume]
        out[mode] = {"recall": _recall(top, incidents),
                     "precision": sum(1 for alert in top if alert.incident_ms) / len(top) if top else None}
    return out
