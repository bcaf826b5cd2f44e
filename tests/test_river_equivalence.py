"""Our estimators give River's scores, and River's Shuttle results.

HST: same trees, same scores (compared exactly: both sum the same integers and divide once, so
equality is bit for bit, stronger than the isclose(rel=1e-9) the spec asks for), one row at a time
and through the compiled batch form. SAD: the same float operations as River's, so exact too.

Shuttle (River's bundled ODDS version, 49,097 rows, 7% anomalies), prequential (score, then
learn every row), online min/max scaling, seed 42 as in River's Shuttle docstring (which reports
a RollingROCAUC over the first 10,000 rows: HST 90.07%, LODA 96.46%, reproduced exactly by our
doctests). Over the full stream we get ROC-AUC 0.9608 (HST) and 0.9719 (LODA). The seed matters
more than any tolerance we could pick: over seeds 0, 1 and 42 River's HST gives 0.9712, 0.9561 and
0.9608, LODA 0.9734, 0.9492 and 0.9719. Since our scores are River's for a given seed, seed 42 is
checked to +-0.005 (below the seed-to-seed spread, so a real change of behaviour fails), and HST,
which is cheap here, over three seeds to the +-0.02 band the seeds span. Without scaling (the raw
values lie far outside [0, 1]) LODA drops to 0.930 and HST to 0.70-0.75: the 0.96/0.97 figures
assume scaling, as River's examples do.
"""

from __future__ import annotations

import math
import random
from functools import cache

import numpy as np
import pytest
from river import anomaly, compose, datasets, preprocessing, stats
from sklearn.metrics import roc_auc_score

from models.estimators.hst import HalfSpaceTrees
from models.estimators.loda import LODA
from models.estimators.sad import SAD_EMPTY, StandardAbsoluteDeviation, sad_learn, sad_score, sad_score_learn_slots


@cache
def shuttle() -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    rows = list(datasets.Shuttle())
    names = tuple(rows[0][0])
    X = np.array([[x[n] for n in names] for x, _ in rows], dtype=np.float64)
    return names, X, np.array([y for _, y in rows])


def prequential(model, names: tuple[str, ...], X: np.ndarray) -> np.ndarray:
    scores = []
    for row in X:
        x = dict(zip(names, row.tolist(), strict=True))
        scores.append(model.score_one(x))
        model.learn_one(x)
    return np.asarray(scores, dtype=np.float64)


def batch_prequential(model: HalfSpaceTrees, X: np.ndarray) -> np.ndarray:
    """Score then learn every row through score_learn_many, resuming at each window swap."""
    scores = []
    pos = 0
    while pos < len(X):
        s, learned = model.score_learn_many(X[pos:], np.ones(len(X) - pos, bool), math.inf, len(X))
        assert learned.all()
        scores.append(s)
        pos += len(s)
    return np.concatenate(scores)


# ------------------------------------------------------------------ HST


@pytest.mark.parametrize("seed", [0, 42])
def test_hst_draws_rivers_trees(seed: int) -> None:
    names = ("b", "a", "c")  # not sorted: River draws over sorted(x)
    ours = HalfSpaceTrees(names, n_trees=3, height=5, seed=seed)
    river = anomaly.HalfSpaceTrees(n_trees=3, height=5, seed=seed)
    river.learn_one({n: 0.5 for n in names})  # River draws its trees on the first learn_one
    internal = 2**5 - 1
    for t, root in enumerate(river.trees):
        level = [root]
        heap = 0
        for _ in range(5):  # breadth first = heap order
            for node in level:
                assert names[ours._feature[t * internal + heap]] == node.feature
                assert ours._threshold[t * internal + heap] == node.threshold
                heap += 1
            level = [child for node in level for child in node.children]


RANDOM_PARAMS = [
    dict(),
    dict(n_trees=3, height=4, window_size=20),
    dict(n_trees=25, height=6, window_size=100),
    dict(n_trees=2, height=12, window_size=7),
    dict(n_trees=5, height=3, window_size=1),
]


@pytest.mark.parametrize("params", RANDOM_PARAMS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_hst_equals_river_on_random_data(params: dict) -> None:
    rng = np.random.default_rng(len(params))
    names = tuple(f"x{i}" for i in range(6))
    X = rng.random((3000, len(names)))
    X[rng.random(X.shape) < 0.02] = np.nan  # River sends NaN right (not value < threshold)
    X[rng.random(len(X)) < 0.05] *= 3.0  # outside the [0, 1] limits
    X[:, 2] = np.round(X[:, 2], 1)  # values repeat; some may sit on a threshold
    want = prequential(anomaly.HalfSpaceTrees(seed=7, **params), names, X)
    assert np.array_equal(prequential(HalfSpaceTrees(names, seed=7, **params), names, X), want)
    assert np.array_equal(batch_prequential(HalfSpaceTrees(names, seed=7, **params), X), want)


def test_hst_with_limits_equals_river_on_raw_shuttle() -> None:
    names, X, _ = shuttle()
    X = X[:8000]
    limits = {n: (float(lo), float(hi)) for n, lo, hi in zip(names, X.min(axis=0), X.max(axis=0), strict=True)}
    want = prequential(anomaly.HalfSpaceTrees(seed=3, limits=limits), names, X)
    assert np.array_equal(batch_prequential(HalfSpaceTrees(names, seed=3, limits=limits), X), want)


@cache
def shuttle_hst_scores(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(River's MinMaxScaler | HST scores, ours with scale=True through the batch form)."""
    names, X, _ = shuttle()
    river = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))
    return prequential(river, names, X), batch_prequential(HalfSpaceTrees(names, seed=seed, scale=True), X)


def test_scaled_hst_equals_river_minmax_pipeline_on_all_of_shuttle() -> None:
    want, got = shuttle_hst_scores(42)
    assert len(got) == 49_097
    assert np.array_equal(got, want)
    names, X, _ = shuttle()
    assert np.array_equal(prequential(HalfSpaceTrees(names, seed=42, scale=True), names, X[:3000]), want[:3000])


def test_shuttle_prequential_roc_auc_hst_is_about_096() -> None:
    _, _, y = shuttle()
    _, got = shuttle_hst_scores(42)
    auc = roc_auc_score(y, got)
    assert abs(auc - 0.96) <= 0.005, auc  # 0.9608
    names, X, _ = shuttle()
    for seed in (0, 1):  # the seed-to-seed spread: 0.9712, 0.9561
        auc = roc_auc_score(y, batch_prequential(HalfSpaceTrees(names, seed=seed, scale=True), X))
        assert abs(auc - 0.96) <= 0.02, (seed, auc)


# ------------------------------------------------------------------ LODA


def test_loda_equals_river_loda_with_and_without_scaling() -> None:
    names, X, _ = shuttle()
    X = X[:1500]
    want = prequential(compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.LODA(seed=5)), names, X)
    assert np.array_equal(prequential(LODA(names, seed=5, scale=True), names, X), want)
    scaled = X / X.max(axis=0)
    want = prequential(anomaly.LODA(seed=5), names, scaled)
    assert np.array_equal(prequential(LODA(names, seed=5), names, scaled), want)


def test_shuttle_prequential_roc_auc_loda_is_about_097() -> None:
    names, X, y = shuttle()
    model = LODA(names, seed=42, scale=True)
    # The batch form is the sequential loop for LODA: one call, nothing stops it early.
    scores, learned = model.score_learn_many(X, np.ones(len(X), bool), math.inf, len(X))
    assert len(scores) == len(X) and learned.all()
    auc = roc_auc_score(y, scores)
    assert abs(auc - 0.97) <= 0.005, auc  # 0.9719


# ------------------------------------------------------------------ SAD


def test_sad_equals_river_sad_score_for_score() -> None:
    rng = random.Random(3)
    values = [5.0, 5.0, 5.0] + [rng.gauss(0.3, 0.05) for _ in range(3000)] + [rng.choice([0.0, 1.0, 1e6]) for _ in range(50)]
    river = anomaly.StandardAbsoluteDeviation(sub_stat=stats.Mean())
    ours = StandardAbsoluteDeviation("rate_1m")
    state = SAD_EMPTY
    for v in values:
        want = river.score_one(None, v)
        assert sad_score(state, v) == want
        assert ours.score_one({"rate_1m": v}) == want
        river.learn_one(None, v)
        ours.learn_one({"rate_1m": v})
        state = sad_learn(state, v)
    assert ours.state == state


def test_compiled_per_entity_sad_equals_river_for_interleaved_entities() -> None:
    # The scorer's per-entity form: three entities' values interleaved, one state row each.
    rng = random.Random(4)
    slots = np.array([rng.randrange(3) for _ in range(3000)], dtype=np.int64)
    values = np.array([rng.gauss(0.2 * s, 0.05) if rng.random() > 0.01 else 1e3 for s in slots.tolist()])
    allow = np.array([rng.random() > 0.1 for _ in range(3000)])
    states = np.zeros((3, 3))
    raw, learned = np.empty(3000), np.empty(3000, dtype=bool)
    sad_score_learn_slots(slots, values, allow, 25.0, 3.0, states, raw, learned)
    rivers = [anomaly.StandardAbsoluteDeviation(sub_stat=stats.Mean()) for _ in range(3)]
    seen = [0, 0, 0]
    for i, (s, v, ok) in enumerate(zip(slots.tolist(), values.tolist(), allow.tolist(), strict=True)):
        want = rivers[s].score_one(None, v) if seen[s] >= 3 else 0.0
        assert raw[i] == want, i
        assert learned[i] == (ok and want < 25.0)
        if learned[i]:
            rivers[s].learn_one(None, v)
            seen[s] += 1


def test_sad_state_is_tiny() -> None:
    import pickle

    state = SAD_EMPTY
    for v in (0.1, 0.4, 0.2):
        state = sad_learn(state, v)
    assert len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)) < 100
