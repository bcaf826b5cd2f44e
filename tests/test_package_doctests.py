"""The docstring examples of the pure packages (correlator, detectors, evaluation) run and print
what they claim; the models' own, with their quick start first, are in test_model_doctests.py."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["correlator", "detectors", "evaluation"]


def _modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")]
    finder = doctest.DocTestFinder()
    return [name for name in names
            if any(test.examples for test in finder.find(importlib.import_module(name)))]


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_print_what_they_claim(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the output above)"


def test_every_pure_package_has_examples() -> None:
    with_examples = {name.split(".")[0] for name in _modules_with_examples()}
    assert with_examples == set(PACKAGES)
