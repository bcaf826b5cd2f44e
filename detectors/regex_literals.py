"""Finds a literal that every match of a regular expression must contain.

The prefilter may only skip a regex rule when the literal is provably required, so this is
deliberately conservative: only runs of plain ASCII literals in the top-level sequence (and in
groups that are matched in full) count.
"""

from __future__ import annotations

import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]

_LITERAL = sre_constants.LITERAL
_AT = sre_constants.AT
_SUBPATTERN = sre_constants.SUBPATTERN


def required_literal(pattern: str, flags: int = 0) -> str:
    """The longest literal (lowercase ASCII) that the lowercased form of any match of
    `pattern` (with `re` flags) contains.

    Under IGNORECASE, `s` and `i` end a run: they also match the non-ASCII `ſ`, `ı` and `İ`,
    which lowercase to something else. Returns "" when nothing is proven.
    """
    try:
        parsed = sre_parse.parse(pattern, flags)
    except Exception:  # noqa: BLE001 - the pattern compiled already; a parser quirk only costs the prefilter
        return ""
    ignorecase = bool((flags | parsed.state.flags) & re.IGNORECASE)
    runs: list[str] = []
    _collect_runs(list(parsed), runs, ignorecase)
    return max(runs, key=len, default="")


_FOLDS_OUTSIDE_ASCII = frozenset("sSiI")


def _collect_runs(items: list[tuple[object, object]], runs: list[str], ignorecase: bool) -> None:
    current: list[str] = []
    for op, arg in items:
        if op is _LITERAL and isinstance(arg, int) and arg < 128:
            char = chr(arg)
            if not (ignorecase and char in _FOLDS_OUTSIDE_ASCII):
                current.append(char.lower())
                continue
        elif op is _AT:  # anchors consume nothing: the run goes on
            continue
        if current:
            runs.append("".join(current))
            current = []
        if op is _SUBPATTERN:
            # A group that is not optional is matched in full: its own sequence is required.
            add_flags, del_flags, sub = arg[1], arg[2], arg[3]  # type: ignore[index]
            local = (ignorecase or bool(add_flags & re.IGNORECASE)) and not (del_flags & re.IGNORECASE)
            _collect_runs(list(sub), runs, local)
    if current:
        runs.append("".join(current))
