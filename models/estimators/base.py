"""What every anomaly estimator in models/ offers (River's verbs, plus an exact batch form).

Scores are raw (higher = more unusual, any scale); models/calibration.py maps them to [0, 1].
Features are read by name from `feature_names`; a missing feature counts as 0.0, so the same
model runs on events that lack some fields.

The batch form exists for speed, never for different results: for any batching of a stream,
`score_learn_many` gives exactly what the one-at-a-time loop in `sequential_score_learn` gives
(tests/test_model_contract.py checks this for every estimator). It may stop early (after
`max_learn` learned rows, or, if it likes, when its own reference window swaps) and returns how
far it got, so callers keep other windowed state (the calibrator) in step, row for row.

`state_dict()` is the estimator's whole state as plain data (models/serialization.py), with an
`"estimator"` key naming its class; `from_state_dict` rebuilds it, so that restoring and going
on gives exactly the scores of never stopping (tests/test_model_contract.py checks this too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, Self

import numpy as np


class Estimator(Protocol):
    feature_names: tuple[str, ...]

    def score_one(self, x: dict[str, float]) -> float: ...

    def learn_one(self, x: dict[str, float]) -> None: ...

    def clone(self) -> Self:
        """A fresh, unfitted estimator with the same parameters."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Parameters and learned state as plain data, `"estimator"` naming the class."""
        ...

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Self:
        """The estimator `state` describes; ValueError when it describes another class."""
        ...

    def score_learn_many(
        self, X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of X (columns in `feature_names` order), in stream order: each row is scored, then
        learned iff allow[row] and its score < cutoff. Stops after `max_learn` learned rows, and
        may stop earlier at the estimator's own window swap. Returns (scores, learned) for the
        rows it processed: len(scores) <= len(X), and at least one row when X is not empty."""
        ...


def vector(x: dict[str, float], names: tuple[str, ...]) -> np.ndarray:
    return np.fromiter((float(x.get(n, 0.0)) for n in names), dtype=np.float64, count=len(names))


def sequential_score_learn(
    model: Estimator, X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int
) -> tuple[np.ndarray, np.ndarray]:
    """The reference semantics of score_learn_many: one row at a time, score before learning."""
    names = model.feature_names
    scores: list[float] = []
    learned: list[bool] = []
    count = 0
    for row, ok in zip(X, allow, strict=True):
        x = dict(zip(names, row.tolist(), strict=True))
        score = model.score_one(x)
        scores.append(score)
        learn = bool(ok) and score < cutoff
        if learn:
            model.learn_one(x)
            count += 1
        learned.append(learn)
        if count >= max_learn:
            break
    return np.asarray(scores, dtype=np.float64), np.asarray(learned, dtype=bool)
