"""How busy an entity is, and how usual this kind of activity is for it.

Exponentially decayed counts in event time: a count decays by e^(-dt/tau), so `c1m` is about
the number of events in the last minute. Each category keeps its own count and time, decayed
only when that category is seen again, so an event costs the same whatever the history.
"""

from __future__ import annotations

import math

import numpy as np

from models.features.base import Feature, kernel
from models.features.categories import CATEGORIES

_TAU_1M = 60_000.0
_TAU_10M = 600_000.0
# state columns: decayed counts, last event time, events seen, then (count, time) per category
_C1, _C10, _LAST, _SEEN, _PER_CATEGORY = 0, 1, 2, 3, 4


@kernel
def step(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray, category: np.ndarray,
         inputs: np.ndarray, state: np.ndarray, world: np.ndarray, out: np.ndarray) -> None:
    for r in range(slot.shape[0]):
        s = state[slot[r]]
        e = event[r]
        now = float(time_ms[e])
        seen = s[_SEEN] > 0.0
        elapsed = now - s[_LAST] if seen else 0.0
        if elapsed < 0.0:
            elapsed = 0.0
        c1 = s[_C1] * math.exp(-elapsed / _TAU_1M)
        c10 = s[_C10] * math.exp(-elapsed / _TAU_10M)
        count_at = _PER_CATEGORY + 2 * category[e]
        since = now - s[count_at + 1] if s[count_at] > 0.0 else 0.0
        if since < 0.0:
            since = 0.0
        usual = s[count_at] * math.exp(-since / _TAU_10M)
        s[_C1] = c1 + 1.0
        s[_C10] = c10 + 1.0
        s[count_at] = usual + 1.0
        s[count_at + 1] = now
        if not seen or now > s[_LAST]:
            s[_LAST] = now
        s[_SEEN] += 1.0
        burst = c1 / (c10 / 10.0 + 1.0)
        unusual = usual / (c10 + 1.0)
        out[r, 0] = c1 / (c1 + 20.0)  # rate_1m
        out[r, 1] = c10 / (c10 + 100.0)  # rate_10m
        out[r, 2] = burst / (burst + 2.0)  # the last minute much busier than the last ten minutes' average
        out[r, 3] = 0.0 if unusual >= 1.0 else 1.0 - unusual  # this category is rare for the entity lately
        out[r, 4] = 0.0 if seen else 1.0  # new_entity


RATES = Feature("rates", ("rate_1m", "rate_10m", "burst", "category_unusual", "new_entity"), step,
                state=_PER_CATEGORY + 2 * len(CATEGORIES),
                doc="event rates over decayed 1 and 10 minute windows, bursts, and how usual the category is")
