"""Helpers to build one-off rules in tests."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from detectors.cover import required_covers
from detectors.evaluate import build_matcher
from detectors.index import RuleIndex
from detectors.ir import CompiledRule
from detectors.loader import Ruleset, RuleSource, load_ruleset


def rule_yaml(detection: str, logsource: str = "product: windows\n    category: process_creation",
              rule_id: str | None = None) -> str:
    return (
        f"title: test rule\nid: {rule_id or uuid.uuid4()}\nstatus: test\nlevel: high\n"
        f"logsource:\n    {logsource}\n"
        f"detection:\n{textwrap.indent(textwrap.dedent(detection).strip(), '    ')}\n"
    )


def load(detection: str, placeholders: Mapping[str, Sequence[str]] | None = None) -> Ruleset:
    return load_ruleset([RuleSource("test.yml", rule_yaml(detection))], placeholders=placeholders)


def compiled(detection: str, placeholders: Mapping[str, Sequence[str]] | None = None) -> CompiledRule:
    ruleset = load(detection, placeholders)
    assert not ruleset.rejections, ruleset.rejections
    assert len(ruleset.rules) == 1
    return ruleset.rules[0]


def matches(detection: str, event: Mapping[str, Any], placeholders: Mapping[str, Sequence[str]] | None = None) -> bool:
    """Full evaluation; also asserts that the prefilter lets the rule through when it matches."""
    rule = compiled(detection, placeholders)
    result = build_matcher(rule.condition)(event)
    candidate = RuleIndex([required_covers(rule.condition)]).group([None]).candidates(event) == [0]
    assert candidate or not result, "prefilter dropped a matching rule"
    return result
