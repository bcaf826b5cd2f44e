"""Bounded memory for "how often has anyone done this" (a count-min sketch) and "has this
entity done this before" (a 512-bit Bloom filter per entity), as compiled functions that
feature kernels call.

A key is hashed once, in Python, to two 32-bit crc32 values with fixed seeds (Python's hash()
is salted per process: a checkpoint restored in another worker must hash the same way). The
sketch's rows and the Bloom filter's two bits derive from that pair (double hashing).

>>> import numpy as np
>>> sketch = new_sketch(width=256, depth=4)
>>> for name in ["svchost.exe"] * 50 + ["chrome.exe"] * 20 + ["mimikatz.exe"]:
...     _ = rarity_then_add(sketch, *key_hashes(name))
>>> int(count(sketch, *key_hashes("svchost.exe"))), int(count(sketch, *key_hashes("mimikatz.exe")))
(50, 1)
>>> int(count(sketch, *key_hashes("never-seen.exe")))
0
>>> round(rarity_then_add(sketch, *key_hashes("mimikatz.exe")), 3)  # seen once in 71 events
0.838
>>> round(rarity_then_add(sketch, *key_hashes("svchost.exe")), 3)
0.084
"""

from __future__ import annotations

import math
import zlib

import numba
import numpy as np

_SEED_1 = 0x9E3779B1
_SEED_2 = 0x85EBCA77
BLOOM_WORDS = 8  # 512 bits per entity
_ONE = np.uint64(1)


def key_hashes(key: str) -> tuple[int, int]:
    data = key.encode("utf-8", "surrogatepass")
    return zlib.crc32(data, _SEED_1), zlib.crc32(data, _SEED_2) | 1  # odd: distinct cells per row


def new_sketch(width: int = 4096, depth: int = 4) -> np.ndarray:
    """A sketch as one array: `depth` rows of counters, then a row of totals (one per kind)."""
    if width & (width - 1) or not 1 <= depth <= 16:
        raise ValueError("width must be a power of two and depth between 1 and 16")
    return np.zeros((depth + 1, width), dtype=np.uint64)


@numba.njit(cache=True, error_model="numpy", nogil=True)
def count(sketch: np.ndarray, h1: int, h2: int) -> int:
    depth, width = sketch.shape[0] - 1, sketch.shape[1]
    least = sketch[0, h1 % width]
    for row in range(1, depth):
        value = sketch[row, (h1 + row * h2) % width]
        if value < least:
            least = value
    return least


@numba.njit(cache=True, error_model="numpy", nogil=True)
def rarity_then_add(sketch: np.ndarray, h1: int, h2: int, kind: int = 0) -> float:
    """The key's rarity before this occurrence, then counts it (conservative update: only the
    cells at the minimum grow, so the overcount stays small). Never undercounts.

    Rarity is 1.0 for never seen, near 0.0 for the most common keys: -log frequency scaled by
    log(total), so it reads the same whether the sketch holds a thousand or a billion. Totals
    are kept per `kind` (process names, destinations, ...): a flood of logons does not make
    every process look rare."""
    depth, width = sketch.shape[0] - 1, sketch.shape[1]
    before = count(sketch, h1, h2)
    total = sketch[depth, kind]
    for row in range(depth):
        cell = (h1 + row * h2) % width
        if sketch[row, cell] == before:
            sketch[row, cell] = before + _ONE
    sketch[depth, kind] = total + _ONE
    if total == 0:
        return 1.0
    value = math.log((total + 1.0) / (before + 1.0)) / math.log(total + 1.0)
    return value if value < 1.0 else 1.0


@numba.njit(cache=True, error_model="numpy", nogil=True)
def bloom_seen_then_add(bits: np.ndarray, h1: int, h2: int) -> bool:
    """Whether the key's two bits were already set in `bits` (BLOOM_WORDS uint64), then sets them."""
    a, b = h1 % 512, h2 % 512
    mask_a = np.uint64(1) << np.uint64(a & 63)
    mask_b = np.uint64(1) << np.uint64(b & 63)
    seen = (bits[a >> 6] & mask_a) != 0 and (bits[b >> 6] & mask_b) != 0
    bits[a >> 6] |= mask_a
    bits[b >> 6] |= mask_b
    return seen
