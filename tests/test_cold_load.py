"""What makes a cold load faster changes nothing it gives: the rule YAML loader and the
collector paused while rules load."""

from __future__ import annotations

import gc

import pytest
import yaml

from detectors import loader
from detectors.loader import RuleSource, load_ruleset
from tests.conftest import RULE_DIRS
from tests.ruletools import rule_yaml

TRICKY_YAML = [
    "a: 1\nb: [x, 2.5, null, true, 2023-01-02, ~, '', 0x1F, 1_000, .inf, -.5, yes, Off]\nc: {d: \"e\"}\n",
    "base: &b {x: 1}\nother: *b\n",  # an alias of a mapping: the same object twice
    "s: &s text\nt: *s\n",
    "m: &m {x: 1}\nn:\n  <<: *m\n  y: 2\n",  # a merge key
    "? [a]\n: 1\n",  # an unhashable key: an error
    "1: 2\ntrue: 3\n",
    "=: x\n",
    "a: !!binary aGVsbG8=\n",
    "a: !!set {x, y}\nb: !!omap [a: 1]\nc: !!str 1\nd: !!int \"2\"\n",
    "a: !!map x\n",
    "x: !custom 1\n",
    "a: 2023-02-30\n",  # a date that does not exist: ValueError
    "",
    "---\na: 1\n---\n---\nb: [1, [2, {c: d}]]\n",
    "a: 'x\n",
]


def _loaded(text: str, loader_class: type) -> object:
    try:
        return repr(list(yaml.load_all(text, Loader=loader_class)))
    except Exception as error:  # noqa: BLE001 - the error is part of what must be the same
        return (type(error).__name__, str(error))


@pytest.mark.parametrize("text", TRICKY_YAML)
def test_the_rule_yaml_loader_builds_what_safeloader_builds(text: str) -> None:
    assert _loaded(text, loader._YamlLoader) == _loaded(text, yaml.CSafeLoader)


def test_the_rule_yaml_loader_builds_every_sigmahq_rule_as_safeloader_does() -> None:
    texts = [p.read_text(encoding="utf-8") for d in RULE_DIRS for p in sorted(d.rglob("*.yml"))]
    assert len(texts) == 3757
    different = [t for t in texts if _loaded(t, loader._YamlLoader) != _loaded(t, yaml.CSafeLoader)]
    assert not different, different[:1]


def test_a_date_that_does_not_exist_is_a_rejection_not_an_exception() -> None:
    good = rule_yaml("sel:\n    Image: x\ncondition: sel", rule_id="11111111-1111-4111-8111-111111111111")
    ruleset = load_ruleset([RuleSource("bad_date.yml", "title: x\ndate: 2023-02-30\n"), RuleSource("good.yml", good)])
    assert [r.meta.id for r in ruleset.rules] == ["11111111-1111-4111-8111-111111111111"]
    assert [(r.path, r.reason) for r in ruleset.rejections] == [
        ("bad_date.yml", "invalid YAML: day is out of range for month")]


def test_a_load_pauses_the_collector_and_gives_it_back_as_it_was() -> None:
    seen: list[bool] = []
    real = loader.compile_rule

    def compile_rule(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    sources = [RuleSource(f"r{n}.yml", rule_yaml(f"sel:\n    Image: x{n}\ncondition: sel")) for n in range(3)]
    loader.compile_rule, saved = compile_rule, loader.compile_rule  # type: ignore[assignment]
    try:
        assert gc.isenabled()
        assert len(load_ruleset(sources).rules) == 3
        assert gc.isenabled()
        gc.disable()
        try:
            assert len(load_ruleset([RuleSource("bad.yml", "title: [")]).rejections) == 1
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        loader.compile_rule = saved
    assert seen == [False, False, False]
