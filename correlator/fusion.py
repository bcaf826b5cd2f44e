"""FusionEngine: detections in, prioritized and explained OCSF alerts out. Pure: no I/O, no wall
clock; every time is event time (the detection's `event_time`, else its source record timestamp,
else the engine's watermark, the latest event time seen).

    engine = FusionEngine(FusionConfig(), criticality=Criticality.from_text(csv_text)[0])
    for detection in detections:           # the dicts workers produce to the detections topic
        for alert in engine.process(detection):
            publish(alert.ocsf)            # OCSF 1.8.0 Detection Finding (class 2004)

Two kinds of alert (risk-based alerting, see correlator/priority.py): each rule's own alert on an
entity, recorded at P4 (a risk contribution, explained), and the host's entity risk alert (rule id
`risk:entity`, kind `risk`), which carries P1-P3 once the host's risk and its case's tactics cross
the thresholds. An anomaly detection opens no alert: it sets its host's anomaly context
(`anomaly_breadth`), the multiplier of later contributions and the P1 corroboration.

An alert is emitted on Create (first hit), on Update when its priority escalates past any it was
emitted with, or when its count reaches a power of two (2, 4, 8, ...; a lower priority shows then),
and on Close once `AlertConfig.inactivity_ms` of event time passes
without a hit (checked as the watermark advances, or by `flush`). `open_alerts()` renders the
current state of every open alert on demand. A malformed record or an unknown `schema_version` is
a counted skip with a reason (`stats()["skipped"]`), never an exception.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from correlator.alerts import AlertBook, AlertConfig, AlertState, RuleHits
from correlator.criticality import LEVELS, Asset, Criticality
from correlator.ocsf import ACTIVITIES, detection_finding
from correlator.priority import PriorityConfig, PriorityResult, prioritize, priority_of, tactic_steps, technique_step
from correlator.risk import (
    POINTS,
    REPEAT_FACTOR,
    RISK_AFTER,
    RiskConfig,
    RiskTable,
    as_contribution_dict,
    attack_tags,
    contribution_dict,
)
from correlator.suppressions import FeedbackConfig, Suppression, Suppressions
from models.entities import normalize

ENTITY_RULE = "risk:entity"  # the rule id of an entity risk alert
SUPPORTED_SCHEMA_VERSIONS = frozenset({1, "1"})  # a record without `schema_version` is version 1
KINDS = frozenset({"sigma", "anomaly"})
LEVEL_RANK = {"informational": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
CONTRIBUTION_FORMULA = ("points = (level_points * repeat_factor + tactic_bonus * new_tactics + technique_bonus * "
                        "new_techniques) * weight * (1 + anomaly_alpha * anomaly) * criticality_factor; "
                        "risk = risk_before * 2^(-dt/half_life) + points")
PRIORITY_FORMULA = ("risk = max(host risk, user risk); P1 if risk >= p1_risk and a P1 gate (a novel high/critical rule "
                    "on a high/critical asset with >= p1_criticality_tactics tactics, >= p1_min_tactics distinct "
                    "tactics in the window (entity alerts: of novel, corroborated detections, one technique each), or a "
                    "correlation hit), after the learning period, else P2; P2 if risk >= p2_risk; P3 if risk >= "
                    "p3_risk; else P4; one step lower when the rule is noisy on the entity and its anomaly score is "
                    "below demote_below")
# group-by fields of a correlation that name its host (else the group's values, joined, are the entity)
HOST_GROUP_FIELDS = ("Computer", "ComputerName", "Hostname", "host", "hostname", "entity")
_NOBODY = frozenset({"", "-", "system", "local service", "network service", "anonymous logon", "n/a"})
_UNSET: Any = object()
_ASSET_CACHE_CAP = 50_000  # per entity type; past it the cache starts over
MAX_STEPS = 16  # techniques remembered per corroborated tactic of a host (the latest)
_COUNT_NAMES = {activity_id: f"alerts_{name.lower()}" for activity_id, name in ACTIVITIES.items()}
_isfinite = math.isfinite


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
    parsed: datetime | None
    try:  # the usual case, what workers write (isoformat()): parsed in C as it is
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = _iso_normalized(value)
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if len(_TIME_CACHE) > 10_000:
        _TIME_CACHE.clear()
    _TIME_CACHE[value] = ms
    return ms


def _iso_normalized(value: str) -> datetime | None:
    """ISO-8601 text that fromisoformat refuses as it is: spaces around it, a lower-case z, more
    than 6 fraction digits."""
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
        return datetime.fromisoformat(text)
    except ValueError:
        return None


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


# raw user value -> its key when it names someone, "" when it names no one (machine account,
# placeholder): one lookup per event field instead of normalizing and testing on every hit.
_SOMEONE: dict[str, str] = {}


def _someone(value: str) -> str:
    found = _SOMEONE.get(value)
    if found is None:
        key = _user_key(value)
        found = "" if key in _NOBODY or key.endswith("$") else key
        if len(_SOMEONE) > 50_000:
            _SOMEONE.clear()
        _SOMEONE[value] = found
    return found


def _score(scores: Any, entity_type: str, entity: str | None) -> float | None:
    """The entity's anomaly score in a detection's `scores`: {"host:ws-01": 0.9} (what workers
    write) or {"host": {"score": 0.9}} / {"host": 0.9}."""
    if not scores or (type(scores) is not dict and not isinstance(scores, Mapping)):
        return None
    value = scores.get(f"{entity_type}:{entity}") if entity else None
    if value is None:
        value = scores.get(entity_type)
        if value is None:  # the usual miss, decided before the slower Mapping check below
            return None
        if isinstance(value, Mapping):
            value = value.get("score")
    if type(value) is float:  # the usual hit: float(value) is value
        return value if _isfinite(value) else None
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
        # Criticality.get by entity name, per entity type, for the table in `_assets_of` (a table
        # never changes: a reload is a new object, and the cache starts over)
        self._assets_of: Criticality | None = None
        self._host_assets: dict[str, Asset | None] = {}
        self._user_assets: dict[str, Asset | None] = {}
        # host -> its latest contributions while no entity alert is open (see _entity_hit)
        self._recent: OrderedDict[str, deque[tuple[Any, ...]]] = OrderedDict()
        self._first_ms: int | None = None  # the first event time seen: PriorityConfig.learning_ms runs from it
        # host -> tactic -> technique (or rule id) -> last ms, of corroborating contributions (_entity_hit)
        self._corroborated: OrderedDict[str, dict[str, dict[str, int]]] = OrderedDict()
        # host -> anomalous entity id -> last ms (see anomaly_breadth)
        self._anomalous: OrderedDict[str, OrderedDict[str, int]] = OrderedDict()

    # -- configuration hooks ------------------------------------------------------------------
    def set_criticality(self, criticality: Criticality) -> None:
        """Swap in a reloaded criticality table (applies to later detections)."""
        self.criticality = criticality

    def add_suppression(self, suppression: Suppression) -> None:
        self.suppressions.add(suppression)

    def false_positive(self, rule_id: str, entity: str, reason: str = "false positive verdict",
                       duration_ms: int | None = None) -> Suppression:
        """Verdict feedback: suppress `rule_id` on `entity` (for `duration_ms` of event time, default
        `feedback.fp_suppression_ms`) and halve its weight there."""
        self.counts["verdicts_fp"] += 1
        return self.suppressions.false_positive(rule_id, normalize("host", entity), self.watermark, reason,
                                                duration_ms=duration_ms)

    def lower_weight(self, rule_id: str, entity: str) -> float:
        """Verdict feedback without a suppression: halve `rule_id`'s weight on `entity`."""
        self.counts["verdicts_weight"] += 1
        return self.suppressions.lower_weight(rule_id, normalize("host", entity))

    # -- detections -----------------------------------------------------------------------------
    def process(self, detection: Any) -> list[Alert]:
        """A detection record, checked here (its event time read here too)."""
        return self._guarded(detection, None)

    def fuse(self, detection: Mapping[str, Any], now: int) -> list[Alert]:
        """A detection record that `correlator.records.check_detection` passed, at event time
        `now` (ms): the Correlator's path, which checks each record once and reads its time
        once (`process` does both itself)."""
        return self._guarded(detection, now)

    def _guarded(self, detection: Any, now: int | None) -> list[Alert]:
        """Either path: a bad record is a counted skip with its reason, never an exception."""
        self.counts["received"] += 1
        try:
            if now is None:
                return self._process(detection)
            return self._fuse(detection, detection["kind"], detection["rule"], detection["source"], now)
        except _Skip as skip:
            self.skipped[str(skip)] += 1
            return []
        except Exception as error:  # noqa: BLE001 - one bad record never stops the stream
            self.skipped[f"error: {type(error).__name__}"] += 1
            return []

    def _process(self, detection: Any) -> list[Alert]:
        if type(detection) is not dict and not isinstance(detection, Mapping):
            raise _Skip("not a mapping")
        get = detection.get
        version = get("schema_version", 1)
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise _Skip("unknown schema_version")
        kind = get("kind")
        if kind not in KINDS:
            raise _Skip("unknown kind")
        rule = get("rule")
        if (type(rule) is not dict and not isinstance(rule, Mapping)) or not isinstance(rule.get("id"), str) \
                or not rule["id"]:
            raise _Skip("bad rule")
        source = get("source")
        now = get("event_time")
        # the usual case first: ms as an int (event_time_ms returns it as is, after the same check)
        if type(now) is not int or not _isfinite(now):
            now = event_time_ms(now)
        if now is None:
            now = event_time_ms(source.get("timestamp_ms")) if isinstance(source, Mapping) else None
            if now is None:
                if not self.watermark:
                    raise _Skip("no event time")
                now = self.watermark
                self.counts["time_from_watermark"] += 1
            else:
                self.counts["time_from_source"] += 1
        return self._fuse(detection, kind, rule, source, now)

    def _fuse(self, detection: Mapping[str, Any], kind: str, rule: Mapping[str, Any], source: Any,
              now: int) -> list[Alert]:
        get = detection.get
        rule_id: str = rule["id"]
        raw_entity = get("entity")
        # a known raw value passed the check below when it was cached
        entity = _HOSTS.get(raw_entity) if type(raw_entity) is str else None
        if entity is None:
            if not isinstance(raw_entity, str) or not raw_entity.strip():
                raise _Skip("no entity")
            entity = _host(raw_entity)
        ref = None
        if (type(source) is dict or isinstance(source, Mapping)) and "offset" in source:
            # a tuple: immutable and atomic, so the garbage collector stops tracking the refs alerts keep
            ref = (source.get("topic"), source.get("partition"), source.get("offset"))
            key = (ref[0], ref[1], ref[2], kind, rule_id)
            seen = self._seen
            if key in seen:
                self.counts["duplicates"] += 1
                return []
            seen[key] = None
            if len(seen) > self.config.dedupe_cap:
                seen.popitem(last=False)
        else:
            self.counts["no_source"] += 1
        if self._first_ms is None:
            self._first_ms = now
        if now > self.watermark:  # _advance, inline: a sweep is due once per inactivity_ms / 4
            self.watermark = now
        out = self._sweep() if self.watermark >= self._next_sweep else []
        event = get("event")
        if type(event) is not dict and not isinstance(event, Mapping):
            event = {}
        if self.suppressions.match(rule_id, entity, event, now) is not None:
            self.counts["suppressed"] += 1
            return out
        level = str(rule.get("level") or "").lower()
        tags = rule.get("tags")
        tactics, techniques = attack_tags(tags) if isinstance(tags, list) else ((), ())
        scores = get("scores")
        host_score = None
        # _score's usual case first (a dict naming the host with a finite float); else _score itself
        if type(scores) is dict and scores and entity:
            value = scores.get("host:" + entity)
            if type(value) is float and _isfinite(value):
                host_score = value
            else:
                host_score = _score(scores, "host", entity)
        else:
            host_score = _score(scores, "host", entity)
        user = None
        for name in self.config.user_fields:  # the first user field that names someone
            value = event.get(name)
            if isinstance(value, str):
                user = _SOMEONE.get(value) or _someone(value)
                if user:
                    break
        user = user or None
        user_score = None
        if user and (type(scores) is not dict or scores.get("user:" + user) is not None
                     or scores.get("user") is not None):  # both absent: _score gives None
            user_score = _score(scores, "user", user)
        anomaly_info = None
        if kind == "anomaly":
            info = get("anomaly")
            if isinstance(info, Mapping) and isinstance(info.get("score"), int | float):
                anomaly_info = info
                entity_type = info.get("entity_type")
                if entity_type == "host":
                    host_score = float(info["score"])
                elif entity_type == "user" and isinstance(info.get("entity"), str):
                    user = normalize("user", info["entity"].split(":", 1)[-1])
                    user_score = float(info["score"])
        counts = self.counts
        counts["processed"] += 1
        counts[kind] += 1
        if anomaly_info is not None:
            self._anomalous_on(entity, str(anomaly_info.get("entity") or rule_id), now)
            context_scores = None
        else:
            context_scores = scores
        if anomaly_info is not None and not self.config.alerts.anomaly_alerts:
            self._anomaly_context(anomaly_info, entity, user, host_score, user_score, now)
            return out
        title = str(rule.get("title") or rule_id)
        self._hit(kind, (rule_id,), title, level, entity, user, now, tactics, techniques, host_score, user_score,
                  anomaly_info, ref, False, None, out, context_scores)
        return out

    def _anomalous_on(self, host: str, entity_id: str, now: int) -> None:
        """Remember that the models called `entity_id` anomalous on `host` at `now` (bounded)."""
        seen = self._anomalous.get(host)
        if seen is None:
            if len(self._anomalous) >= self.config.risk.max_entities:
                self._anomalous.pop(next(iter(self._anomalous)))
            seen = self._anomalous[host] = OrderedDict()
        else:
            self._anomalous.move_to_end(host)
        seen[entity_id] = now
        seen.move_to_end(entity_id)
        horizon = now - self.config.risk.anomaly_window_ms
        while seen:
            first = next(iter(seen.values()))
            if first >= horizon and len(seen) <= 256:
                break
            seen.popitem(last=False)

    def anomaly_breadth(self, host: str, now: int, scores: Any = None) -> float:
        """The host's anomaly context 0..1 (RiskConfig.anomaly_breadth): distinct anomalous entities
        on it within anomaly_window_ms up to `now`, with those of the detection's own `scores` (its
        event's anomaly detections come after it in the stream), over anomaly_breadth, at most 1."""
        config = self.config.risk
        if config.anomaly_breadth <= 0:
            return 0.0
        found: set[str] = set()
        if type(scores) is dict or isinstance(scores, Mapping):
            cut = config.anomalous_score
            found.update(key for key, value in scores.items()
                         if type(value) is float and value >= cut and ":" in key)
        seen = self._anomalous.get(host)
        if seen:
            horizon = now - config.anomaly_window_ms
            found.update(key for key, ms in seen.items() if horizon <= ms <= now)
        return min(1.0, len(found) / config.anomaly_breadth)

    def _anomaly_context(self, info: Mapping[str, Any], entity: str, user: str | None, host_score: float | None,
                         user_score: float | None, now: int) -> None:
        """An anomaly detection without an alert of its own: its entity's anomaly score (and reasons)
        for the multiplier of later contributions and for explanations."""
        entity_type = info.get("entity_type")
        if entity_type == "host" and host_score is not None:
            state = self.tables["host"].touch(entity, now)
            state.anomaly = host_score
            state.anomaly_reasons = [str(reason) for reason in info.get("reasons") or ()][:10]
        elif entity_type == "user" and user and user_score is not None:
            self.tables["user"].touch(user, now).anomaly = user_score
        self.counts["anomaly_context"] += 1

    def _hit(self, kind: str, rule_ids: tuple[str, ...], title: str, level: str, entity: str, user: str | None,
             now: int, tactics: tuple[str, ...], techniques: tuple[str, ...], host_score: float | None,
             user_score: float | None, anomaly_info: Mapping[str, Any] | None, ref: tuple[Any, ...] | None,
             correlation: bool, refs: list[tuple[Any, ...]] | None, out: list[Alert], scores: Any = None) -> None:
        """One hit on its alert, appending what it emits to `out`. Only what decides the priority and
        the emission is computed on every hit: the explanation and the OCSF finding are built when an
        alert is emitted, from the alert's state."""
        rule_id = rule_ids[0]
        if self.criticality is not self._assets_of:  # _current_assets, inline
            self._current_assets()
        host_asset = self._host_assets.get(entity, _UNSET)
        if host_asset is _UNSET:
            host_asset = self._asset(self._host_assets, "host", entity)
        user_asset = None
        if user:
            user_asset = self._user_assets.get(user, _UNSET)
            if user_asset is _UNSET:
                user_asset = self._asset(self._user_assets, "user", user)
        suppressions = self.suppressions
        weight = suppressions.weight(rule_id, entity) if suppressions.weights else 1.0
        points = self.config.priority.p1_risk / 2 if correlation and level not in self.config.risk.level_points else None
        # An anomaly detection's own score already chose its level: it is not multiplied by it again.
        if self.config.risk.anomaly_breadth > 0:  # see RiskConfig: the host's anomaly context
            context = 0.0 if anomaly_info is not None else self.anomaly_breadth(entity, now, scores)
            host_factor = user_factor = context
        else:
            host_factor = 0.0 if anomaly_info is not None else (host_score or 0.0)
            user_factor = 0.0 if anomaly_info is not None else (user_score or 0.0)
        host_state, host_contribution = self.tables["host"].contribute(
            entity, now, level, rule_id, tactics, techniques, host_factor,
            host_asset.criticality if host_asset else None, weight, points)
        if correlation:
            host_state.correlation_ms = now
        if host_score is not None:
            host_state.anomaly = host_score
            if anomaly_info is not None and anomaly_info.get("entity_type") == "host":
                host_state.anomaly_reasons = [str(reason) for reason in anomaly_info.get("reasons") or ()][:10]
        user_state = user_contribution = None
        if user:
            user_state, user_contribution = self.tables["user"].contribute(
                user, now, level, rule_id, tactics, techniques, user_factor,
                user_asset.criticality if user_asset else None, weight, points)
            if user_score is not None:
                user_state.anomaly = user_score
        book = self.book
        state = book.open.get((rule_ids, entity))
        if state is not None and now - state.last_ms <= book.config.inactivity_ms:  # AlertBook.hit, open alert
            if now > state.last_ms:
                state.last_ms = now
            if now < state.first_ms:
                state.first_ms = now
        else:
            state, closed = book.hit(kind, rule_ids, entity, now)
            if closed is not None:
                out.append(self._emit(closed, 3, max(now, closed.last_ms)))
        new = state.count == 0
        state.count += 1
        rules = state.rules
        hits = rules.get(rule_id)
        if hits is None:
            hits = rules[rule_id] = RuleHits(rule_id, title, level)
        hits.count += 1
        hits.points += host_contribution[POINTS]
        hits.weight = weight
        if tactics:
            known = state.tactics
            for name in tactics:
                if name not in known:
                    known.append(name)
        if techniques:
            known = state.techniques
            for name in techniques:
                if name not in known:
                    known.append(name)
        if user and len(state.users) < 20 and user not in state.users:  # no scan once full
            state.users.append(user)
        max_refs = book.config.max_refs
        if ref is not None:  # AlertBook.add_ref, inline
            state.ref_total += 1
            if len(state.refs) < max_refs:
                state.refs.append(ref)
        for item in refs or ():
            book.add_ref(state, item)
        anomalies = state.anomalies
        if anomaly_info is not None:
            anomalies[str(anomaly_info.get("entity"))] = {
                "score": anomaly_info.get("score"), "reasons": list(anomaly_info.get("reasons") or ())[:10]}
        elif host_score is not None:
            key = "host:" + entity
            known_score = anomalies.get(key)
            if not known_score:
                anomalies[key] = {"score": host_score, "reasons": list(host_state.anomaly_reasons)}
            else:  # in place (the reasons stay): _explain copies these dicts, so emitted alerts keep theirs
                known_score["score"] = host_score
        # AlertBook.add_contribution, inline: keep the latest max_contributions
        contributions = state.contributions
        max_contributions = book.config.max_contributions
        contributions.append(host_contribution)
        if len(contributions) > max_contributions:
            del contributions[0]
        if user_contribution is None:
            state.contribution_total += 1
            risk = host_contribution[RISK_AFTER]
        else:
            contributions.append(user_contribution)
            if len(contributions) > max_contributions:
                del contributions[0]
            state.contribution_total += 2
            risk = max(host_contribution[RISK_AFTER], user_contribution[RISK_AFTER])
        window_ms = self.config.risk.window_ms
        window_start = now - window_ms
        # EntityRisk.tactic_count's shortcut inline: every tactic seen inside the window
        tactic_count = len(host_state.tactics) if host_state.tactics_floor >= window_start else \
            host_state.tactic_count(now, window_ms)
        if user_state is not None:
            user_count = len(user_state.tactics) if user_state.tactics_floor >= window_start else \
                user_state.tactic_count(now, window_ms)
            if user_count > tactic_count:
                tactic_count = user_count
        max_level = hits.level if len(rules) == 1 else \
            max((hit.level for hit in rules.values()), key=lambda name: LEVEL_RANK.get(name, -1))
        asset = host_asset if user_asset is None else _higher(host_asset, user_asset)
        correlated = correlation or (host_state.correlation_ms is not None and
                                     host_state.correlation_ms >= window_start)
        anomaly = host_score if host_score is not None else host_state.anomaly
        if self.config.risk.anomaly_breadth > 0:
            anomaly = host_factor if host_score is not None or host_factor else anomaly
        priority_config = self.config.priority
        noisy = hits.count >= priority_config.noisy_hits or rule_id in priority_config.noisy_rules
        asset_criticality = asset.criticality if asset else None
        priority, demoted = priority_of(priority_config, risk, tactic_count, max_level, asset_criticality,
                                        correlated, anomaly, noisy)
        if demoted:
            self.counts["demoted"] += 1
        if priority < priority_config.rule_alert_priority and (
                not correlation or level not in priority_config.correlation_alert_levels):
            priority = priority_config.rule_alert_priority  # recorded: the entity alert carries it
        state.priority = priority
        count = state.count
        if new or priority < state.emitted_priority or count & (count - 1) == 0:
            state.emitted_priority = min(state.emitted_priority, priority)
            result = prioritize(priority_config, risk, tactic_count, max_level, asset_criticality, correlated, anomaly,
                                noisy)
            last = [host_contribution] if user_contribution is None else [host_contribution, user_contribution]
            state.explanation = self._explain(state, result, entity, user, host_asset, user_asset, tactic_count, last)
            if priority != result.priority:
                state.explanation["priority"] = {**state.explanation["priority"], "priority": f"P{priority}",
                                                 "entity_priority": result.label, "recorded": True}
            out.append(self._emit(state, 1 if new else 2, now))
        if priority_config.entity_alerts and not correlation:
            self._entity_hit(entity, user, now, rule_id, title, level, tactics, techniques, ref, host_contribution,
                             user_contribution, host_asset, user_asset,
                             (risk, max_level, asset_criticality, correlated, anomaly), out)

    def _entity_hit(self, entity: str, user: str | None, now: int, rule_id: str, title: str, level: str,
                    tactics: tuple[str, ...], techniques: tuple[str, ...], ref: tuple[Any, ...] | None,
                    host_contribution: Any, user_contribution: Any, host_asset: Asset | None,
                    user_asset: Asset | None, decided: tuple[float, str, str | None, bool, float | None],
                    out: list[Alert]) -> None:
        """One contribution to the entity's risk alert: opens it when the entity qualifies, joins it
        while it is open; otherwise remembered, so an alert opened later shows what built the risk.

        The case's tactics (the open alert's, else those of the contributions it would start with)
        decide the tactic gates, not every tactic of the entity in the 7-day window: an entity keeps
        the tactics of last week's incident or of its routine, and they do not make today's hit P1."""
        book = self.book
        config = self.config.priority
        key = ((ENTITY_RULE,), entity)
        state = book.open.get(key)
        if state is not None and now - book.idle_since(state) > book.config.risk_inactivity_ms:
            state = None
        recent = self._recent.get(entity)
        current = (now, ref, rule_id, title, level, tactics, techniques)
        if state is None:
            horizon = now - book.config.risk_inactivity_ms
            items = [item for item in recent if item[0] >= horizon] if recent else []
            items.append(current)
            case_tactics = {name for item in items for name in item[5]}
        else:
            items = [current]
            case_tactics = set(state.tactics).union(tactics)
        risk, max_level, asset_criticality, correlated, anomaly = decided
        # the P1 tactic gate counts the tactics of corroborating contributions in the case window:
        # made with the anomaly context >= p1_anomaly (an intrusion's steps come with new processes,
        # addresses and accounts; a server's routine, once the models know it, does not; without
        # models, any) and novel (a rule new on the host and rare in the fleet: routine admin work
        # repeats), each tactic by a technique of its own (priority.tactic_steps)
        novelty = host_contribution[REPEAT_FACTOR]
        corroborated = self._corroborated.get(entity)
        if tactics and (anomaly is None or anomaly >= config.p1_anomaly) and novelty >= config.p1_novelty:
            if corroborated is None:
                if len(self._corroborated) >= self.config.risk.max_entities:
                    self._corroborated.pop(next(iter(self._corroborated)))
                corroborated = self._corroborated[entity] = {}
            steps = tuple(dict.fromkeys([technique_step(name) for name in techniques])) or (rule_id,)
            for name in tactics:
                seen = corroborated.get(name)
                if seen is None:
                    seen = corroborated[name] = {}
                for step in steps:
                    seen.pop(step, None)
                    seen[step] = now
                while len(seen) > MAX_STEPS:  # the latest steps of a tactic (insertion order: oldest first)
                    del seen[next(iter(seen))]
        horizon = now - book.config.risk_inactivity_ms
        if not corroborated:
            gate_tactics = 0
        elif config.p1_distinct_techniques:
            gate_tactics = len(tactic_steps(corroborated, horizon))
        else:
            gate_tactics = sum(1 for seen in corroborated.values() if any(ms >= horizon for ms in seen.values()))
        priority, _ = priority_of(config, risk, gate_tactics, max_level, asset_criticality, correlated, anomaly,
                                  False, novelty)
        learning = self._first_ms is not None and now - self._first_ms < config.learning_ms
        if learning and priority == 1:  # PriorityConfig.learning_ms: no P1 yet
            priority = 2
        qualifies = priority <= 3 and (len(case_tactics) >= config.entity_min_tactics or correlated)
        if state is None:
            if not qualifies:
                if recent is None:
                    if len(self._recent) >= self.config.risk.max_entities:
                        self._recent.pop(next(iter(self._recent)))
                    recent = self._recent[entity] = deque(maxlen=book.config.recent_contributions)
                recent.append(current)
                return
            if recent:
                recent.clear()
        state, closed = book.hit("risk", (ENTITY_RULE,), entity, now)
        if closed is not None:
            out.append(self._emit(closed, 3, max(now, closed.last_ms)))
        if qualifies or not state.kept_ms:
            # a contribution joins the case as evidence, but only a qualifying one keeps it open: an
            # entity with routine hits every day would otherwise hold one case for ever
            state.kept_ms = max(state.kept_ms, now)
        new = state.count == 0
        if new:
            state.first_ms = min(item[0] for item in items)
        for _, item_ref, item_rule, item_title, item_level, item_tactics, item_techniques in items:
            state.count += 1
            hits = state.rules.get(item_rule)
            if hits is None:
                hits = state.rules[item_rule] = RuleHits(item_rule, item_title, item_level)
            hits.count += 1
            for name in item_tactics:
                if name not in state.tactics:
                    state.tactics.append(name)
            for name in item_techniques:
                if name not in state.techniques:
                    state.techniques.append(name)
            if item_ref is not None:
                book.add_ref(state, item_ref)
        state.rules[rule_id].points += host_contribution[POINTS]
        if user and len(state.users) < 20 and user not in state.users:
            state.users.append(user)
        book.add_contribution(state, host_contribution)
        if user_contribution is not None:
            book.add_contribution(state, user_contribution)
        previous = state.priority if not new else 4
        state.priority = min(previous, priority)
        count = state.count
        if new or state.priority < state.emitted_priority or count & (count - 1) == 0:
            state.emitted_priority = min(state.emitted_priority, state.priority)
            result = prioritize(config, risk, gate_tactics, max_level, asset_criticality, correlated,
                                anomaly, False, novelty)
            last = [host_contribution] if user_contribution is None else [host_contribution, user_contribution]
            state.explanation = self._explain(state, result, entity, user, host_asset, user_asset,
                                              len(state.tactics), last)
            state.explanation["priority"] = {
                **state.explanation["priority"], "priority": f"P{state.priority}", "entity_alert": True,
                "case_tactics": len(state.tactics), "corroborated_tactics": gate_tactics,
                # each corroborated tactic and the technique (or rule) that stands for it (priority.tactic_steps)
                "corroborated_steps": tactic_steps(corroborated, horizon) if corroborated else {}}
            if learning:
                state.explanation["priority"]["reasons"] = [
                    *state.explanation["priority"]["reasons"],
                    f"learning period ({config.learning_ms // 3_600_000} h of event time): no P1 yet"]
            out.append(self._emit(state, 1 if new else 2, now))

    def _current_assets(self) -> None:
        """Start the asset caches over when the criticality table is another (a reload)."""
        if self.criticality is not self._assets_of:
            self._assets_of = self.criticality
            self._host_assets, self._user_assets = {}, {}

    def _asset(self, cache: dict[str, Asset | None], entity_type: str, name: str) -> Asset | None:
        """Criticality.get, remembered in `cache` (bounded)."""
        if len(cache) >= _ASSET_CACHE_CAP:
            cache.clear()
        found = cache[name] = self.criticality.get(entity_type, name)
        return found

    def _explain(self, state: AlertState, result: PriorityResult, entity: str, user: str | None,
                 host_asset: Asset | None, user_asset: Asset | None, tactic_count: int,
                 contributions: list[Any]) -> dict[str, Any]:
        hosts, users = self.tables["host"], self.tables["user"]
        now = state.last_ms
        # A kept contribution is made a dict once, in place (the alert keeps the dict instead of its
        # values), not again on each later emission. The explanations share these dicts, as they
        # share the dicts of a state loaded from a checkpoint: nothing changes them once made (the
        # engine only drops them), so what was emitted stays as it was.
        stored = state.contributions
        made: dict[int, dict[str, Any]] = {}
        for index, item in enumerate(stored):
            if type(item) is tuple:
                stored[index] = made[id(item)] = contribution_dict(item)
        last = []
        for item in contributions:  # this hit's: usually the newest kept ones, made just above
            found = made.get(id(item)) if type(item) is tuple else None
            last.append(found if found is not None else as_contribution_dict(item))
        return {
            "alert_id": state.alert_id,
            "entity": {"host": entity, "users": list(state.users)},
            "rules": [hit.to_dict() for hit in state.rules.values()],
            "count": state.count,
            "first_seen_ms": state.first_ms, "last_seen_ms": state.last_ms,
            "tactics": list(state.tactics), "techniques": list(state.techniques),
            "distinct_tactics_in_window": tactic_count,
            # copies of the entries too: the engine updates a host's score in place
            "anomaly": {key: dict(value) for key, value in state.anomalies.items()},
            "criticality": {"host": host_asset.to_dict() if host_asset else None,
                            "user": user_asset.to_dict() if user_asset else None},
            "risk": {"host": round(hosts.risk(entity, now), 4),
                     "user": round(users.risk(user, now), 4) if user else None, "used": round(result.risk, 4)},
            "formula": {"contribution": CONTRIBUTION_FORMULA, "priority": PRIORITY_FORMULA},
            "last_contribution": last,
            "contributions": [as_contribution_dict(item) for item in stored],
            "contributions_total": state.contribution_total,
            "priority": result.to_dict(),
            "evidence": {"refs": [list(ref) for ref in state.refs], "total": state.ref_total},
        }

    def _resources(self, state: AlertState) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = []
        self._current_assets()
        for entity_type, names, cache in (("host", [state.entity], self._host_assets),
                                          ("user", state.users, self._user_assets)):
            for name in names:
                resource: dict[str, Any] = {"name": name, "type": entity_type}
                if entity_type == "host":
                    resource["hostname"] = name
                asset = cache.get(name, _UNSET)
                if asset is _UNSET:
                    asset = self._asset(cache, entity_type, name)
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
        self.counts[_COUNT_NAMES[activity_id]] += 1
        risk = state.explanation.get("risk", {}).get("used", 0.0) if state.explanation else 0.0
        ocsf = detection_finding(state, activity_id, time_ms, self._resources(state), float(risk or 0.0))
        return Alert(state.alert_id, activity_id, state.priority, state.entity, state.rule_ids, state.count, ocsf)

    def _advance(self, now: int) -> list[Alert]:
        if now > self.watermark:
            self.watermark = now
        if self.watermark < self._next_sweep:
            return []
        return self._sweep()

    def _sweep(self) -> list[Alert]:
        """Expire suppressions and close what is idle at the watermark (due: watermark >= next sweep)."""
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
            refs: list[tuple[Any, ...]] = []
            for ref in getattr(hit, "refs", None) or ():
                if isinstance(ref, Mapping):
                    refs.append((ref.get("topic"), ref.get("partition"), ref.get("offset")))
                elif isinstance(ref, list | tuple) and len(ref) >= 3:
                    refs.append((ref[0], ref[1], ref[2]))
            uncounted = getattr(hit, "ref_count", None)
            uncounted = uncounted - len(refs) if isinstance(uncounted, int) and uncounted > len(refs) else 0
            tags = getattr(hit, "tags", None)
            tactics, techniques = attack_tags(tags) if isinstance(tags, list | tuple) else ((), ())
            level = str(getattr(hit, "level", "") or "").lower()
            title = str(getattr(hit, "title", None) or rule_id)
            out = self._advance(last)
            self.counts["correlations"] += 1
            alerts: list[Alert] = []
            self._hit("correlation", (f"correlation:{rule_id}",), title, level, entity, None, last,
                      tactics, techniques, None, None, None, None, True, refs, alerts)
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
                "seen": [list(key) for key in self._seen], "counts": dict(self.counts), "skipped": dict(self.skipped),
                "first_ms": self._first_ms,
                "anomalous": [[host, [[key, ms] for key, ms in seen.items()]] for host, seen in self._anomalous.items()],
                "corroborated": [[host, {tactic: dict(steps) for tactic, steps in seen.items()}]
                                 for host, seen in self._corroborated.items()],
                "recent": [[entity, [[item[0], None if item[1] is None else list(item[1]), *item[2:5], list(item[5]),
                                      list(item[6])] for item in items]] for entity, items in self._recent.items()]}

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
        self._first_ms = state.get("first_ms")
        self._anomalous = OrderedDict((host, OrderedDict((str(key), int(ms)) for key, ms in seen))
                                      for host, seen in state.get("anomalous", ()))
        # tactic -> ms (a state of before tactic_steps): one step of its own per tactic
        self._corroborated = OrderedDict(
            (host, {str(key): ({str(step): int(ms) for step, ms in value.items()} if isinstance(value, Mapping)
                               else {f"tactic:{key}": int(value)}) for key, value in seen.items()})
            for host, seen in state.get("corroborated", ()))
        size = self.config.alerts.recent_contributions
        self._recent = OrderedDict(
            (entity, deque([(int(item[0]), None if item[1] is None else tuple(item[1]), item[2], item[3], item[4],
                             tuple(item[5]), tuple(item[6])) for item in items], maxlen=size))
            for entity, items in state.get("recent", ()))
