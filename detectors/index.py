"""The prefilter: which rules can possibly match an event.

Per field, one exact-value table and one multi-literal automaton over the literals of all
rules, built once when the engine is built, and a memo of the answer per field value (Image,
ParentImage and the like repeat a lot, across logsources too). Each rule has up to
`TOKEN_SLOTS` required covers (`cover.required_covers`); a trigger hit yields the token
`position * TOKEN_SLOTS + cover_number`, and a rule of the event's logsource group is a
candidate when tokens for all of its covers were seen. Rules without a provable cover are
always candidates of their group. The answer is a superset of the matching rules; the full
evaluator decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from detectors.cover import Cover, Trigger
from detectors.literals import LiteralSearch, literal_search
from detectors.values import equality_key, field_getter, iter_all_strings, iter_scalars

_EMPTY: frozenset[int] = frozenset()
_CACHE_LIMIT = 65536
TOKEN_SLOTS = 4  # covers per rule; tokens shift by 2 bits
_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))
_CLEAN_LIMIT = 262144


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
                text = value
            elif value.__class__ is bool:
                text = "true" if value else "false"
            elif value.__class__ in (int, float):
                text = str(value)
            else:
                text = None
            if text:
                payloads = self.payloads
                for number in self.search.find_folded(text):
                    result |= payloads[number]
        return frozenset(result) if result else _EMPTY


class RuleIndex:
    """Triggers of all rules, one `_ClassIndex` per distinct rule logsource, built up front.

    Splitting by the rules' own logsource means an event only consults the literals of rules
    that can apply to it, without filtering tokens afterwards; a logsource group (the rules an
    event's route covers) is then just a list of classes.
    """

    def __init__(
        self, covers: Sequence[Sequence[Cover]], classes: Sequence[Hashable] | None = None, backend: str | None = None,
        previous: RuleIndex | None = None, unchanged: Callable[[Sequence[int]], bool] | None = None,
    ) -> None:
        """`previous` and `unchanged`: a class whose member positions are those it had in
        `previous` and for which `unchanged(positions)` holds is taken over as it is."""
        self.needed: list[int] = [len(required) for required in covers]
        self.backend = backend
        labels = list(classes) if classes is not None else [None] * len(covers)
        members: dict[Hashable, list[int]] = defaultdict(list)
        for position, label in enumerate(labels):
            members[label].append(position)
        self.classes: dict[Hashable, _ClassIndex] = {}
        self.rebuilt = 0  # classes built here rather than taken over
        for label, positions in members.items():
            old = previous.classes.get(label) if previous is not None else None
            if (old is not None and unchanged is not None and old.positions == tuple(positions)
                    and unchanged(positions)):
                self.classes[label] = old
            else:
                self.classes[label] = _ClassIndex(covers, positions, backend)
                self.rebuilt += 1

    def group(self, labels: Sequence[Hashable]) -> GroupIndex:
        """The candidate selector for the rules of the given classes (one logsource group)."""
        return GroupIndex(self, [self.classes[label] for label in labels if label in self.classes])


class _ClassIndex:
    """Field and keyword triggers of the rules of one logsource."""

    def __init__(self, covers: Sequence[Sequence[Cover]], positions: Sequence[int], backend: str | None) -> None:
        self.positions = tuple(positions)
        by_field: dict[str, list[tuple[Trigger, int]]] = defaultdict(list)
        keyword: list[tuple[Trigger, int]] = []
        always: list[int] = []
        for position in positions:
            required = covers[position]
            if not required:
                always.append(position)
            if len(required) > TOKEN_SLOTS:
                raise ValueError(f"at most {TOKEN_SLOTS} covers per rule")
            for number, triggers in enumerate(required):
                for trigger in triggers:
                    token = position * TOKEN_SLOTS + number
                    if trigger.field is None:
                        keyword.append((trigger, token))
                    else:
                        by_field[trigger.field].append((trigger, token))
        self.always = tuple(always)
        self.keyword_triggers = tuple(keyword)
        indexes = {name: _FieldIndex(triggers, backend) for name, triggers in sorted(by_field.items())}
        # Flat names are found by walking the event's own keys (no per-field function call);
        # dotted names may reach into nested objects and need a getter.
        self.flat = {name: index for name, index in indexes.items() if "." not in name}
        self.dotted = tuple((field_getter(name), index) for name, index in indexes.items() if "." in name)


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


class _KeywordIndex:
    """Keyword triggers: literals searched in every string value of an event.

    Most values (Channel, Computer, Image, ...) recur and contain no keyword: they are
    remembered as clean and skipped. The remaining values are joined and scanned once (a
    literal spanning two joined values is a harmless false candidate), and only when that scan
    finds something is each value looked at on its own.
    """

    def __init__(self, triggers: Sequence[tuple[Trigger, int]], backend: str | None) -> None:
        self.index = _FieldIndex(triggers, backend)
        self.clean: set[str] = set()

    def add_tokens(self, event: Mapping[str, Any], found: set[int]) -> None:
        clean = self.clean
        values = event.values()
        fresh = [v for v in values if v.__class__ is str and v not in clean]
        if not _SCALAR_TYPES.issuperset(map(type, values)):  # strings inside lists and objects
            nested = [v for v in values if v.__class__ not in _SCALAR_TYPES]
            fresh.extend(text for text in iter_all_strings({"": nested}) if text not in clean)
        if not fresh:
            return
        search = self.index.search
        assert search is not None
        if not search.find_folded("\x00".join(fresh)):
            if len(clean) >= _CLEAN_LIMIT:
                clean.clear()
            clean.update(fresh)
            return
        for text in fresh:
            hits = self.index.hits(text)
            if hits:
                found |= hits
            else:
                clean.add(text)


class GroupIndex:
    """Candidate selection for one logsource group: the classes its route covers, merged so
    that an event's fields are walked once."""

    def __init__(self, rules: RuleIndex, classes: Sequence[_ClassIndex]) -> None:
        self.needed = rules.needed
        self.always = tuple(sorted(p for c in classes for p in c.always))
        flat: dict[str, list[_FieldIndex]] = defaultdict(list)
        for class_index in classes:
            for name, index in class_index.flat.items():
                flat[name].append(index)
        self.flat = {name: tuple(indexes) for name, indexes in flat.items()}
        self.names = frozenset(self.flat)
        self.dotted = tuple(pair for c in classes for pair in c.dotted)
        # One keyword automaton for the whole group: the joined text is scanned once.
        keyword = [pair for c in classes for pair in c.keyword_triggers]
        self.keywords = _KeywordIndex(keyword, rules.backend) if keyword else None

    def candidates(self, event: Mapping[str, Any]) -> list[int]:
        """Sorted positions of the group's rules that may match `event`."""
        found: set[int] = set()
        flat = self.flat
        for name in self.names & event.keys():  # set intersection runs in C
            value = event[name]
            if value is None:
                continue
            if value.__class__ is str:  # the common case, inlined
                for index in flat[name]:
                    hits = index.cache.get(value)
                    if hits is None:
                        hits = index.hits(value)
                    if hits:
                        found |= hits
            else:
                for index in flat[name]:
                    _value_hits(index, value, found)
        for get, index in self.dotted:
            value = get(event)
            if value is not None:
                _value_hits(index, value, found)
        if self.keywords:
            self.keywords.add_tokens(event, found)
        if not found:
            return list(self.always)
        # Tokens are position * 4 + cover number; a rule whose covers were all hit is a candidate.
        seen: dict[int, int] = {}
        for token in found:
            position = token >> 2
            seen[position] = seen.get(position, 0) + 1
        needed = self.needed
        result = [p for p, count in seen.items() if count == needed[p]]
        result.extend(self.always)
        result.sort()
        return result
