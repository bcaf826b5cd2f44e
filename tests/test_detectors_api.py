"""`import detectors` gives a user the whole quick-start API, and its docstring examples run."""

from __future__ import annotations

import doctest
import importlib

import pytest

import detectors

# Modules whose docstring examples are part of the public documentation.
DOCTEST_MODULES = ["detectors", "detectors.encodings"]


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_print_what_they_claim(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name} (see the output above)"


def test_package_docstring_is_a_quick_start_with_examples() -> None:
    assert detectors.__doc__ is not None and ">>>" in detectors.__doc__


def test_every_exported_name_exists_and_all_is_sorted_without_duplicates() -> None:
    assert detectors.__all__
    missing = [name for name in detectors.__all__ if not hasattr(detectors, name)]
    assert not missing, missing
    assert detectors.__all__ == sorted(set(detectors.__all__))


def test_exports_are_the_objects_of_the_modules_that_define_them() -> None:
    # Re-exports, not copies or wrappers: isinstance checks and errors caught through the root
    # package behave the same as through the defining modules.
    from detectors.encodings import register_modifiers
    from detectors.engine import SigmaEngine
    from detectors.errors import ConfigError, SigmaRayError
    from detectors.ir import RuleMeta
    from detectors.loader import Rejection, Ruleset, RuleSource, load_ruleset
    from detectors.routing import LogsourceMapping
    from detectors.rulefiles import load_rules_from_paths

    defined = {
        "LogsourceMapping": LogsourceMapping,
        "Rejection": Rejection,
        "RuleMeta": RuleMeta,
        "RuleSource": RuleSource,
        "Ruleset": Ruleset,
        "SigmaEngine": SigmaEngine,
        "SigmaRayError": SigmaRayError,
        "load_rules_from_paths": load_rules_from_paths,
        "load_ruleset": load_ruleset,
        "register_modifiers": register_modifiers,
    }
    assert {name: getattr(detectors, name) for name in detectors.__all__} == defined
    assert issubclass(ConfigError, detectors.SigmaRayError)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from detectors import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == detectors.__all__
