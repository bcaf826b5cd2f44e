"""The evaluation package's docstring examples run, and its public names resolve."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["evaluation", "evaluation.labels", "evaluation.table", "evaluation.evaluate", "evaluation.scenarios",
           "evaluation.scenarios.enterprise", "evaluation.scenarios.events"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_public_names_resolve() -> None:
    import evaluation

    for name in evaluation.__all__:
        assert getattr(evaluation, name) is not None
