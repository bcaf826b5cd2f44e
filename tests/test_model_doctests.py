"""The docstring examples of the anomaly models run, and print what they claim (real metrics)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "models.estimators.hst",
    "models.estimators.loda",
    "models.estimators.sad",
    "models.calibration",
    "models.registry",
    "models.sketch",
    "models.features.commandline",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_print_what_they_claim(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the output above)"
