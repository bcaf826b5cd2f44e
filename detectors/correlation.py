"""Sigma correlation rules, resolved and reduced to plain values for the correlator.

The correlator runs in other processes (Ray actors), so this holds ids and numbers only: no
pySigma objects cross that boundary.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from detectors.errors import RuleCompileError, SourceLocation

if TYPE_CHECKING:  # pySigma is imported where rules are parsed, not where specs are read
    from sigma.correlations import SigmaCorrelationRule


@dataclass(frozen=True, slots=True)
class CorrelationSpec:
    id: str
    title: str
    type: str  # event_count | value_count | temporal | temporal_ordered | value_sum | ...
    rules: tuple[str, ...]  # ids of the referenced detection or correlation rules, in order
    group_by: tuple[str, ...]
    timespan_seconds: int
    condition: dict[str, Any] = field(default_factory=dict)  # e.g. {"op": "gte", "count": 10, "field": None}
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)  # alias -> {rule id: field}
    generate: bool = False
    level: str | None = None
    name: str | None = None
    path: str | None = None


def correlation_spec(rule: SigmaCorrelationRule, known_rule_ids: Set[str]) -> CorrelationSpec:
    """Plain form of a correlation rule whose references pySigma has resolved."""
    from sigma.correlations import SigmaCorrelationCondition, SigmaCorrelationRule

    path = str(rule.source.path) if rule.source is not None and rule.source.path else None
    where = SourceLocation(path, str(rule.id) if rule.id else None, str(rule.title))
    referenced: list[str] = []
    for reference in rule.rules or []:
        target = reference.rule
        target_id = str(target.id) if target.id is not None else f"untitled:{target.title}"
        if not isinstance(target, SigmaCorrelationRule) and target_id not in known_rule_ids:
            raise RuleCompileError(
                f"references rule {reference.reference!r}, which was rejected", where
            )
        referenced.append(target_id)
    condition: dict[str, Any] = {}
    if isinstance(rule.condition, SigmaCorrelationCondition):
        condition = {
            "op": rule.condition.op.name.lower(),
            "count": rule.condition.count,
            "field": rule.condition.fieldref,
        }
        if rule.condition.percentile is not None:
            condition["percentile"] = rule.condition.percentile
    elif rule.condition is not None:
        condition = {"expression": str(getattr(rule.condition, "expression", rule.condition))}
    aliases = {
        alias.alias: {
            (str(ref.rule.id) if getattr(ref, "rule", None) is not None else ref.reference): name
            for ref, name in alias.mapping.items()
        }
        for alias in rule.aliases
    }
    return CorrelationSpec(
        id=str(rule.id) if rule.id is not None else f"untitled:{rule.title}",
        title=str(rule.title),
        type=str(rule.type.name.lower()),
        rules=tuple(referenced),
        group_by=tuple(rule.group_by or ()),
        timespan_seconds=int(rule.timespan.seconds) if rule.timespan is not None else 0,
        condition=condition,
        aliases=aliases,
        generate=bool(rule.generate),
        level=rule.level.name.lower() if rule.level is not None else None,
        name=rule.name,
        path=path,
    )
