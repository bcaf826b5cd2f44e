"""What the console shows, folded from the alerts and verdicts topics. Pure: no I/O, no clock.

The correlator owns every decision (priority, risk, dedup); this module only reads its records:
an OCSF Detection Finding per alert record (activity 1 Create, 2 Update, 3 Close; a later record
of the same alert id replaces the earlier one in place) and a `correlator.records.Verdict` per
verdict record. From them it keeps

- the alert queue (by priority, newest first; filters by priority, entity and tactic);
- the entity risk board (each host's and user's risk over time, from the explanation's
  `last_contribution` terms, and the rules that raised it);
- the ATT&CK view (tactics x entities over the last hours of event time);
- the rules table (alerts per rule, their share at P1-P2 and the share marked false positive).

Records are attacker-influenced (entity names come from events): every value is kept as data and
escaped by the pages, never trusted as markup. A record that is not a finding is a counted skip.
`version` grows with every change, and `changes_since` tells the live pages which alerts changed.

>>> state = ConsoleState()
>>> finding = {"activity_id": 1, "priority": "P2", "time": 1000, "finding_info": {"uid": "a1", "title": "T on ws"},
...            "unmapped": {"sigmaray": {"explanation": {"entity": {"host": "ws", "users": []}, "count": 1}}}}
>>> state.apply_alert(finding).priority, [view.alert_id for view in state.queue()]
(2, ['a1'])
>>> state.apply_alert({"activity_id": 1}) is None, state.skipped
(True, Counter({'alert without finding_info.uid': 1}))
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from correlator.records import Verdict
from correlator.risk import TACTIC_IDS, RiskConfig

__all__ = ["AlertView", "AttackMatrix", "ConsoleState", "EntityRisk", "RuleRow", "tactic_order"]

ACTIVITY = {1: "open", 2: "open", 3: "closed"}
Cell = tuple[str, str]  # (entity, tactic)
HOUR_MS = 3_600_000


def tactic_order(tactics: set[str] | list[str]) -> list[str]:
    """ATT&CK kill-chain order (reconnaissance .. impact), then tactics ATT&CK does not list yet."""
    known = [name for name in TACTIC_IDS if name in tactics]
    return known + sorted(set(tactics) - set(TACTIC_IDS))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _texts(value: Any, cap: int = 50) -> list[str]:
    return [str(item) for item in value[:cap]] if isinstance(value, list) else []


def _priority(finding: Mapping[str, Any], explanation: Mapping[str, Any]) -> int | None:
    """P1..P4 from the finding's `priority` ("P2"), else the explanation's."""
    for value in (finding.get("priority"), (explanation.get("priority") or {}).get("priority")):
        if isinstance(value, str) and len(value) == 2 and value[0] == "P" and value[1] in "1234":
            return int(value[1])
    return None


@dataclass(slots=True)
class AlertView:
    """One alert as the console shows it: its latest record, plus the verdicts given on it."""

    alert_id: str
    priority: int
    title: str
    host: str
    users: list[str]
    rules: list[dict[str, Any]]  # the explanation's rules: id, title, level, count, points, weight
    tactics: list[str]
    techniques: list[str]
    count: int
    status: str  # open / closed
    activity: str  # Create / Update / Close: the latest record's
    first_seen_ms: int
    last_seen_ms: int
    risk: float
    explanation: dict[str, Any]
    finding: dict[str, Any]
    updates: int = 0  # records of this alert read
    seq: int = 0  # state version of its last change: the queue's tie-break for "newest"
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # Verdict.to_dict(), oldest first

    @property
    def label(self) -> str:
        return f"P{self.priority}"

    @property
    def verdict(self) -> str | None:
        return self.verdicts[-1]["verdict"] if self.verdicts else None

    @property
    def is_case(self) -> bool:
        """A host's entity risk alert (the correlator's case), not one rule's own record."""
        return bool((self.explanation.get("priority") or {}).get("entity_alert"))

    @property
    def rule_ids(self) -> list[str]:
        return [str(rule.get("id")) for rule in self.rules]

    @property
    def entities(self) -> list[str]:
        return [self.host, *self.users]

    @property
    def evidence_refs(self) -> list[tuple[str, int, int]]:
        """The (topic, partition, offset) of the input events that contributed (as kept by the correlator)."""
        refs = (self.explanation.get("evidence") or {}).get("refs") or []
        out = []
        for ref in refs if isinstance(refs, list) else []:
            if isinstance(ref, list) and len(ref) >= 3 and _int(ref[1]) is not None and _int(ref[2]) is not None:
                out.append((str(ref[0]), int(ref[1]), int(ref[2])))
        return out

    def sort_key(self) -> str:
        """Ascending order = priority, then newest (last seen, then last changed) first: a string
        so that the page's script can place a live row without knowing the rule."""
        return f"{self.priority}-{10**15 - max(0, self.last_seen_ms):016d}-{10**12 - self.seq:013d}"

    def matches(self, priority: int | None = None, entity: str = "", tactic: str = "") -> bool:
        if priority is not None and self.priority != priority:
            return False
        if tactic and tactic not in self.tactics:
            return False
        needle = entity.strip().lower()
        return not needle or any(needle in name.lower() for name in self.entities)


@dataclass(slots=True)
class EntityRisk:
    """A host's or user's risk as the correlator computed it, over time, and what raised it."""

    entity_type: str  # host / user
    name: str
    points: list[tuple[int, float]] = field(default_factory=list)  # (event time ms, risk after), time order
    rule_points: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)  # alert -> rule id -> (title, points)
    tactics: set[str] = field(default_factory=set)
    alerts: set[str] = field(default_factory=set)
    best_priority: int = 4
    current: float = 0.0  # the risk decayed to the latest event time read (set by `riskiest`)

    @property
    def risk(self) -> float:
        return self.points[-1][1] if self.points else 0.0

    def risk_at(self, now_ms: int, half_life_ms: int) -> float:
        """The risk decayed from its last contribution to `now_ms` (event time), as the correlator
        decays it: a host that was risky yesterday and quiet since is not risky now."""
        if not self.points:
            return 0.0
        elapsed = max(now_ms - self.points[-1][0], 0)
        return self.points[-1][1] * 2.0 ** (-elapsed / half_life_ms) if half_life_ms > 0 else self.points[-1][1]

    @property
    def peak(self) -> float:
        return max((risk for _, risk in self.points), default=0.0)

    @property
    def last_ms(self) -> int:
        return self.points[-1][0] if self.points else 0

    def raised_by(self, top: int = 5) -> list[tuple[str, float]]:
        """The rules that added the most points to this entity's alerts, highest first."""
        totals: dict[str, float] = {}
        for rules in self.rule_points.values():
            for title, points in rules.values():
                totals[title] = totals.get(title, 0.0) + points
        ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
        return [(title, round(points, 1)) for title, points in ranked]

    def add_point(self, time_ms: int, risk: float, cap: int) -> None:
        if self.points and self.points[-1] == (time_ms, risk):
            return  # the same explanation read again (Close repeats the last Update's terms)
        self.points.append((time_ms, risk))
        if len(self.points) > 1 and self.points[-2][0] > time_ms:  # late record: keep time order
            self.points.sort()
        if len(self.points) > cap:
            del self.points[: len(self.points) - cap]


@dataclass(slots=True)
class RuleRow:
    rule_id: str
    title: str
    level: str
    alerts: int
    hits: int
    high: int  # alerts at P1-P2
    fp: int  # alerts whose latest verdict is fp

    @property
    def high_share(self) -> float:
        return self.high / self.alerts if self.alerts else 0.0

    @property
    def fp_share(self) -> float:
        return self.fp / self.alerts if self.alerts else 0.0


@dataclass(slots=True)
class AttackMatrix:
    tactics: list[str]  # columns: every ATT&CK tactic in kill-chain order, then others seen
    entities: list[str]  # rows: the entities with the most tactics first
    cells: dict[Cell, dict[str, int]]  # (entity, tactic) -> {"alerts": n, "priority": best}
    types: dict[str, str]  # entity -> host / user
    since_ms: int
    until_ms: int

    def hit_tactics(self, entity: str) -> int:
        return sum(1 for name, _ in self.cells if name == entity)


class ConsoleState:
    """The console's fold of the alerts and verdicts topics (see the module docstring).

    Bounded: at most `max_alerts` alerts (closed ones are forgotten first, then the oldest), and
    per entity at most `max_points` risk points. Not thread-safe by itself: the feed and the
    pages share it under `cluster.console.feed.SharedState`'s lock.
    """

    def __init__(self, max_alerts: int = 5000, max_points: int = 200, max_changes: int = 10_000,
                 half_life_ms: int = RiskConfig().half_life_ms) -> None:
        self.half_life_ms = half_life_ms  # the correlator's risk half-life (correlator.fusion risk.half_life_ms)
        self.max_alerts = max_alerts
        self.max_points = max_points
        self.alerts: OrderedDict[str, AlertView] = OrderedDict()  # least recently changed first
        self.cases: dict[str, str] = {}  # host -> alert id of its latest open case (see `folds`)
        self.entities: dict[tuple[str, str], EntityRisk] = {}
        self.pending_verdicts: dict[str, list[dict[str, Any]]] = {}  # verdicts read before their alert
        self.seen_verdicts: set[str] = set()
        self.version = 0
        self.changes: deque[tuple[int, str]] = deque(maxlen=max_changes)  # (version, alert id)
        self.skipped: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.watermark_ms = 0  # the latest event time seen in an alert

    # -- folding records --------------------------------------------------------------------------
    def apply_alert(self, finding: Any) -> AlertView | None:
        """One alerts-topic value (the decoded OCSF finding); the alert as it now stands, or None
        (a counted skip) when the record is not a usable finding."""
        try:
            view = self._view(finding)
        except _Skip as skip:
            self.skipped[str(skip)] += 1
            return None
        self.counts["alerts_read"] += 1
        known = self.alerts.pop(view.alert_id, None)
        if known is not None:
            view.verdicts = known.verdicts
            view.updates = known.updates
        view.verdicts += self.pending_verdicts.pop(view.alert_id, [])
        view.updates += 1
        self._touch(view)
        self.alerts[view.alert_id] = view
        if view.is_case and view.host:
            if view.status == "open":
                self.cases[view.host] = view.alert_id
            elif self.cases.get(view.host) == view.alert_id:
                del self.cases[view.host]
        self._fold_risk(view)
        self.watermark_ms = max(self.watermark_ms, view.last_seen_ms)
        self._evict()
        return view

    def apply_verdict(self, value: Any) -> Verdict | None:
        """One verdicts-topic value (decoded JSON); the Verdict, or None when it is malformed or
        already applied (the console's own verdicts come back through the topic)."""
        try:
            verdict = Verdict.from_dict(value)
        except ValueError as error:
            self.skipped[f"verdict: {error}"] += 1
            return None
        if verdict.verdict_id in self.seen_verdicts:
            return None
        self.seen_verdicts.add(verdict.verdict_id)
        if len(self.seen_verdicts) > 100_000:  # ids only guard against the echo of recent ones
            self.seen_verdicts.clear()
        self.counts["verdicts_read"] += 1
        view = self.alerts.get(verdict.alert_id)
        if view is None:
            pending = self.pending_verdicts.setdefault(verdict.alert_id, [])
            pending.append(verdict.to_dict())
            if len(self.pending_verdicts) > self.max_alerts:
                self.pending_verdicts.pop(next(iter(self.pending_verdicts)))
            return verdict
        view.verdicts.append(verdict.to_dict())
        self.alerts.move_to_end(view.alert_id)
        self._touch(view)
        return verdict

    def _touch(self, view: AlertView) -> None:
        self.version += 1
        view.seq = self.version
        self.changes.append((self.version, view.alert_id))

    def changes_since(self, version: int) -> list[str] | None:
        """Ids of the alerts changed after `version` (each once, oldest change first); None when
        the change log no longer reaches back that far (the page reloads)."""
        if version >= self.version:
            return []
        if not self.changes or self.changes[0][0] > version + 1:
            return None
        changed: dict[str, None] = {}
        for seq, alert_id in reversed(self.changes):
            if seq <= version:
                break
            changed.setdefault(alert_id, None)
        return list(reversed(changed))

    def _view(self, finding: Any) -> AlertView:
        if not isinstance(finding, Mapping):
            raise _Skip(f"alert is not a JSON object but {type(finding).__name__}")
        info = finding.get("finding_info")
        alert_id = info.get("uid") if isinstance(info, Mapping) else None
        if not isinstance(alert_id, str) or not alert_id:
            raise _Skip("alert without finding_info.uid")
        assert isinstance(info, Mapping)
        unmapped = finding.get("unmapped")
        sigmaray = unmapped.get("sigmaray") if isinstance(unmapped, Mapping) else None
        explanation = sigmaray.get("explanation") if isinstance(sigmaray, Mapping) else None
        if not isinstance(explanation, Mapping):
            raise _Skip("alert without unmapped.sigmaray.explanation")
        priority = _priority(finding, explanation)
        if priority is None:
            raise _Skip("alert without a priority P1..P4")
        activity_id = _int(finding.get("activity_id"))
        if activity_id not in ACTIVITY:
            raise _Skip(f"alert with unknown activity_id {finding.get('activity_id')!r}")
        assert activity_id is not None
        found = explanation.get("entity")
        entity: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        rules = [dict(rule) for rule in explanation.get("rules") or [] if isinstance(rule, Mapping)][:50]
        time_ms = _int(finding.get("time")) or 0
        last = _int(explanation.get("last_seen_ms")) or _int(info.get("last_seen_time")) or time_ms
        first = _int(explanation.get("first_seen_ms")) or _int(info.get("first_seen_time")) or last
        risk = _num((explanation.get("risk") or {}).get("used")) if isinstance(explanation.get("risk"), Mapping) else None
        count = _int(explanation.get("count")) or _int(finding.get("count")) or 0
        return AlertView(
            alert_id=alert_id, priority=priority, title=str(info.get("title") or alert_id), host=str(entity.get("host") or ""),
            users=_texts(entity.get("users"), 20), rules=rules, tactics=_texts(explanation.get("tactics")),
            techniques=_texts(explanation.get("techniques")), count=count, status=ACTIVITY[activity_id],
            activity={1: "Create", 2: "Update", 3: "Close"}[activity_id], first_seen_ms=first, last_seen_ms=last,
            risk=risk if risk is not None else float(_num(finding.get("risk_score")) or 0.0),
            explanation=dict(explanation), finding=dict(finding))

    def _fold_risk(self, view: AlertView) -> None:
        """The entity risk board: each contribution term names its entity and its risk after."""
        terms = [term for term in view.explanation.get("last_contribution") or [] if isinstance(term, Mapping)]
        if not terms and view.host:  # an explanation without terms still places its host
            terms = [{"entity_type": "host", "entity": view.host, "risk_after": view.risk}]
        rules = {str(rule.get("id")): (str(rule.get("title") or rule.get("id")), float(_num(rule.get("points")) or 0.0))
                 for rule in view.rules}
        for term in terms:
            entity_type, name = str(term.get("entity_type") or "host"), str(term.get("entity") or "")
            risk = _num(term.get("risk_after"))
            if not name or risk is None:
                continue
            entity = self.entities.get((entity_type, name))
            if entity is None:
                entity = self.entities[(entity_type, name)] = EntityRisk(entity_type, name)
            entity.add_point(view.last_seen_ms, round(risk, 2), self.max_points)
            entity.rule_points[view.alert_id] = rules
            entity.tactics.update(view.tactics)
            entity.alerts.add(view.alert_id)
            entity.best_priority = min(entity.best_priority, view.priority)

    def _evict(self) -> None:
        while len(self.alerts) > self.max_alerts:
            victim = next((key for key, view in self.alerts.items() if view.status == "closed"), None)
            if victim is None:
                victim = next(iter(self.alerts))
            self.alerts.pop(victim)
            for key in [key for key, entity in self.entities.items() if victim in entity.alerts]:
                entity = self.entities[key]
                entity.alerts.discard(victim)
                entity.rule_points.pop(victim, None)
                if not entity.alerts:
                    del self.entities[key]

    # -- views -----------------------------------------------------------------------------------
    def queue(self, priority: int | None = None, entity: str = "", tactic: str = "", limit: int = 500,
              include_closed: bool = True, fold: bool = True) -> list[AlertView]:
        """Alerts by priority, newest first, filtered. With `fold` (unless P4 is asked for), a P4
        rule record on a host whose case is open stays under that case (`folds`, `folded_under`)
        instead of a row of its own: the case already counts it in its risk."""
        fold = fold and priority != 4
        found = [view for view in self.alerts.values()
                 if view.matches(priority, entity, tactic) and (include_closed or view.status == "open")
                 and not (fold and self.folds(view))]
        found.sort(key=AlertView.sort_key)
        return found[:limit]

    def case_of(self, host: str) -> AlertView | None:
        """The host's open case (its latest open entity risk alert), if any."""
        case = self.alerts.get(self.cases.get(host, ""))
        return case if case is not None and case.status == "open" and case.is_case else None

    def folds(self, view: AlertView) -> bool:
        """Whether the queue shows `view` under its host's open case rather than as a row."""
        return view.priority == 4 and not view.is_case and bool(view.host) and self.case_of(view.host) is not None

    def rows_changed(self, changed_ids: list[str], fold: bool) -> dict[str, AlertView | None]:
        """The queue rows that changes to `changed_ids` touch (None: the alert is gone): with
        `fold`, a record folding under a case changes the case's count too, and a case opening
        or closing folds or unfolds its host's records."""
        rows: dict[str, AlertView | None] = {}
        for changed_id in changed_ids:
            view = rows[changed_id] = self.alerts.get(changed_id)
            if view is None or not fold or not view.host:
                continue
            case = self.case_of(view.host)
            if case is not None:
                rows[case.alert_id] = case
            if view.is_case and view.activity in ("Create", "Close"):
                rows.update((other.alert_id, other) for other in self.alerts.values()
                            if other.host == view.host and other.priority == 4 and not other.is_case)
        return rows

    def folded_under(self, case: AlertView) -> list[AlertView]:
        """The P4 rule records the queue folds under `case` (empty unless it is its host's open case)."""
        if self.case_of(case.host) is not case:
            return []
        return [view for view in self.alerts.values()
                if view.host == case.host and view.priority == 4 and not view.is_case]

    def summary(self) -> dict[str, int]:
        """Open alerts per priority (P1..P4), and in all."""
        counts = Counter(view.label for view in self.alerts.values() if view.status == "open")
        return {**{f"P{p}": counts.get(f"P{p}", 0) for p in range(1, 5)}, "open": sum(counts.values()),
                "total": len(self.alerts)}

    def tactics(self) -> list[str]:
        return tactic_order({name for view in self.alerts.values() for name in view.tactics})

    def riskiest(self, entity_type: str | None = None, limit: int = 20) -> list[EntityRisk]:
        """The riskiest entities now: by their risk decayed to the latest event time read."""
        found = [entity for entity in self.entities.values() if entity_type in (None, entity.entity_type)]
        for entity in found:
            entity.current = entity.risk_at(self.watermark_ms, self.half_life_ms)
        found.sort(key=lambda entity: (-entity.current, -entity.peak, entity.name))
        return found[:limit]

    def attack_matrix(self, hours: float = 24, limit: int = 30) -> AttackMatrix:
        """Tactics x entities over alerts whose last hit is in the last `hours` of event time, up
        to the latest event time read (a replayed day shows as it happened). Every ATT&CK tactic is
        a column, in kill-chain order, so the gaps in a row show as much as its hits."""
        since = self.watermark_ms - int(hours * HOUR_MS)
        cells: dict[Cell, dict[str, int]] = {}
        types: dict[str, str] = {}
        for view in self.alerts.values():
            if view.last_seen_ms < since:
                continue
            for entity_type, name in (("host", view.host), *(("user", user) for user in view.users)):
                if not name:
                    continue
                types.setdefault(name, entity_type)
                for tactic in view.tactics:
                    cell = cells.setdefault((name, tactic), {"alerts": 0, "priority": 4})
                    cell["alerts"] += 1
                    cell["priority"] = min(cell["priority"], view.priority)
        per_entity: Counter[str] = Counter(name for name, _ in cells)
        best: dict[str, int] = {}
        for (name, _), cell in cells.items():
            best[name] = min(best.get(name, 4), cell["priority"])
        entities = sorted(per_entity, key=lambda name: (-per_entity[name], best[name], name))[:limit]
        shown = set(entities)
        tactics = tactic_order(set(TACTIC_IDS) | {tactic for name, tactic in cells if name in shown})
        return AttackMatrix(tactics, entities, {key: cell for key, cell in cells.items() if key[0] in shown},
                            {name: types[name] for name in entities}, since, self.watermark_ms)

    def rule_rows(self, limit: int = 100) -> list[RuleRow]:
        """Rules by the alerts they are in (then hits), with their P1-P2 and false-positive shares."""
        rows: dict[str, RuleRow] = {}
        for view in self.alerts.values():
            for rule in view.rules:
                rule_id = str(rule.get("id"))
                row = rows.get(rule_id)
                if row is None:
                    row = rows[rule_id] = RuleRow(rule_id, str(rule.get("title") or rule_id), str(rule.get("level") or ""),
                                                  0, 0, 0, 0)
                row.alerts += 1
                row.hits += _int(rule.get("count")) or 0
                row.high += view.priority <= 2
                row.fp += view.verdict == "fp"
        return sorted(rows.values(), key=lambda row: (-row.alerts, -row.hits, row.title))[:limit]

    def stats(self) -> dict[str, Any]:
        return {"alerts": len(self.alerts), "entities": len(self.entities), "version": self.version,
                "counts": dict(self.counts), "skipped": dict(self.skipped)}


class _Skip(Exception):
    pass
