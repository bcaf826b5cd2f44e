"""Per-entity risk in event time (host and user entities), pure and bounded.

Each detection adds to the risk of the entities it names a contribution

    points = (level_points[level] * repeat_factor + tactic_bonus * new_tactics
              + technique_bonus * new_techniques) * weight * (1 + anomaly_alpha * anomaly) * criticality_factor

- `repeat_factor = max(repeat_floor, repeat_decay ** k) * prevalence`, k = earlier hits of this rule
  on the entity inside `window_ms` (repeats diminish; a new rule counts in full), and
  `prevalence = min(1, prevalence_entities / n)`, n = other entities of this type the rule hit
  inside `window_ms` (a rule firing across the fleet is routine there; 0 switches it off);
- a *new* tactic / technique is one the entity has not shown inside `window_ms` (spread weighs
  more than repetition);
- `weight` is the analyst-feedback weight of the rule on this entity (1, halved per false positive);
- `anomaly` is 0..1 (a multiplier, not an addend): with `anomaly_breadth` > 0 (the default, 4) the
  anomaly context of the host, min(1, n / anomaly_breadth), n = distinct entities (processes,
  addresses, users, the host itself) the entity models called anomalous on this host within
  `anomaly_window_ms` (1 h) up to the detection, its own event's entities included (a score in
  the detection's `scores` >= `anomalous_score`, the scorer's threshold); with 0, the event's own
  calibrated host score;
- `criticality_factor` comes from the asset/identity criticality (`criticality_factors`).

Risk decays exponentially with `half_life_ms` in event time; a late detection is decayed to the
entity's clock before it is added. Memory: at most `max_entities` per table (least recently touched
go first) and entities idle for `ttl_ms` of event time are forgotten.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

DEFAULT_LEVEL_POINTS = {"informational": 1.0, "low": 5.0, "medium": 15.0, "high": 35.0, "critical": 60.0}
DEFAULT_CRITICALITY_FACTORS = {"low": 0.75, "medium": 1.0, "high": 1.5, "critical": 2.0}

# ATT&CK tactic short names (tags `attack.<name>`) and their ids, for OCSF `tactic.uid`; other tactic
# tags (stealth, defense-impairment of newer ATT&CK releases) are kept by name only.
TACTIC_IDS = {
    "reconnaissance": "TA0043", "resource-development": "TA0042", "initial-access": "TA0001", "execution": "TA0002",
    "persistence": "TA0003", "privilege-escalation": "TA0004", "defense-evasion": "TA0005",
    "credential-access": "TA0006", "discovery": "TA0007", "lateral-movement": "TA0008", "collection": "TA0009",
    "command-and-control": "TA0011", "exfiltration": "TA0010", "impact": "TA0040",
}
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")
_OTHER = re.compile(r"^[gs]\d{4}$")  # groups and software, not tactics


_TAGS_CACHE: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def attack_tags(tags: Iterable[Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tactics (short names) and techniques (T1059 / T1059.001, upper case) in Sigma tags."""
    key = tuple(tags)
    found = _TAGS_CACHE.get(key)
    if found is None:
        found = _parse_tags(key)
        if len(_TAGS_CACHE) > 20_000:
            _TAGS_CACHE.clear()
        _TAGS_CACHE[key] = found
    return found


def _parse_tags(tags: tuple[Any, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    tactics: list[str] = []
    techniques: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            continue
        tag = tag.lower()
        if not tag.startswith("attack."):
            continue
        name = tag[7:]
        if _TECHNIQUE.match(name):
            if name.upper() not in techniques:
                techniques.append(name.upper())
        elif name and not _OTHER.match(name) and name not in tactics:
            tactics.append(name)
    return tuple(tactics), tuple(techniques)


@dataclass(slots=True)
class RiskConfig:
    half_life_ms: int = 12 * HOUR_MS
    window_ms: int = 7 * DAY_MS  # distinct tactics / techniques / rule repeats are counted over this
    level_points: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LEVEL_POINTS))
    unknown_level_points: float = 5.0
    tactic_bonus: float = 10.0
    technique_bonus: float = 3.0
    repeat_decay: float = 0.5
    # 0: a rule repeating on an entity stops adding risk (0.5^k), instead of adding 5% of its points
    # for ever: an admin tool that fires daily is not an accumulating threat
    repeat_floor: float = 0.0
    prevalence_entities: float = 0.5  # a rule seen on other entities in the window: x min(1, 0.5 / n)
    anomaly_alpha: float = 1.0
    # Why breadth, not the event's own score: on the scenarios the per-event entity scores of Sigma
    # hits do not separate incidents from routine admin work (ROC-AUC 0.42-0.60), while the number of
    # distinct anomalous entities on the host in the hour before does (0.84-0.89): an intrusion
    # brings new processes, addresses and accounts at once.
    anomaly_breadth: int = 4
    anomaly_window_ms: int = HOUR_MS
    anomalous_score: float = 0.995  # as models.scorer.ScorerConfig.threshold
    criticality_factors: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CRITICALITY_FACTORS))
    max_entities: int = 100_000  # per entity type
    ttl_ms: int = 7 * DAY_MS


# `EntityRisk.tactics_floor` before it is known: the first count computes it.
_FLOOR_UNKNOWN = -(2**63)


@dataclass(slots=True)
class EntityRisk:
    score: float = 0.0
    last_ms: int = 0
    tactics: dict[str, int] = field(default_factory=dict)  # tactic -> last seen ms
    techniques: dict[str, int] = field(default_factory=dict)
    # rule -> (hits in window, last ms): replaced, not mutated, on a hit; a tuple of ints is not
    # tracked by the garbage collector (a table holds one per entity and rule) and is smaller
    rules: dict[str, tuple[int, int]] = field(default_factory=dict)
    correlation_ms: int | None = None  # last correlation hit on this entity
    anomaly: float | None = None  # latest anomaly score seen for the entity
    anomaly_reasons: list[str] = field(default_factory=list)
    # A lower bound of the last-seen times in `tactics` (they only ever move forward): when it is
    # inside the window every tactic is, and the count is len(tactics) without a scan on each hit.
    tactics_floor: int = _FLOOR_UNKNOWN

    def decayed(self, now_ms: int, half_life_ms: int) -> float:
        if now_ms <= self.last_ms:
            return self.score
        return self.score * 2.0 ** (-(now_ms - self.last_ms) / half_life_ms)

    def distinct_tactics(self, now_ms: int, window_ms: int) -> list[str]:
        start = now_ms - window_ms
        return sorted(name for name, seen in self.tactics.items() if seen >= start)

    def tactic_count(self, now_ms: int, window_ms: int) -> int:
        start = now_ms - window_ms
        tactics = self.tactics
        if self.tactics_floor >= start:
            return len(tactics)
        count = 0
        floor = None
        for seen in tactics.values():
            if seen >= start:
                count += 1
            if floor is None or seen < floor:
                floor = seen
        self.tactics_floor = _FLOOR_UNKNOWN if floor is None else floor
        return count

    def to_state(self) -> list[Any]:
        return [self.score, self.last_ms, self.tactics, self.techniques,
                {key: list(value) for key, value in self.rules.items()}, self.correlation_ms, self.anomaly,
                self.anomaly_reasons]

    @classmethod
    def from_state(cls, state: list[Any]) -> EntityRisk:
        return cls(float(state[0]), int(state[1]), dict(state[2]), dict(state[3]),
                   {key: (value[0], value[1]) for key, value in state[4].items()}, state[5], state[6],
                   list(state[7]))


@dataclass(slots=True)
class Contribution:
    """One detection's addition to one entity's risk, term by term (for explanations)."""

    entity_type: str
    entity: str
    level: str
    level_points: float
    repeat_factor: float
    new_tactics: tuple[str, ...]
    new_techniques: tuple[str, ...]
    tactic_points: float
    technique_points: float
    weight: float
    anomaly: float
    anomaly_multiplier: float
    criticality: str | None
    criticality_factor: float
    points: float
    risk_before: float
    risk_after: float

    def to_dict(self) -> dict[str, Any]:
        return contribution_dict((self.entity_type, self.entity, self.level, self.level_points, self.repeat_factor,
                                  self.new_tactics, self.new_techniques, self.tactic_points, self.technique_points,
                                  self.weight, self.anomaly, self.anomaly_multiplier, self.criticality,
                                  self.criticality_factor, self.points, self.risk_before, self.risk_after))


# Contribution fields in order, as the tuple `RiskTable.contribute` returns: the engine keeps
# these tuples (immutable, all atomic, so the garbage collector stops tracking them) and makes
# the dict only for an explanation.
ContributionValues = tuple[str, str, str, float, float, tuple[str, ...], tuple[str, ...], float, float, float,
                           float, float, str | None, float, float, float, float]
REPEAT_FACTOR: Final = 4  # indexes into ContributionValues
POINTS: Final = 14
RISK_AFTER: Final = 16


def contribution_dict(values: tuple[Any, ...]) -> dict[str, Any]:
    """`Contribution.to_dict` of the contribution with these field values."""
    (entity_type, entity, level, level_points, repeat_factor, new_tactics, new_techniques, tactic_points,
     technique_points, weight, anomaly, anomaly_multiplier, criticality, criticality_factor, points, risk_before,
     risk_after) = values
    return {"entity_type": entity_type, "entity": entity, "level": level,
            "level_points": level_points, "repeat_factor": round(repeat_factor, 4),
            "new_tactics": list(new_tactics), "new_techniques": list(new_techniques),
            "tactic_points": tactic_points, "technique_points": technique_points,
            "weight": round(weight, 4), "anomaly": round(anomaly, 4),
            "anomaly_multiplier": round(anomaly_multiplier, 4), "criticality": criticality,
            "criticality_factor": criticality_factor, "points": round(points, 4),
            "risk_before": round(risk_before, 4), "risk_after": round(risk_after, 4)}


def as_contribution_dict(item: Any) -> Any:
    """An alert's stored contribution (values tuple, Contribution, or already its dict) as its dict."""
    if type(item) is tuple:
        return contribution_dict(item)
    return item.to_dict() if isinstance(item, Contribution) else item


class RiskTable:
    """Risk of the entities of one type (host or user)."""

    def __init__(self, entity_type: str, config: RiskConfig) -> None:
        self.entity_type = entity_type
        self.config = config
        self._entities: OrderedDict[str, EntityRisk] = OrderedDict()
        self.evicted = 0
        self.expired = 0
        # rule -> entity -> last hit ms (bounded per rule), for the prevalence factor
        self._rule_entities: dict[str, OrderedDict[str, int]] = {}

    def __len__(self) -> int:
        return len(self._entities)

    def get(self, entity: str) -> EntityRisk | None:
        return self._entities.get(entity)

    def touch(self, entity: str, now_ms: int) -> EntityRisk:
        entities = self._entities
        state = entities.get(entity)
        if state is None:
            state = entities[entity] = EntityRisk(last_ms=now_ms)
            self._bound(now_ms)
        else:
            entities.move_to_end(entity)
        return state

    def _bound(self, now_ms: int) -> None:
        entities = self._entities
        horizon = now_ms - self.config.ttl_ms
        while entities:  # least recently touched first: idle past the TTL (event time)
            oldest = next(iter(entities.values()))
            if oldest.last_ms >= horizon:
                break
            entities.popitem(last=False)
            self.expired += 1
        while len(entities) > self.config.max_entities:
            entities.popitem(last=False)
            self.evicted += 1

    def risk(self, entity: str, now_ms: int) -> float:
        state = self._entities.get(entity)
        return 0.0 if state is None else state.decayed(now_ms, self.config.half_life_ms)

    def add(self, entity: str, now_ms: int, level: str, rule_id: str, tactics: tuple[str, ...],
            techniques: tuple[str, ...], anomaly: float, criticality: str | None, weight: float = 1.0,
            points_override: float | None = None) -> Contribution:
        return Contribution(*self.contribute(entity, now_ms, level, rule_id, tactics, techniques, anomaly, criticality,
                                             weight, points_override)[1])

    def contribute(self, entity: str, now_ms: int, level: str, rule_id: str, tactics: tuple[str, ...],
                   techniques: tuple[str, ...], anomaly: float, criticality: str | None, weight: float = 1.0,
                   points_override: float | None = None) -> tuple[EntityRisk, ContributionValues]:
        """`add` for the engine's hot path: the entity's state as `touch` returns it right after
        (no second lookup), and the contribution as its field values, not an object."""
        config = self.config
        entities = self._entities
        state = entities.get(entity)
        created = state is None
        if state is None:
            state = entities[entity] = EntityRisk(last_ms=now_ms)
            self._bound(now_ms)
        else:
            entities.move_to_end(entity)
        window_start = now_ms - config.window_ms
        rules = state.rules
        hit = rules.get(rule_id)
        if hit is None or hit[1] < window_start:
            repeats = 0
            rules[rule_id] = (1, now_ms)
        else:
            repeats = hit[0]
            rules[rule_id] = (repeats + 1, now_ms if now_ms > hit[1] else hit[1])
        repeat_factor = max(config.repeat_floor, config.repeat_decay ** repeats) if repeats else 1.0
        if config.prevalence_entities:
            repeat_factor *= self._prevalence(rule_id, entity, now_ms, window_start)
        never = window_start - 1
        new_tactics: tuple[str, ...] = ()
        new_techniques: tuple[str, ...] = ()
        if tactics:
            seen_tactics = state.tactics
            for name in tactics:
                seen = seen_tactics.get(name, never)
                if seen < window_start:
                    new_tactics += (name,)
                if seen < now_ms:
                    seen_tactics[name] = now_ms
                    if now_ms < state.tactics_floor:
                        state.tactics_floor = now_ms
        if techniques:
            seen_techniques = state.techniques
            for name in techniques:
                seen = seen_techniques.get(name, never)
                if seen < window_start:
                    new_techniques += (name,)
                if seen < now_ms:
                    seen_techniques[name] = now_ms
        base = config.level_points.get(level, config.unknown_level_points) if points_override is None else points_override
        tactic_points = config.tactic_bonus * len(new_tactics)
        technique_points = config.technique_bonus * len(new_techniques)
        # min(1.0, max(0.0, anomaly)) without the two calls (same result, NaN included)
        anomaly = anomaly if anomaly > 0.0 else 0.0
        anomaly = anomaly if anomaly < 1.0 else 1.0
        multiplier = 1.0 + config.anomaly_alpha * anomaly
        factor = config.criticality_factors.get(criticality, 1.0) if criticality else 1.0
        points = (base * repeat_factor + tactic_points + technique_points) * weight * multiplier * factor
        last_ms = state.last_ms
        before = state.score if now_ms <= last_ms else \
            state.score * 2.0 ** (-(now_ms - last_ms) / config.half_life_ms)  # EntityRisk.decayed, inline
        if now_ms >= last_ms:
            state.score = before + points
            state.last_ms = now_ms
            after = state.score
        else:  # late: decay the addition to the entity's clock
            state.score += points * 2.0 ** (-(last_ms - now_ms) / config.half_life_ms)
            after = before + points
        values = (self.entity_type, entity, level, base, repeat_factor, new_tactics, new_techniques, tactic_points,
                  technique_points, weight, anomaly, multiplier, criticality, factor, points, before, after)
        if created and entity not in entities:  # bounded away at once (max_entities < 1): as touch would
            state = self.touch(entity, now_ms)
        return state, values

    def _prevalence(self, rule_id: str, entity: str, now_ms: int, window_start: int) -> float:
        """min(1, prevalence_entities / other entities the rule hit in the window); records this hit."""
        seen = self._rule_entities.get(rule_id)
        if seen is None:
            seen = self._rule_entities[rule_id] = OrderedDict()
        while seen:  # oldest first: drop what left the window
            oldest = next(iter(seen.items()))
            if oldest[1] >= window_start:
                break
            seen.popitem(last=False)
        others = len(seen) - (1 if entity in seen else 0)
        seen[entity] = now_ms
        seen.move_to_end(entity)
        if len(seen) > self.config.max_entities:
            seen.popitem(last=False)
        limit = self.config.prevalence_entities
        return 1.0 if others <= limit else limit / others

    def state_dict(self) -> dict[str, Any]:
        return {"entities": [[name, state.to_state()] for name, state in self._entities.items()],
                "evicted": self.evicted, "expired": self.expired,
                "rule_entities": {rule: [[name, ms] for name, ms in seen.items()]
                                  for rule, seen in self._rule_entities.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._entities = OrderedDict((name, EntityRisk.from_state(item)) for name, item in state.get("entities", ()))
        self.evicted = int(state.get("evicted", 0))
        self.expired = int(state.get("expired", 0))
        self._rule_entities = {rule: OrderedDict((name, int(ms)) for name, ms in seen)
                               for rule, seen in state.get("rule_entities", {}).items()}
