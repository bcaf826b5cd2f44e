"""The one place a regular expression taken from a rule runs against event text.

Python's `re` backtracks: `(a+)+$` over forty `a`s and a `!` runs for minutes with the GIL held,
and a plain Sigma wildcard like `*a*a*a*a*b` is polynomial enough to stall on a long value. So
a rule pattern runs on RE2 (linear time) whenever RE2 can express it, and otherwise on the
`regex` module with a per-match timeout; a match that times out raises `RegexTimeout` and the
caller decides what that costs (the engine drops that rule for that event and counts it).

Both engines get `regex_translate`'s rewrite of the pattern, not the text as written, so matches
are the ones `re` gives (same `\\s`, `\\w`, `\\d`, `$`, case folding).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import re2
import regex
from re2 import _re2

from detectors.regex_translate import translate

DEFAULT_TIMEOUT = 0.1  # seconds one backtracking match may take before it counts as a timeout

Engine = Literal["re2", "re2-ascii", "regex"]
ENGINE_NOTES: dict[str, str] = {
    "re2": "RE2, linear time",
    "re2-ascii": "RE2 on ASCII text, the regex module under a timeout on other text",
    "regex": "the regex module (backtracking) under a per-match timeout",
}

_ANCHOR_START = _re2.RE2.Anchor.ANCHOR_START
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
# A search runs as an anchored match of `.*?` and the pattern. RE2's binding always asks for
# the match span; unanchored, RE2 finds the start with a second, backwards DFA, which for a
# pattern like `.{1000,}` overflows its cache and falls back to the slow NFA (14 s over the
# OTRF values instead of 0.06 s). Anchored, the one forward pass gives the span.
_SEARCH_PREFIX = "(?s:.*?)"


class RegexTimeout(Exception):
    """A backtracking match ran out of time; the text neither matched nor failed to."""

    def __init__(self, pattern: str, timeout: float | None) -> None:
        super().__init__(f"regular expression {pattern!r} timed out after {timeout}s")
        self.pattern = pattern
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class RuleRegex:
    """A compiled rule pattern: `matches(text)` is `re.search` (or `re.fullmatch` when
    `anchored`) of the original pattern and flags, run on the engine named by `engine`."""

    pattern: str
    flags: int
    anchored: bool
    # Equal when pattern, flags and anchoring are (as `re.Pattern`s are); the rest follows from them.
    engine: Engine = field(compare=False)
    reason: str = field(compare=False)  # why RE2 does not run it on all text ("" when it does)
    _re2: Any = field(repr=False, compare=False)  # the low-level RE2 object, or None
    _regex_source: str = field(repr=False, compare=False)  # the pattern for the `regex` module
    _re2_all_text: bool = field(repr=False, compare=False, default=True)  # else: non-empty ASCII text only
    _re2_source: str | None = field(repr=False, compare=False, default=None)  # what RE2 compiled

    def matches(self, text: str, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        compiled = self._re2
        if compiled is not None and (self._re2_all_text or (text and text.isascii())):
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: not UTF-8, so not RE2's to read
                return self._backtracking(text, timeout)
            anchor = _ANCHOR_BOTH if self.anchored else _ANCHOR_START
            return compiled.Match(anchor, data, 0, len(data))[0][0] != -1
        return self._backtracking(text, timeout)

    def parts(self) -> tuple[str, int, bool, str, str, str | None, str, bool]:
        """Everything `from_parts` needs to rebuild this regex without translating it again
        (the translation is most of the cost of compiling a rule pattern)."""
        source = self._re2_source if self._re2 is not None else None
        return (self.pattern, self.flags, self.anchored, self.engine, self.reason, source, self._regex_source,
                self._re2_all_text)

    @staticmethod
    def from_parts(pattern: str, flags: int, anchored: bool, engine: str, reason: str, re2_source: str | None,
                   regex_source: str, all_text: bool) -> RuleRegex:
        """The regex `parts()` describes; ValueError when RE2 refuses `re2_source` or `engine`
        is unknown (parts from a damaged cache)."""
        if engine not in ENGINE_NOTES:
            raise ValueError(f"unknown regex engine {engine!r}")
        compiled = None
        if re2_source is not None:
            compiled = _re2.RE2(re2_source.encode("utf-8"), _re2_options())
            if not compiled.ok():
                raise ValueError("RE2 refuses the cached pattern")
        return RuleRegex(pattern, flags, anchored, engine, reason, compiled, regex_source,  # type: ignore[arg-type]
                         all_text, re2_source)

    def __reduce__(self) -> tuple[Any, ...]:
        # The RE2 object cannot be pickled: a copy is compiled again from the rule's own text.
        return (compile_rule_regex, (self.pattern, self.flags, self.anchored))

    def _backtracking(self, text: str, timeout: float | None) -> bool:
        compiled = _backtracking_pattern(self._regex_source)
        try:
            if self.anchored:
                return compiled.fullmatch(text, timeout=timeout) is not None
            return compiled.search(text, timeout=timeout) is not None
        except TimeoutError:
            raise RegexTimeout(self.pattern, timeout) from None


def compile_rule_regex(pattern: str, flags: int = 0, anchored: bool = False) -> RuleRegex:
    """Compile a rule pattern; raises `re.error` exactly when `re.compile` would."""
    re.compile(pattern, flags)  # `re` stays the judge of what is a valid pattern, and of its errors
    return _compile(pattern, flags, anchored)


@functools.lru_cache(maxsize=4096)
def _compile(pattern: str, flags: int, anchored: bool) -> RuleRegex:
    # Cached: thousands of rules share a few hundred patterns, and a RuleRegex holds no state.
    translation = translate(pattern, flags, anchored)
    compiled = None
    reason = translation.reason
    if translation.re2 is not None:
        source = translation.re2 if anchored else f"{_SEARCH_PREFIX}(?:{translation.re2})"
        compiled = _re2.RE2(source.encode("utf-8"), _re2_options())
        if not compiled.ok():  # e.g. a repeat over 1000, or a program too large
            reason, compiled = f"RE2: {compiled.error().decode('utf-8', 'replace')}", None
    if compiled is None:
        engine: Engine = "regex"
        _backtracking_pattern(translation.regex)  # its only engine: compile now, fail at load time
    elif translation.re2_ascii_only:
        engine, reason = "re2-ascii", "Unicode word boundary (RE2's \\b is ASCII-only)"
    else:
        engine = "re2"
    all_text = not (translation.re2_ascii_only or translation.re2_nonempty_only)
    return RuleRegex(pattern, flags, anchored, engine, reason, compiled, translation.regex, all_text,
                     source if compiled is not None else None)


@functools.lru_cache(maxsize=4096)
def _backtracking_pattern(source: str) -> Any:
    # Compiled on first use for patterns RE2 runs: most never meet text RE2 cannot read.
    return regex.compile(source, regex.V0)


@functools.cache
def _re2_options() -> Any:
    options = re2.Options()
    options.never_capture = True  # only whether it matches is wanted
    options.log_errors = False  # a refused pattern is reported through `reason`, not stderr
    return options
