"""The anomaly models a cluster can run, by name (`sigmaray models list`, `models.model: hst`).

A scorer's state names its spec (`hst(n_trees=25)`), never holds it; an estimator's state names
its class, which must be one of ESTIMATORS to be restored.

>>> [spec.name for spec in list_models()]
['hst', 'loda', 'sad-rate']
>>> model = get_model("hst").build(("rate_1m", "new_process"), seed=1)
>>> model.score_one({"rate_1m": 0.2})  # warm-up: no reference window yet
0.0
>>> get_model("iforest")
Traceback (most recent call last):
...
detectors.errors.ConfigError: unknown anomaly model 'iforest' (known: hst, loda, sad-rate)

A spec's parameters can be changed by name, without code (config, `models shadow`, `models eval`):

>>> get_model("hst(n_trees=25, window_size=1000)").params
{'n_trees': 25, 'height': 8, 'window_size': 1000}
>>> get_model("hst(depth=3)")
Traceback (most recent call last):
...
detectors.errors.ConfigError: model 'hst(depth=3)': unknown parameter 'depth' (hst takes height, n_trees, window_size)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from detectors.errors import ConfigError
from models.estimators.base import Estimator
from models.estimators.hst import HalfSpaceTrees
from models.estimators.loda import LODA
from models.estimators.sad import StandardAbsoluteDeviation

__all__ = ["ESTIMATORS", "MODELS", "ModelSpec", "estimator_from_state_dict", "get_model", "list_models"]

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
        ModelSpec("hst", "Half-Space Trees (River-exact, compiled batch form); features in [0, 1]", "shared",
                  _hst, {"n_trees": 10, "height": 8, "window_size": 250}),
        ModelSpec("loda", "LODA: sparse random projections, streaming histograms (River)", "shared",
                  _loda, {"n_bins": 10, "n_random_cuts": 100}),
        ModelSpec("sad-rate", "Standard absolute deviation of each entity's 1-minute rate", "univariate",
                  _sad, {"feature": "rate_1m"}),
    )
}


# The classes a state dict may name: restoring never imports what a file says.
ESTIMATORS: dict[str, type[Estimator]] = {cls.__name__: cls for cls in (HalfSpaceTrees, LODA, StandardAbsoluteDeviation)}


def estimator_from_state_dict(state: Mapping[str, Any]) -> Estimator:
    """The estimator a state dict describes (its `"estimator"` key names the class)."""
    name = state.get("estimator")
    cls = ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown estimator {name!r} in the state (known: {', '.join(sorted(ESTIMATORS))})")
    return cls.from_state_dict(state)


_CALL = re.compile(r"^\s*([\w.-]+)\s*(?:\((.*)\))?\s*$", re.S)


def get_model(name: str) -> ModelSpec:
    """A registered spec by name, optionally with parameters changed: `hst(n_trees=25)`."""
    match = _CALL.match(name)
    base = match.group(1) if match else name
    try:
        spec = MODELS[base]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown anomaly model {base!r} (known: {known})") from None
    if not match or match.group(2) is None:
        return spec
    params = dict(spec.params)
    for item in filter(None, (part.strip() for part in match.group(2).split(","))):
        key, sep, text = (x.strip() for x in item.partition("="))
        if not sep or key not in spec.params:
            known = ", ".join(sorted(spec.params)) or "no parameters"
            what = f"unknown parameter {key!r}" if sep else f"{item!r} is not name=value"
            raise ConfigError(f"model {name!r}: {what} ({base} takes {known})")
        params[key] = _value(text, spec.params[key], name, key)
    return replace(spec, name=name.strip(), params=params)


def _value(text: str, default: Any, model: str, key: str) -> Any:
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if isinstance(default, int):
            value = int(text)
            if value < 1:
                raise ValueError(text)
            return value
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ConfigError(f"model {model!r}: {key} must be a positive {type(default).__name__}, got {text!r}") from None
    return text.strip("'\"")


def list_models() -> list[ModelSpec]:
    return list(MODELS.values())
