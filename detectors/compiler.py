"""Compile stage: a parsed pySigma rule becomes a `CompiledRule` (our own tree, no pySigma).

Anything the engine cannot evaluate faithfully raises `RuleCompileError` with the reason, so the
caller can reject that one rule and go on.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

from detectors.errors import RuleCompileError, SourceLocation
from detectors.ir import (
    And,
    BoolEq,
    Cidr,
    CompiledRule,
    Const,
    FieldExists,
    FieldNull,
    FieldRef,
    FieldTest,
    Keyword,
    Node,
    Not,
    NumCmp,
    NumEq,
    Or,
    Predicate,
    Regex,
    RuleMeta,
    StrContains,
    StrEnds,
    StrEq,
    StrPattern,
    StrStarts,
    TimePart,
    node_fields,
)
from detectors.regex_literals import required_literal
from detectors.rule_regex import compile_rule_regex

Placeholders = Mapping[str, Sequence[str]]

_MAX_PLACEHOLDER_EXPANSION = 4096


def rule_meta(rule: SigmaRule) -> RuleMeta:
    """The plain metadata a detection carries."""
    path = str(rule.source.path) if rule.source is not None and rule.source.path else None
    rule_id = str(rule.id) if rule.id is not None else f"untitled:{rule.title}"
    logsource = rule.logsource
    return RuleMeta(
        id=rule_id,
        title=str(rule.title),
        level=rule.level.name.lower() if rule.level is not None else None,
        tags=tuple(f"{t.namespace}.{t.name}" for t in rule.tags),
        path=path,
        product=logsource.product,
        category=logsource.category,
        service=logsource.service,
        status=rule.status.name.lower() if rule.status is not None else None,
        falsepositives=tuple(str(f) for f in (rule.falsepositives or ())),
        name=rule.name,
    )


def compile_rule(rule: SigmaRule, placeholders: Placeholders | None = None) -> CompiledRule:
    """Compile one parsed rule. Raises RuleCompileError naming what is unsupported."""
    meta = rule_meta(rule)
    where = SourceLocation(meta.path, meta.id, meta.title)
    compiler = _Compiler(placeholders or {}, where)
    try:
        conditions = [c.parsed for c in rule.detection.parsed_condition]
    except SigmaError as error:
        raise RuleCompileError(f"condition: {error}", where) from error
    trees = [compiler.node(c) for c in conditions]
    if compiler.missing:
        names = sorted(set(compiler.missing))
        raise RuleCompileError(
            "unresolved placeholder" + ("s " if len(names) > 1 else " ")
            + ", ".join(f"%{n}%" for n in names)
            + ": give values in the configuration (" + ", ".join(f"placeholders.{n}" for n in names) + ")",
            where,
        )
    tree = simplify(trees[0] if len(trees) == 1 else Or(tuple(trees)))
    return CompiledRule(meta=meta, condition=tree, fields=frozenset(node_fields(tree)))


class _Compiler:
    def __init__(self, placeholders: Placeholders, where: SourceLocation) -> None:
        self.placeholders = placeholders
        self.where = where
        self.missing: list[str] = []  # placeholders without values, reported together

    def fail(self, reason: str) -> RuleCompileError:
        return RuleCompileError(reason, self.where)

    def node(self, item: Any) -> Node:
        # pySigma's condition and value classes are ABCs, whose isinstance() is slow: the
        # classes a condition tree is made of are dispatched on first, by exact class.
        kind = item.__class__
        if kind is ConditionFieldEqualsValueExpression:
            return self.field_value(item.field, item.value)
        if kind is ConditionAND:
            return And(tuple(self.node(a) for a in item.args))
        if kind is ConditionOR:
            return Or(tuple(self.node(a) for a in item.args))
        if isinstance(item, ConditionOR):
            return Or(tuple(self.node(a) for a in item.args))
        if isinstance(item, ConditionAND):
            return And(tuple(self.node(a) for a in item.args))
        if isinstance(item, ConditionNOT):
            return Not(self.node(item.args[0]))
        if isinstance(item, ConditionFieldEqualsValueExpression):
            return self.field_value(item.field, item.value)
        if isinstance(item, ConditionValueExpression):
            return self.keyword(item.value)
        raise self.fail(f"unsupported condition element {type(item).__name__}")

    def keyword(self, value: Any) -> Node:
        """Keywords are searched inside every string value, so plain text matches as a substring."""
        if isinstance(value, SigmaExpansion):
            return Or(tuple(self.keyword(v) for v in value.values))
        if isinstance(value, SigmaNumber) and not isinstance(value, SigmaTimestampPart):
            value = SigmaString(str(value.number))
        if isinstance(value, SigmaString):
            cased = isinstance(value, SigmaCasedString)
            multi = SpecialChars.WILDCARD_MULTI
            alternatives = [
                Keyword(string_predicate([multi, *parts, multi], cased)) for parts in self.expand_placeholders(value)
            ]
            return alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives))  # Or(()) is false
        if isinstance(value, SigmaRegularExpression):
            return Keyword(self.regex(value))
        raise self.fail(f"unsupported keyword value type {type(value).__name__}")

    def field_value(self, field: str, value: Any) -> Node:
        kind = value.__class__
        if kind is SigmaString or kind is SigmaCasedString:  # most values: no subclass of the others
            return self.string_tests(field, value, kind is SigmaCasedString)
        if isinstance(value, SigmaExpansion):
            return Or(tuple(self.field_value(field, v) for v in value.values))
        if isinstance(value, SigmaNull):
            return FieldNull(field)
        if isinstance(value, SigmaExists):
            return FieldExists(field, bool(value.exists))
        if isinstance(value, SigmaFieldReference):
            mode = "startswith" if value.starts_with else "endswith" if value.ends_with else "eq"
            return FieldRef(field, value.field, mode)
        if isinstance(value, SigmaCompareExpression):
            number = value.number.number
            if value.op == CompareOperators.NEQ:
                return Not(FieldTest(field, NumEq(number)))
            op = {
                CompareOperators.LT: "lt",
                CompareOperators.LTE: "lte",
                CompareOperators.GT: "gt",
                CompareOperators.GTE: "gte",
            }[value.op]
            return FieldTest(field, NumCmp(op, number))
        if isinstance(value, SigmaTimestampPart):
            part = {
                TimestampPart.MINUTE: "minute",
                TimestampPart.HOUR: "hour",
                TimestampPart.DAY: "day",
                TimestampPart.WEEK: "week",
                TimestampPart.MONTH: "month",
                TimestampPart.YEAR: "year",
            }[value.timestamp_part]
            return FieldTest(field, TimePart(part, int(value.number)))
        if isinstance(value, SigmaNumber):
            return FieldTest(field, NumEq(value.number))
        if isinstance(value, SigmaBool):
            return FieldTest(field, BoolEq(bool(value.boolean)))
        if isinstance(value, SigmaCIDRExpression):
            return FieldTest(field, Cidr(value.network))
        if isinstance(value, SigmaRegularExpression):
            return FieldTest(field, self.regex(value))
        if isinstance(value, SigmaString):
            return self.string_tests(field, value, isinstance(value, SigmaCasedString))
        raise self.fail(f"unsupported value type {type(value).__name__} on field {field}")

    # --- strings ------------------------------------------------------------------------------

    def string_tests(self, field: str, value: SigmaString, cased: bool) -> Node:
        tests = [FieldTest(field, string_predicate(parts, cased)) for parts in self.expand_placeholders(value)]
        return tests[0] if len(tests) == 1 else Or(tuple(tests))  # Or(()) is false

    def expand_placeholders(self, value: SigmaString) -> list[list[str | SpecialChars]]:
        """Each placeholder becomes every configured value (OR); unknown ones reject the rule."""
        if not any(isinstance(part, Placeholder) for part in value.s):  # the common case
            return [list(cast("list[str | SpecialChars]", value.s))]
        options: list[list[list[str | SpecialChars]]] = []
        for part in value.s:
            if isinstance(part, Placeholder):
                values = self.placeholders.get(part.name)
                if values is None:
                    self.missing.append(part.name)
                    values = []
                # A SigmaString made from plain text holds no placeholders (only str and wildcards).
                options.append([list(cast("list[str | SpecialChars]", SigmaString(str(v)).s)) for v in values])
            else:
                options.append([[part]])
        combos = 1
        for choice in options:
            combos *= max(len(choice), 1)
        if combos > _MAX_PLACEHOLDER_EXPANSION:
            raise self.fail(f"placeholder expansion yields {combos} values (limit {_MAX_PLACEHOLDER_EXPANSION})")
        if any(not choice for choice in options):
            return []
        return [[p for chunk in combo for p in chunk] for combo in itertools.product(*options)]

    def regex(self, value: SigmaRegularExpression) -> Regex:
        if value.regexp.contains_placeholder():
            raise self.fail("placeholders inside regular expressions are not supported")
        pattern = str(value.regexp)
        flags = 0
        for flag in value.flags:
            flags |= {
                SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
                SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
                SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
            }[flag]
        try:
            compiled = compile_rule_regex(pattern, flags)
        except re.error as error:
            raise self.fail(f"regular expression {pattern!r} does not compile: {error}") from error
        return Regex(compiled, required_literal(pattern, flags))


def string_predicate(parts: Sequence[str | SpecialChars], cased: bool = False) -> Predicate:
    """The cheapest predicate equivalent to a Sigma string with wildcards."""
    # Adjacent text joined, runs of `*` made one, empty text dropped; `shape` spells the parts:
    # "s" text, "*" any run, "?" one character.
    multi = SpecialChars.WILDCARD_MULTI
    merged: list[str | SpecialChars] = []
    shape = ""
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if shape[-1:] == "s":
                merged[-1] = merged[-1] + part  # type: ignore[operator]
                continue
            shape += "s"
        elif part is multi:
            if shape[-1:] == "*":
                continue
            shape += "*"
        else:
            shape += "?"
        merged.append(part)

    def norm(text: str) -> str:
        return text if cased else text.lower()

    if shape == "":
        return StrEq("", cased)
    if shape == "s":
        return StrEq(norm(merged[0]), cased)  # type: ignore[arg-type]
    if shape == "*s*":
        return StrContains(norm(merged[1]), cased)  # type: ignore[arg-type]
    if shape == "s*":
        return StrStarts(norm(merged[0]), cased)  # type: ignore[arg-type]
    if shape == "*s":
        return StrEnds(norm(merged[1]), cased)  # type: ignore[arg-type]
    regex_parts: list[str] = []
    literals: list[str] = []
    for part in merged:
        if isinstance(part, str):
            regex_parts.append(re.escape(norm(part)))
            literals.append(norm(part))
        elif part is multi:
            regex_parts.append(".*")
        else:
            regex_parts.append(".")
    source = "".join(regex_parts)
    return StrPattern(compile_rule_regex(source, re.DOTALL, anchored=True), tuple(literals), source, cased)


def simplify(node: Node) -> Node:
    """Flatten nested AND/OR, drop single-child groups and fold constants."""
    if isinstance(node, (And, Or)):
        kind = type(node)
        children: list[Node] = []
        for child in node.children:
            child = simplify(child)
            if isinstance(child, kind):
                children.extend(child.children)
            else:
                children.append(child)
        absorbing = isinstance(node, Or)  # True absorbs OR, False absorbs AND
        kept: list[Node] = []
        for child in children:
            if isinstance(child, Const):
                if child.value is absorbing:
                    return Const(absorbing)
                continue
            kept.append(child)
        if not kept:
            return Const(not absorbing)
        if len(kept) == 1:
            return kept[0]
        return kind(tuple(kept))
    if isinstance(node, Not):
        child = simplify(node.child)
        if isinstance(child, Const):
            return Const(not child.value)
        if isinstance(child, Not):
            return child.child
        return Not(child)
    return node
