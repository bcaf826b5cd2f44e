"""The prefilter index never changes results: indexed and plain modes give identical matches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.sources.files import read_events
from detectors.cover import required_covers
from detectors.engine import SigmaEngine
from detectors.evaluate import build_matcher
from detectors.index import RuleIndex
from detectors.literals import available_backends
from detectors.loader import Ruleset
from tests.conftest import otrf_files
from tests.ruletools import compiled


def test_indexed_and_plain_modes_match_identically_on_all_otrf_events(sigmahq_ruleset: Ruleset) -> None:
    indexed = [SigmaEngine(sigmahq_ruleset.rules, mode="indexed", literal_backend=b) for b in available_backends()]
    plain = SigmaEngine(sigmahq_ruleset.rules, mode="plain")
    events = total = 0
    for path in otrf_files():
        for record in read_events(path):
            assert record.event is not None, record.error
            want = plain.match_positions(record.event)
            for engine in indexed:
                got = engine.match_positions(record.event)
                assert got == want, f"{record.file}:{record.line} ({engine.literal_backend}): indexed {got} != plain {want}"
            events += 1
            total += len(want)
    assert events == 56_563
    assert total > 500
    assert all(e.stats.rule_errors == 0 for e in [plain, *indexed])


# Hand-picked cases where a careless prefilter would drop a match.
TRICKY = [
    ("sel:\n    F|contains: 'ABC'\ncondition: sel", {"F": "xxabcxx"}),
    ("sel:\n    F|re: 'Inv[o]ke-Mimi'\ncondition: sel", {"F": "Invoke-Mimikatz"}),
    ("sel:\n    F|re|i: 'invoke-mimi'\ncondition: sel", {"F": "INVOKE-MIMIKATZ"}),
    ("sel:\n    F: 4688\ncondition: sel", {"F": "04688"}),
    ("sel:\n    F: 4688\ncondition: sel", {"F": 4688.0}),
    ("sel:\n    F: 'abc'\ncondition: sel", {"F": ["x", "ABC"]}),
    ("sel:\n    F|cased: 'ABC'\ncondition: sel", {"F": "ABC"}),
    ("sel:\n    F: 'a*c'\ncondition: sel", {"F": "AxxC"}),
    ("sel:\n    F|contains: 'true'\ncondition: sel", {"F": True}),
    ("sel:\n    F|endswith: '10'\ncondition: sel", {"F": 110}),
    ("sel:\n    F: null\ncondition: sel", {}),
    ("sel:\n    F: x\nfilter:\n    G: y\ncondition: not filter", {"F": "q"}),
    ("keywords:\n    - 'needle'\ncondition: keywords", {"deep": {"list": ["hayNEEDLEstack"]}}),
    ("sel:\n    a.b: 'v'\ncondition: sel", {"a": {"b": "V"}}),
    ("sel:\n    F|contains|all:\n        - 'one'\n        - 'two'\ncondition: sel", {"F": "two one"}),
]


@pytest.mark.parametrize("backend", available_backends())
def test_prefilter_keeps_every_hand_picked_tricky_match(backend: str) -> None:
    for detection, event in TRICKY:
        rule = compiled(detection)
        assert build_matcher(rule.condition)(event), detection
        assert RuleIndex([required_covers(rule.condition)], backend=backend).group([None]).candidates(event) == [0], detection


# Includes the characters whose case folding leaves ASCII: ſ (long s), ı/İ (Turkish i), K (Kelvin).
_ALPHABET = "abcsikABSIK*?\\-/ 0123456789.\u0130\u0131\u017f\u212a\u03a3"
_values = st.one_of(
    st.text(alphabet=_ALPHABET, max_size=8),
    st.integers(min_value=-5, max_value=5000),
    st.booleans(),
    st.lists(st.text(alphabet=_ALPHABET, max_size=6), max_size=3),
)
_patterns = st.text(alphabet="abcsikSIK*?09 \u0130", min_size=1, max_size=6)
_modifiers = st.sampled_from(["", "|contains", "|startswith", "|endswith", "|cased", "|contains|cased", "|re", "|re|i"])


@settings(max_examples=400, deadline=None)
@given(pattern=_patterns, modifier=_modifiers, value=_values, backend=st.sampled_from(available_backends()))
def test_prefilter_never_drops_a_match_for_random_patterns_and_values(
    pattern: str, modifier: str, value: object, backend: str
) -> None:
    if modifier.startswith("|re"):
        pattern = pattern.replace("*", ".*").replace("?", ".")
    detection = f"sel:\n    F{modifier}: '{pattern}'\ncondition: sel"
    rule = compiled(detection)
    event = {"F": value}
    if build_matcher(rule.condition)(event):
        assert RuleIndex([required_covers(rule.condition)], backend=backend).group([None]).candidates(event) == [0]
