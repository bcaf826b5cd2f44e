"""Half-Space Trees, score for score equal to `river.anomaly.HalfSpaceTrees`, with a numpy batch form.

The trees are drawn exactly as River draws them (same `random.Random(seed)` calls, in the same
order, over the features in sorted order), then kept as flat arrays: for tree t and internal node
i (heap order: the children of i are 2i+1 and 2i+2), `feature[t, i]` and `threshold[t, i]`; the
mass profiles `r` (reference) and `l` (latest) hold one count per node.

Why a batch form pays: a score reads only `r`, and `r` changes only when the window swaps (every
`window_size` learned rows). So a block of rows is scored with a handful of numpy operations, the
learned rows are chosen from those scores, and their paths are added to `l` in one `bincount`,
stopping at the row where the window fills (or `max_learn` is reached).

With `scale=True` an online min/max scaler precedes the trees (River's `MinMaxScaler() | HST`):
a row is scored with the scaler as it stands and learned after the scaler learns it. The scaler
changes only when a learned row extends some feature's min or max, so a block is cut right after
such a row and the rest is rescored; once the ranges settle, blocks run at full width again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from models.estimators.base import vector

__all__ = ["HalfSpaceTrees"]

_PADDING = 0.15  # River's padding: no split closer than 15% of a node's range to its edges
_MAX_BLOCK = 4096  # rows scored per numpy pass: bounds memory ((height+1) x rows x trees ints)


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
        # _scores for one row, in Python ints: the same integer total, the same float division.
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
        X = np.asarray(X, dtype=np.float64).reshape(len(X), len(self.feature_names))
        allow = np.asarray(allow, dtype=bool)
        n = len(X)
        scores: list[np.ndarray] = []
        learned: list[np.ndarray] = []
        if n == 0:
            return np.zeros(0), np.zeros(0, dtype=bool)
        # Nothing within this call changes `r` before the window swaps, and we stop there.
        limit = min(max_learn, self.window_size - self._counter)
        total = 0
        pos = 0
        # At least `limit` rows are needed to learn that many; a few more spare a second pass
        # when the cutoff or `allow` skips some. Only a scaler cut (below) ends a block early.
        block = min(max(limit + limit // 8, 16), _MAX_BLOCK)
        while True:
            rows = X[pos:pos + block]
            paths = self._paths(self._transform(rows))
            score = self._scores(paths) if self._warm else np.zeros(len(rows))
            learn = allow[pos:pos + len(rows)] & (score < cutoff)
            hits = np.flatnonzero(total + np.cumsum(learn) >= limit)
            end = int(hits[0]) + 1 if len(hits) else len(rows)
            grows = -1  # a learned row that extends the scaler's ranges ends the block
            if self.scale:
                extends = learn[:end] & ((rows[:end] < self._lo).any(axis=1) | (rows[:end] > self._hi).any(axis=1))
                first = np.flatnonzero(extends)
                if len(first):
                    grows = int(first[0])
                    end = grows + 1
            learn = learn[:end]
            earlier = learn.copy()
            if grows >= 0:
                earlier[grows] = False
            count = int(earlier.sum())
            if count:
                self._learn(paths[:, :end][:, earlier], count)
            if grows >= 0:
                self._extend_ranges(rows[grows])
                self._learn(self._paths(self._transform(rows[grows:grows + 1])), 1)
                count += 1
            scores.append(score[:end])
            learned.append(learn)
            total += count
            pos += end
            if total >= limit or pos >= n:
                break
            if grows >= 0 or not total:
                block = 2 * end  # the scaler moved, or nothing learned yet: grow geometrically
            else:  # enough rows for the learned rows still due, at the rate seen so far
                block = (limit - total) * pos // total + (limit - total) // 4 + 16
            block = min(max(block, 16), _MAX_BLOCK)
        return np.concatenate(scores), np.concatenate(learned)

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
        """_paths for one row, in plain Python (numpy's per-call cost dominates a single row):
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

    def _paths(self, Z: np.ndarray) -> np.ndarray:
        """(height + 1, rows, trees): the flat index into r/l of each row's node at each depth."""
        trees, internal, per_tree = self.n_trees, 2 ** self.height - 1, self._nodes_per_tree
        m, width = Z.shape
        flat = Z.ravel()
        row_base = (np.arange(m) * width)[:, None]
        tree_internal = (np.arange(trees) * internal)[None, :]
        node = np.zeros((m, trees), dtype=np.int64)
        paths = np.empty((self.height + 1, m, trees), dtype=np.int64)
        tree_base = (np.arange(trees) * per_tree)[None, :]
        paths[0] = tree_base
        for depth in range(self.height):
            at = tree_internal + node
            value = flat[row_base + self._feature[at]]
            # River goes left iff value < threshold; NaN therefore goes right.
            node = 2 * node + 1 + ~(value < self._threshold[at])
            paths[depth + 1] = tree_base + node
        return paths

    def _scores(self, paths: np.ndarray) -> np.ndarray:
        """River's _walk_score: sum of r * 2**depth down each path, stopping below the size limit."""
        r = self._r[paths]
        # River adds a node's mass and then stops if it is under 0.1 * window_size.
        alive = np.logical_and.accumulate(r[:-1] >= 0.1 * self.window_size, axis=0)
        weight = (1 << np.arange(self.height + 1, dtype=np.int64))[:, None, None]
        total = r[0].sum(axis=1) + (r[1:] * alive * weight[1:]).sum(axis=(0, 2))
        max_score = self.n_trees * self.window_size * self._nodes_per_tree
        # Integers below 2**53: the float division is River's, bit for bit.
        return 1.0 - total.astype(np.float64) / max_score

    def _learn(self, paths: np.ndarray, rows: int) -> None:
        """Adds `rows` learned rows (their paths) to `l`; swaps at the window boundary.
        Callers never pass rows past the boundary."""
        if rows == 1:  # one row visits each node at most once: no repeated indices
            self._l[paths.ravel()] += 1
        else:
            self._l += np.bincount(paths.ravel(), minlength=len(self._l))
        self._counter += rows
        if self._counter >= self.window_size:
            self._r, self._l = self._l, np.zeros_like(self._l)
            if self._lists is not None:
                self._lists = self._lists[0], self._lists[1], None
            self._counter = 0
            self._warm = True

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        # Masses never exceed window_size and features index a short tuple: store them narrow.
        mass = np.min_scalar_type(self.window_size)
        state = {name: getattr(self, name) for name in self.__slots__ if name != "_lists"}
        state["_feature"] = self._feature.astype(np.min_scalar_type(len(self.feature_names)))
        state["_r"] = self._r.astype(mass)
        state["_l"] = self._l.astype(mass)
        if not self.scale:
            del state["_lo"], state["_hi"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._feature = self._feature.astype(np.int64)
        self._r = self._r.astype(np.int64)
        self._l = self._l.astype(np.int64)
        self._lists = None
        if not self.scale:
            width = len(self.feature_names)
            self._lo, self._hi = np.full(width, math.inf), np.full(width, -math.inf)

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
