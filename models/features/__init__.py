"""The features computed for every entity of every event (see base.py for the contract)."""

from __future__ import annotations

from models.features.base import Feature, kernel
from models.features.commandline import COMMAND_LINE
from models.features.logons import FAILED_LOGONS
from models.features.rarity import RARITY
from models.features.rates import RATES
from models.features.timeofday import TIME_OF_DAY

DEFAULT_FEATURES: tuple[Feature, ...] = (RATES, RARITY, COMMAND_LINE, TIME_OF_DAY, FAILED_LOGONS)


def feature_names(features: tuple[Feature, ...] = DEFAULT_FEATURES) -> tuple[str, ...]:
    return tuple(name for feature in features for name in feature.outputs)


__all__ = ["DEFAULT_FEATURES", "Feature", "feature_names", "kernel"]
