"""Bounded memory for "how often has anyone done this": a count-min sketch, and a tiny
per-entity Bloom filter for "has this entity done this before".

Hashes are crc32 with per-row seeds, not Python's hash(), which is salted per process: a
checkpoint restored in another worker must hash the same way.
"""

from __future__ import annotations

import math
import zlib
from array import array

_SEEDS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C)


class CountMinSketch:
    """Approximate counts that never undercount; overcount by at most total/width*e with
    probability 1 - e^-depth. Conservative update keeps the overcount small in practice.

    >>> sketch = CountMinSketch(width=256, depth=4)
    >>> for name in ["svchost.exe"] * 50 + ["chrome.exe"] * 20 + ["mimikatz.exe"]:
    ...     _ = sketch.add(name)
    >>> sketch.count("svchost.exe"), sketch.count("mimikatz.exe"), sketch.count("never-seen.exe")
    (50, 1, 0)
    >>> round(sketch.rarity("mimikatz.exe"), 3), round(sketch.rarity("svchost.exe"), 3)
    (0.838, 0.081)
    """

    __slots__ = ("width", "depth", "total", "_rows")

    def __init__(self, width: int = 4096, depth: int = 4) -> None:
        if not 1 <= depth <= len(_SEEDS):
            raise ValueError(f"depth must be between 1 and {len(_SEEDS)}")
        self.width = width
        self.depth = depth
        self.total = 0
        self._rows = [array("I", bytes(4 * width)) for _ in range(depth)]

    def _cells(self, key: str) -> list[int]:
        data = key.encode("utf-8", "surrogatepass")
        return [zlib.crc32(data, seed) % self.width for seed in _SEEDS[: self.depth]]

    def count(self, key: str) -> int:
        return min(row[cell] for row, cell in zip(self._rows, self._cells(key)))

    def add(self, key: str) -> int:
        """Counts one more `key`; returns its count before this one."""
        cells = self._cells(key)
        before = min(row[cell] for row, cell in zip(self._rows, cells))
        for row, cell in zip(self._rows, cells):
            if row[cell] == before and before < 0xFFFFFFFF:
                row[cell] = before + 1
        self.total += 1
        return before

    def rarity_then_add(self, key: str) -> float:
        """rarity(key) before counting it, then add(key): one hashing for both."""
        cells = self._cells(key)
        rows = self._rows
        before = min(row[cell] for row, cell in zip(rows, cells))
        result = rarity(before, self.total)
        for row, cell in zip(rows, cells):
            if row[cell] == before and before < 0xFFFFFFFF:
                row[cell] = before + 1
        self.total += 1
        return result

    def rarity(self, key: str) -> float:
        """1.0 for never seen, near 0.0 for the most common keys: -log frequency, scaled by
        log(total) so it reads the same whether the sketch holds a thousand or a billion."""
        return rarity(self.count(key), self.total)

    def __getstate__(self) -> tuple[int, int, int, list[bytes]]:
        return self.width, self.depth, self.total, [row.tobytes() for row in self._rows]

    def __setstate__(self, state: tuple[int, int, int, list[bytes]]) -> None:
        self.width, self.depth, self.total, rows = state
        self._rows = []
        for raw in rows:
            row = array("I")
            row.frombytes(raw)
            self._rows.append(row)


def rarity(count: int, total: int) -> float:
    if total <= 0:
        return 1.0
    return min(1.0, math.log((total + 1) / (count + 1)) / math.log(total + 1))


def bloom_bits(key: str, bits: int = 512) -> int:
    """Two bit positions of `key` in a `bits`-wide Bloom filter kept as a Python int."""
    data = key.encode("utf-8", "surrogatepass")
    return (1 << (zlib.crc32(data, _SEEDS[0]) % bits)) | (1 << (zlib.crc32(data, _SEEDS[1]) % bits))
