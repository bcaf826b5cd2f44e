"""Alert identity and deduplication.

Repeated hits of one rule (or one correlation) on one entity are one alert with a count,
first-seen and last-seen. The alert id is stable:

    alert_id = sha256("<sorted rule ids joined by ,>|<entity>|<bucket start ms>")[:32]

where the bucket is the incident window start: first-seen floored to `inactivity_ms` (for an
entity risk alert, kind `risk`, to `risk_inactivity_ms`). An alert
closes after `inactivity_ms` of event time without a hit; the next hit opens a new incident, whose
first-seen is at least `inactivity_ms` later, hence in a later bucket and with a new id. Only a
late (out-of-order) detection can land in the bucket of an alert already closed: the ids of recently
closed alerts are remembered (bounded) and such an incident gets generation 1, 2, ... appended to
the hashed text. Replaying the same detections in the same order gives the same ids. A late
detection that arrives while its rule's alert on the entity is open joins it. Pure state, no I/O.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from correlator.risk import contribution_dict

HOUR_MS = 3_600_000


def alert_id(rule_ids: Iterable[str], entity: str, bucket_ms: int, generation: int = 0) -> str:
    text = f"{','.join(sorted(rule_ids))}|{entity}|{bucket_ms}" + (f"|{generation}" if generation else "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(slots=True)
class AlertConfig:
    inactivity_ms: int = HOUR_MS  # close after this much event time without a hit; also the id bucket
    # An entity risk alert (kind "risk") stays open this long without a contribution to its entity:
    # a campaign's steps hours apart are one analyst case, as a risk notable groups them (24 h).
    risk_inactivity_ms: int = 24 * HOUR_MS
    # An anomaly detection alone opens no alert: it sets its entity's anomaly score, the multiplier
    # of the entity's later risk contributions (an outlier is context, not an incident).
    anomaly_alerts: bool = False
    recent_contributions: int = 64  # per host, the refs a new entity risk alert starts with
    max_refs: int = 50  # evidence refs kept per alert (the total is always counted)
    max_contributions: int = 8  # latest risk contributions kept per alert for the explanation
    max_open: int = 100_000  # open alerts; past it the least recently hit close early
    max_closed: int = 100_000  # closed alert ids remembered against reuse by late detections


@dataclass(slots=True)
class RuleHits:
    id: str
    title: str
    level: str
    count: int = 0
    points: float = 0.0
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "level": self.level, "count": self.count,
                "points": round(self.points, 4), "weight": self.weight}


@dataclass(slots=True)
class AlertState:
    alert_id: str
    kind: str  # sigma | anomaly | correlation
    rule_ids: tuple[str, ...]
    entity: str
    bucket_ms: int
    first_ms: int
    last_ms: int
    count: int = 0
    rules: dict[str, RuleHits] = field(default_factory=dict)
    tactics: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    # (topic, partition, offset): the engine stores tuples (atomic, untracked by the garbage
    # collector); a state loaded from a checkpoint has lists. Both render as lists.
    refs: list[Sequence[Any]] = field(default_factory=list)
    ref_total: int = 0
    anomalies: dict[str, dict[str, Any]] = field(default_factory=dict)  # "host:ws-01" -> {score, reasons}
    # risk.Contribution, its field values (the tuple RiskTable.contribute gives) or its dict
    contributions: list[Any] = field(default_factory=list)
    contribution_total: int = 0
    priority: int = 4
    emitted_priority: int = 5  # the most urgent priority emitted so far (5: none yet)
    explanation: dict[str, Any] = field(default_factory=dict)
    emitted: int = 0  # updates emitted so far (Create counts as one)
    # an entity risk alert: its last qualifying contribution, which alone keeps it open (0: last_ms)
    kept_ms: int = 0

    def to_state(self) -> dict[str, Any]:
        state = {name: getattr(self, name) for name in _ALERT_STATE_FIELDS}
        state["rules"] = {key: value.to_dict() for key, value in self.rules.items()}
        state["rule_ids"] = list(self.rule_ids)
        state["refs"] = [list(ref) for ref in self.refs]
        state["contributions"] = [contribution_dict(item) if type(item) is tuple else
                                  item.to_dict() if hasattr(item, "to_dict") else item for item in self.contributions]
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> AlertState:
        data = dict(state)
        data["rules"] = {key: RuleHits(**value) for key, value in data["rules"].items()}
        data["rule_ids"] = tuple(data["rule_ids"])
        return cls(**data)


# (not __slots__: a compiled class has none)
_ALERT_STATE_FIELDS: tuple[str, ...] = tuple(item.name for item in fields(AlertState))


class AlertBook:
    """The open alerts, by (rule ids, entity)."""

    def __init__(self, config: AlertConfig | None = None) -> None:
        self.config = config or AlertConfig()
        self.open: dict[tuple[tuple[str, ...], str], AlertState] = {}
        self.closed: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.open)

    def hit(self, kind: str, rule_ids: tuple[str, ...], entity: str, now_ms: int) -> tuple[AlertState, AlertState | None]:
        """The alert this hit belongs to (new or open), and an alert it closed (stale by now)."""
        key = (rule_ids, entity)
        closed = None
        state = self.open.get(key)
        inactivity = self.inactivity(kind)
        if state is not None and now_ms - self.idle_since(state) > inactivity:
            closed = self.open.pop(key)
            self._closed(closed)
            state = None
        if state is None:
            bucket = now_ms - now_ms % inactivity
            generation = 0
            uid = alert_id(rule_ids, entity, bucket)
            while uid in self.closed:
                generation += 1
                uid = alert_id(rule_ids, entity, bucket, generation)
            state = AlertState(uid, kind, rule_ids, entity, bucket, now_ms, now_ms)
            self.open[key] = state
        else:
            if now_ms > state.last_ms:
                state.last_ms = now_ms
            if now_ms < state.first_ms:
                state.first_ms = now_ms
        return state, closed

    @staticmethod
    def idle_since(state: AlertState) -> int:
        """The event time an alert's inactivity runs from: a risk alert's last qualifying
        contribution (kept_ms), any other alert's last hit."""
        return state.kept_ms if state.kind == "risk" and state.kept_ms else state.last_ms

    def inactivity(self, kind: str) -> int:
        """The idle time after which an alert of `kind` closes."""
        return self.config.risk_inactivity_ms if kind == "risk" else self.config.inactivity_ms

    def add_ref(self, state: AlertState, ref: Sequence[Any]) -> None:
        state.ref_total += 1
        if len(state.refs) < self.config.max_refs:
            state.refs.append(ref)

    def add_contribution(self, state: AlertState, contribution: Any) -> None:
        state.contribution_total += 1
        contributions = state.contributions
        contributions.append(contribution)
        if len(contributions) > self.config.max_contributions:
            del contributions[0]  # keep the latest

    def stale(self, watermark_ms: int) -> list[AlertState]:
        """Remove and return the alerts idle past the inactivity timeout at `watermark_ms`, and
        the least recently hit ones past `max_open`."""
        horizon = watermark_ms - self.config.inactivity_ms
        risk_horizon = watermark_ms - self.config.risk_inactivity_ms
        gone = [key for key, state in self.open.items()
                if self.idle_since(state) < (risk_horizon if state.kind == "risk" else horizon)]
        closed = [self.open.pop(key) for key in gone]
        if len(self.open) > self.config.max_open:
            ordered = sorted(self.open.items(), key=lambda item: item[1].last_ms)
            for key, _ in ordered[: len(self.open) - self.config.max_open]:
                closed.append(self.open.pop(key))
        for state in closed:
            self._closed(state)
        return closed

    def close_all(self) -> list[AlertState]:
        closed = list(self.open.values())
        self.open.clear()
        for state in closed:
            self._closed(state)
        return closed

    def _closed(self, state: AlertState) -> None:
        self.closed[state.alert_id] = None
        if len(self.closed) > self.config.max_closed:
            self.closed.popitem(last=False)

    def state_dict(self) -> dict[str, Any]:
        return {"open": [state.to_state() for state in self.open.values()], "closed": list(self.closed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.open = {}
        self.closed = OrderedDict((uid, None) for uid in state.get("closed", ()))
        for item in state.get("open", ()):
            alert = AlertState.from_state(item)
            self.open[(alert.rule_ids, alert.entity)] = alert
