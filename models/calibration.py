"""Raw anomaly scores -> [0, 1], so one threshold means the same for every model.

calibrated(s) = the fraction of the reference raw scores below s, ties counting half, where the
reference is the last `history` completed windows of `window` learned raw scores each (up to
history x window scores). Like HST's mass profiles, `latest` fills with learned scores and joins
the reference when it holds `window` of them (the oldest window leaves once there are `history`),
so calibration changes only at swaps, at exact learned-score counts: batching never changes it.
Before the first window completes everything calibrates to 0.0: a cold model raises no alerts.

Why several windows (history 10, not 1): a window of 2000 scores of a busy entity type spans a
few hours of a day (src_ip: about 4 h of the enterprise scenario), so the reference of the night
made the day's ordinary scores look rare. On the enterprise scenario the src_ip type was
anomalous on 3.7% of its events against the 0.5% the 0.995 threshold promises; the other types
0.3-0.8%. Ten windows span a day and more of a busy type; the warm-up stays one window.

`cutoff(level)` turns the calibrated threshold back into a raw one, so an estimator's batch form
can decide which rows to learn (`raw < cutoff`) without calibrating them first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

__all__ = ["QuantileCalibrator"]


class QuantileCalibrator:
    """Empirical-CDF calibration against a frozen reference window (mid-rank for ties).

    Examples
    --------

    >>> import numpy as np
    >>> cal = QuantileCalibrator(window=1000)
    >>> rng = np.random.default_rng(0)
    >>> cal.calibrate(5.0)  # warm-up: no reference yet
    0.0
    >>> cal.learn_many(rng.normal(size=1000))  # the window fills and becomes the reference
    >>> cal.remaining()
    1000
    >>> print(f"{cal.calibrate(0.0):.3f} {cal.calibrate(1.645):.3f} {cal.calibrate(3.0):.3f}")
    0.534 0.958 0.999
    >>> cut = cal.cutoff(0.95)
    >>> bool(cal.calibrate(cut) >= 0.95), bool(cal.calibrate(np.nextafter(cut, -np.inf)) < 0.95)
    (True, True)
    """

    __slots__ = ("window", "history", "_windows", "_reference", "_latest", "_filled", "_steps")

    def __init__(self, window: int = 1000, history: int = 10) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if history < 1:
            raise ValueError("history must be at least 1")
        self.window = window
        self.history = history
        self._windows: list[np.ndarray] = []  # the completed windows in the reference, oldest first
        self._reference: np.ndarray | None = None  # sorted
        self._latest = np.empty(window, dtype=np.float64)
        self._filled = 0
        self._steps: tuple[np.ndarray, np.ndarray] | None = None  # cutoff() lookup, per reference

    def clone(self) -> Self:
        return type(self)(self.window, self.history)

    @property
    def warm(self) -> bool:
        return self._reference is not None

    def remaining(self) -> int:
        """Learned scores until the next swap (at least 1): callers cut batches there."""
        return self.window - self._filled

    def _fraction(self, below: np.ndarray | int, at_most: np.ndarray | int) -> np.ndarray | float:
        # The one formula every calibrated value comes from, so cutoff() compares like for like.
        size = len(self._reference) if self._reference is not None else self.window
        return (below + at_most) / (2.0 * size)

    def calibrate(self, raw: float) -> float:
        ref = self._reference
        if ref is None:
            return 0.0
        below = int(np.searchsorted(ref, raw, side="left"))
        at_most = int(np.searchsorted(ref, raw, side="right"))
        return float(self._fraction(below, at_most))

    def calibrate_many(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        ref = self._reference
        if ref is None:
            return np.zeros(raw.shape)
        below = np.searchsorted(ref, raw, side="left")
        at_most = np.searchsorted(ref, raw, side="right")
        return np.asarray(self._fraction(below, at_most), dtype=np.float64)

    def learn_one(self, raw: float) -> None:
        self.learn_many(np.array([raw], dtype=np.float64))

    def learn_many(self, raws: np.ndarray) -> None:
        raws = np.asarray(raws, dtype=np.float64).ravel()
        if np.isnan(raws).any():
            # A NaN has no rank; the scorer never learns one (NaN < cutoff is False).
            raise ValueError("cannot learn a NaN raw score")
        pos = 0
        while pos < len(raws):
            take = min(self.window - self._filled, len(raws) - pos)
            self._latest[self._filled:self._filled + take] = raws[pos:pos + take]
            self._filled += take
            pos += take
            if self._filled == self.window:
                self._windows.append(self._latest.copy())
                del self._windows[:-self.history]
                self._reference = np.sort(np.concatenate(self._windows))
                self._filled = 0
                self._steps = None

    def cutoff(self, level: float) -> float:
        """The smallest raw score (a float) whose calibrated value is >= level.

        Calibration is a non-decreasing step function of the raw score, so for every finite
        float s: `s < cutoff(level)` exactly when `calibrate(s) < level`. -inf when every score
        reaches `level` (level <= 0); +inf when none does (warm-up, or level above 1)."""
        if level <= 0.0:
            return -math.inf
        if self._reference is None:
            return math.inf
        values, raws = self._lookup()
        at = int(np.searchsorted(values, level, side="left"))
        return float(raws[at]) if at < len(raws) else math.inf

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """The calibrated value on each step, in raw order, with the smallest float of each step:
        at a distinct reference value v (mid-rank), then on the open gap above v (its smallest
        float is nextafter(v, +inf); the last gap runs to +inf and calibrates to 1.0)."""
        if self._steps is None:
            ref = self._reference
            assert ref is not None
            distinct = np.unique(ref)
            below = np.searchsorted(ref, distinct, side="left")
            at_most = np.searchsorted(ref, distinct, side="right")
            values = np.empty(2 * len(distinct))
            raws = np.empty(2 * len(distinct))
            values[0::2] = self._fraction(below, at_most)
            values[1::2] = self._fraction(at_most, at_most)
            raws[0::2] = distinct
            raws[1::2] = np.nextafter(distinct, math.inf)
            self._steps = values, raws
        return self._steps

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain data (see models/serialization.py): the window, the history, the reference's
        windows (oldest first; the sorted reference is derived) and the filled part of `latest`;
        the cutoff lookup is derived, rebuilt on demand."""
        return {"window": self.window, "history": self.history,
                "reference": None if self._reference is None else np.concatenate(self._windows),
                "latest": self._latest[:self._filled].copy()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Self:
        """The calibrator `state_dict` describes.

        >>> cal = QuantileCalibrator(window=4)
        >>> cal.learn_many(np.array([3.0, 1.0, 2.0, 4.0, 9.0]))
        >>> back = QuantileCalibrator.from_state_dict(cal.state_dict())
        >>> back.calibrate(2.5), back.remaining()
        (0.5, 3)
        """
        # a state without "history" is of a calibrator of one window (before history existed)
        calibrator = cls(int(state["window"]), int(state.get("history", 1)))
        reference, latest = state["reference"], np.asarray(state["latest"], dtype=np.float64)
        window = calibrator.window
        if len(latest) >= window or (reference is not None and (
                len(reference) % window or not 0 < len(reference) // window <= calibrator.history)):
            raise ValueError(f"calibrator state does not fit its window of {window}")
        if reference is not None:
            values = np.array(reference, dtype=np.float64)
            calibrator._windows = [values[start:start + window] for start in range(0, len(values), window)]
            calibrator._reference = np.sort(values)
        calibrator._latest[:len(latest)] = latest
        calibrator._filled = len(latest)
        return calibrator

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling goes through the state dict: one description of the state, not two.
        return type(self).from_state_dict, (self.state_dict(),)

    def __repr__(self) -> str:
        return (f"QuantileCalibrator(window={self.window}, history={self.history}, warm={self.warm}, "
                f"remaining={self.remaining()})")
