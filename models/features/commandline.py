"""Command-line length and character entropy: encoded payloads are long and high-entropy."""

from __future__ import annotations

import math
from collections import Counter

from models.features.base import Feature, View

_FIELDS = ("CommandLine", "ProcessCommandLine", "ScriptBlockText")
_LONGEST = math.log1p(32_768)
_SAMPLE = 65_536  # entropy of the first 64 KiB: a 5 MB command line must not stall the worker


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


def step(view: View) -> tuple[float, ...]:
    cached = view.shared.get("cmd")
    if cached is None:
        cached = (0.0, 0.0)
        for name in _FIELDS:
            text = view.event.get(name)
            if isinstance(text, str) and text:
                cached = (min(1.0, math.log1p(len(text)) / _LONGEST), min(1.0, entropy(text[:_SAMPLE]) / 8.0))
                break
        view.shared["cmd"] = cached
    return cached


COMMAND_LINE = Feature("command_line", ("cmd_length", "cmd_entropy"), step,
                       "log length and entropy (bits per character / 8) of the command line")
