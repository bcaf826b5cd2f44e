"""The docstring examples of the anomaly models run, and print what they claim (real metrics),
the package's quick start (models/__init__.py) first among them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "models",
    "models.datasets.generator",
    "models.scorer",
    "models.state",
    "models.serialization",
    "models.migrations",
    "models.estimators.hst",
    "models.estimators.loda",
    "models.estimators.sad",
    "models.calibration",
    "models.registry",
    "models.sketch",
    "models.features.commandline",
    "models.eventtime",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_print_what_they_claim(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the output above)"


def test_the_package_exports_what_its_all_lists() -> None:
    import models

    assert sorted(models.__all__) == models.__all__
    for name in models.__all__:
        assert getattr(models, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        models.nope  # noqa: B018
