"""The anomaly models a cluster can run, by name (`sigmaray models list`, `models.model: hst`).

A spec is picklable (module-level factories, plain dict params): scorer checkpoints hold it.

>>> [spec.name for spec in list_models()]
['hst', 'loda', 'sad-rate']
>>> model = get_model("hst").build(("rate_1m", "new_process"), seed=1)
>>> model.score_one({"rate_1m": 0.2})  # warm-up: no reference window yet
0.0
>>> get_model("iforest")
Traceback (most recent call last):
...
detectors.errors.ConfigError: unknown anomaly model 'iforest' (known: hst, loda, sad-rate)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from detectors.errors import ConfigError
from models.estimators.base import Estimator
from models.estimators.hst import HalfSpaceTrees
from models.estimators.loda import LODA
from models.estimators.sad import StandardAbsoluteDeviation

__all__ = ["MODELS", "ModelSpec", "get_model", "list_models"]

Kind = Literal["shared", "univariate"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How to build one model: `shared` = one estimator per entity type over all its features;
    `univariate` = a per-entity SAD state on the single feature `params["feature"]`."""

    name: str
    description: str
    kind: Kind
    factory: Callable[..., Estimator]
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, feature_names: tuple[str, ...], seed: int) -> Estimator:
        return self.factory(tuple(feature_names), seed, **self.params)


def _hst(feature_names: tuple[str, ...], seed: int, **params: Any) -> Estimator:
    return HalfSpaceTrees(feature_names, seed=seed, **params)


def _loda(feature_names: tuple[str, ...], seed: int, **params: Any) -> Estimator:
    return LODA(feature_names, seed=seed, **params)


def _sad(feature_names: tuple[str, ...], seed: int, *, feature: str) -> Estimator:
    del seed  # deterministic: nothing is drawn
    return StandardAbsoluteDeviation(feature, feature_names)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("hst", "Half-Space Trees (River-exact, numpy batch form); features in [0, 1]", "shared",
                  _hst, {"n_trees": 10, "height": 8, "window_size": 250}),
        ModelSpec("loda", "LODA: sparse random projections, streaming histograms (River)", "shared",
                  _loda, {"n_bins": 10, "n_random_cuts": 100}),
        ModelSpec("sad-rate", "Standard absolute deviation of each entity's 1-minute rate", "univariate",
                  _sad, {"feature": "rate_1m"}),
    )
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown anomaly model {name!r} (known: {known})") from None


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())
