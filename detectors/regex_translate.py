"""Rewrites a Python `re` pattern for RE2 and for the `regex` module, keeping `re`'s meaning.

The pattern is parsed by `re`'s own parser and written back out with every character item as an
explicit code point set (`regex_charsets`) and every anchor spelled out, so that neither engine's
own idea of `\\s`, `\\w`, `\\d`, `$` or case folding comes into play:

- RE2 runs in linear time but has no backreferences, lookaround, atomic groups or possessive
  repeats, and its `\\b` is ASCII-only. A pattern using the first four has no RE2 form; one
  using `\\b`/`\\B` (Unicode) has an RE2 form that is exact on non-empty ASCII text only.
- The `regex` module takes everything (a backtracker, run under a timeout by the caller).

Python's `$` (without MULTILINE) matches at the end or before a final newline; RE2 has no
lookahead, so there it is written `\\n?\\z`, which is the same only where nothing follows it
in a search (in a full match nothing may be left over, so there it is `\\z`).

One difference is left: a backreference under IGNORECASE compares with the `regex` module's
case folding, which also equates `ſ` with `s` and `K` (Kelvin) with `k` where `re` compares
simple lowercase forms. No pattern syntax can say what `re` does there.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from detectors.regex_charsets import (
    SURROGATES,
    Ranges,
    category_set,
    item_set,
    single,
    subtract,
)

Dialect = Literal["re2", "regex"]

_C = sre_constants
_CHAR_ITEMS = (_C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.IN)
_MAXREPEAT = _C.MAXREPEAT
_WORD = _C.CATEGORY_WORD


class NoRE2Form(Exception):
    """The pattern uses something RE2 cannot express; `reason` says what."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Translation:
    """One rule pattern in both target syntaxes."""

    regex: str  # for the `regex` module, version 0, no flags
    re2: str | None  # for RE2, or None when RE2 cannot express the pattern
    re2_ascii_only: bool  # the RE2 form is exact only on non-empty ASCII text (Unicode \b, \B)
    re2_nonempty_only: bool  # the RE2 form is exact only on non-empty text (`\B`: `re`'s fails on "")
    reason: str  # why there is no RE2 form ("" when there is one)


def parse(pattern: str, flags: int = 0) -> tuple[list[tuple[Any, Any]], int]:
    """`re`'s parse tree of a pattern and its global flags (arguments plus leading `(?i)` etc.)."""
    parsed = sre_parse.parse(pattern, flags)
    return list(parsed), flags | parsed.state.flags


def translate(pattern: str, flags: int = 0, anchored: bool = False) -> Translation:
    """Both forms of a pattern that `re.compile(pattern, flags)` accepts, for a search (or for a
    full match when `anchored`)."""
    items, global_flags = parse(pattern, flags)
    regex_form = _Writer("regex", anchored).sequence(items, global_flags, tail=True)
    writer = _Writer("re2", anchored)
    try:
        re2_form: str | None = writer.sequence(items, global_flags, tail=True)
        reason = ""
    except NoRE2Form as missing:
        re2_form, reason = None, missing.reason
    return Translation(regex_form, re2_form, writer.ascii_only, writer.nonempty_only, reason)


class _Writer:
    def __init__(self, dialect: Dialect, anchored: bool = False) -> None:
        self.dialect = dialect
        self.anchored = anchored
        self.ascii_only = False
        self.nonempty_only = False

    def no_re2(self, reason: str) -> None:
        if self.dialect == "re2":
            raise NoRE2Form(reason)

    def sequence(self, items: Sequence[tuple[Any, Any]], flags: int, tail: bool) -> str:
        """`tail`: nothing can follow this sequence in a match (so RE2 may consume a final newline)."""
        last = len(items) - 1
        return "".join(self.item(op, av, flags, tail and i == last) for i, (op, av) in enumerate(items))

    def item(self, op: Any, av: Any, flags: int, tail: bool) -> str:
        if op in _CHAR_ITEMS:
            return self.charset(item_set(op, av, flags))
        if op is _C.BRANCH:
            return "(?:" + "|".join(self.sequence(alt, flags, tail) for alt in av[1]) + ")"
        if op is _C.SUBPATTERN:
            group, add_flags, del_flags, sub = av
            inner = self.sequence(sub, (flags | add_flags) & ~del_flags, tail)
            if group is not None and self.dialect == "regex":
                return f"(?P<g{group}>{inner})"  # named, so backreferences keep pointing at it
            return f"(?:{inner})"
        if op in (_C.MAX_REPEAT, _C.MIN_REPEAT, _C.POSSESSIVE_REPEAT):
            low, high, sub = av
            if op is _C.POSSESSIVE_REPEAT:
                self.no_re2("possessive repeat")
            body = self.sequence(sub, flags, tail and high <= 1)
            suffix = {_C.MAX_REPEAT: "", _C.MIN_REPEAT: "?", _C.POSSESSIVE_REPEAT: "+"}[op]
            return f"(?:{body}){_quantifier(low, high)}{suffix}"
        if op is _C.AT:
            return self.anchor(av, flags, tail)
        if op is _C.GROUPREF:
            self.no_re2("backreference")
            ref = f"(?P=g{av})"
            return f"(?i:{ref})" if flags & re.IGNORECASE else ref
        if op is _C.GROUPREF_EXISTS:
            self.no_re2("conditional group")
            group, yes, no = av
            text = f"(?(g{group}){self.sequence(yes, flags, tail)}"
            return text + (f"|{self.sequence(no, flags, tail)})" if no else ")")
        if op in (_C.ASSERT, _C.ASSERT_NOT):
            self.no_re2("lookaround")
            direction, sub = av
            kind = ("=" if op is _C.ASSERT else "!") if direction == 1 else ("<=" if op is _C.ASSERT else "<!")
            return f"(?{kind}{self.sequence(sub, flags, False)})"
        if op is _C.ATOMIC_GROUP:
            self.no_re2("atomic group")
            return f"(?>{self.sequence(av, flags, tail)})"
        raise NoRE2Form(f"unknown construct {op}")  # pragma: no cover - re's parser has no other

    def anchor(self, at: Any, flags: int, tail: bool) -> str:
        multiline = bool(flags & re.MULTILINE)
        if at is _C.AT_BEGINNING:
            return "(?m:^)" if multiline else r"\A"
        if at is _C.AT_BEGINNING_STRING:
            return r"\A"
        if at is _C.AT_END_STRING:
            return r"\z" if self.dialect == "re2" else r"\Z"
        if at is _C.AT_END:
            if multiline:
                return "(?m:$)"
            if self.dialect == "regex":
                return r"(?=\n?\Z)"
            if not tail:
                self.no_re2("`$` followed by more pattern")
            return r"\z" if self.anchored else r"(?:\n?\z)"
        if at in (_C.AT_BOUNDARY, _C.AT_NON_BOUNDARY):
            boundary = at is _C.AT_BOUNDARY
            ascii_only = bool(flags & re.ASCII)
            if self.dialect == "re2":
                self.ascii_only |= not ascii_only  # RE2's \b is exact for Unicode on ASCII text only
                self.nonempty_only |= not boundary  # RE2's \B matches "", `re`'s does not
                return r"\b" if boundary else r"\B"
            word = self.charset(category_set(_WORD, ascii_only))
            if boundary:
                return f"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))"
            return f"(?:(?<={word})(?={word})|(?<!{word})(?!{word})(?!\\A\\Z))"  # re's \B fails on ""
        raise NoRE2Form(f"unknown anchor {at}")  # pragma: no cover

    def charset(self, ranges: Ranges) -> str:
        if self.dialect == "re2":
            # RE2 reads UTF-8, which has no surrogates; text holding one goes to the other engine.
            ranges = subtract(ranges, SURROGATES)
        point = single(ranges)
        if point is not None:
            return self.char(point)
        if not ranges:
            return r"[^\x00-\x{10FFFF}]" if self.dialect == "re2" else "(?!)"
        parts = [self.char(low) if low == high else f"{self.char(low)}-{self.char(high)}" for low, high in ranges]
        return "[" + "".join(parts) + "]"

    def char(self, cp: int) -> str:
        if cp < 128 and chr(cp).isalnum():
            return chr(cp)
        if self.dialect == "re2":
            return f"\\x{{{cp:x}}}"
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def _quantifier(low: int, high: int) -> str:
    if high is _MAXREPEAT or high == _MAXREPEAT:
        return {0: "*", 1: "+"}.get(low, f"{{{low},}}")
    if low == 0 and high == 1:
        return "?"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"
