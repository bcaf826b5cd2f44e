"""The correlator's quick start runs as written, and its package exports what it names."""

from __future__ import annotations

import doctest
import importlib

import correlator


def test_the_correlator_quick_start_runs_as_written() -> None:
    result = doctest.testmod(correlator, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_every_exported_name_resolves_to_the_object_of_its_module() -> None:
    for name in correlator.__all__:
        assert getattr(correlator, name) is getattr(importlib.import_module(correlator._EXPORTS[name]), name)
