"""Command-line length and character entropy: encoded payloads are long and high-entropy."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.features.base import Feature, kernel

_FIELDS = ("CommandLine", "ProcessCommandLine", "ScriptBlockText")
_LONGEST = math.log1p(32_768)
_SAMPLE = 65_536  # entropy of the first 64 KiB: a 5 MB command line must not stall the worker
_NONE = (0.0, 0.0)
# Command lines repeat (services, scheduled tasks, the same tool on every host): their values
# are kept, a bounded number of short ones.
_KNOWN: dict[str, tuple[float, float]] = {}
_KNOWN_CAP = 20_000
_KNOWN_LONGEST = 4_096


def entropy(text: str) -> float:
    """Shannon entropy in bits per character.

    >>> entropy("aaaa"), entropy("abab"), round(entropy("powershell -enc SQBFAFgA"), 3)
    (0.0, 1.0, 4.054)
    """
    if not text:
        return 0.0
    total = len(text)
    # H = log2(n) - (1/n) * sum(c * log2(c)), one pass over the distinct characters
    return max(0.0, math.log2(total) - sum(c * math.log2(c) for c in Counter(text).values()) / total)


def _values(text: str) -> tuple[float, float]:
    return min(1.0, math.log1p(len(text)) / _LONGEST), min(1.0, entropy(text[:_SAMPLE]) / 8.0)


def extract(event: Mapping[str, Any], category: str) -> tuple[float, ...]:
    """(log length, entropy / 8) of the event's command line: the same for all its entities."""
    for name in _FIELDS:
        text = event.get(name)
        if text.__class__ is str and text:
            known = _KNOWN.get(text)
            if known is None:
                known = _values(text)
                if len(text) <= _KNOWN_LONGEST:
                    if len(_KNOWN) >= _KNOWN_CAP:
                        _KNOWN.clear()
                    _KNOWN[text] = known
            return known
    return _NONE


@kernel
def step(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray, category: np.ndarray,
         inputs: np.ndarray, state: np.ndarray, world: np.ndarray, out: np.ndarray) -> None:
    for r in range(slot.shape[0]):
        out[r, 0] = inputs[event[r], 0]
        out[r, 1] = inputs[event[r], 1]


COMMAND_LINE = Feature("command_line", ("cmd_length", "cmd_entropy"), step, inputs=2, extract=extract,
                       doc="log length and entropy (bits per character / 8) of the command line")
