"""Ranking metrics for anomaly scores: ROC-AUC, PR-AUC (average precision), precision@k.

Pure numpy, no I/O. Higher score = more anomalous; labels are 1 (attack/anomaly) or 0.

Ties are handled the way scikit-learn handles them, so the numbers agree with
sklearn.metrics (tests/test_model_eval.py checks this): events with equal scores are one
threshold step, never ordered by their position in the stream. That matters here because
calibrated scores saturate at 1.0 and many events tie at the top.

Undefined cases raise ValueError (scikit-learn returns NaN with a warning, which is easy to
miss in a table): ROC-AUC needs both classes; PR-AUC needs at least one positive;
precision@k needs k >= 1 and at least one row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | Sequence[int] | Sequence[bool] | np.ndarray


def _check(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError("labels and scores must be one-dimensional")
    if len(y) != len(s):
        raise ValueError(f"labels and scores differ in length ({len(y)} vs {len(s)})")
    if len(y) == 0:
        raise ValueError("no rows to evaluate")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y.astype(np.int8), s


def _threshold_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct score, from the highest down, and
    those distinct scores: one step per tie group."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # The last position of each run of equal scores is where the threshold step ends.
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]
    tps = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fps = (ends + 1) - tps
    return tps, fps, s_sorted[ends]


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; a tie between an attack and a benign row counts one half.
    ValueError when only one class is present."""
    y, s = _check(labels, scores)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("ROC-AUC is undefined with only one class in the labels "
                         f"({positives} positive, {negatives} negative)")
    tps, fps, _ = _threshold_counts(y, s)
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    # Trapezoids: a tie group is a diagonal step, which is exactly the 1/2 credit per tied pair.
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at each distinct threshold, from (0, 0)."""
    y, s = _check(labels, scores)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("the ROC curve is undefined with only one class in the labels")
    tps, fps, _ = _threshold_counts(y, s)
    return np.r_[0.0, fps / negatives], np.r_[0.0, tps / positives]


def pr_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct threshold, highest threshold first."""
    y, s = _check(labels, scores)
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("the precision-recall curve is undefined without a positive label")
    tps, fps, _ = _threshold_counts(y, s)
    return tps / positives, tps / (tps + fps)


def pr_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision: sum over thresholds of (recall step) x precision, as
    sklearn.metrics.average_precision_score (no interpolation, which would flatter the curve).
    ValueError without a positive label."""
    recall, precision = pr_curve(labels, scores)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_k(labels: ArrayLike, scores: ArrayLike, k: int) -> float:
    """Share of attacks among the k highest-scored rows (what an analyst working the top k of
    the queue would see). k above the number of rows is clamped to it.

    Ties at the k-th place are broken by expectation, not by row order: a tie group that
    straddles the cut contributes its positive share for each place it fills. Taking the first
    rows in stream order instead would make the number depend on event order."""
    y, s = _check(labels, scores)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), len(y))
    tps, fps, _ = _threshold_counts(y, s)
    sizes = tps + fps
    # The first tie group whose cumulative size reaches k holds the cut.
    cut = int(np.searchsorted(sizes, k))
    above = int(sizes[cut - 1]) if cut else 0
    positives_above = float(tps[cut - 1]) if cut else 0.0
    group_size = int(sizes[cut]) - above
    group_positives = float(tps[cut]) - positives_above
    taken = k - above
    return (positives_above + taken * group_positives / group_size) / k
