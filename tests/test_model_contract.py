"""The contract every anomaly estimator (and the calibrator) keeps; see models/estimators/base.py.

Parametrized over every registered model, plus small-window HST variants whose reference windows
swap inside the short streams hypothesis draws (and the online-scaled HST, whose scaler's ranges
move as rows are learned).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import serialization
from models.calibration import QuantileCalibrator
from models.estimators.base import Estimator, sequential_score_learn
from models.estimators.hst import HalfSpaceTrees
from models.registry import ESTIMATORS, MODELS, estimator_from_state_dict, get_model

NAMES = ("rate_1m", "rate_10m", "new_process", "cmd_entropy", "night")

Build = Callable[[int], Estimator]


def _registered(name: str) -> Build:
    return lambda seed: get_model(name).build(NAMES, seed)


CASES: dict[str, tuple[Build, float]] = {  # id -> (build(seed), spread of the generated values)
    **{name: (_registered(name), 1.0) for name in MODELS},
    "hst-window16": (lambda seed: HalfSpaceTrees(NAMES, n_trees=4, height=5, window_size=16, seed=seed), 1.0),
    "hst-scaled-window16": (lambda seed: HalfSpaceTrees(NAMES, n_trees=4, height=5, window_size=16, seed=seed,
                                                        scale=True), 40.0),
}
SEEDED = {"hst", "loda", "hst-window16", "hst-scaled-window16"}  # models that draw anything at random


def stream(seed: int, n: int, spread: float = 1.0) -> np.ndarray:
    """Rows in [0, spread), with repeated rows (ties) and a few exact zeros (missing-like)."""
    rng = np.random.default_rng(seed)
    X = rng.random((n, len(NAMES))) * spread
    X[rng.random(n) < 0.2] = X[0]
    X[rng.random(X.shape) < 0.1] = 0.0
    # Occasional far values: new extremes for the scaler, outliers for the models.
    X[rng.random(n) < 0.03] *= 5.0
    return X


def as_dict(row: np.ndarray) -> dict[str, float]:
    return dict(zip(NAMES, row.tolist(), strict=True))


def prequential(model: Estimator, X: np.ndarray) -> np.ndarray:
    scores = []
    for row in X:
        x = as_dict(row)
        scores.append(model.score_one(x))
        model.learn_one(x)
    return np.asarray(scores)


def drive(model: Estimator, X: np.ndarray, allow: np.ndarray, cutoff: float, max_learn: int) -> tuple[np.ndarray, np.ndarray]:
    """score_learn_many as a caller uses it: resume where it stopped (its window swap) until the
    rows run out or `max_learn` rows were learned, like one sequential_score_learn call."""
    scores, learned = [], []
    pos = count = 0
    while pos < len(X):
        s, taught = model.score_learn_many(X[pos:], allow[pos:], cutoff, max_learn - count)
        assert 1 <= len(s) == len(taught) <= len(X) - pos
        scores.append(s)
        learned.append(taught)
        pos += len(s)
        count += int(taught.sum())
        if count >= max_learn:
            break
    return np.concatenate(scores), np.concatenate(learned)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, Build, float]:
    name = request.param
    build, spread = CASES[name]
    return name, build, spread


# ------------------------------------------------------------------ state and parameters


def test_pickle_round_trip_gives_identical_subsequent_scores(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    X = stream(1, 400, spread)
    model = build(3)
    prequential(model, X[:250])
    restored = pickle.loads(pickle.dumps(model))
    assert np.array_equal(prequential(restored, X[250:]), prequential(model, X[250:]))


def test_state_dict_round_trip_gives_identical_subsequent_scores(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    X = stream(13, 400, spread)
    for learned in (0, 7, 250):  # before the first learned row (no trees or projections yet), early, warm
        model = build(3)
        prequential(model, X[:learned])
        state = serialization.loads(serialization.dumps(model.state_dict()))  # as a checkpoint file holds it
        restored = estimator_from_state_dict(state)
        assert type(restored) is type(model) and restored.params() == model.params()  # type: ignore[attr-defined]
        assert np.array_equal(prequential(restored, X[learned:]), prequential(model, X[learned:]))
        # The batch form from a restored state too (HST's compiled loop reads the restored arrays).
        again = estimator_from_state_dict(state)
        fresh = estimator_from_state_dict(state)
        assert np.array_equal(drive(again, X[learned:], np.ones(len(X) - learned, bool), math.inf, 10**9)[0],
                              prequential(fresh, X[learned:]))


def test_a_state_dict_names_its_class_and_another_class_refuses_it(case: tuple[str, Build, float]) -> None:
    _, build, _ = case
    state = build(1).state_dict()
    assert ESTIMATORS[state["estimator"]] is type(build(1))
    for other in ESTIMATORS.values():
        if other is not type(build(1)):
            with pytest.raises(ValueError, match=f"not a {other.__name__} state"):
                other.from_state_dict(state)
    with pytest.raises(ValueError, match="unknown estimator 'Pickled'"):
        estimator_from_state_dict({**state, "estimator": "Pickled"})


def test_clone_is_unfitted_with_the_same_params(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    X = stream(2, 300, spread)
    model = build(5)
    prequential(model, X)
    fresh = model.clone()
    assert type(fresh) is type(model)
    assert fresh.params() == model.params()  # type: ignore[attr-defined]
    assert fresh.feature_names == model.feature_names
    assert np.array_equal(prequential(fresh, X), prequential(build(5), X))


def test_same_seed_and_stream_give_the_same_scores(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    X = stream(3, 400, spread)
    assert np.array_equal(prequential(build(11), X), prequential(build(11), X))


def test_a_different_seed_gives_different_scores_for_seeded_models(case: tuple[str, Build, float]) -> None:
    name, build, spread = case
    X = stream(4, 600, spread)
    differ = not np.array_equal(prequential(build(11), X), prequential(build(12), X))
    assert differ == (name in SEEDED)  # SAD draws nothing: the seed cannot matter


# ------------------------------------------------------------------ inputs


def test_missing_features_score_as_zero_and_never_raise(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    X = stream(5, 300, spread)
    for learned in (0, 300):
        model = build(1)
        prequential(model, X[:learned])
        for row in X[:40]:
            full = as_dict(row)
            for drop in (NAMES[:1], NAMES[1:3], NAMES[::2]):
                partial = {k: v for k, v in full.items() if k not in drop}
                zeroed = {**full, **{k: 0.0 for k in drop}}
                assert model.score_one(partial) == model.score_one(zeroed)


def test_an_empty_dict_scores_and_learns_without_raising(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    model = build(1)
    zeros = dict.fromkeys(NAMES, 0.0)
    assert model.score_one({}) == model.score_one(zeros)
    model.learn_one({})
    prequential(model, stream(6, 300, spread))
    assert math.isfinite(model.score_one({}))
    assert model.score_one({}) == model.score_one(zeros)


def test_features_the_model_does_not_know_are_ignored(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    model = build(1)
    prequential(model, stream(7, 300, spread))
    row = as_dict(stream(8, 1, spread)[0])
    assert model.score_one({**row, "unknown_feature": 123.0}) == model.score_one(row)


def test_scoring_does_not_change_state(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    X = stream(9, 500, spread)
    probes = [as_dict(r) for r in stream(10, 20, spread)] + [{}]
    plain, probed = build(2), build(2)
    for i, row in enumerate(X):
        if i % 50 == 0:
            for p in probes:
                assert probed.score_one(p) == probed.score_one(p)
        x = as_dict(row)
        assert probed.score_one(x) == plain.score_one(x)
        probed.learn_one(x)
        plain.learn_one(x)


# ------------------------------------------------------------------ the batch form


@st.composite
def batched_streams(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, float, float, int]]]:
    """A stream (seed, length) cut into batches, each with its own allow rate, cutoff (as a
    quantile of the model's prequential scores; 1.0 = +inf, 0.0 = -inf) and max_learn."""
    n = draw(st.integers(1, 260))
    cuts = sorted(set(draw(st.lists(st.integers(1, n), max_size=8))) | {n})
    batches = []
    start = 0
    for end in cuts:
        batches.append((end - start,
                        draw(st.sampled_from([1.0, 0.8, 0.0]) | st.floats(0.0, 1.0)),
                        draw(st.sampled_from([1.0, 0.0, 0.5]) | st.floats(0.0, 1.0)),
                        draw(st.sampled_from([10**9, 0, 1, 2, 7, 16, 40]))))
        start = end
    return draw(st.integers(0, 2**16)), n, batches


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=batched_streams())
def test_score_learn_many_equals_sequential_for_any_batching(case: tuple[str, Build, float], plan) -> None:
    _, build, spread = case
    seed, n, batches = plan
    X = stream(seed, n + 300, spread)
    rng = np.random.default_rng(seed)
    # Both models start from the same warm state, so cutoffs bite and windows are mid-way.
    batch_model, loop_model, pilot = build(seed), build(seed), build(seed)
    prequential(batch_model, X[:300])
    prequential(loop_model, X[:300])
    pilot_scores = prequential(pilot, X)
    X = X[300:]
    start = 0
    for size, allow_rate, q, max_learn in batches:
        rows = X[start:start + size]
        allow = rng.random(size) < allow_rate
        cutoff = math.inf if q == 1.0 else -math.inf if q == 0.0 else float(np.quantile(pilot_scores, q))
        got = drive(batch_model, rows, allow, cutoff, max_learn)
        want = sequential_score_learn(loop_model, rows, allow, cutoff, max_learn)
        assert np.array_equal(got[0], want[0])  # score for score, bit for bit
        assert np.array_equal(got[1], want[1])  # learned mask for learned mask
        start += size
    probe = stream(seed + 1, 30, spread)
    assert np.array_equal(prequential(batch_model, probe), prequential(loop_model, probe))


def test_score_learn_many_stops_at_max_learn_and_on_empty_input(case: tuple[str, Build, float]) -> None:
    _, build, spread = case
    model = build(1)
    X = stream(11, 200, spread)
    scores, learned = model.score_learn_many(X[:0], np.ones(0, bool), math.inf, 10)
    assert len(scores) == len(learned) == 0
    scores, learned = model.score_learn_many(X, np.ones(len(X), bool), math.inf, 5)
    assert learned.sum() == 5 and learned[-1] and len(scores) == 5
    scores, learned = model.score_learn_many(X, np.zeros(len(X), bool), math.inf, 0)
    assert len(scores) == 1 and not learned.any()  # as the sequential form: one row, then stop


def test_hst_batch_form_runs_through_its_window_swaps_in_one_call() -> None:
    model, loop = HalfSpaceTrees(NAMES, window_size=16, seed=1), HalfSpaceTrees(NAMES, window_size=16, seed=1)
    X = stream(12, 100)
    scores, learned = model.score_learn_many(X, np.ones(len(X), bool), math.inf, 10**9)
    assert len(scores) == 100 and learned.all()
    assert not scores[:16].any() and scores[16:].all()  # warm-up scores are 0.0, then six swaps
    assert np.array_equal(scores, sequential_score_learn(loop, X, np.ones(len(X), bool), math.inf, 10**9)[0])


# ------------------------------------------------------------------ the calibrator


def test_calibrator_pickle_round_trip_and_clone() -> None:
    rng = np.random.default_rng(0)
    cal = QuantileCalibrator(window=50)
    cal.learn_many(rng.random(130))
    restored = pickle.loads(pickle.dumps(cal))
    probe = rng.random(200)
    assert np.array_equal(restored.calibrate_many(probe), cal.calibrate_many(probe))
    assert restored.remaining() == cal.remaining() == 20
    tail = rng.random(75)
    restored.learn_many(tail)
    cal.learn_many(tail)
    assert np.array_equal(restored.calibrate_many(probe), cal.calibrate_many(probe))
    fresh = cal.clone()
    assert fresh.window == 50 and not fresh.warm and fresh.remaining() == 50
    # the reference's windows (4 of 50: 205 learned, history 10) + the filled part of latest
    assert len(pickle.dumps(cal)) < 50 * 8 * 5 + 400


def test_calibrator_state_dict_round_trip_at_every_fill() -> None:
    rng = np.random.default_rng(1)
    probe = rng.normal(size=100)
    for learned in (0, 1, 49, 50, 51, 130):
        cal, raws, tail = QuantileCalibrator(window=50), rng.normal(size=learned), rng.normal(size=80)
        cal.learn_many(raws)
        restored = QuantileCalibrator.from_state_dict(serialization.loads(serialization.dumps(cal.state_dict())))
        assert restored.remaining() == cal.remaining() and restored.warm == cal.warm
        for part in (tail[:30], tail[30:]):
            restored.learn_many(part)
            cal.learn_many(part)
            assert np.array_equal(restored.calibrate_many(probe), cal.calibrate_many(probe))
            assert restored.cutoff(0.9) == cal.cutoff(0.9)
    with pytest.raises(ValueError, match="does not fit its window"):
        QuantileCalibrator.from_state_dict({"window": 10, "reference": None, "latest": np.zeros(10)})
    with pytest.raises(ValueError, match="does not fit its window"):  # more windows than its history
        QuantileCalibrator.from_state_dict({"window": 10, "history": 2, "reference": np.zeros(30), "latest": []})
    # a state from before history (one window) still loads, as a calibrator of one window
    old = QuantileCalibrator.from_state_dict({"window": 4, "reference": np.arange(4.0), "latest": np.zeros(1)})
    assert old.history == 1 and old.calibrate(2.0) == 0.625


def test_calibrator_reference_holds_the_last_history_windows() -> None:
    cal = QuantileCalibrator(window=4, history=2)
    cal.learn_many(np.arange(4.0))  # warm after one window, as before
    assert cal.warm and cal.calibrate(3.5) == 1.0
    cal.learn_many(np.arange(10.0, 14.0))  # two windows: 8 reference scores
    assert cal.calibrate(3.5) == 0.5 and cal.calibrate(20.0) == 1.0
    cal.learn_many(np.arange(20.0, 24.0))  # the first window leaves
    assert cal.calibrate(3.5) == 0.0 and cal.calibrate(15.0) == 0.5


def test_calibrator_warm_up_calibrates_to_zero_and_cuts_off_nothing() -> None:
    cal = QuantileCalibrator(window=10)
    cal.learn_many(np.arange(9.0))
    assert cal.calibrate(1e9) == 0.0 and not cal.calibrate_many(np.array([1e9, -1.0])).any()
    assert cal.cutoff(0.995) == math.inf
    cal.learn_one(9.0)
    assert cal.calibrate(100.0) == 1.0 and cal.calibrate(-1.0) == 0.0 and cal.calibrate(4.0) == 0.45


@settings(max_examples=100, deadline=None)
@given(window=st.integers(1, 40), seed=st.integers(0, 2**16), splits=st.lists(st.integers(0, 120), max_size=6))
def test_calibrator_learn_many_equals_repeated_learn_one(window: int, seed: int, splits: list[int]) -> None:
    raws = np.round(np.random.default_rng(seed).normal(size=120), 1)  # rounding makes ties
    one, many = QuantileCalibrator(window), QuantileCalibrator(window)
    for r in raws:
        one.learn_one(float(r))
    for part in np.split(raws, sorted(splits)):
        many.learn_many(part)
    assert one.remaining() == many.remaining()
    probe = np.linspace(-4, 4, 81)
    assert np.array_equal(one.calibrate_many(probe), many.calibrate_many(probe))
    assert all(one.calibrate(float(p)) == many.calibrate(float(p)) for p in probe)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(1, 30), raws=st.lists(st.sampled_from([0.0, 1.0, 2.5, -3.0]) | finite, min_size=30, max_size=30),
       level=st.sampled_from([0.0, 0.5, 0.995, 1.0, 1.5, -0.1]) | st.floats(0.0, 1.0), probes=st.lists(finite, max_size=20))
def test_score_below_cutoff_iff_calibrated_below_level(window: int, raws: list[float], level: float, probes: list[float]) -> None:
    cal = QuantileCalibrator(window)
    cal.learn_many(np.asarray(raws[:window]))
    cut = cal.cutoff(level)
    reference = raws[:window]
    # The steps' edges and their float neighbours are where an off-by-one would show.
    candidates = probes + reference + [float(np.nextafter(v, d)) for v in reference for d in (-math.inf, math.inf)]
    if math.isfinite(cut):
        candidates += [cut, float(np.nextafter(cut, -math.inf))]
    for s in candidates:
        assert (s < cut) == (cal.calibrate(s) < level), (s, cut, level)
    assert np.array_equal(cal.calibrate_many(np.asarray(candidates)), [cal.calibrate(s) for s in candidates])
    if math.isfinite(cut):
        assert cal.calibrate(cut) >= level  # and nothing smaller reaches it (checked above)
