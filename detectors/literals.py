"""Multi-literal search: which of many literals occur in a text, in one pass.

Hyperscan (a SIMD automaton) when it is installed, else pyahocorasick. Both answer the same
question, and `tests/test_index_equivalence.py` runs the engine over both.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
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
        # Each searcher gets its own database object and scratch (a scratch serves one scan at a
        # time); what is shared is the compiled form, which is the expensive part.
        database = hyperscan.loadb(_database_bytes(tuple(literals), flags), mode=hyperscan.HS_MODE_BLOCK)
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


# Compiled Hyperscan databases by (literals, flags), serialized: compiling is most of the time an
# engine takes to build (0.6 s of 0.9 s for SigmaHQ's rules), and a rebuilt engine (live rules)
# or the next process (`scan`, a worker start) mostly asks for the same literal sets again.
_HYPERSCAN_VERSION = getattr(hyperscan, "__version__", "") if _HYPERSCAN else ""
_DATABASES: dict[str, bytes] = {}
_DATABASES_LIMIT = 4096
_disk_cache: Path | None = None


def set_database_cache(folder: str | Path | None) -> None:
    """Keep compiled Hyperscan databases in `folder` (None: in memory only).

    Local disk only, never a shared URL: Hyperscan's deserializer checks a database's shape
    but is not built to read hostile input, so these files must be as trusted as the code.
    Each file carries the SHA-256 of its database; one that does not match is compiled again.
    """
    global _disk_cache
    _disk_cache = Path(folder) if folder is not None else None


def _database_bytes(literals: tuple[str, ...], flags: int) -> bytes:
    digest = hashlib.sha256(f"{_HYPERSCAN_VERSION}\0{flags}\0".encode())
    for literal in literals:
        digest.update(_encode(literal) + b"\0")
    key = digest.hexdigest()
    cached = _DATABASES.get(key)
    if cached is None and _disk_cache is not None:
        cached = _read_database(_disk_cache / f"{key}.hsdb")
    if cached is None:
        database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        database.compile(
            expressions=[_encode(literal) for literal in literals],
            ids=list(range(len(literals))),
            elements=len(literals),
            flags=[flags] * len(literals),
            literal=True,
        )
        cached = hyperscan.dumpb(database)
        if _disk_cache is not None:
            _write_database(_disk_cache / f"{key}.hsdb", cached)
    if len(_DATABASES) >= _DATABASES_LIMIT:
        _DATABASES.clear()
    _DATABASES[key] = cached
    return cached


def _read_database(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    blob = data[32:]
    return blob if len(data) > 32 and hashlib.sha256(blob).digest() == data[:32] else None


def _write_database(path: Path, blob: bytes) -> None:
    """Written to a temporary file and renamed: a reader never sees half a database. A cache
    that cannot be written is only slower."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".hsdb-")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(blob).digest() + blob)
        os.replace(temporary, path)
    except OSError:
        pass


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
