"""LODA (Pevný, 2016): `river.anomaly.LODA` behind the Estimator protocol.

River's LODA fixes its feature set on the first learned row and reads an absent feature as 0.0;
we always hand it every one of `feature_names` (0.0 where the row lacks it), so its projections
are drawn over the same features whatever the first row holds.

Its histograms change with every learned row, so there is no block shortcut: the batch form is
the one-row-at-a-time loop.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from river import anomaly, compose, preprocessing

from models.estimators.base import sequential_score_learn

__all__ = ["LODA"]


class LODA:
    """Lightweight on-line detector of anomalies; raw score = mean negative log-density.

    `scale=True` puts River's online `MinMaxScaler` in front (for data not already in [0, 1]).

    Examples
    --------

    Prequential ROC-AUC on the first 10,000 rows of River's Shuttle, min/max scaled online:

    >>> from river import datasets
    >>> from sklearn.metrics import roc_auc_score
    >>> rows = list(datasets.Shuttle().take(10_000))
    >>> model = LODA(tuple(rows[0][0]), seed=42, scale=True)
    >>> scores = []
    >>> for x, _ in rows:
    ...     scores.append(model.score_one(x))
    ...     model.learn_one(x)
    >>> print(f"ROC-AUC: {roc_auc_score([y for _, y in rows], scores):.4f}")
    ROC-AUC: 0.9646
    """

    __slots__ = ("feature_names", "n_bins", "n_random_cuts", "seed", "scale", "_model")

    def __init__(
        self,
        feature_names: tuple[str, ...],
        n_bins: int = 10,
        n_random_cuts: int = 100,
        seed: int | None = None,
        scale: bool = False,
    ) -> None:
        if not feature_names:
            raise ValueError("LODA needs at least one feature")
        self.feature_names = tuple(feature_names)
        self.n_bins = n_bins
        self.n_random_cuts = n_random_cuts
        self.seed = seed
        self.scale = scale
        detector = anomaly.LODA(n_bins=n_bins, n_random_cuts=n_random_cuts, seed=seed)
        self._model: Any = compose.Pipeline(preprocessing.MinMaxScaler(), detector) if scale else detector

    def params(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "n_bins": self.n_bins,
                "n_random_cuts": self.n_random_cuts, "seed": self.seed, "scale": self.scale}

    def clone(self) -> Self:
        return type(self)(**self.params())

    def _full(self, x: dict[str, float]) -> dict[str, float]:
        return {name: float(x.get(name, 0.0)) for name in self.feature_names}

    def score_one(self, x: dict[str, float]) -> float:
        return float(self._model.score_one(self._full(x)))

    def learn_one(self, x: dict[str, float]) -> None:
        self._model.learn_one(self._full(x))

    def score_learn_many(
        self, X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return sequential_score_learn(self, X, allow, cutoff, max_learn)

    def __repr__(self) -> str:
        return f"LODA(n_bins={self.n_bins}, n_random_cuts={self.n_random_cuts}, seed={self.seed}, scale={self.scale})"
