"""Which rule regexes a backtracking engine could take exponential time on, found statically.

A heuristic over `re`'s parse tree, for warnings when rules are loaded (`sigmaray rules check`,
`rules push`); it never rejects a rule. Two shapes are reported, both inside a group that
repeats (unbounded, or at least 3 times):

- a nested quantifier whose characters can also be what follows it: `(a+)+`, `(.*)*`,
  `(\\d+\\s?)+`, `(?:.*\\)){1,}`. Each extra character can end one inner run or start the
  next, and every split is tried on failure;
- alternatives that can match the same text: `(a|a)*`, `(a|ab)*`, `(\\w|_)+` (an unbounded
  repeat only: a bounded one multiplies by a constant).

Delimited repeats such as `(?:[a-z0-9-]+\\.)+` are not reported: the dot ends each run.
Polynomial shapes (`.*a.*a.*a`) are not reported either; RE2 runs all of these in linear
time, and a rule on the backtracking engine is timeout-guarded anyway (see `rule_regex`).
"""

from __future__ import annotations

import functools
import re._constants as sre_constants  # type: ignore[import-not-found]
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detectors.ir import And, CompiledRule, FieldTest, Keyword, Node, Not, Or, Regex
from detectors.regex_charsets import (
    EVERYTHING,
    NOTHING,
    Ranges,
    intersect,
    item_set,
    union,
)
from detectors.regex_translate import parse
from detectors.rule_regex import ENGINE_NOTES

_C = sre_constants
_CHAR_ITEMS = (_C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.IN)
_REPEATS = (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT)
_MAXREPEAT = _C.MAXREPEAT
_REPEATING = 3  # an outer repeat of at least this many iterations multiplies inner ambiguity
_BRANCH_REPEATING = 10  # overlapping alternatives double per iteration: only long repeats matter

Items = Sequence[tuple[Any, Any]]


@functools.lru_cache(maxsize=4096)
def backtracking_risks(pattern: str, flags: int = 0) -> tuple[str, ...]:
    """Why a backtracking engine may need exponential time on `pattern` ("" reasons: no risk
    found). The pattern must compile under `re`."""
    items, global_flags = parse(pattern, flags)
    found: list[str] = []
    _Scan(found).sequence(items, global_flags, NOTHING, None)
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class RegexWarning:
    """A rule regex worth a look: it can backtrack super-linearly, or RE2 cannot run it."""

    rule_id: str
    path: str | None
    field: str | None  # None for a keyword regex
    pattern: str
    engine: str  # rule_regex.Engine
    risks: tuple[str, ...]  # super-linear shapes found (may be empty)
    reason: str  # why RE2 does not run it on all text ("" when it does)

    def message(self) -> str:
        """One line: the value, what is risky about it, and which engine runs it."""
        where = f"{self.field}|re" if self.field else "keyword |re"
        text = f"{where} '{self.pattern}'"
        if self.risks:
            text += " can backtrack super-linearly (" + "; ".join(self.risks) + ")"
        text += f"; runs on {ENGINE_NOTES[self.engine]}"
        if self.reason:
            text += f" (not RE2: {self.reason})"
        return text + (", safe here" if self.engine == "re2" else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "path": self.path,
            "field": self.field,
            "pattern": self.pattern,
            "engine": self.engine,
            "risks": list(self.risks),
            "reason": self.reason,
            "message": self.message(),
        }


def regex_warnings(rule: CompiledRule) -> list[RegexWarning]:
    """One warning per `|re` value of the rule that is risky or not run by RE2 on all text."""
    out: list[RegexWarning] = []
    for field, predicate in _regexes(rule.condition):
        compiled = predicate.regex
        risks = backtracking_risks(compiled.pattern, compiled.flags)
        if risks or compiled.engine == "regex":
            out.append(
                RegexWarning(rule.meta.id, rule.meta.path, field, compiled.pattern, compiled.engine, risks,
                             compiled.reason)
            )
    return out


def engine_counts(rules: Sequence[CompiledRule]) -> dict[str, int]:
    """How many `|re` values run on each engine (`rule_regex.Engine` names)."""
    counts = dict.fromkeys(ENGINE_NOTES, 0)
    for rule in rules:
        for _field, predicate in _regexes(rule.condition):
            counts[predicate.regex.engine] += 1
    return counts


def _regexes(node: Node) -> list[tuple[str | None, Regex]]:
    if isinstance(node, FieldTest) and isinstance(node.predicate, Regex):
        return [(node.field, node.predicate)]
    if isinstance(node, Keyword) and isinstance(node.predicate, Regex):
        return [(None, node.predicate)]
    if isinstance(node, (And, Or)):
        return [found for child in node.children for found in _regexes(child)]
    if isinstance(node, Not):
        return _regexes(node.child)
    return []


class _Scan:
    """Walks a parse tree right to left, knowing what characters can follow each item."""

    def __init__(self, found: list[str]) -> None:
        self.found = found

    def sequence(self, items: Items, flags: int, follow: Ranges, outer: tuple[Any, ...] | None) -> None:
        """`follow`: the characters that can come right after this sequence; `outer`: the
        innermost enclosing repeat that iterates at least `_REPEATING` times, as (low, high)."""
        after = follow
        for op, av in reversed(items):
            self.item(op, av, flags, after, outer)
            after = _first_item(op, av, flags, after)

    def item(self, op: Any, av: Any, flags: int, follow: Ranges, outer: tuple[Any, ...] | None) -> None:
        if op in _REPEATS:
            low, high, body = av
            if op is _C.POSSESSIVE_REPEAT:
                return  # gives nothing back: no backtracking into it
            starts = _first(body, flags, NOTHING)
            variable = high > 1 and (high == _MAXREPEAT or high > low)
            if outer is not None and variable and intersect(starts, follow):
                self.found.append(f"nested quantifier: a repeat {_shape(low, high)} inside a group repeated "
                                  f"{_shape(*outer)}, and the next character can either extend it or "
                                  "start what follows")
            # Inside the body, the body's end is followed by another iteration or by `follow`.
            body_follow = union(starts, follow) if high > 1 else follow
            repeating = high == _MAXREPEAT or high >= _REPEATING
            self.sequence(body, flags, body_follow, (low, high) if repeating else outer)
        elif op is _C.BRANCH:
            alternatives = av[1]
            if (
                outer is not None
                and (outer[1] == _MAXREPEAT or outer[1] >= _BRANCH_REPEATING)
                and _overlapping(alternatives, flags, follow)
            ):
                self.found.append("overlapping alternation: alternatives that can match the same text, "
                                  f"in a group repeated {_shape(*outer)}")
            for alternative in alternatives:
                self.sequence(alternative, flags, follow, outer)
        elif op is _C.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            self.sequence(sub, (flags | add_flags) & ~del_flags, follow, outer)
        elif op in (_C.ASSERT, _C.ASSERT_NOT):
            self.sequence(av[1], flags, NOTHING, None)
        elif op is _C.GROUPREF_EXISTS:
            _group, yes, no = av
            self.sequence(yes, flags, follow, outer)
            if no:
                self.sequence(no, flags, follow, outer)
        # ATOMIC_GROUP gives nothing back either; characters, anchors, backreferences: nothing inside.


def _shape(low: int, high: int) -> str:
    return f"{{{low},}}" if high == _MAXREPEAT else f"{{{low},{high}}}"


def _nullable_item(op: Any, av: Any) -> bool:
    if op in _CHAR_ITEMS:
        return False
    if op is _C.BRANCH:
        return any(_nullable(alternative) for alternative in av[1])
    if op is _C.SUBPATTERN:
        return _nullable(av[3])
    if op in _REPEATS:
        return av[0] == 0 or _nullable(av[2])
    if op is _C.ATOMIC_GROUP:
        return _nullable(av)
    if op is _C.GROUPREF_EXISTS:
        return _nullable(av[1]) or not av[2] or _nullable(av[2])
    return True  # anchors, lookaround, backreferences (a group may have matched nothing)


def _nullable(items: Items) -> bool:
    return all(_nullable_item(op, av) for op, av in items)


def _first(items: Items, flags: int, follow: Ranges) -> Ranges:
    """The characters that can start a match of `items` followed by `follow`."""
    starts: list[Ranges] = []
    for op, av in items:
        starts.append(_first_item(op, av, flags, NOTHING))
        if not _nullable_item(op, av):
            return union(*starts)
    return union(*starts, follow)


def _first_item(op: Any, av: Any, flags: int, follow: Ranges) -> Ranges:
    """The characters that can start a match of one item followed by `follow`."""
    if op in _CHAR_ITEMS:
        return item_set(op, av, flags)
    if op is _C.BRANCH:
        own = union(*(_first(alternative, flags, NOTHING) for alternative in av[1]))
    elif op is _C.SUBPATTERN:
        own = _first(av[3], (flags | av[1]) & ~av[2], NOTHING)
    elif op in _REPEATS:
        own = _first(av[2], flags, NOTHING)
    elif op is _C.ATOMIC_GROUP:
        own = _first(av, flags, NOTHING)
    elif op is _C.GROUPREF_EXISTS:
        own = union(_first(av[1], flags, NOTHING), _first(av[2] or [], flags, NOTHING))
    elif op is _C.GROUPREF:
        own = EVERYTHING  # whatever the group matched
    else:
        own = NOTHING  # anchors and lookaround consume nothing
    return union(own, follow) if _nullable_item(op, av) else own


def _overlapping(alternatives: Sequence[Items], flags: int, follow: Ranges) -> bool:
    """Whether two alternatives can match the same text, compared character by character while
    both are plain characters (conservatively yes once either is anything else)."""
    for i, left in enumerate(alternatives):
        for right in alternatives[i + 1:]:
            if _may_overlap(left, right, flags, follow):
                return True
    return False


def _may_overlap(left: Items, right: Items, flags: int, follow: Ranges) -> bool:
    position = 0
    while True:
        a, a_open = _step(left, position, flags, follow)
        b, b_open = _step(right, position, flags, follow)
        if a is None or b is None:
            # Both ended: the same text both ways. One ended: what follows the alternation can be
            # the other's next character.
            rest = a if b is None else b
            return rest is None or bool(intersect(rest, follow))
        if not intersect(a, b):
            return False
        if a_open or b_open:
            return True
        position += 1


def _step(items: Items, position: int, flags: int, follow: Ranges) -> tuple[Ranges | None, bool]:
    """The character set at `position` of an alternative (None past its end), and whether the
    alternative stops being plain characters there (then the set is its remaining start)."""
    if position >= len(items):
        return None, False
    op, av = items[position]
    if op in _CHAR_ITEMS:
        return item_set(op, av, flags), False
    return _first(items[position:], flags, follow), True

