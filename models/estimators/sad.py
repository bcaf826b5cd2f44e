"""Standard Absolute Deviation over one feature, in a state of three floats.

Score = |value - mean| / (std + 1e-10), with the mean and the sample variance (ddof=1, Welford)
of the values learned so far: `river.anomaly.StandardAbsoluteDeviation(sub_stat=stats.Mean())`,
with the same floating-point operations in the same order, so the scores are identical.

The state is a plain `(count, mean, m2)` tuple: it lives inside a per-entity state (one per
entity, hundreds of thousands of them), pickles to about 40 bytes and is never mutated in place,
so a caller can keep the old one until it decides to learn.

River keeps two running means (one inside its `stats.Var`, one as `sub_stat`); both see the same
updates and therefore hold the same value, so one mean here is enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import numba
import numpy as np

from models.estimators.base import sequential_score_learn

__all__ = ["SAD_EMPTY", "SadState", "StandardAbsoluteDeviation", "sad_learn", "sad_score", "sad_score_learn_slots"]

SadState = tuple[float, float, float]  # (count, mean, m2: the sum of squared deviations)
SAD_EMPTY: SadState = (0.0, 0.0, 0.0)


def sad_score(state: SadState, value: float) -> float:
    """|value - mean| / (sample std + 1e-10); 0 learned values give |value| / 1e-10.

    >>> state = SAD_EMPTY
    >>> for v in (3.0, 5.0, 4.0, 7.0):
    ...     state = sad_learn(state, v)
    >>> print(f"{sad_score(state, 9.0):.4f}")
    2.4885
    """
    n, mean, m2 = state
    variance = m2 / (n - 1.0) if n > 1.0 else 0.0
    return abs((value - mean) / (variance**0.5 + 1e-10))


def sad_learn(state: SadState, value: float) -> SadState:
    """The state after one more value (Welford's update, as river.stats.Var does it)."""
    n, mean, m2 = state
    n += 1.0
    new_mean = mean + (1.0 / n) * (value - mean)
    return n, new_mean, m2 + 1.0 * (value - mean) * (value - new_mean)


def sad_score_learn_slots(slots: np.ndarray, values: np.ndarray, allow: np.ndarray, cutoff: float,
                          warm_after: float, states: np.ndarray, raw: np.ndarray, learned: np.ndarray) -> None:
    """sad_score then sad_learn for one SadState per entity slot (a row of `states`), compiled.

    Each value is scored against its entity's state (0.0 until `warm_after` values are
    learned), then learned iff allowed and its score is below `cutoff`. Rows in stream order;
    the same entity may repeat. Gives exactly sad_score's floats (tests check it)."""
    _sad_slots(slots, values, allow, cutoff, warm_after, states, raw, learned, 0.5)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sad_slots(slots: np.ndarray, values: np.ndarray, allow: np.ndarray, cutoff: float, warm_after: float,
               states: np.ndarray, raw: np.ndarray, learned: np.ndarray, half: float) -> None:
    # `half` arrives at run time on purpose: a literal `** 0.5` compiles to a correctly rounded
    # sqrt, while CPython (and so River) calls pow(), which differs in the last bit now and then.
    for i in range(slots.shape[0]):
        row = states[slots[i]]
        n, mean, m2 = row[0], row[1], row[2]
        value = values[i]
        if n >= warm_after:
            variance = m2 / (n - 1.0) if n > 1.0 else 0.0
            raw[i] = abs((value - mean) / (variance**half + 1e-10))
        else:
            raw[i] = 0.0
        if allow[i] and raw[i] < cutoff:
            n += 1.0
            new_mean = mean + (1.0 / n) * (value - mean)
            row[0], row[1], row[2] = n, new_mean, m2 + 1.0 * (value - mean) * (value - new_mean)
            learned[i] = True
        else:
            learned[i] = False


class StandardAbsoluteDeviation:
    """The Estimator protocol around one SadState, reading `feature_name` from the row.

    `feature_names` are the columns the caller's rows carry (by default only `feature_name`), so
    the same rows a shared model reads can feed it; a missing feature counts as 0.0.

    Examples
    --------

    Prequential ROC-AUC of a gaussian stream with 2% of the values shifted by 4 sigmas:

    >>> import random
    >>> from sklearn.metrics import roc_auc_score
    >>> rng = random.Random(7)
    >>> model = StandardAbsoluteDeviation("rate_1m")
    >>> labels, scores = [], []
    >>> for _ in range(5000):
    ...     anomalous = rng.random() < 0.02
    ...     x = {"rate_1m": rng.gauss(0.3, 0.05) + (0.2 if anomalous else 0.0)}
    ...     scores.append(model.score_one(x))
    ...     model.learn_one(x)
    ...     labels.append(anomalous)
    >>> print(f"ROC-AUC: {roc_auc_score(labels, scores):.4f}")
    ROC-AUC: 0.9956
    """

    __slots__ = ("feature_name", "feature_names", "state", "_column")

    def __init__(self, feature_name: str, feature_names: tuple[str, ...] | None = None) -> None:
        self.feature_name = feature_name
        self.feature_names = tuple(feature_names) if feature_names is not None else (feature_name,)
        # Absent from the rows: always 0.0, like any missing feature.
        self._column = self.feature_names.index(feature_name) if feature_name in self.feature_names else -1
        self.state: SadState = SAD_EMPTY

    def params(self) -> dict[str, str | tuple[str, ...]]:
        return {"feature_name": self.feature_name, "feature_names": self.feature_names}

    def clone(self) -> Self:
        return type(self)(self.feature_name, self.feature_names)

    def score_one(self, x: dict[str, float]) -> float:
        return sad_score(self.state, float(x.get(self.feature_name, 0.0)))

    def learn_one(self, x: dict[str, float]) -> None:
        self.state = sad_learn(self.state, float(x.get(self.feature_name, 0.0)))

    def score_learn_many(
        self, X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int
    ) -> tuple[np.ndarray, np.ndarray]:
        # Every learned value changes the mean: no block shortcut, the loop is the batch form.
        return sequential_score_learn(self, X, allow, cutoff, max_learn)

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the feature it reads, the columns it is given and (count, mean, m2).

        >>> model = StandardAbsoluteDeviation("rate_1m")
        >>> model.learn_one({"rate_1m": 0.5})
        >>> state = model.state_dict()
        >>> state["estimator"], state["feature_name"], state["feature_names"], state["state"]
        ('StandardAbsoluteDeviation', 'rate_1m', ['rate_1m'], [1.0, 0.5, 0.0])
        """
        return {"estimator": type(self).__name__, "feature_name": self.feature_name,
                "feature_names": list(self.feature_names), "state": list(self.state)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Self:
        if state.get("estimator") != cls.__name__:
            raise ValueError(f"not a {cls.__name__} state: {state.get('estimator')!r}")
        model = cls(state["feature_name"], tuple(state["feature_names"]))
        n, mean, m2 = state["state"]
        model.state = (float(n), float(mean), float(m2))
        return model

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling goes through the state dict: one description of the state, not two.
        return type(self).from_state_dict, (self.state_dict(),)

    def __repr__(self) -> str:
        n, mean, _ = self.state
        return f"StandardAbsoluteDeviation({self.feature_name!r}, n={n:.0f}, mean={mean:.4g})"
