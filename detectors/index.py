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

from detectors.cover import Cover, Trigger
from detectors.literals import LiteralSearch, literal_search
from detectors.values import equality_key, field_getter, iter_all_strings, iter_scalars

_EMPTY: frozenset[int] = frozenset()
_CACHE_LIMIT = 65536
TOKEN_SLOTS = 4


class _FieldIndex:
    """Exact and substring triggers of one field (or of all strings, for keywords)."""

    __slots__ = ("eq", "search", "payloads", "cache")

    def __init__(self, triggers: Sequence[tuple[Trigger, int]], backend: str | None = None) -> None:
        eq: dict[str, set[int]] = defaultdict(set)
        sub: dict[str, set[int]] = defaultdict(set)
        for trigger, position in triggers:
            (eq if trigger.kind == "eq" else sub)[trigger.text].add(position)
        self.eq = {key: frozenset(v) for key, v in eq.items()}
        self.search: LiteralSearch | None = None
        literals = sorted(sub)
        self.payloads = [frozenset(sub[literal]) for literal in literals]
        if literals:
            self.search = literal_search(literals, backend)
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
        if self.search is not None:
            if value.__class__ is str:
                text = value.lower()
            elif value.__class__ is bool:
                text = "true" if value else "false"
            elif value.__class__ in (int, float):
                text = str(value)
            else:
                text = None
            if text:
                payloads = self.payloads
                for number in self.search.find(text):
                    result |= payloads[number]
        return frozenset(result) if result else _EMPTY


class GroupIndex:
    """Candidate selection for the rules of one logsource group (positions into the group).

    Each rule has up to a few required covers (see `cover.required_covers`); a trigger hit
    yields the token `position * TOKEN_SLOTS + cover_number`, and a rule is a candidate when
    tokens for all of its covers were seen.
    """

    def __init__(self, covers: Sequence[Sequence[Cover]], backend: str | None = None) -> None:
        by_field: dict[str | None, list[tuple[Trigger, int]]] = defaultdict(list)
        always: list[int] = []
        self.needed: dict[int, int] = {}
        for position, required in enumerate(covers):
            if not required:
                always.append(position)
                continue
            if len(required) > TOKEN_SLOTS:
                raise ValueError(f"at most {TOKEN_SLOTS} covers per rule")
            self.needed[position] = len(required)
            for number, triggers in enumerate(required):
                for trigger in triggers:
                    by_field[trigger.field].append((trigger, position * TOKEN_SLOTS + number))
        self.always = tuple(always)
        keyword = by_field.pop(None, None)
        self.keyword_index = _FieldIndex(keyword, backend) if keyword else None
        indexes = {name: _FieldIndex(triggers, backend) for name, triggers in sorted(by_field.items())}
        # Flat names are found by walking the event's own keys (no per-field function call);
        # dotted names may reach into nested objects and need a getter.
        self.flat = {name: index for name, index in indexes.items() if "." not in name}
        self.dotted = tuple((field_getter(name), index) for name, index in indexes.items() if "." in name)

    def candidates(self, event: Mapping[str, Any]) -> list[int]:
        """Sorted positions of the rules that may match `event`."""
        found: set[int] = set()
        flat = self.flat
        if len(flat) < len(event):
            for name, index in flat.items():
                value = event.get(name)
                if value is not None:
                    self._value_hits(index, value, found)
        else:
            for name, value in event.items():
                index = flat.get(name)
                if index is not None and value is not None:
                    self._value_hits(index, value, found)
        for get, index in self.dotted:
            value = get(event)
            if value is not None:
                self._value_hits(index, value, found)
        if self.keyword_index is not None:
            self._keywords(event, found)
        if not found:
            return list(self.always)
        seen: dict[int, int] = {}
        for token in found:
            position = token // TOKEN_SLOTS
            seen[position] = seen.get(position, 0) + 1
        needed = self.needed
        result = [p for p, count in seen.items() if count == needed[p]]
        result.extend(self.always)
        result.sort()
        return result

    @staticmethod
    def _value_hits(index: _FieldIndex, value: Any, found: set[int]) -> None:
        if value.__class__ is str:
            hits = index.cache.get(value)
            if hits is None:
                hits = index.hits(value)
            if hits:
                found |= hits
        elif value.__class__ is list or value.__class__ is tuple:
            for item in iter_scalars(value):
                found |= index.hits(item)
        else:
            found |= index.hits(value)

    def _keywords(self, event: Mapping[str, Any], found: set[int]) -> None:
        """Keyword triggers are substrings, so one scan of all strings joined finds them all
        (a literal spanning two joined values is a harmless false candidate). Values such as
        timestamps and GUIDs are unique per event, so a per-value cache would only miss."""
        strings: list[str] = []
        nested = False
        for value in event.values():
            if value.__class__ is str:
                strings.append(value)
            elif value.__class__ in (dict, list, tuple):
                nested = True
        if nested:
            strings.extend(iter_all_strings({k: v for k, v in event.items() if v.__class__ is not str}))
        text = "\x00".join(strings).lower()
        index = self.keyword_index
        assert index is not None and index.search is not None
        payloads = index.payloads
        for number in index.search.find(text):
            found |= payloads[number]

    def describe(self) -> dict[str, int]:
        """Sizes, for `rules check` and the benchmark report."""
        return {
            "fields": len(self.flat) + len(self.dotted),
            "always_candidates": len(self.always),
            "keyword_index": int(self.keyword_index is not None),
        }
