"""How far from its usual hours an entity is active: a circular mean of the hour of day.

The mean is an exponentially weighted pair (cos, sin); its length says how settled the habit
is, so an entity with no habit yet (or a round-the-clock server) scores near 0.
"""

from __future__ import annotations

import math

from models.features.base import Feature, View

_DAY_MS = 86_400_000
_WEIGHT = 0.05


def step(view: View) -> tuple[float, ...]:
    angle = view.shared.get("hour")
    if angle is None:
        radians = 2 * math.pi * (view.time_ms % _DAY_MS) / _DAY_MS
        angle = view.shared["hour"] = (math.cos(radians), math.sin(radians))
    cos_now, sin_now = angle
    values = view.state.values
    c = values.get("hour_cos", 0.0)
    s = values.get("hour_sin", 0.0)
    values["hour_cos"] = (1 - _WEIGHT) * c + _WEIGHT * cos_now
    values["hour_sin"] = (1 - _WEIGHT) * s + _WEIGHT * sin_now
    strength = math.hypot(c, s)  # 0: no habit, 1: always the same time
    if strength == 0.0:
        return (0.0,)
    agreement = (c * cos_now + s * sin_now) / strength
    return (strength * (1.0 - agreement) / 2.0,)


TIME_OF_DAY = Feature("time_of_day", ("hour_deviation",), step,
                      "distance of the event's hour from the entity's usual hours, weighted by habit strength")
