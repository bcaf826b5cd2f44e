"""Turns a condition tree into a Python closure over an event (a Mapping).

The closures are built once per rule; evaluation then only calls them. This is both the plain
full-scan evaluator (the correctness reference) and what the indexed engine runs on its
candidate rules.

A regex that runs on the backtracking engine may raise `RegexTimeout` out of a matcher: the
rule is then undecided on that event, which is the caller's to count (see `engine.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from detectors.ir import (
    And,
    Const,
    FieldExists,
    FieldNull,
    FieldRef,
    FieldTest,
    Keyword,
    Node,
    Not,
    Or,
    Predicate,
    Regex,
    StrContains,
    StrEnds,
    StrEq,
    StrPattern,
    StrStarts,
)
from detectors.rule_regex import DEFAULT_TIMEOUT, RegexTimeout
from detectors.values import (
    as_text,
    field_getter,
    field_present,
    iter_all_strings,
    iter_scalars,
)

Matcher = Callable[[Mapping[str, Any]], bool]


def build_matcher(node: Node, regex_timeout: float | None = DEFAULT_TIMEOUT) -> Matcher:
    """A function event -> bool that decides the condition tree.

    `regex_timeout` bounds each match of a regex that RE2 cannot run (seconds, None: no bound).
    """
    if isinstance(node, FieldTest):
        return _field_test(node, regex_timeout)
    if isinstance(node, And):
        children = tuple(build_matcher(c, regex_timeout) for c in node.children)
        if len(children) == 2:
            first, second = children

            def and2(event: Mapping[str, Any]) -> bool:
                return first(event) and second(event)

            return and2

        def and_n(event: Mapping[str, Any]) -> bool:
            for child in children:
                if not child(event):
                    return False
            return True

        return and_n
    if isinstance(node, Or):
        children = tuple(build_matcher(c, regex_timeout) for c in node.children)
        same_field = _same_field_tests(node, regex_timeout)
        if same_field is not None:
            return same_field

        def or_n(event: Mapping[str, Any]) -> bool:
            for child in children:
                if child(event):
                    return True
            return False

        return or_n
    if isinstance(node, Not):
        inner = build_matcher(node.child, regex_timeout)

        def negate(event: Mapping[str, Any]) -> bool:
            return not inner(event)

        return negate
    if isinstance(node, FieldNull):
        get = field_getter(node.field)

        def is_null(event: Mapping[str, Any]) -> bool:
            # The getter answers None for an absent field and for JSON null alike; "" and []
            # are values (see ir.FieldNull).
            return get(event) is None

        return is_null
    if isinstance(node, FieldExists):
        name, want = node.field, node.exists

        def exists(event: Mapping[str, Any]) -> bool:
            return field_present(event, name) is want

        return exists
    if isinstance(node, FieldRef):
        return _field_ref(node)
    if isinstance(node, Keyword):
        test = _test_function(node.predicate, regex_timeout)

        def keyword(event: Mapping[str, Any]) -> bool:
            for text in iter_all_strings(event):
                if test(text):
                    return True
            return False

        return keyword
    if isinstance(node, Const):
        constant = node.value
        return lambda event: constant
    raise TypeError(f"unknown condition node {node!r}")


_MEMO_LIMIT = 4096
_TIMED_OUT = object()  # memo entry: this value already took the regex past its timeout


def _test_function(predicate: Predicate, timeout: float | None) -> Callable[[Any], bool]:
    """The predicate's test, memoized per string value for regexes and wildcard patterns, which
    can cost microseconds to milliseconds on long command lines (and values repeat). A value
    that timed out is remembered as such, so a repeated hostile value costs one timeout, not
    one per event."""
    if isinstance(predicate, Regex):
        regex, fold = predicate.regex, False
    elif isinstance(predicate, StrPattern):
        regex, fold = predicate.regex, not predicate.cased
    else:
        return predicate.test
    pattern = regex.pattern

    def test(value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return regex.matches(s.lower() if fold else s, timeout)

    memo: dict[str, object] = {}

    def memoized(value: Any) -> bool:
        if value.__class__ is not str:
            return test(value)
        result = memo.get(value)
        if result is None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            try:
                result = memo[value] = test(value)
            except RegexTimeout:
                memo[value] = _TIMED_OUT
                raise
        elif result is _TIMED_OUT:
            raise RegexTimeout(pattern, timeout)
        return result  # type: ignore[return-value]

    return memoized


def _field_test(node: FieldTest, timeout: float | None) -> Matcher:
    get = field_getter(node.field)
    test = _test_function(node.predicate, timeout)

    def field_test(event: Mapping[str, Any]) -> bool:
        value = get(event)
        if value is None:
            return False
        cls = value.__class__
        if cls is list or cls is tuple:
            for item in iter_scalars(value):
                if test(item):
                    return True
            return False
        return test(value)

    return field_test


def _same_field_tests(node: Or, timeout: float | None) -> Matcher | None:
    """OR over values of one field (a Sigma value list): read and lowercase the field once.

    Case-insensitive equals/startswith/endswith/contains collapse into a set lookup and
    tuple-argument str methods; any other predicate is tested one by one.
    """
    if not all(isinstance(c, FieldTest) for c in node.children):
        return None
    fields = {c.field for c in node.children}  # type: ignore[union-attr]
    if len(fields) != 1:
        return None
    get = field_getter(fields.pop())
    equals: set[str] = set()
    starts: list[str] = []
    ends: list[str] = []
    contains: list[str] = []
    others: list[Callable[[Any], bool]] = []
    for child in node.children:
        predicate = child.predicate  # type: ignore[union-attr]
        if isinstance(predicate, StrEq) and not predicate.cased:
            equals.add(predicate.text)
        elif isinstance(predicate, StrStarts) and not predicate.cased:
            starts.append(predicate.text)
        elif isinstance(predicate, StrEnds) and not predicate.cased:
            ends.append(predicate.text)
        elif isinstance(predicate, StrContains) and not predicate.cased:
            contains.append(predicate.text)
        else:
            others.append(_test_function(predicate, timeout))
    starts_t, ends_t, contains_t, others_t = tuple(starts), tuple(ends), tuple(contains), tuple(others)
    has_text = bool(equals or starts_t or ends_t or contains_t)

    def test_one(value: Any) -> bool:
        if has_text:
            text = as_text(value)
            if text is not None:
                lowered = text.lower()
                if lowered in equals:
                    return True
                if starts_t and lowered.startswith(starts_t):
                    return True
                if ends_t and lowered.endswith(ends_t):
                    return True
                for needle in contains_t:
                    if needle in lowered:
                        return True
        for test in others_t:
            if test(value):
                return True
        return False

    def any_value(event: Mapping[str, Any]) -> bool:
        value = get(event)
        if value is None:
            return False
        cls = value.__class__
        if cls is list or cls is tuple:
            for item in iter_scalars(value):
                if test_one(item):
                    return True
            return False
        return test_one(value)

    return any_value


def _field_ref(node: FieldRef) -> Matcher:
    get_a, get_b = field_getter(node.field), field_getter(node.other)
    mode, cased = node.mode, node.cased

    def norm(value: Any) -> str | None:
        text = as_text(value)
        if text is None:
            return None
        return text if cased else text.lower()

    def field_ref(event: Mapping[str, Any]) -> bool:
        a, b = get_a(event), get_b(event)
        if a is None or b is None:
            return False
        for left in iter_scalars(a):
            x = norm(left)
            if x is None:
                continue
            for right in iter_scalars(b):
                y = norm(right)
                if y is None:
                    continue
                if mode == "eq" and x == y:
                    return True
                if mode == "startswith" and x.startswith(y):
                    return True
                if mode == "endswith" and x.endswith(y):
                    return True
        return False

    return field_ref
