"""FusionConfig from plain settings (the cluster config's `correlator.fusion`, a notebook's dict).

Every key is optional and takes the documented default of its dataclass; an unknown key or a
value of the wrong type is a ValueError naming the key path, e.g. `priority.p1_risk`.

    risk:       half_life_ms (12 h), window_ms (7 d), level_points {level: points}, unknown_level_points,
                tactic_bonus, technique_bonus, repeat_decay (0.5), repeat_floor (0),
                prevalence_entities (0.5; 0 = off), anomaly_alpha (1), anomaly_breadth (4; 0 = the
                event's own host score), anomaly_window_ms (1 h), anomalous_score (0.995),
                criticality_factors {level: factor}, max_entities, ttl_ms
    priority:   p1_risk, p2_risk, p3_risk, p1_min_tactics, p1_levels [..], p1_criticality [..],
                demote_below, noisy_hits, noisy_rules [rule id, ...], p1_anomaly (1.0),
                learning_ms (24 h; 0 = off), p1_novelty (0.5), p1_distinct_techniques (true),
                p1_criticality_tactics (2), correlation_gate (false), entity_alerts (true),
                entity_min_tactics (2), rule_alert_priority (4), correlation_alert_levels [critical]
    alerts:     inactivity_ms (1 h), risk_inactivity_ms (24 h), anomaly_alerts (false),
                recent_contributions (64), max_refs, max_contributions, max_open, max_closed

The defaults do risk-based alerting (correlator/priority.py): entity risk alerts carry P1-P3;
per-rule and anomaly detections are risk contributions (per-rule alerts recorded at P4, anomaly
detections the hosts' anomaly context). PER_RULE_ALERTING holds the settings of the per-rule
alerting of before (every rule's alert takes the formula's priority; anomaly detections alert).
    feedback:   fp_weight_factor, min_weight, fp_suppression_ms (null = no expiry)
    user_fields: [field, ...]
    dedupe_cap: int

>>> config = fusion_config_from_dict({"priority": {"p1_risk": 120}, "user_fields": ["TargetUserName"]})
>>> config.priority.p1_risk, config.priority.p2_risk, config.user_fields
(120.0, 60.0, ('TargetUserName',))
>>> fusion_config_from_dict({"priority": {"p1_rsk": 1}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
ValueError: unknown key priority.p1_rsk (known: correlation_alert_levels, ..., rule_alert_priority)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from correlator.alerts import AlertConfig
from correlator.fusion import FusionConfig
from correlator.priority import PriorityConfig
from correlator.risk import RiskConfig
from correlator.suppressions import FeedbackConfig

__all__ = ["PER_RULE_ALERTING", "fusion_config_from_dict"]

# The settings of per-rule alerting, as before entity risk alerts (fusion_config_from_dict input).
PER_RULE_ALERTING: dict[str, dict[str, Any]] = {
    "priority": {"entity_alerts": False, "rule_alert_priority": 1, "correlation_gate": True, "p1_anomaly": 0,
                 "p1_criticality_tactics": 0},
    "alerts": {"anomaly_alerts": True},
    "risk": {"repeat_floor": 0.05, "prevalence_entities": 0, "anomaly_breadth": 0},
}

_SECTIONS: dict[str, type] = {"risk": RiskConfig, "priority": PriorityConfig, "alerts": AlertConfig,
                              "feedback": FeedbackConfig}


def fusion_config_from_dict(data: Mapping[str, Any] | None) -> FusionConfig:
    """A FusionConfig from nested plain settings; ValueError naming the key for a bad one."""
    data = dict(data or {})
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name in data:
            sections[name] = _build(cls, data.pop(name), name)
    top = _build(FusionConfig, {k: v for k, v in data.items()}, "", skip=set(_SECTIONS))
    return dataclasses.replace(top, **sections)


def _build(cls: type, raw: Any, prefix: str, skip: set[str] | None = None) -> Any:
    where = prefix or "fusion"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping, not {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in (skip or set())}
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            raise ValueError(f"unknown key {path} (known: {', '.join(sorted(known))})")
        values[key] = _value(getattr(defaults, key), value, path)
    return cls(**values)


def _value(default: Any, value: Any, path: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, int | float) and not isinstance(default, bool) or (default is None and path.endswith("_ms")):
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{path} must be a number, got {value!r}")
        if value < 0:
            raise ValueError(f"{path} must be 0 or more, got {value!r}")
        return float(value) if isinstance(default, float) else int(value)
    if isinstance(default, frozenset | tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{path} must be a list of strings")
        return frozenset(value) if isinstance(default, frozenset) else tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, Mapping) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                     for v in value.values()):
            raise ValueError(f"{path} must be a mapping of names to numbers")
        return {**default, **{str(k): float(v) for k, v in value.items()}}
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError(f"{path} must be a string, got {value!r}")
        return value
    return value
