"""Multi-literal search: which of many literals occur in a text, in one pass.

Hyperscan (a SIMD automaton) when it is installed, else pyahocorasick. Both answer the same
question, and `tests/test_index_equivalence.py` runs the engine over both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import ahocorasick

try:
    import hyperscan

    _HYPERSCAN = True
except ImportError:  # pragma: no cover - hyperscan has wheels for x86-64 Linux only
    _HYPERSCAN = False


class AhoCorasickLiterals:
    """Literal search with pyahocorasick: portable, a few µs per short text."""

    name = "ahocorasick"

    def __init__(self, literals: Sequence[str]) -> None:
        automaton = ahocorasick.Automaton()
        for number, literal in enumerate(literals):
            automaton.add_word(literal, number)
        automaton.make_automaton()
        self._automaton = automaton

    def find(self, text: str) -> set[int]:
        """Numbers of the literals that occur in `text`."""
        return {number for _end, number in self._automaton.iter(text)}

    def find_folded(self, text: str) -> set[int]:
        """Numbers of the (lowercase) literals that occur in `text.lower()`."""
        return self.find(text.lower())


class HyperscanLiterals:
    """Literal search with Hyperscan: sub-µs call overhead, GB/s scanning."""

    name = "hyperscan"

    def __init__(self, literals: Sequence[str]) -> None:
        assert _HYPERSCAN
        # With only ASCII literals, Hyperscan's (ASCII) caseless mode gives the same answer on
        # ASCII text as searching the lowercased text, and saves lowering it.
        self._caseless = all(literal.isascii() and literal == literal.lower() for literal in literals)
        flags = hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if self._caseless else 0)
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(
            expressions=[_encode(literal) for literal in literals],
            ids=list(range(len(literals))),
            elements=len(literals),
            flags=[flags] * len(literals),
            literal=True,
        )
        self._database = database
        self._scratch = hyperscan.Scratch(database)

    def find(self, text: str) -> set[int]:
        found: set[int] = set()
        # Substring containment is the same on UTF-8 bytes as on text (UTF-8 is self-synchronizing).
        self._database.scan(_encode(text), match_event_handler=_on_match, context=found, scratch=self._scratch)
        return found


    def find_folded(self, text: str) -> set[int]:
        """Numbers of the (lowercase) literals that occur in `text.lower()`."""
        if self._caseless and text.isascii():
            found: set[int] = set()
            self._database.scan(text.encode("ascii"), match_event_handler=_on_match, context=found, scratch=self._scratch)
            return found
        return self.find(text.lower())


def _on_match(number: int, _start: int, _end: int, _flags: int, found: object) -> None:
    # `found` is the set passed to scan() as its context (which Hyperscan types as object).
    cast("set[int]", found).add(number)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


LiteralSearch = AhoCorasickLiterals | HyperscanLiterals
_DEFAULT = "hyperscan" if _HYPERSCAN else "ahocorasick"


def literal_search(literals: Sequence[str], backend: str | None = None) -> LiteralSearch:
    """A searcher over `literals` (non-empty strings) with the given or best backend."""
    chosen = backend or _DEFAULT
    if chosen == "hyperscan":
        if not _HYPERSCAN:
            raise ValueError("the hyperscan backend is not installed")
        return HyperscanLiterals(literals)
    if chosen == "ahocorasick":
        return AhoCorasickLiterals(literals)
    raise ValueError(f"unknown literal backend {chosen!r} (hyperscan or ahocorasick)")


def available_backends() -> tuple[str, ...]:
    return ("hyperscan", "ahocorasick") if _HYPERSCAN else ("ahocorasick",)
