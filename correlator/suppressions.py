"""Suppressions and analyst feedback.

A suppression is a rule id plus field conditions in the Sigma filter syntax, kept simple:
`{field: value}`, `field|contains`, `field|startswith`, `field|endswith`; a list of values is OR,
several keys are AND; matching is case-insensitive, numbers compare as strings. It has an expiry
in event time (ms; None = never), a reason, and optionally an entity scope.

A false-positive verdict (`Feedback.false_positive`) adds a suppression scoped to rule + entity and
multiplies that rule's weight on that entity by `fp_weight_factor` (floor `min_weight`); the weight
shows in later explanations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_MODIFIERS: dict[str, Callable[[str, str], bool]] = {
    "": lambda have, want: have == want,
    "contains": lambda have, want: want in have,
    "startswith": lambda have, want: have.startswith(want),
    "endswith": lambda have, want: have.endswith(want),
}


class SuppressionError(ValueError):
    pass


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).lower()


@dataclass(slots=True)
class Suppression:
    rule_id: str
    conditions: dict[str, Any] = field(default_factory=dict)
    expires_ms: int | None = None
    reason: str = ""
    entity: str | None = None  # scoped to one entity (feedback) or any
    _compiled: list[tuple[str, Callable[[str, str], bool], tuple[str, ...]]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._compiled = []
        if not isinstance(self.conditions, Mapping):
            raise SuppressionError("conditions must be a mapping")
        for key, values in self.conditions.items():
            name, _, modifier = str(key).partition("|")
            if modifier not in _MODIFIERS:
                raise SuppressionError(f"unsupported modifier {modifier!r} in {key!r}")
            if not isinstance(values, list):
                values = [values]
            self._compiled.append((name, _MODIFIERS[modifier], tuple(_text(value) for value in values)))

    def active(self, now_ms: int) -> bool:
        return self.expires_ms is None or now_ms < self.expires_ms

    def matches(self, rule_id: str, entity: str | None, event: Mapping[str, Any], now_ms: int) -> bool:
        if rule_id != self.rule_id or not self.active(now_ms):
            return False
        if self.entity is not None and entity != self.entity:
            return False
        for name, test, wanted in self._compiled:
            value = event.get(name)
            if value is None:
                return False
            haves = [_text(item) for item in value] if isinstance(value, list) else [_text(value)]
            if not any(test(have, want) for have in haves for want in wanted):
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "conditions": dict(self.conditions), "expires_ms": self.expires_ms,
                "reason": self.reason, "entity": self.entity}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Suppression:
        if not isinstance(data, Mapping) or not isinstance(data.get("rule_id"), str):
            raise SuppressionError("a suppression needs a rule_id")
        return cls(data["rule_id"], dict(data.get("conditions") or {}), data.get("expires_ms"),
                   str(data.get("reason") or ""), data.get("entity"))


@dataclass(slots=True)
class FeedbackConfig:
    fp_weight_factor: float = 0.5  # each false positive halves the rule's weight on the entity
    min_weight: float = 0.1
    fp_suppression_ms: int | None = 7 * 24 * 3600 * 1000  # how long a feedback suppression lasts


class Suppressions:
    """Suppressions by rule id, and per (rule, entity) weights from verdicts."""

    def __init__(self, config: FeedbackConfig | None = None) -> None:
        self.config = config or FeedbackConfig()
        self._by_rule: dict[str, list[Suppression]] = {}
        self.weights: dict[tuple[str, str], float] = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_rule.values())

    def add(self, suppression: Suppression) -> None:
        self._by_rule.setdefault(suppression.rule_id, []).append(suppression)

    def match(self, rule_id: str, entity: str | None, event: Mapping[str, Any], now_ms: int) -> Suppression | None:
        items = self._by_rule.get(rule_id)
        if not items:
            return None
        for item in items:
            if item.matches(rule_id, entity, event, now_ms):
                return item
        return None

    def expire(self, now_ms: int) -> int:
        """Drop expired suppressions; how many went."""
        dropped = 0
        for rule_id in list(self._by_rule):
            kept = [item for item in self._by_rule[rule_id] if item.active(now_ms)]
            dropped += len(self._by_rule[rule_id]) - len(kept)
            if kept:
                self._by_rule[rule_id] = kept
            else:
                del self._by_rule[rule_id]
        return dropped

    def weight(self, rule_id: str, entity: str | None) -> float:
        if not self.weights or entity is None:
            return 1.0
        return self.weights.get((rule_id, entity), 1.0)

    def false_positive(self, rule_id: str, entity: str, now_ms: int, reason: str = "false positive verdict",
                       conditions: Mapping[str, Any] | None = None, duration_ms: int | None = None) -> Suppression:
        """The verdict hook: suppress rule on entity (for `duration_ms`, default the feedback
        config's) and lower the rule's weight there."""
        duration = duration_ms if duration_ms is not None else self.config.fp_suppression_ms
        expires = None if duration is None else now_ms + duration
        suppression = Suppression(rule_id, dict(conditions or {}), expires, reason, entity)
        self.add(suppression)
        self.lower_weight(rule_id, entity)
        return suppression

    def lower_weight(self, rule_id: str, entity: str) -> float:
        """A verdict without suppression: the rule keeps alerting on the entity, with less risk."""
        key = (rule_id, entity)
        self.weights[key] = max(self.config.min_weight, self.weights.get(key, 1.0) * self.config.fp_weight_factor)
        return self.weights[key]

    def state_dict(self) -> dict[str, Any]:
        return {"suppressions": [item.to_dict() for items in self._by_rule.values() for item in items],
                "weights": [[rule, entity, weight] for (rule, entity), weight in self.weights.items()]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._by_rule.clear()
        for item in state.get("suppressions", ()):
            self.add(Suppression.from_dict(item))
        self.weights = {(rule, entity): float(weight) for rule, entity, weight in state.get("weights", ())}
