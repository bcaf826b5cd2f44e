"""The prefilter: which rules of a logsource group can possibly match an event.

Per field it keeps one exact-value table and one Aho-Corasick automaton over the literals of
all rules in the group, and memoizes the answer per field value (field values such as Image or
ParentImage repeat a lot). Rules without a provable trigger are always candidates. The answer
is a superset of the matching rules; the full evaluator decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import ahocorasick

from detectors.cover import Cover, Trigger
from detectors.values import equality_key, field_getter, iter_all_strings, iter_scalars

_EMPTY: frozenset[int] = frozenset()
_CACHE_LIMIT = 65536


class _FieldIndex:
    """Exact and substring triggers of one field (or of all strings, for keywords)."""

    __slots__ = ("eq", "automaton", "cache")

    def __init__(self, triggers: Sequence[tuple[Trigger, int]]) -> None:
        eq: dict[str, set[int]] = defaultdict(set)
        sub: dict[str, set[int]] = defaultdict(set)
        for trigger, position in triggers:
            (eq if trigger.kind == "eq" else sub)[trigger.text].add(position)
        self.eq = {key: frozenset(v) for key, v in eq.items()}
        self.automaton: Any = None
        if sub:
            automaton = ahocorasick.Automaton()
            for literal, positions in sub.items():
                automaton.add_word(literal, frozenset(positions))
            automaton.make_automaton()
            self.automaton = automaton
        self.cache: dict[Any, frozenset[int]] = {}

    def hits(self, value: Any) -> frozenset[int]:
        """Rules whose trigger on this field is satisfied by one scalar value."""
        cache = self.cache
        # 1, 1.0 and True are equal dict keys but read differently as text: key them apart.
        key = value if value.__class__ is str else (value.__class__, value)
        try:
            return cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable value: a nested object never satisfies a trigger
            return _EMPTY
        found = self._compute(value)
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = found
        return found

    def _compute(self, value: Any) -> frozenset[int]:
        result: set[int] = set()
        if self.eq:
            key = equality_key(value)
            if key is not None:
                positions = self.eq.get(key)
                if positions:
                    result |= positions
        if self.automaton is not None:
            if value.__class__ is str:
                text = value.lower()
            elif value.__class__ is bool:
                text = "true" if value else "false"
            elif value.__class__ in (int, float):
                text = str(value)
            else:
                text = None
            if text:
                for _end, positions in self.automaton.iter(text):
                    result |= positions
        return frozenset(result) if result else _EMPTY


class GroupIndex:
    """Candidate selection for the rules of one logsource group (positions into the group)."""

    def __init__(self, covers: Sequence[Cover | None]) -> None:
        by_field: dict[str | None, list[tuple[Trigger, int]]] = defaultdict(list)
        always: list[int] = []
        for position, triggers in enumerate(covers):
            if triggers is None:
                always.append(position)
                continue
            for trigger in triggers:
                by_field[trigger.field].append((trigger, position))
        self.always = frozenset(always)
        keyword = by_field.pop(None, None)
        self.keyword_index = _FieldIndex(keyword) if keyword else None
        self.fields = tuple(
            (name, field_getter(name), _FieldIndex(triggers)) for name, triggers in sorted(by_field.items())
        )

    def candidates(self, event: Mapping[str, Any]) -> list[int]:
        """Sorted positions of the rules that may match `event`."""
        found: set[int] = set(self.always)
        for _name, get, index in self.fields:
            value = get(event)
            if value is None:
                continue
            cls = value.__class__
            if cls is list or cls is tuple:
                for item in iter_scalars(value):
                    found |= index.hits(item)
            else:
                found |= index.hits(value)
        if self.keyword_index is not None:
            hits = self.keyword_index.hits
            for text in iter_all_strings(event):
                found |= hits(text)
        return sorted(found)

    def describe(self) -> dict[str, int]:
        """Sizes, for `rules check` and the benchmark report."""
        return {
            "fields": len(self.fields),
            "always_candidates": len(self.always),
            "keyword_index": int(self.keyword_index is not None),
        }
