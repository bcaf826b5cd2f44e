"""LODA (Pevný, 2016): `river.anomaly.LODA` behind the Estimator protocol.

River's LODA fixes its feature set on the first learned row and reads an absent feature as 0.0;
we always hand it every one of `feature_names` (0.0 where the row lacks it), so its projections
are drawn over the same features whatever the first row holds.

Its histograms change with every learned row, so there is no block shortcut: the batch form is
the one-row-at-a-time loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import numpy as np
from river import anomaly, compose, preprocessing, sketch
from river.sketch.histogram import Bin

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

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Parameters, River's projections and histograms (and scaler ranges) as plain data.

        River draws from its random generator only when the first learned row fixes the
        projections, so the projections are the state and the generator's position is not.

        >>> model = LODA(("a", "b"), n_bins=4, n_random_cuts=3, seed=2)
        >>> for v in (0.1, 0.2, 0.9, 0.3, 0.25):
        ...     model.learn_one({"a": v, "b": 1 - v})
        >>> back = LODA.from_state_dict(model.state_dict())
        >>> back.score_one({"a": 0.5, "b": 0.2}) == model.score_one({"a": 0.5, "b": 0.2})
        True
        """
        detector, scaler = self._parts()
        return {
            "estimator": type(self).__name__,
            "feature_names": list(self.feature_names), "n_bins": self.n_bins, "n_random_cuts": self.n_random_cuts,
            "seed": self.seed, "scale": self.scale,
            "features": list(detector.features_),
            # Features and weights as two lists: a projection sums in this order, and float sums
            # depend on it.
            "projections": [[list(p), list(p.values())] for p in detector.projections_],
            "histograms": [{"max_bins": h.max_bins, "n": h.n, "left": [b.left for b in h.data],
                            "right": [b.right for b in h.data], "count": [b.count for b in h.data]}
                           for h in detector.histograms_],
            "scaler": None if scaler is None else {"min": {k: v.get() for k, v in scaler.min.items()},
                                                   "max": {k: v.get() for k, v in scaler.max.items()}},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Self:
        if state.get("estimator") != cls.__name__:
            raise ValueError(f"not a {cls.__name__} state: {state.get('estimator')!r}")
        model = cls(tuple(state["feature_names"]), n_bins=int(state["n_bins"]),
                    n_random_cuts=int(state["n_random_cuts"]), seed=state["seed"], scale=bool(state["scale"]))
        detector, scaler = model._parts()
        detector.features_ = list(state["features"])
        detector.projections_ = [dict(zip(names, weights, strict=True)) for names, weights in state["projections"]]
        for saved in state["histograms"]:
            histogram = sketch.Histogram(max_bins=int(saved["max_bins"]))
            histogram.n = saved["n"]
            histogram.data.extend(Bin(*edges) for edges in zip(saved["left"], saved["right"], saved["count"], strict=True))
            detector.histograms_.append(histogram)
        ranges = state["scaler"]
        if scaler is not None and ranges is not None:
            for name, low in ranges["min"].items():
                scaler.min[name].update(low)
            for name, high in ranges["max"].items():
                scaler.max[name].update(high)
        return model

    def _parts(self) -> tuple[Any, Any]:
        """(River's LODA, its MinMaxScaler or None)."""
        if self.scale:
            return self._model["LODA"], self._model["MinMaxScaler"]
        return self._model, None

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling goes through the state dict: one description of the state, not two.
        return type(self).from_state_dict, (self.state_dict(),)

    def __repr__(self) -> str:
        return f"LODA(n_bins={self.n_bins}, n_random_cuts={self.n_random_cuts}, seed={self.seed}, scale={self.scale})"
