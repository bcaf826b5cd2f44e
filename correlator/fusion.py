"""FusionEngine: detections in, prioritized and explained OCSF alerts out. Pure: no I/O, no wall
clock; every time is event time (the detection's `event_time`, else its source record timestamp,
else the engine's watermark, the latest event time seen).

    engine = FusionEngine(FusionConfig(), criticality=Criticality.from_text(csv_text)[0])
    for detection in detections:           # the dicts workers produce to the detections topic
        for alert in engine.process(detection):
            publish(alert.ocsf)            # OCSF 1.8.0 Detection Finding (class 2004)

An alert is emitted on Create (first hit), on Update when its priority escalates past any it was
emitted with, or when its count reaches a power of two (2, 4, 8, ...; a lower priority shows then),
and on Close once `AlertConfig.inactivity_ms` of event time passes
without a hit (checked as the watermark advances, or by `flush`). `open_alerts()` renders the
current state of every open alert on demand. A malformed record or an unknown `schema_version` is
a counted skip with a reason (`stats()["skipped"]`), never an exception.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from correlator.alerts import AlertBook, AlertConfig, AlertState, RuleHits
from correlator.criticality import LEVELS, Asset, Criticality
from correlator.ocsf import ACTIVITIES, detection_finding
from correlator.priority import PriorityConfig, PriorityResult, prioritize
from correlator.risk import Contribution, RiskConfig, RiskTable, attack_tags
from correlator.suppressions import FeedbackConfig, Suppression, Suppressions
from models.entities import normalize

SUPPORTED_SCHEMA_VERSIONS = frozenset({1, "1"})  # a record without `schema_version` is version 1
KINDS = frozenset({"sigma", "anomaly"})
LEVEL_RANK = {"informational": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
CONTRIBUTION_FORMULA = ("points = (level_points * repeat_factor + tactic_bonus * new_tactics + technique_bonus * "
                        "new_techniques) * weight * (1 + anomaly_alpha * anomaly) * criticality_factor; "
                        "risk = risk_before * 2^(-dt/half_life) + points")
PRIORITY_FORMULA = ("risk = max(host risk, user risk); P1 if risk >= p1_risk and a P1 gate (high/critical rule on a "
                    "high/critical asset, >= p1_min_tactics distinct tactics in the window, or a correlation hit), "
                    "else P2; P2 if risk >= p2_risk; P3 if risk >= p3_risk; else P4; one step lower when the rule is "
                    "noisy on the entity and its anomaly score is below demote_below")
# group-by fields of a correlation that name its host (else the group's values, joined, are the entity)
HOST_GROUP_FIELDS = ("Computer", "ComputerName", "Hostname", "host", "hostname", "entity")
_NOBODY = frozenset({"", "-", "system", "local service", "network service", "anonymous logon", "n/a"})


@dataclass(slots=True)
class FusionConfig:
    risk: RiskConfig = field(default_factory=RiskConfig)
    priority: PriorityConfig = field(default_factory=PriorityConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    user_fields: tuple[str, ...] = ("TargetUserName", "SubjectUserName", "User", "UserName", "AccountName")
    dedupe_cap: int = 200_000  # upstream detections remembered for idempotence


@dataclass(slots=True)
class Alert:
    alert_id: str
    activity_id: int  # 1 Create, 2 Update, 3 Close
    priority: int  # 1..4
    entity: str
    rule_ids: tuple[str, ...]
    count: int
    ocsf: dict[str, Any]

    @property
    def activity(self) -> str:
        return ACTIVITIES[self.activity_id]

    @property
    def label(self) -> str:
        return f"P{self.priority}"

    @property
    def explanation(self) -> dict[str, Any]:
        return self.ocsf["unmapped"]["sigmaray"]["explanation"]


class _Skip(Exception):
    pass


_TIME_CACHE: dict[str, int] = {}


def event_time_ms(value: Any) -> int | None:
    """Milliseconds since the epoch of an ISO-8601 time (Z, offset or naive = UTC; any fraction
    digits) or of a number (ms); None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    cached = _TIME_CACHE.get(value)
    if cached is not None:
        return cached
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dot = text.find(".")
    if dot != -1:  # at most 6 fraction digits for fromisoformat
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        if end - dot - 1 > 6:
            text = text[: dot + 7] + text[end:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if len(_TIME_CACHE) > 10_000:
        _TIME_CACHE.clear()
    _TIME_CACHE[value] = ms
    return ms


_HOSTS: dict[str, str] = {}
_USERS: dict[str, str] = {}


def _host(value: str) -> str:
    found = _HOSTS.get(value)
    if found is None:
        if len(_HOSTS) > 50_000:
            _HOSTS.clear()
        found = _HOSTS[value] = normalize("host", value)
    return found


def _user_key(value: str) -> str:
    found = _USERS.get(value)
    if found is None:
        if len(_USERS) > 50_000:
            _USERS.clear()
        found = _USERS[value] = normalize("user", value)
    return found


def _score(scores: Any, entity_type: str, entity: str | None) -> float | None:
    """The entity's anomaly score in a detection's `scores`: {"host:ws-01": 0.9} (what workers
    write) or {"host": {"score": 0.9}} / {"host": 0.9}."""
    if not scores or (type(scores) is not dict and not isinstance(scores, Mapping)):
        return None
    value = scores.get(f"{entity_type}:{entity}") if entity else None
    if value is None:
        value = scores.get(entity_type)
        if isinstance(value, Mapping):
            value = value.get("score")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _attr(item: Any, *names: str) -> Any:
    for name in names:
        value = getattr(item, name, None)
        if value is not None:
            return value
    return None


def _higher(a: Asset | None, b: Asset | None) -> Asset | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if LEVELS.index(a.criticality) >= LEVELS.index(b.criticality) else b


class FusionEngine:
    def __init__(self, config: FusionConfig | None = None, criticality: Criticality | None = None,
                 suppressions: Suppressions | None = None) -> None:
        self.config = config or FusionConfig()
        self.criticality = criticality or Criticality()
        self.suppressions = suppressions or Suppressions(self.config.feedback)
        self.tables = {"host": RiskTable("host", self.config.risk), "user": RiskTable("user", self.config.risk)}
        self.book = AlertBook(self.config.alerts)
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self.watermark = 0
        self._next_sweep = 0
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    # -- configuration hooks ------------------------------------------------------------------
    def set_criticality(self, criticality: Criticality) -> None:
        """Swap in a reloaded criticality table (applies to later detections)."""
        self.criticality = criticality

    def add_suppression(self, suppression: Suppression) -> None:
        self.suppressions.add(suppression)

    def false_positive(self, rule_id: str, entity: str, reason: str = "false positive verdict") -> Suppression:
        """Verdict feedback: suppress `rule_id` on `entity` and halve its weight there."""
        self.counts["verdicts_fp"] += 1
        return self.suppressions.false_positive(rule_id, normalize("host", entity), self.watermark, reason)

    # -- detections -----------------------------------------------------------------------------
    def process(self, detection: Any) -> list[Alert]:
        self.counts["received"] += 1
        try:
            return self._process(detection)
        except _Skip as skip:
            self.skipped[str(skip)] += 1
            return []
        except Exception as error:  # noqa: BLE001 - one bad record never stops the stream
            self.skipped[f"error: {type(error).__name__}"] += 1
            return []

    def _process(self, detection: Any) -> list[Alert]:
        if type(detection) is not dict and not isinstance(detection, Mapping):
            raise _Skip("not a mapping")
        version = detection.get("schema_version", 1)
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise _Skip("unknown schema_version")
        kind = detection.get("kind")
        if kind not in KINDS:
            raise _Skip("unknown kind")
        rule = detection.get("rule")
        if (type(rule) is not dict and not isinstance(rule, Mapping)) or not isinstance(rule.get("id"), str) \
                or not rule["id"]:
            raise _Skip("bad rule")
        raw_entity = detection.get("entity")
        if not isinstance(raw_entity, str) or not raw_entity.strip():
            raise _Skip("no entity")
        entity = _host(raw_entity)
        source = detection.get("source")
        now = event_time_ms(detection.get("event_time"))
        if now is None:
            now = event_time_ms(source.get("timestamp_ms")) if isinstance(source, Mapping) else None
            if now is None:
                if not self.watermark:
                    raise _Skip("no event time")
                now = self.watermark
                self.counts["time_from_watermark"] += 1
            else:
                self.counts["time_from_source"] += 1
        rule_id: str = rule["id"]
        ref = None
        if (type(source) is dict or isinstance(source, Mapping)) and "offset" in source:
            ref = [source.get("topic"), source.get("partition"), source.get("offset")]
            key = (ref[0], ref[1], ref[2], kind, rule_id)
            if key in self._seen:
                self.counts["duplicates"] += 1
                return []
            self._seen[key] = None
            if len(self._seen) > self.config.dedupe_cap:
                self._seen.popitem(last=False)
        else:
            self.counts["no_source"] += 1
        out = self._advance(now)
        event = detection.get("event")
        if type(event) is not dict and not isinstance(event, Mapping):
            event = {}
        if self.suppressions.match(rule_id, entity, event, now) is not None:
            self.counts["suppressed"] += 1
            return out
        level = str(rule.get("level") or "").lower()
        tags = rule.get("tags")
        tactics, techniques = attack_tags(tags) if isinstance(tags, list) else ((), ())
        scores = detection.get("scores")
        host_score = _score(scores, "host", entity)
        user = self._user(event)
        user_score = _score(scores, "user", user) if user else None
        anomaly_info = None
        if kind == "anomaly":
            info = detection.get("anomaly")
            if isinstance(info, Mapping) and isinstance(info.get("score"), int | float):
                anomaly_info = info
                entity_type = info.get("entity_type")
                if entity_type == "host":
                    host_score = float(info["score"])
                elif entity_type == "user" and isinstance(info.get("entity"), str):
                    user = normalize("user", info["entity"].split(":", 1)[-1])
                    user_score = float(info["score"])
        self.counts["processed"] += 1
        self.counts[kind] += 1
        title = str(rule.get("title") or rule_id)
        return out + self._hit(kind, (rule_id,), title, level, entity, user, now, tactics, techniques,
                               host_score, user_score, anomaly_info, ref, correlation=False)

    def _user(self, event: Mapping[str, Any]) -> str | None:
        for name in self.config.user_fields:
            value = event.get(name)
            if isinstance(value, str):
                key = _user_key(value)
                if key not in _NOBODY and not key.endswith("$"):
                    return key
        return None

    def _hit(self, kind: str, rule_ids: tuple[str, ...], title: str, level: str, entity: str, user: str | None,
             now: int, tactics: tuple[str, ...], techniques: tuple[str, ...], host_score: float | None,
             user_score: float | None, anomaly_info: Mapping[str, Any] | None, ref: list[Any] | None,
             correlation: bool, refs: list[list[Any]] | None = None) -> list[Alert]:
        rule_id = rule_ids[0]
        out: list[Alert] = []
        host_asset = self.criticality.get("host", entity)
        user_asset = self.criticality.get("user", user) if user else None
        weight = self.suppressions.weight(rule_id, entity)
        hosts = self.tables["host"]
        points = self.config.priority.p1_risk / 2 if correlation and level not in self.config.risk.level_points else None
        # An anomaly detection's own score already chose its level: it is not multiplied by it again.
        host_factor = 0.0 if anomaly_info is not None else (host_score or 0.0)
        contributions = [hosts.add(entity, now, level, rule_id, tactics, techniques, host_factor,
                                   host_asset.criticality if host_asset else None, weight, points)]
        host_state = hosts.touch(entity, now)
        if correlation:
            host_state.correlation_ms = now
        if host_score is not None:
            host_state.anomaly = host_score
            if anomaly_info is not None and anomaly_info.get("entity_type") == "host":
                host_state.anomaly_reasons = [str(reason) for reason in anomaly_info.get("reasons") or ()][:10]
        user_state = None
        if user:
            users = self.tables["user"]
            user_factor = 0.0 if anomaly_info is not None else (user_score or 0.0)
            contributions.append(users.add(user, now, level, rule_id, tactics, techniques, user_factor,
                                           user_asset.criticality if user_asset else None, weight, points))
            user_state = users.touch(user, now)
            if user_score is not None:
                user_state.anomaly = user_score
        state, closed = self.book.hit(kind, rule_ids, entity, now)
        if closed is not None:
            out.append(self._emit(closed, 3, max(now, closed.last_ms)))
        new = state.count == 0
        state.count += 1
        hits = state.rules.get(rule_id)
        if hits is None:
            hits = state.rules[rule_id] = RuleHits(rule_id, title, level)
        hits.count += 1
        hits.points += contributions[0].points
        hits.weight = weight
        for name in tactics:
            if name not in state.tactics:
                state.tactics.append(name)
        for name in techniques:
            if name not in state.techniques:
                state.techniques.append(name)
        if user and user not in state.users and len(state.users) < 20:
            state.users.append(user)
        if ref is not None:
            self.book.add_ref(state, ref)
        for item in refs or ():
            self.book.add_ref(state, item)
        if anomaly_info is not None:
            state.anomalies[str(anomaly_info.get("entity"))] = {
                "score": anomaly_info.get("score"), "reasons": list(anomaly_info.get("reasons") or ())[:10]}
        elif host_score is not None:
            known = state.anomalies.get(f"host:{entity}")
            state.anomalies[f"host:{entity}"] = {"score": host_score,
                                                 "reasons": known["reasons"] if known else list(host_state.anomaly_reasons)}
        for contribution in contributions:
            self.book.add_contribution(state, contribution)
        risk_config = self.config.risk
        tactic_count = host_state.tactic_count(now, risk_config.window_ms)
        if user_state is not None:
            tactic_count = max(tactic_count, user_state.tactic_count(now, risk_config.window_ms))
        max_level = hits.level if len(state.rules) == 1 else \
            max((hit.level for hit in state.rules.values()), key=lambda name: LEVEL_RANK.get(name, -1))
        asset = _higher(host_asset, user_asset)
        window_start = now - risk_config.window_ms
        correlated = correlation or (host_state.correlation_ms is not None and host_state.correlation_ms >= window_start)
        anomaly = host_score if host_score is not None else host_state.anomaly
        noisy = hits.count >= self.config.priority.noisy_hits or rule_id in self.config.priority.noisy_rules
        risk = max(contribution.risk_after for contribution in contributions)
        result = prioritize(self.config.priority, risk, tactic_count, max_level, asset.criticality if asset else None,
                            correlated, anomaly, noisy)
        if result.demoted:
            self.counts["demoted"] += 1
        state.priority = result.priority
        escalated = result.priority < state.emitted_priority
        if new or escalated or state.count & (state.count - 1) == 0:
            state.emitted_priority = min(state.emitted_priority, result.priority)
            state.explanation = self._explain(state, result, entity, user, host_asset, user_asset, tactic_count,
                                              contributions)
            out.append(self._emit(state, 1 if new else 2, now))
        return out

    def _explain(self, state: AlertState, result: PriorityResult, entity: str, user: str | None,
                 host_asset: Asset | None, user_asset: Asset | None, tactic_count: int,
                 contributions: list[Contribution]) -> dict[str, Any]:
        hosts, users = self.tables["host"], self.tables["user"]
        now = state.last_ms
        return {
            "alert_id": state.alert_id,
            "entity": {"host": entity, "users": list(state.users)},
            "rules": [hit.to_dict() for hit in state.rules.values()],
            "count": state.count,
            "first_seen_ms": state.first_ms, "last_seen_ms": state.last_ms,
            "tactics": list(state.tactics), "techniques": list(state.techniques),
            "distinct_tactics_in_window": tactic_count,
            "anomaly": dict(state.anomalies),
            "criticality": {"host": host_asset.to_dict() if host_asset else None,
                            "user": user_asset.to_dict() if user_asset else None},
            "risk": {"host": round(hosts.risk(entity, now), 4),
                     "user": round(users.risk(user, now), 4) if user else None, "used": round(result.risk, 4)},
            "formula": {"contribution": CONTRIBUTION_FORMULA, "priority": PRIORITY_FORMULA},
            "last_contribution": [item.to_dict() for item in contributions],
            "contributions": [item.to_dict() if isinstance(item, Contribution) else item for item in state.contributions],
            "contributions_total": state.contribution_total,
            "priority": result.to_dict(),
            "evidence": {"refs": [list(ref) for ref in state.refs], "total": state.ref_total},
        }

    def _resources(self, state: AlertState) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = []
        for entity_type, names in (("host", [state.entity]), ("user", state.users)):
            for name in names:
                resource: dict[str, Any] = {"name": name, "type": entity_type}
                if entity_type == "host":
                    resource["hostname"] = name
                asset = self.criticality.get(entity_type, name)
                if asset is not None:
                    resource["criticality"] = asset.criticality
                    if asset.role:
                        resource["role"] = asset.role
                    if asset.owner:
                        resource["owner"] = {"name": asset.owner}
                resources.append(resource)
        return resources

    def _emit(self, state: AlertState, activity_id: int, time_ms: int) -> Alert:
        if activity_id == 3:  # the last full explanation, with the final counts and evidence
            state.explanation = {**state.explanation, "count": state.count, "closed": "inactivity",
                                 "rules": [hit.to_dict() for hit in state.rules.values()],
                                 "evidence": {"refs": [list(r) for r in state.refs], "total": state.ref_total}}
        state.emitted += 1
        self.counts[f"alerts_{ACTIVITIES[activity_id].lower()}"] += 1
        risk = state.explanation.get("risk", {}).get("used", 0.0) if state.explanation else 0.0
        ocsf = detection_finding(state, activity_id, time_ms, self._resources(state), float(risk or 0.0))
        return Alert(state.alert_id, activity_id, state.priority, state.entity, state.rule_ids, state.count, ocsf)

    def _advance(self, now: int) -> list[Alert]:
        if now > self.watermark:
            self.watermark = now
        if self.watermark < self._next_sweep:
            return []
        self._next_sweep = self.watermark + max(1, self.config.alerts.inactivity_ms // 4)
        self.suppressions.expire(self.watermark)
        return [self._emit(state, 3, self.watermark) for state in self.book.stale(self.watermark)]

    # -- correlation hits -----------------------------------------------------------------------
    def process_correlation(self, hit: Any) -> list[Alert]:
        """A correlation-rule hit, duck-typed: `id` (or `correlation_id`), `title`, `level`, `group_key`
        (or `key`/`group`; a mapping names its host by a HOST_GROUP_FIELDS key), `last_time`/`first_time`
        (or `last_event_ms`/`first_event_ms`; ms or ISO), `refs` (mappings or (topic, partition,
        offset)), optional `ref_count` and `tags`: `correlator.records.CorrelationHit` fits. It adds
        risk to the group's entity (level points, or p1_risk / 2 for an unknown level), opens or
        updates its alert, and makes the entity P1-eligible for the risk window."""
        self.counts["received_correlations"] += 1
        try:
            rule_id = _attr(hit, "id", "correlation_id")
            if not isinstance(rule_id, str) or not rule_id:
                raise _Skip("correlation without id")
            group = _attr(hit, "group_key", "key", "group")
            if isinstance(group, Mapping):
                host = next((group[name] for name in HOST_GROUP_FIELDS if group.get(name)), None)
                group = host if isinstance(host, str) else "|".join(str(value) for value in group.values())
            elif isinstance(group, list | tuple):
                group = "|".join(str(value) for value in group)
            if not isinstance(group, str) or not group.strip():
                raise _Skip("correlation without group key")
            entity = _host(group)
            last = event_time_ms(_attr(hit, "last_time", "last_event_ms"))
            if last is None:
                last = event_time_ms(_attr(hit, "first_time", "first_event_ms"))
            if last is None:
                raise _Skip("correlation without time")
            refs: list[list[Any]] = []
            for ref in getattr(hit, "refs", None) or ():
                if isinstance(ref, Mapping):
                    refs.append([ref.get("topic"), ref.get("partition"), ref.get("offset")])
                elif isinstance(ref, list | tuple) and len(ref) >= 3:
                    refs.append([ref[0], ref[1], ref[2]])
            uncounted = getattr(hit, "ref_count", None)
            uncounted = uncounted - len(refs) if isinstance(uncounted, int) and uncounted > len(refs) else 0
            tags = getattr(hit, "tags", None)
            tactics, techniques = attack_tags(tags) if isinstance(tags, list | tuple) else ((), ())
            level = str(getattr(hit, "level", "") or "").lower()
            title = str(getattr(hit, "title", None) or rule_id)
            out = self._advance(last)
            self.counts["correlations"] += 1
            alerts = self._hit("correlation", (f"correlation:{rule_id}",), title, level, entity, None, last,
                               tactics, techniques, None, None, None, None, correlation=True, refs=refs)
            if uncounted:  # refs the correlation engine counted but did not keep
                state = self.book.open.get(((f"correlation:{rule_id}",), entity))
                if state is not None:
                    state.ref_total += uncounted
            return out + alerts
        except _Skip as skip:
            self.skipped[str(skip)] += 1
            return []
        except Exception as error:  # noqa: BLE001
            self.skipped[f"error: {type(error).__name__}"] += 1
            return []

    # -- time, snapshots, checkpoints -------------------------------------------------------------
    def flush(self, now_ms: int | None = None) -> list[Alert]:
        """Close what is idle at `now_ms` (event time; default the watermark); with `now_ms` past
        every alert, this closes them all (end of a replay)."""
        if now_ms is not None and now_ms > self.watermark:
            self.watermark = now_ms
        self._next_sweep = self.watermark + max(1, self.config.alerts.inactivity_ms // 4)
        return [self._emit(state, 3, self.watermark) for state in self.book.stale(self.watermark)]

    def close_all(self) -> list[Alert]:
        """Close every open alert now (shutdown, end of a replay)."""
        states = self.book.close_all()
        return [self._emit(state, 3, max(self.watermark, state.last_ms)) for state in states]

    def open_alerts(self) -> list[Alert]:
        """The current state of every open alert, as Update findings (nothing is emitted or counted)."""
        out = []
        for state in self.book.open.values():
            explanation = {**state.explanation, "count": state.count,
                           "rules": [hit.to_dict() for hit in state.rules.values()],
                           "evidence": {"refs": [list(r) for r in state.refs], "total": state.ref_total}}
            risk = float(explanation.get("risk", {}).get("used", 0.0) or 0.0)
            saved, state.explanation = state.explanation, explanation
            ocsf = detection_finding(state, 2, state.last_ms, self._resources(state), risk)
            state.explanation = saved
            out.append(Alert(state.alert_id, 2, state.priority, state.entity, state.rule_ids, state.count, ocsf))
        return out

    def stats(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
                "open_alerts": len(self.book), "suppressions": len(self.suppressions),
                "entities": {name: len(table) for name, table in self.tables.items()},
                "evicted": {name: table.evicted for name, table in self.tables.items()},
                "expired": {name: table.expired for name, table in self.tables.items()},
                "watermark_ms": self.watermark}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (JSON-serializable), for checkpoints."""
        return {"version": 1, "watermark": self.watermark, "next_sweep": self._next_sweep,
                "tables": {name: table.state_dict() for name, table in self.tables.items()},
                "alerts": self.book.state_dict(), "suppressions": self.suppressions.state_dict(),
                "seen": [list(key) for key in self._seen], "counts": dict(self.counts), "skipped": dict(self.skipped)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown fusion state version {state.get('version')!r}")
        self.watermark = int(state["watermark"])
        self._next_sweep = int(state["next_sweep"])
        for name, table in self.tables.items():
            table.load_state_dict(state["tables"].get(name, {}))
        self.book.load_state_dict(state["alerts"])
        self.suppressions.load_state_dict(state["suppressions"])
        self._seen = OrderedDict((tuple(key), None) for key in state["seen"])
        self.counts = Counter(state.get("counts", {}))
        self.skipped = Counter(state.get("skipped", {}))
