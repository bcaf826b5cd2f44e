"""Exactly which code points one single-character regex item matches under Python's `re`.

RE2 and the `regex` module disagree with `re` on `\\d`, `\\w`, `\\s` and on case folding (RE2's
`\\s` lacks `\\v` and every non-ASCII space; `re` folds `i` with `İ` and `ı`, RE2 does not). So
a rule pattern is not handed to them as written: each character item (a literal, a class, `.`)
becomes an explicit set of code point ranges computed here, from `re` itself, so that any engine
matches exactly the characters `re` would.

Sets are tuples of inclusive `(low, high)` ranges, sorted and merged.
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found]
import array
import functools
import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import sys
from collections.abc import Iterable, Sequence

Ranges = tuple[tuple[int, int], ...]

MAX_CODE = 0x10FFFF
EVERYTHING: Ranges = ((0, MAX_CODE),)
NOTHING: Ranges = ()
SURROGATES: Ranges = ((0xD800, 0xDFFF),)

_LITERAL = sre_constants.LITERAL
_NOT_LITERAL = sre_constants.NOT_LITERAL
_ANY = sre_constants.ANY
_IN = sre_constants.IN
_RANGE = sre_constants.RANGE
_CATEGORY = sre_constants.CATEGORY
_NEGATE = sre_constants.NEGATE

# The flags that change what one character item matches.
_CHAR_FLAGS = re.IGNORECASE | re.ASCII | re.DOTALL

_CATEGORY_TEXT = {
    sre_constants.CATEGORY_DIGIT: r"\d",
    sre_constants.CATEGORY_NOT_DIGIT: r"\D",
    sre_constants.CATEGORY_SPACE: r"\s",
    sre_constants.CATEGORY_NOT_SPACE: r"\S",
    sre_constants.CATEGORY_WORD: r"\w",
    sre_constants.CATEGORY_NOT_WORD: r"\W",
}
_NEGATED = {
    sre_constants.CATEGORY_DIGIT: sre_constants.CATEGORY_NOT_DIGIT,
    sre_constants.CATEGORY_SPACE: sre_constants.CATEGORY_NOT_SPACE,
    sre_constants.CATEGORY_WORD: sre_constants.CATEGORY_NOT_WORD,
}


def normalize(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sorted, merged ranges (adjacent ones joined)."""
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            if high > out[-1][1]:
                out[-1] = (out[-1][0], high)
        else:
            out.append((low, high))
    return tuple(out)


def from_points(points: Iterable[int]) -> Ranges:
    """Sorted, merged ranges of the given code points (`normalize` of one-point ranges)."""
    out: list[tuple[int, int]] = []
    low = high = -2
    for point in sorted(points):
        if point > high + 1:
            if high >= 0:
                out.append((low, high))
            low = high = point
        elif point > high:
            high = point
    if high >= 0:
        out.append((low, high))
    return tuple(out)


def complement(ranges: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    start = 0
    for low, high in ranges:
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= MAX_CODE:
        out.append((start, MAX_CODE))
    return tuple(out)


def union(*sets: Ranges) -> Ranges:
    return normalize(r for ranges in sets for r in ranges)


def subtract(ranges: Ranges, other: Ranges) -> Ranges:
    return intersect(ranges, complement(other))


def intersect(a: Ranges, b: Ranges) -> Ranges:
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def single(ranges: Ranges) -> int | None:
    """The one code point of a one-point set, else None."""
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return ranges[0][0]
    return None


def category_set(category: object, ascii_only: bool) -> Ranges:
    """The code points `re` puts in `\\d`, `\\w`, `\\s` (or their negations) under the flags."""
    return _categories(ascii_only)[category]


@functools.cache
def _categories(ascii_only: bool) -> dict[object, Ranges]:
    # Runs of matching code points, found by `re` itself, are exactly the ranges. Under ASCII
    # only the first 128 code points can be in \d, \w or \s; the negations take the rest.
    # A negated class (\D, \S, \W) matches exactly the code points its class does not.
    text = "".join(map(chr, range(128))) if ascii_only else _all_code_points()
    found: dict[object, Ranges] = {}
    for category, source in _CATEGORY_TEXT.items():
        if source.isupper():
            continue
        compiled = re.compile(f"(?:{source})+", re.ASCII if ascii_only else 0)
        found[category] = tuple((m.start(), m.end() - 1) for m in compiled.finditer(text))
        found[_NEGATED[category]] = complement(found[category])
    return found


def _all_code_points() -> str:
    """Every code point in order, lone surrogates included (4 MB: not kept): decoded from
    UTF-32 in one call, several times faster than joining a million one-character strings."""
    codes = array.array("I", range(MAX_CODE + 1))
    if codes.itemsize != 4:  # pragma: no cover - a C unsigned int of another size
        return "".join(map(chr, range(MAX_CODE + 1)))
    return codes.tobytes().decode(f"utf-32-{sys.byteorder[0]}e", "surrogatepass")


@functools.cache
def _case_candidates() -> tuple[str, tuple[int, ...]]:
    """The code points whose case-insensitive match can differ from their plain match.

    Under IGNORECASE `re` compares simple lowercase forms (plus a few extra equivalences such
    as `s`/`ſ`); a code point that is uncased and is no other code point's lowercase form
    matches exactly when it is in the plain set. Returned as a string (to scan) and its points.
    """
    points: set[int] = set()
    for cp in range(MAX_CODE + 1):
        if _sre.unicode_iscased(cp):
            points.add(cp)
            points.add(_sre.unicode_tolower(cp))
    try:
        from re._casefix import _EXTRA_CASES  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - older Pythons keep them in re._compiler
        from re._compiler import _ignorecase_fixes as _EXTRA_CASES  # type: ignore[import-not-found]
    for key, values in _EXTRA_CASES.items():
        points.add(key)
        points.update(values)
    ordered = tuple(sorted(points))
    return "".join(map(chr, ordered)), ordered


def item_set(op: object, av: object, flags: int) -> Ranges:
    """The exact set of code points that one character item (LITERAL, NOT_LITERAL, ANY, IN)
    of a parsed pattern matches under `flags`."""
    return _item_set(op, _freeze(av), flags & _CHAR_FLAGS)


def _freeze(av: object) -> object:
    return tuple((op, _freeze(a)) for op, a in av) if isinstance(av, list) else av


@functools.lru_cache(maxsize=4096)
def _item_set(op: object, av: object, flags: int) -> Ranges:
    if op is _ANY:
        return EVERYTHING if flags & re.DOTALL else complement(((10, 10),))
    plain = _plain_set(op, av, bool(flags & re.ASCII))
    if not flags & re.IGNORECASE:
        return plain
    # Outside the case candidates IGNORECASE changes nothing; inside, ask `re` itself.
    text, points = _case_candidates()
    compiled = re.compile(_item_text(op, av), flags & (re.IGNORECASE | re.ASCII))
    folded = from_points(points[m.start()] for m in compiled.finditer(text))
    return union(subtract(plain, _case_candidate_ranges()), folded)


@functools.cache
def _case_candidate_ranges() -> Ranges:
    return from_points(_case_candidates()[1])


def _plain_set(op: object, av: object, ascii_only: bool) -> Ranges:
    if op is _LITERAL:
        return ((av, av),)  # type: ignore[return-value]
    if op is _NOT_LITERAL:
        return complement(((av, av),))  # type: ignore[arg-type]
    if op is _IN:
        items: Sequence[tuple[object, object]] = av  # type: ignore[assignment]
        parts: list[Ranges] = []
        negate = False
        for sub_op, sub_av in items:
            if sub_op is _NEGATE:
                negate = True
            elif sub_op is _LITERAL:
                parts.append(((sub_av, sub_av),))  # type: ignore[arg-type]
            elif sub_op is _RANGE:
                parts.append((sub_av,))  # type: ignore[arg-type]
            elif sub_op is _CATEGORY:
                parts.append(category_set(sub_av, ascii_only))
            else:
                raise ValueError(f"unexpected set member {sub_op}")
        members = union(*parts)
        return complement(members) if negate else members
    raise ValueError(f"not a character item: {op}")


def _item_text(op: object, av: object) -> str:
    """`re` source text for one character item, to compile as the case-folding oracle."""

    def char(cp: int) -> str:
        return f"\\U{cp:08x}"

    if op is _LITERAL:
        return char(av)  # type: ignore[arg-type]
    if op is _NOT_LITERAL:
        return f"[^{char(av)}]"  # type: ignore[arg-type]
    parts: list[str] = []
    for sub_op, sub_av in av:  # type: ignore[attr-defined]
        if sub_op is _NEGATE:
            parts.insert(0, "^")
        elif sub_op is _LITERAL:
            parts.append(char(sub_av))
        elif sub_op is _RANGE:
            parts.append(f"{char(sub_av[0])}-{char(sub_av[1])}")
        else:
            parts.append(_CATEGORY_TEXT[sub_av])
    return "[" + "".join(parts) + "]"
