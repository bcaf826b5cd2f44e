"""Half-Space Trees, score for score equal to `river.anomaly.HalfSpaceTrees`, with a compiled batch form.

The trees are drawn exactly as River draws them (same `random.Random(seed)` calls, in the same
order, over the features in sorted order), then kept as flat arrays: for tree t and internal node
i (heap order: the children of i are 2i+1 and 2i+2), `feature[t, i]` and `threshold[t, i]`; the
mass profiles `r` (reference) and `l` (latest) hold one count per node.

The batch form is one compiled loop (numba) over the rows: walk each tree, score from `r`,
and for a learned row add its path to `l`, swapping at the window boundary, exactly as the
one-row methods do (the contract tests run both on the same rows and compare every score).

With `scale=True` an online min/max scaler precedes the trees (River's `MinMaxScaler() | HST`):
a row is scored with the scaler as it stands and learned after the scaler learns it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Self

import numba
import numpy as np

from models.estimators.base import vector

__all__ = ["HalfSpaceTrees"]

_PADDING = 0.15  # River's padding: no split closer than 15% of a node's range to its edges


class HalfSpaceTrees:
    """Half-Space Trees (Tan, Ting and Liu, 2011) over named features in [0, 1] (or `limits`).

    Raw score in [0, 1], high = anomalous; 0.0 until the first window of `window_size` learned
    rows has become the reference (River's warm-up). A missing feature counts as 0.0.

    Examples
    --------

    Prequential (score, then learn) ROC-AUC on the first 10,000 rows of River's Shuttle, with
    the online min/max scaling River's Shuttle example uses:

    >>> import numpy as np
    >>> from river import datasets
    >>> from sklearn.metrics import roc_auc_score
    >>> from models.estimators.hst import HalfSpaceTrees

    >>> rows = list(datasets.Shuttle().take(10_000))
    >>> names = tuple(rows[0][0])
    >>> X = np.array([[x[n] for n in names] for x, _ in rows], dtype=float)
    >>> y = [label for _, label in rows]

    >>> hst = HalfSpaceTrees(names, seed=42, scale=True)
    >>> scores = []
    >>> while len(scores) < len(X):  # the batch form may stop at a window swap: resume there
    ...     done, _ = hst.score_learn_many(X[len(scores):], np.ones(len(X) - len(scores), bool),
    ...                                    cutoff=float("inf"), max_learn=len(X))
    ...     scores.extend(done)
    >>> print(f"ROC-AUC: {roc_auc_score(y, scores):.4f}")
    ROC-AUC: 0.9007

    One row at a time gives the same scores:

    >>> hst = hst.clone()
    >>> same = []
    >>> for row in X[:3000]:
    ...     x = dict(zip(names, row))
    ...     same.append(hst.score_one(x))
    ...     hst.learn_one(x)
    >>> same == scores[:3000]
    True
    """

    __slots__ = ("feature_names", "n_trees", "height", "window_size", "seed", "limits", "scale",
                 "_feature", "_threshold", "_r", "_l", "_counter", "_warm", "_lo", "_hi", "_lists")

    def __init__(
        self,
        feature_names: tuple[str, ...],
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = None,
        limits: Mapping[str, tuple[float, float]] | None = None,
        scale: bool = False,
    ) -> None:
        if not feature_names:
            raise ValueError("HalfSpaceTrees needs at least one feature")
        if len(set(feature_names)) != len(feature_names):
            raise ValueError("feature names must be unique")
        if n_trees < 1 or height < 1 or window_size < 1:
            raise ValueError("n_trees, height and window_size must be at least 1")
        self.feature_names = tuple(feature_names)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.limits = dict(limits) if limits else None
        self.scale = scale
        self._feature, self._threshold = _draw_trees(self.feature_names, n_trees, height, seed, self.limits)
        nodes = n_trees * (2 ** (height + 1) - 1)
        self._r = np.zeros(nodes, dtype=np.int64)
        self._l = np.zeros(nodes, dtype=np.int64)
        self._counter = 0  # rows learned into `l` since the last swap
        self._warm = False  # a full window has become the reference (River: not _first_window)
        width = len(self.feature_names)
        self._lo = np.full(width, math.inf)
        self._hi = np.full(width, -math.inf)
        self._lists: tuple[list[int], list[float], list[int] | None] | None = None  # see _row_path

    # ------------------------------------------------------------------ the Estimator protocol

    def params(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names, "n_trees": self.n_trees, "height": self.height,
                "window_size": self.window_size, "seed": self.seed, "limits": self.limits,
                "scale": self.scale}

    def clone(self) -> Self:
        return type(self)(**self.params())

    def score_one(self, x: dict[str, float]) -> float:
        if not self._warm:
            return 0.0
        path = self._row_path(self._transform(vector(x, self.feature_names)[None, :])[0].tolist())
        feature, threshold, r = self._lists  # type: ignore[misc]
        if r is None:
            r = self._r.tolist()
            self._lists = feature, threshold, r
        # the compiled loop's score for one row, in Python ints: the same integer total, the same division.
        height, size_limit = self.height, 0.1 * self.window_size
        total = 0
        for start in range(0, len(path), height + 1):
            for depth in range(height + 1):
                mass = r[path[start + depth]]
                total += mass << depth
                if mass < size_limit:
                    break
        return 1.0 - total / (self.n_trees * self.window_size * self._nodes_per_tree)

    def learn_one(self, x: dict[str, float]) -> None:
        row = vector(x, self.feature_names)
        if self.scale:
            self._extend_ranges(row)
        path = self._row_path(self._transform(row[None, :])[0].tolist())
        self._learn(np.asarray(path), 1)

    def score_learn_many(
        self, X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int
    ) -> tuple[np.ndarray, np.ndarray]:
        X = np.ascontiguousarray(X, dtype=np.float64).reshape(len(X), len(self.feature_names))
        allow = np.ascontiguousarray(allow, dtype=np.bool_)
        scores = np.empty(len(X))
        learned = np.empty(len(X), dtype=np.bool_)
        if len(X) == 0:
            return scores, learned
        counters = np.array([self._counter, int(self._warm)], dtype=np.int64)
        done = _score_learn(X, allow, float(cutoff), int(max_learn), self._feature, self._threshold, self._r,
                            self._l, counters, self._lo, self._hi, self.scale, self.height, self.n_trees,
                            self.window_size, scores, learned)
        self._counter, self._warm = int(counters[0]), bool(counters[1])
        self._lists = None  # `r` may have changed: score_one rebuilds its lists
        return scores[:done], learned[:done]

    # ------------------------------------------------------------------ internals

    @property
    def _nodes_per_tree(self) -> int:
        return 2 ** (self.height + 1) - 1

    def _transform(self, X: np.ndarray) -> np.ndarray:
        """River's MinMaxScaler.transform_one, elementwise: (x - lo) / (hi - lo), 0.0 if hi == lo."""
        if not self.scale:
            return X
        span = self._hi - self._lo
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(span != 0, (X - self._lo) / np.where(span != 0, span, 1.0), 0.0)

    def _extend_ranges(self, row: np.ndarray) -> None:
        # stats.Min/Max update only on a strict comparison, so NaN never moves them.
        np.copyto(self._lo, row, where=row < self._lo)
        np.copyto(self._hi, row, where=row > self._hi)

    def _row_path(self, z: list[float]) -> list[int]:
        """The path of one row, in plain Python (for score_one and learn_one):
        the flat r/l index of each node, tree after tree, root to leaf."""
        if self._lists is None:
            self._lists = self._feature.tolist(), self._threshold.tolist(), None
        feature, threshold, _ = self._lists
        internal, per_tree = 2 ** self.height - 1, self._nodes_per_tree
        path: list[int] = []
        for tree in range(self.n_trees):
            at, base, node = tree * internal, tree * per_tree, 0
            path.append(base)
            for _ in range(self.height):
                i = at + node
                node = 2 * node + (1 if z[feature[i]] < threshold[i] else 2)
                path.append(base + node)
        return path

    def _learn(self, paths: np.ndarray, rows: int) -> None:
        """Adds `rows` learned rows (their paths) to `l`; swaps at the window boundary.
        Callers never pass rows past the boundary."""
        if rows == 1:  # one row visits each node at most once: no repeated indices
            self._l[paths.ravel()] += 1
        else:
            self._l += np.bincount(paths.ravel(), minlength=len(self._l))
        self._counter += rows
        if self._counter >= self.window_size:
            self._r[:] = self._l  # in place: the compiled batch form swaps the same way
            self._l[:] = 0
            if self._lists is not None:
                self._lists = self._lists[0], self._lists[1], None
            self._counter = 0
            self._warm = True

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Parameters, trees and mass profiles as plain data (models/serialization.py).

        The trees are kept although a seed redraws them: a restored model must not depend on
        how a later version of this code (or of `random`) draws. Masses never exceed
        `window_size` and features index a short tuple, so both are stored narrow.

        >>> hst = HalfSpaceTrees(("a", "b"), n_trees=2, height=3, window_size=4, seed=1)
        >>> for v in (0.1, 0.2, 0.9, 0.3, 0.2):
        ...     hst.learn_one({"a": v, "b": 1 - v})
        >>> back = HalfSpaceTrees.from_state_dict(hst.state_dict())
        >>> back.score_one({"a": 0.9, "b": 0.9}) == hst.score_one({"a": 0.9, "b": 0.9}) > 0
        True
        """
        mass = np.min_scalar_type(self.window_size)
        return {
            "estimator": type(self).__name__,
            "feature_names": list(self.feature_names), "n_trees": self.n_trees, "height": self.height,
            "window_size": self.window_size, "seed": self.seed, "scale": self.scale,
            "limits": {name: [float(lo), float(hi)] for name, (lo, hi) in self.limits.items()} if self.limits else None,
            "feature": self._feature.astype(np.min_scalar_type(len(self.feature_names))),
            "threshold": self._threshold.copy(),
            "r": self._r.astype(mass), "l": self._l.astype(mass),
            "counter": self._counter, "warm": self._warm,
            "lo": self._lo.copy() if self.scale else None, "hi": self._hi.copy() if self.scale else None,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Self:
        """The model `state_dict` describes, without drawing its trees again."""
        if state.get("estimator") != cls.__name__:
            raise ValueError(f"not a {cls.__name__} state: {state.get('estimator')!r}")
        model = cls.__new__(cls)
        model.feature_names = tuple(state["feature_names"])
        model.n_trees, model.height, model.window_size = int(state["n_trees"]), int(state["height"]), int(state["window_size"])
        model.seed, model.scale = state["seed"], bool(state["scale"])
        limits = state["limits"]
        model.limits = {name: (lo, hi) for name, (lo, hi) in limits.items()} if limits else None
        internal, nodes = 2 ** model.height - 1, model.n_trees * model._nodes_per_tree
        model._feature = np.array(state["feature"], dtype=np.int64).reshape(model.n_trees * internal)
        model._threshold = np.array(state["threshold"], dtype=np.float64).reshape(model.n_trees * internal)
        model._r = np.array(state["r"], dtype=np.int64).reshape(nodes)
        model._l = np.array(state["l"], dtype=np.int64).reshape(nodes)
        model._counter, model._warm = int(state["counter"]), bool(state["warm"])
        width = len(model.feature_names)
        if model.scale:
            model._lo = np.array(state["lo"], dtype=np.float64).reshape(width)
            model._hi = np.array(state["hi"], dtype=np.float64).reshape(width)
        else:
            model._lo, model._hi = np.full(width, math.inf), np.full(width, -math.inf)
        model._lists = None
        return model

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling goes through the state dict: one description of the state, not two.
        return type(self).from_state_dict, (self.state_dict(),)

    def __repr__(self) -> str:
        return (f"HalfSpaceTrees(n_trees={self.n_trees}, height={self.height}, "
                f"window_size={self.window_size}, seed={self.seed}, scale={self.scale}, "
                f"features={len(self.feature_names)})")


def _draw_trees(
    names: tuple[str, ...], n_trees: int, height: int, seed: int | None,
    limits: Mapping[str, tuple[float, float]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """River's make_padded_tree, n_trees times from one Random(seed), flattened in heap order.

    River builds over `sorted(x)` of the first learned row; we always pass every feature, so the
    same sorted order and the same sequence of rng calls give the same trees."""
    rng = random.Random(seed)
    column = {name: i for i, name in enumerate(names)}
    bounds = {name: tuple(limits[name]) if limits and name in limits else (0.0, 1.0) for name in sorted(names)}
    internal = 2 ** height - 1
    feature = np.zeros((n_trees, internal), dtype=np.int64)
    threshold = np.zeros((n_trees, internal), dtype=np.float64)

    def grow(tree: int, node: int, depth: int) -> None:
        if depth == height:
            return
        on = rng.choices(population=list(bounds.keys()), weights=[bounds[i][1] - bounds[i][0] for i in bounds])[0]
        a, b = bounds[on]
        at = rng.uniform(a + _PADDING * (b - a), b - _PADDING * (b - a))
        feature[tree, node], threshold[tree, node] = column[on], at
        bounds[on] = (a, at)
        grow(tree, 2 * node + 1, depth + 1)
        bounds[on] = (at, b)
        grow(tree, 2 * node + 2, depth + 1)
        bounds[on] = (a, b)

    for tree in range(n_trees):
        grow(tree, 0, 0)
    return feature.ravel(), threshold.ravel()


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _score_learn(X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int, feature: np.ndarray,
                 threshold: np.ndarray, r: np.ndarray, latest: np.ndarray, counters: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray, scale: bool, height: int, n_trees: int, window: int, scores: np.ndarray,
                 learned: np.ndarray) -> int:
    """score_one then (if allowed and below cutoff) learn_one, row after row; stops after
    `max_learn` learned rows. counters = [rows learned into `latest` since the swap, warm]. Returns the
    number of rows done."""
    internal = 2**height - 1
    per_tree = 2 ** (height + 1) - 1
    size_limit = 0.1 * window
    max_score = n_trees * window * per_tree
    width = X.shape[1]
    z = np.empty(width)
    taught = 0
    for i in range(X.shape[0]):
        x = X[i]
        _scaled(x, lo, hi, scale, z)
        if counters[1]:
            total = 0
            for tree in range(n_trees):
                base, at, node = tree * per_tree, tree * internal, 0
                for depth in range(height + 1):
                    mass = r[base + node]
                    total += mass << depth
                    if mass < size_limit or depth == height:
                        break
                    k = at + node
                    node = 2 * node + 1 if z[feature[k]] < threshold[k] else 2 * node + 2
            scores[i] = 1.0 - total / max_score
        else:
            scores[i] = 0.0
        if not (allow[i] and scores[i] < cutoff):
            learned[i] = False
            if taught >= max_learn:  # as sequential_score_learn: max_learn=0 still does one row
                return i + 1
            continue
        learned[i] = True
        if scale:
            for j in range(width):  # strict comparisons: NaN never moves a range
                if x[j] < lo[j]:
                    lo[j] = x[j]
                if x[j] > hi[j]:
                    hi[j] = x[j]
            _scaled(x, lo, hi, scale, z)
        for tree in range(n_trees):
            base, at, node = tree * per_tree, tree * internal, 0
            latest[base] += 1
            for _ in range(height):
                k = at + node
                node = 2 * node + 1 if z[feature[k]] < threshold[k] else 2 * node + 2
                latest[base + node] += 1
        counters[0] += 1
        if counters[0] >= window:
            r[:] = latest
            latest[:] = 0
            counters[0] = 0
            counters[1] = 1
        taught += 1
        if taught >= max_learn:
            return i + 1
    return X.shape[0]


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _scaled(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale: bool, z: np.ndarray) -> None:
    """River's MinMaxScaler.transform_one: (x - lo) / (hi - lo), 0.0 where hi == lo."""
    for j in range(x.shape[0]):
        if scale:
            span = hi[j] - lo[j]
            z[j] = (x[j] - lo[j]) / span if span != 0 else 0.0
        else:
            z[j] = x[j]
