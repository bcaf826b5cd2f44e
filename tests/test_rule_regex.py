"""Rule regexes run in linear time where RE2 can take them, under a timeout where it cannot,
and match exactly what Python's `re` matched before."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.ir import And, FieldTest, Keyword, Node, Not, Or, Regex, StrPattern
from detectors.loader import Ruleset, RuleSource, load_ruleset
from detectors.rule_regex import RegexTimeout, RuleRegex, compile_rule_regex
from tests.conftest import otrf_files
from tests.ruletools import compiled, rule_yaml

SYSMON_PROCESS = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1}
REDOS_ID = "5b0c1f7e-0000-4000-8000-000000000001"
BACKREF_ID = "5b0c1f7e-0000-4000-8000-000000000002"
PLAIN_ID = "5b0c1f7e-0000-4000-8000-000000000003"


def _ruleset(*rules: tuple[str, str]) -> Ruleset:
    ruleset = load_ruleset([RuleSource(f"{rule_id}.yml", rule_yaml(detection, rule_id=rule_id)) for rule_id, detection in rules])
    assert not ruleset.rejections, ruleset.rejections
    return ruleset


def _regex_of(detection: str) -> RuleRegex:
    predicate = compiled(detection).condition.predicate  # type: ignore[union-attr]
    assert isinstance(predicate, (Regex, StrPattern))
    return predicate.regex


# --- the ReDoS cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["indexed", "plain"])
def test_nested_quantifier_rule_runs_on_re2_and_answers_a_hostile_value_without_backtracking(mode: str) -> None:
    # Under `re`, 22 a's already take over a second here and each one more doubles it.
    ruleset = _ruleset((REDOS_ID, "sel:\n    CommandLine|re: '(a+)+$'\ncondition: sel"))
    assert _regex_of("sel:\n    CommandLine|re: '(a+)+$'\ncondition: sel").engine == "re2"
    engine = SigmaEngine(ruleset.rules, mode=mode)  # type: ignore[arg-type]
    assert engine.match({**SYSMON_PROCESS, "CommandLine": "a" * 40 + "!"}) == []
    assert [m.id for m in engine.match({**SYSMON_PROCESS, "CommandLine": "a" * 40})] == [REDOS_ID]
    assert engine.regex_timeouts == {} and engine.degraded_rules() == {}


@pytest.mark.parametrize("mode", ["indexed", "plain"])
def test_a_timing_out_backreference_degrades_only_its_rule_and_the_event_goes_on(mode: str) -> None:
    # RE2 has no backreferences, so this one runs on the regex module, where it is exponential
    # (about 90 s for this value without a timeout).
    ruleset = _ruleset(
        (BACKREF_ID, "sel:\n    CommandLine|re: '(a|aa)+\\1b'\ncondition: sel"),
        (PLAIN_ID, "sel:\n    CommandLine|contains: 'aaaa'\ncondition: sel"),
    )
    engine = SigmaEngine(ruleset.rules, mode=mode, regex_timeout=0.02)  # type: ignore[arg-type]
    hostile = {**SYSMON_PROCESS, "CommandLine": "a" * 40 + "!b"}

    assert [m.id for m in engine.match(hostile)] == [PLAIN_ID]
    assert engine.regex_timeouts == {BACKREF_ID: 1}
    assert list(engine.degraded_rules()) == [BACKREF_ID]
    assert "(a|aa)+\\1b" in engine.degraded_rules()[BACKREF_ID]
    assert engine.stats.regex_timeouts == 1 and engine.stats.rule_errors == 0

    # The same value again is not run again (remembered as timed out) but is counted again.
    assert [m.id for m in engine.match(hostile)] == [PLAIN_ID]
    assert engine.regex_timeouts == {BACKREF_ID: 2}
    # The rule still matches where the regex module answers in time.
    assert [m.id for m in engine.match({**SYSMON_PROCESS, "CommandLine": "xaab"})] == [BACKREF_ID]


def test_regex_timeout_is_raised_with_the_pattern_and_no_bound_means_no_timeout() -> None:
    regex = compile_rule_regex(r"(a|aa)+\1b")
    assert regex.engine == "regex" and regex.reason == "backreference"
    with pytest.raises(RegexTimeout) as raised:
        regex.matches("a" * 40 + "!b", timeout=0.01)
    assert raised.value.pattern == r"(a|aa)+\1b"
    assert regex.matches("aab", timeout=None)


def test_wildcard_with_many_stars_runs_on_re2() -> None:
    # `re` needs about 48 s for this fullmatch over 400 characters.
    regex = _regex_of("sel:\n    CommandLine: '*a*a*a*a*b'\ncondition: sel")
    assert regex.engine == "re2" and regex.anchored
    assert not regex.matches("a" * 400)
    assert regex.matches("xaxaxaxaxb")


# --- which engine ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "backreference"),
        (r"(?<=\s)-enc", "lookaround"),
        (r"foo(?!bar)", "lookaround"),
        (r"(?>a+)b", "atomic group"),
        (r"a++b", "possessive repeat"),
        (r"(a)?(?(1)b|c)", "conditional group"),
        (r"a$\n", "`$` followed by more pattern"),
    ],
)
def test_what_re2_cannot_express_runs_on_the_regex_module_with_the_reason(pattern: str, reason: str) -> None:
    regex = compile_rule_regex(pattern)
    assert (regex.engine, regex.reason) == ("regex", reason)


def test_a_repeat_too_large_for_re2_runs_on_the_regex_module() -> None:
    regex = compile_rule_regex(r"\w{1,1000}x")
    assert regex.engine == "regex" and regex.reason.startswith("RE2: ")
    assert regex.matches("abcx") and not regex.matches("abc")


def test_unicode_word_boundary_runs_on_re2_for_ascii_text_only() -> None:
    regex = compile_rule_regex(r"\bnet\b")
    assert regex.engine == "re2-ascii"
    assert regex.matches("a net b") and not regex.matches("anet b")
    assert not regex.matches("énet")  # é is a word character for `re`, not for RE2's \b
    assert compile_rule_regex(r"(?a)\bnet\b").engine == "re2"  # ASCII \b is RE2's own


def test_invalid_pattern_is_still_rejected_with_the_re_error() -> None:
    ruleset = load_ruleset([RuleSource("bad.yml", rule_yaml("sel:\n    F|re: '(unclosed'\ncondition: sel"))])
    assert not ruleset.rules
    assert "missing ), unterminated subpattern" in ruleset.rejections[0].reason


# --- same matches as `re` --------------------------------------------------------------------

# Where RE2 and the regex module read a pattern differently from `re`.
TRICKY = [
    (r"net\s+user", 0, "net\u00a0user"),  # RE2's \s has no NBSP
    (r"a\sb", 0, "a\x0bb"),  # nor \v
    (r"a\sb", 0, "a\x1cb"),  # `re` counts the file separator as a space
    (r"\d{3}", 0, "\u0663\u0664\u0665"),  # Arabic-Indic digits are \d to `re`
    (r"\w+", 0, "\u00e9"),
    (r"^\W$", 0, "\u00e9"),
    (r"\.exe$", 0, "a.exe\n"),  # `$` matches before a final newline
    (r"\.exe$", 0, "a.exe\n\n"),
    (r"\.exe\Z", 0, "a.exe\n"),
    ("$", 0, "\n"),  # a full match of `$` cannot leave the newline over
    (r"(?m)^b$", 0, "a\nb\nc"),
    (r"(?m)\n^", 0, "a\n"),
    (r"k", re.IGNORECASE, "\u212a"),  # Kelvin sign
    (r"i", re.IGNORECASE, "\u0130"),  # `re` folds İ and ı with i, RE2 does not
    (r"i", re.IGNORECASE, "\u0131"),
    (r"[a-z]+", re.IGNORECASE, "\u017f"),  # long s
    (r"(?i)[^a]", 0, "A"),
    (r"(?i:A)b", 0, "aB"),
    (r"(?i)a(?-i:b)", 0, "AB"),
    (r"a.b", 0, "a\nb"),
    (r"a.b", re.DOTALL, "a\nb"),
    (r"(?a)\w", 0, "\u00e9"),
    (r"(?ai)k", 0, "\u212a"),
    (r"\bx", 0, "\u00e9x"),
    (r"\B", 0, ""),
    (r"x", 0, "\ud800x"),  # a lone surrogate is not UTF-8: the other engine reads it
    (r"[\ud800-\udfff]", 0, "a\udc00"),
    (r"[-/\u2013\u2014\u2015]e", re.IGNORECASE, "\u2014E"),
    (r"(a)(?i:\1)", 0, "aA"),
]


@pytest.mark.parametrize(("pattern", "flags", "text"), TRICKY)
def test_matches_like_re_where_re2_reads_patterns_differently(pattern: str, flags: int, text: str) -> None:
    expected = re.search(pattern, text, flags) is not None
    assert compile_rule_regex(pattern, flags).matches(text) is expected
    assert compile_rule_regex(pattern, flags, anchored=True).matches(text) is (re.fullmatch(pattern, text, flags) is not None)


_ATOMS = [
    "a", "k", "s", "i", "K", "S", "_", "0", " ", "-", "\\.", "\u0130", "\u0131", "\u017f", "\u212a", "\u00e9",
    ".", r"\s", r"\S", r"\d", r"\D", r"\w", r"\W", "[a-k]", "[^a]", r"[\s\d]", r"[^\w-]", "[\u0660-\u0669]",
    "^", "$", r"\A", r"\Z", r"\b", r"\B",
]
_TEXT = st.text(alphabet="aksiAKSI_0 -.\n\t\x0b\x1c\u00a0\u0130\u0131\u017f\u212a\u00e9\u0663\u2028", max_size=10)


def _patterns() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, inner).map("".join),
            st.tuples(inner, inner).map("|".join),
            inner.map(lambda p: f"({p})"),
            inner.map(lambda p: f"(?:{p})"),
            st.tuples(inner, st.sampled_from(["*", "+", "?", "{1,3}", "*?", "{2}"])).map(lambda t: f"(?:{t[0]}){t[1]}"),
            inner.map(lambda p: f"(?={p})"),
            inner.map(lambda p: f"(?i:{p})"),
        )

    return st.recursive(st.sampled_from(_ATOMS), extend, max_leaves=6)


@settings(max_examples=400, deadline=None)
@given(pattern=_patterns(),
       flags=st.sampled_from([0, re.IGNORECASE, re.MULTILINE, re.DOTALL, re.IGNORECASE | re.MULTILINE,
                              re.ASCII, re.ASCII | re.IGNORECASE]),
       texts=st.lists(_TEXT, min_size=1, max_size=4))
def test_random_patterns_match_like_re_on_tricky_text(pattern: str, flags: int, texts: list[str]) -> None:
    try:
        reference = re.compile(pattern, flags)
    except re.error:
        assume(False)
        return
    search, fullmatch = compile_rule_regex(pattern, flags), compile_rule_regex(pattern, flags, anchored=True)
    for text in texts:
        assert search.matches(text, None) is (reference.search(text) is not None), (search.engine, text)
        assert fullmatch.matches(text, None) is (reference.fullmatch(text) is not None), (fullmatch.engine, text)


def _rule_regexes(node: Node, field: str | None, out: dict[RuleRegex, set[str | None]]) -> None:
    if isinstance(node, (FieldTest, Keyword)) and isinstance(node.predicate, (Regex, StrPattern)):
        out[node.predicate.regex].add(node.field if isinstance(node, FieldTest) else None)
    elif isinstance(node, (And, Or)):
        for child in node.children:
            _rule_regexes(child, field, out)
    elif isinstance(node, Not):
        _rule_regexes(node.child, field, out)


@pytest.mark.slow
def test_every_sigmahq_regex_and_wildcard_matches_like_re_on_the_otrf_values(sigmahq_ruleset: Ruleset) -> None:
    regexes: dict[RuleRegex, set[str | None]] = defaultdict(set)
    for rule in sigmahq_ruleset.rules:
        _rule_regexes(rule.condition, None, regexes)
    values: dict[str, set[str]] = defaultdict(set)
    for path in otrf_files():
        for record in read_events(path):
            assert record.event is not None
            for name, value in record.event.items():
                if isinstance(value, str):
                    values[name].add(value)
    every_value = set().union(*values.values())
    compared = matched = 0
    for regex, fields in regexes.items():
        texts = every_value if None in fields else set().union(*(values.get(f, set()) for f in fields))
        if regex.anchored:  # wildcards compare lowercased text (or cased: then ASCII only, as here)
            texts = texts | {t.lower() for t in texts}
        reference = re.compile(regex.pattern, regex.flags)
        test = reference.fullmatch if regex.anchored else reference.search
        for text in texts:
            expected = test(text) is not None
            assert regex.matches(text, None) is expected, (regex.pattern, text[:200])
            compared += 1
            matched += expected
    assert sum(1 for r in regexes if not r.anchored) > 140 and sum(1 for r in regexes if r.anchored) > 250
    assert compared > 1_000_000 and matched > 1_000
    # Every SigmaHQ regex runs on RE2 (one with \b on ASCII text only).
    assert {r.engine for r in regexes} <= {"re2", "re2-ascii"}
