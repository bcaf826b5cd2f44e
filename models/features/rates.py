"""How busy an entity is, and how usual this kind of activity is for it.

Exponentially decayed counts in event time: a count decays by e^(-dt/tau), so `c1m` is about
the number of events in the last minute. Each category keeps its own count and time, decayed
only when that category is seen again, so an event costs the same whatever the history.
"""

from __future__ import annotations

import math

from models.features.base import Feature, View

_TAU_1M = 60_000.0
_TAU_10M = 600_000.0
_KEYS: dict[str, tuple[str, str]] = {}  # one key string per category, shared by every entity's dict


def _keys(category: str) -> tuple[str, str]:
    keys = _KEYS.get(category)
    if keys is None:
        keys = _KEYS[category] = (f"n:{category}", f"t:{category}")
    return keys


def step(view: View) -> tuple[float, ...]:
    values = view.state.values
    now = view.time_ms
    elapsed = now - view.state.last_ms
    if elapsed < 0:
        elapsed = 0
    c1 = values.get("c1m", 0.0) * math.exp(-elapsed / _TAU_1M)
    c10 = values.get("c10m", 0.0) * math.exp(-elapsed / _TAU_10M)
    count_key, time_key = _keys(view.category)
    since = now - values.get(time_key, now)
    category = values.get(count_key, 0.0) * math.exp(-(since if since > 0 else 0) / _TAU_10M)
    values["c1m"] = c1 + 1.0
    values["c10m"] = c10 + 1.0
    values[count_key] = category + 1.0
    values[time_key] = float(now)
    burst = c1 / (c10 / 10.0 + 1.0)
    unusual = category / (c10 + 1.0)
    return (
        c1 / (c1 + 20.0),  # rate_1m
        c10 / (c10 + 100.0),  # rate_10m
        burst / (burst + 2.0),  # the last minute much busier than the last ten minutes' average
        0.0 if unusual >= 1.0 else 1.0 - unusual,  # this category is rare in the entity's recent activity
        1.0 if view.state.count == 0 else 0.0,  # new_entity
    )


RATES = Feature("rates", ("rate_1m", "rate_10m", "burst", "category_unusual", "new_entity"), step,
                "event rates over decayed 1 and 10 minute windows, bursts, and how usual the category is")
