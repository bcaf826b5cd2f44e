"""How far from its usual hours an entity is active: a circular mean of the hour of day.

The mean is an exponentially weighted pair (cos, sin); its length says how settled the habit
is, so an entity with no habit yet (or a round-the-clock server) scores near 0.
"""

from __future__ import annotations

import math

import numpy as np

from models.features.base import Feature, kernel

_DAY_MS = 86_400_000
_WEIGHT = 0.05


@kernel
def step(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray, category: np.ndarray,
         inputs: np.ndarray, state: np.ndarray, world: np.ndarray, out: np.ndarray) -> None:
    for r in range(slot.shape[0]):
        s = state[slot[r]]
        radians = 2.0 * math.pi * (time_ms[event[r]] % _DAY_MS) / _DAY_MS
        cos_now = math.cos(radians)
        sin_now = math.sin(radians)
        c = s[0]
        n = s[1]
        s[0] = (1.0 - _WEIGHT) * c + _WEIGHT * cos_now
        s[1] = (1.0 - _WEIGHT) * n + _WEIGHT * sin_now
        strength = math.hypot(c, n)  # 0: no habit, 1: always the same time
        if strength == 0.0:
            out[r, 0] = 0.0
        else:
            agreement = (c * cos_now + n * sin_now) / strength
            deviation = strength * (1.0 - agreement) / 2.0
            out[r, 0] = deviation if deviation > 0.0 else 0.0  # rounding can push agreement past 1


TIME_OF_DAY = Feature("time_of_day", ("hour_deviation",), step, state=2,
                      doc="distance of the event's hour from the entity's usual hours, weighted by habit strength")
