"""Finds a literal that every match of a regular expression must contain.

The prefilter may only skip a regex rule when the literal is provably required, so this is
deliberately conservative: only runs of plain ASCII literals in the top-level sequence count,
and case-insensitive or verbose patterns give nothing.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]

_LITERAL = sre_constants.LITERAL
_AT = sre_constants.AT
_SUBPATTERN = sre_constants.SUBPATTERN


def required_literal(pattern: re.Pattern[str]) -> str:
    """The longest ASCII literal that any match of `pattern` contains, or "" if none is proven."""
    if pattern.flags & (re.IGNORECASE | re.VERBOSE):
        return ""
    try:
        parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    except Exception:  # the pattern compiled already; a parser quirk only costs the prefilter
        return ""
    if parsed.state.flags & (sre_constants.SRE_FLAG_IGNORECASE | sre_constants.SRE_FLAG_VERBOSE):
        return ""
    runs: list[str] = []
    _collect_runs(list(parsed), runs)
    return max(runs, key=len, default="")


def _collect_runs(items: list[tuple[object, object]], runs: list[str]) -> None:
    current: list[str] = []
    for op, arg in items:
        if op is _LITERAL and isinstance(arg, int) and arg < 128:
            current.append(chr(arg))
            continue
        if op is _AT:  # anchors consume nothing: the run goes on
            continue
        if current:
            runs.append("".join(current))
            current = []
        if op is _SUBPATTERN:
            # A group that is not optional is matched in full: its own sequence is required.
            # Groups with local flags (e.g. (?i:...)) may fold case, so they are skipped.
            add_flags, del_flags, sub = arg[1], arg[2], arg[3]  # type: ignore[index]
            if not add_flags and not del_flags:
                _collect_runs(list(sub), runs)
    if current:
        runs.append("".join(current))
