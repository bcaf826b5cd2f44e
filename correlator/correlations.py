"""The Sigma correlation engine: rule hits in, correlation hits out, in event time.

Pure: `CorrelationEngine.process(hit)` reads only the hit and the engine's state (no clock, no I/O).

Windows (all seven types, per correlation and per group-by key)
    A window holds hits whose event times lie less than `timespan` apart: the window ending at
    time `end` is the half-open interval (end - timespan, end]. Two hits exactly `timespan` apart
    are never in one window ("within 1h" = less than an hour apart).

When a condition is evaluated, and when a group fires again
    *Sliding* (ops gt/gte, and every op of value_avg/value_percentile): the condition is evaluated
    on every hit, over the window ending at the newest hit of the group (or, for an out-of-order
    hit older than one timespan before the newest, over the window ending at that hit). A group
    fires when the condition holds and it has not fired in the last timespan (event time): a
    noisy rule that keeps the condition true gives one correlation hit per group per timespan,
    not one per event.
    *Closing* (ops lt/lte/eq/neq of event_count, value_count, temporal, temporal_ordered,
    value_sum): these aggregates only grow as hits arrive, so "fewer than N" is only known when
    the window is over. The group's window is then tumbling, anchored at its first hit,
    [start, start + timespan); it is evaluated once, when the effective watermark reaches its end
    (or a hit of the group at or after its end arrives, or it is evicted/expired, or `flush()`),
    and fires at most once. A group exists only once it has a hit, so `lt: 5` means "1 to 4".

value_percentile
    With `percentile: P` in the condition: the P-th percentile (nearest rank) of the numeric field
    over the window, compared with the threshold. Without it (the specification's example,
    `field: Image, lte: 1`): the share, in percent, of the window's hits whose field has the
    value of the current hit, i.e. "this value is in the rarest 1%".

Late events
    Each input partition has a watermark: the greatest event time seen on it minus
    `allowed_lateness_ms` (default 60 s). The effective watermark is the minimum over the
    partitions seen (and none at all until every partition named in `partitions=` has been
    seen); a hit first moves its own partition's watermark, so the first hit of a partition
    is never late. A hit older than the effective watermark is not applied and is counted in
    `stats()["too_late"]` (and per rule in `stats()["too_late_by_rule"]`). Older hits within the
    lateness count normally.

Group-by and fields
    `group-by` names are event fields, or aliases mapping each referenced rule (by id or `name`;
    `from_ruleset` / `rule_names=` resolve names) to its own field. A dotted name is looked up
    as a flat key first, then as a nested path. A hit lacking a group-by field (or the condition
    field, or a number where one is needed) does not contribute; it is counted in
    `stats()["missing_field"]`. Group-by values that are not str/int/float/bool become `str(value)`.

Bounded memory
    At most `max_groups` groups per correlation: the least recently updated one is evicted
    (counted; a closing window is evaluated before it goes). A group with no hit for
    `group_ttl_ms` of event time (default: its timespan + the allowed lateness) expires (counted).
    A group keeps only hits newer than (its newest hit - timespan - allowed lateness).

Chaining
    A correlation that references another correlation receives each of its hits as a `Hit` whose
    rule id is the inner correlation's id, whose event time is the last event time of the inner
    window, and whose fields are the inner group-by values.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from correlator.records import CorrelationHit, Hit, Ref
from detectors.correlation import CorrelationSpec
from detectors.loader import Ruleset

__all__ = ["DEFAULT_ALLOWED_LATENESS_MS", "CorrelationEngine", "CorrelationHit", "suppressed_rule_ids"]

DEFAULT_ALLOWED_LATENESS_MS = 60_000
DEFAULT_MAX_GROUPS = 100_000
DEFAULT_MAX_REFS = 20
DEFAULT_MAX_SEEN = 200_000  # hit references remembered for idempotence
MAX_CHAIN_DEPTH = 16
STATE_VERSION = 1

TYPES = frozenset(
    {"event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg", "value_percentile"}
)
MONOTONE_TYPES = frozenset({"event_count", "value_count", "temporal", "temporal_ordered", "value_sum"})
CLOSING_OPS = frozenset({"lt", "lte", "eq", "neq"})
OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda v, t: v > t,
    "gte": lambda v, t: v >= t,
    "lt": lambda v, t: v < t,
    "lte": lambda v, t: v <= t,
    "eq": lambda v, t: v == t,
    "neq": lambda v, t: v != t,
}
_MISSING = object()
_INF = math.inf

# A window entry: (event time, sequence number, position of its rule in spec.rules, value, ref).
Entry = tuple[int, int, int, Any, Ref | None]


def suppressed_rule_ids(specs: Iterable[CorrelationSpec]) -> frozenset[str]:
    """Ids of rules (detection rules or correlations) that must raise no alert of their own.

    A rule referenced by a correlation with `generate: false` (the default) is suppressed, unless
    another correlation referencing it says `generate: true`.
    """
    specs = list(specs)
    referenced = {rule for spec in specs for rule in spec.rules}
    generating = {rule for spec in specs if spec.generate for rule in spec.rules}
    return frozenset(referenced - generating)


def _field(fields: Mapping[str, Any], name: str) -> Any:
    value = fields.get(name, _MISSING)
    if value is _MISSING and "." in name:  # nested form of a dotted name (ECS)
        value = fields
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return None
            value = value[part]
        return value
    return None if value is _MISSING else value


def _plain(value: Any) -> Any:
    """A hashable plain value for group keys and distinct counts."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class _Group:
    __slots__ = ("entries", "last_fire", "updated", "window_start")

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.last_fire: int | None = None  # sliding: event time of the last hit fired
        self.window_start: int | None = None  # closing: start of the open tumbling window
        self.updated = -(2**63)  # newest event time applied


@dataclass
class _CorrStats:
    fired: int = 0
    evicted: int = 0
    expired: int = 0
    # hits lacking a group-by field, or the condition field (or not numeric where a number is needed)
    missing_field: int = 0


@dataclass
class _Correlation:
    spec: CorrelationSpec
    index: int
    span_ms: int
    op: str
    threshold: float
    closing: bool
    value_fields: tuple[str, ...]
    percentile: float | None
    ttl_ms: int
    key_fields: dict[str, tuple[str, ...]]  # rule id -> field of each group-by name (aliases applied)
    rule_pos: dict[str, int]
    groups: OrderedDict[tuple[Any, ...], _Group] = field(default_factory=OrderedDict)
    stats: _CorrStats = field(default_factory=_CorrStats)


def _compile(
    spec: CorrelationSpec, index: int, lateness_ms: int, group_ttl_ms: int | None, rule_names: Mapping[str, str]
) -> _Correlation:
    if spec.type not in TYPES:
        raise ValueError(f"correlation {spec.id}: unsupported type {spec.type!r}")
    condition = spec.condition or {}
    if "expression" in condition:
        raise ValueError(f"correlation {spec.id}: condition expressions are not supported")
    default_count = len(spec.rules) if spec.type in ("temporal", "temporal_ordered") else 1
    op = str(condition.get("op") or "gte")
    if op not in OPS:
        raise ValueError(f"correlation {spec.id}: unsupported condition operator {op!r}")
    count = condition.get("count")
    threshold = float(default_count if count is None else count)
    raw_field = condition.get("field")
    value_fields: tuple[str, ...] = (
        () if raw_field is None else (raw_field,) if isinstance(raw_field, str) else tuple(str(f) for f in raw_field)
    )
    if spec.type in ("value_count", "value_sum", "value_avg", "value_percentile") and not value_fields:
        raise ValueError(f"correlation {spec.id}: {spec.type} needs a condition field")
    if spec.type in ("value_sum", "value_avg", "value_percentile") and len(value_fields) != 1:
        raise ValueError(f"correlation {spec.id}: {spec.type} takes exactly one numeric field")
    span_ms = int(spec.timespan_seconds) * 1000
    if span_ms <= 0:
        raise ValueError(f"correlation {spec.id}: timespan must be positive")
    aliases: dict[str, dict[str, str]] = {}  # alias -> {rule id: field}; the mapping may name rules by `name`
    for alias, mapping in spec.aliases.items():
        aliases[alias] = {rule_names.get(ref, ref): field_name for ref, field_name in mapping.items()}
    key_fields = {rule: tuple(aliases.get(name, {}).get(rule, name) for name in spec.group_by) for rule in spec.rules}
    rule_pos: dict[str, int] = {}
    for position, rule in enumerate(spec.rules):
        rule_pos.setdefault(rule, position)
    percentile = condition.get("percentile")
    return _Correlation(
        spec=spec,
        index=index,
        span_ms=span_ms,
        op=op,
        threshold=threshold,
        closing=op in CLOSING_OPS and spec.type in MONOTONE_TYPES,
        value_fields=value_fields,
        percentile=float(percentile) if percentile is not None else None,
        ttl_ms=group_ttl_ms if group_ttl_ms is not None else span_ms + lateness_ms,
        key_fields=key_fields,
        rule_pos=rule_pos,
    )


class CorrelationEngine:
    """Evaluates Sigma correlation rules over a stream of `Hit`s. See the module docstring for
    the semantics (windows, firing, lateness, memory bounds, chaining)."""

    def __init__(
        self,
        specs: Iterable[CorrelationSpec],
        allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
        max_groups: int = DEFAULT_MAX_GROUPS,
        group_ttl_ms: int | None = None,
        max_refs: int = DEFAULT_MAX_REFS,
        partitions: Iterable[int] = (),
        rule_names: Mapping[str, str] | None = None,
    ) -> None:
        if allowed_lateness_ms < 0 or max_groups < 1 or max_refs < 0:
            raise ValueError("allowed_lateness_ms and max_refs must be >= 0, max_groups >= 1")
        self.allowed_lateness_ms = allowed_lateness_ms
        self.max_groups = max_groups
        self.max_refs = max_refs
        specs = list(specs)
        names = dict(rule_names or {})
        names.update({s.name: s.id for s in specs if s.name})
        self._corrs = [_compile(s, i, allowed_lateness_ms, group_ttl_ms, names) for i, s in enumerate(specs)]
        ids = [c.spec.id for c in self._corrs]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate correlation id")
        self._by_id = {c.spec.id: c for c in self._corrs}
        self._consumers: dict[str, list[_Correlation]] = {}
        for corr in self._corrs:
            for rule in dict.fromkeys(corr.spec.rules):
                self._consumers.setdefault(rule, []).append(corr)
        self._partitions: dict[int, int] = {}  # partition -> greatest event time seen
        self._expected = frozenset(partitions)  # no watermark until each of these has been seen
        self._watermark: float = -_INF
        self._max_time: int | None = None
        self._seq = 0
        self._heap: list[tuple[int, int, int, tuple[Any, ...], int]] = []  # closing windows by end
        self._heap_seq = 0
        self._hits_in = 0
        self._ignored = 0  # hits of rules no correlation references
        self._too_late = 0
        self._too_late_by_rule: dict[str, int] = {}
        # (rule id, topic, partition, offset) of hits applied: a hit delivered twice (at-least-once
        # upstream, a replayed batch) is applied once. Bounded: the oldest are forgotten first.
        self._seen: OrderedDict[tuple[str, str, int, int], None] = OrderedDict()
        self.max_seen = DEFAULT_MAX_SEEN
        self._duplicates = 0

    @classmethod
    def from_ruleset(cls, ruleset: Ruleset, **options: Any) -> CorrelationEngine:
        """An engine for the ruleset's correlations; alias mappings may name rules by `name`."""
        names = {rule.meta.name: rule.meta.id for rule in ruleset.rules if rule.meta.name}
        return cls(ruleset.correlations, rule_names=names, **options)

    # -- public -------------------------------------------------------------------------------

    @property
    def rule_ids(self) -> frozenset[str]:
        """Ids of the rules (and correlations) whose hits the engine consumes."""
        return frozenset(self._consumers)

    def watermark(self) -> int | None:
        """The effective watermark: min over partitions of (greatest event time - lateness)."""
        return None if self._watermark == -_INF else int(self._watermark)

    def process(self, hit: Hit) -> list[CorrelationHit]:
        """Apply one hit; return the correlation hits it (or the watermark it moves) produces.
        A hit whose (rule, evidence reference) was applied before is skipped (`duplicates`)."""
        if hit.ref is not None:
            seen = (hit.rule_id, *hit.ref)
            if seen in self._seen:
                self._duplicates += 1
                return []
            self._seen[seen] = None
            if len(self._seen) > self.max_seen:
                self._seen.popitem(last=False)
        self._hits_in += 1
        time = hit.event_time_ms
        previous = self._partitions.get(hit.partition)
        if previous is None or time > previous:  # the hit moves its partition's watermark first
            self._partitions[hit.partition] = time
            self._update_watermark()
        elif time < self._watermark:
            self._too_late += 1
            self._too_late_by_rule[hit.rule_id] = self._too_late_by_rule.get(hit.rule_id, 0) + 1
            return []
        out: list[CorrelationHit] = []
        if self._max_time is None or time > self._max_time:
            self._max_time = time
        if hit.rule_id in self._consumers:
            self._dispatch(hit, out, 0)
        else:
            self._ignored += 1
        if self._heap and self._heap[0][0] <= self._watermark:
            self._close_due(out)
        return out

    def process_many(self, hits: Iterable[Hit]) -> list[CorrelationHit]:
        out: list[CorrelationHit] = []
        for hit in hits:
            out.extend(self.process(hit))
        return out

    def flush(self) -> list[CorrelationHit]:
        """End of input: evaluate every open closing window now (sliding ones need nothing)."""
        out: list[CorrelationHit] = []
        for corr in self._corrs:
            if corr.closing:
                for key in list(corr.groups):
                    group = corr.groups.pop(key)
                    self._evaluate_closing(corr, key, group, out, 0)
        self._heap.clear()
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "hits_in": self._hits_in,
            "ignored": self._ignored,
            "too_late": self._too_late,
            "too_late_by_rule": dict(self._too_late_by_rule),
            "duplicates": self._duplicates,
            "watermark": self.watermark(),
            "partitions": len(self._partitions),
            "groups": sum(len(c.groups) for c in self._corrs),
            "fired": sum(c.stats.fired for c in self._corrs),
            "evicted": sum(c.stats.evicted for c in self._corrs),
            "expired": sum(c.stats.expired for c in self._corrs),
            "missing_field": sum(c.stats.missing_field for c in self._corrs),
            "correlations": {
                c.spec.id: {
                    "groups": len(c.groups),
                    "fired": c.stats.fired,
                    "evicted": c.stats.evicted,
                    "expired": c.stats.expired,
                    "missing_field": c.stats.missing_field,
                }
                for c in self._corrs
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """The whole state as plain data (lists, dicts, str, int, float, None): JSON-safe when
        group-by values are."""
        return {
            "version": STATE_VERSION,
            "seq": self._seq,
            "partitions": [[p, t] for p, t in self._partitions.items()],
            "max_time": self._max_time,
            "hits_in": self._hits_in,
            "ignored": self._ignored,
            "too_late": self._too_late,
            "too_late_by_rule": dict(self._too_late_by_rule),
            "heap_seq": self._heap_seq,
            "seen": [list(key) for key in self._seen],
            "duplicates": self._duplicates,
            "closing": [[end, seq, self._corrs[i].spec.id, list(key), start] for end, seq, i, key, start in self._heap],
            "correlations": {
                c.spec.id: {
                    "stats": [c.stats.fired, c.stats.evicted, c.stats.expired, c.stats.missing_field],
                    "groups": [
                        [
                            list(key),
                            [[t, s, p, list(v) if isinstance(v, tuple) else v, list(r) if r else None]
                             for t, s, p, v, r in g.entries],
                            g.last_fire,
                            g.window_start,
                            g.updated,
                        ]
                        for key, g in c.groups.items()
                    ],
                }
                for c in self._corrs
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()` output. State of correlations no longer loaded is dropped."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported correlator state version {state.get('version')!r}")
        self._seq = int(state["seq"])
        self._partitions = {int(p): int(t) for p, t in state["partitions"]}
        self._update_watermark()
        self._max_time = state["max_time"]
        self._hits_in = int(state["hits_in"])
        self._ignored = int(state["ignored"])
        self._too_late = int(state["too_late"])
        self._too_late_by_rule = dict(state["too_late_by_rule"])
        self._seen = OrderedDict((tuple(key), None) for key in state.get("seen", ()))
        self._duplicates = int(state.get("duplicates", 0))
        self._heap = []
        for corr in self._corrs:
            corr.groups = OrderedDict()
            corr.stats = _CorrStats()
            saved = state["correlations"].get(corr.spec.id)
            if saved is None:
                continue
            corr.stats = _CorrStats(*saved["stats"])
            for key, entries, last_fire, window_start, updated in saved["groups"]:
                group = _Group()
                group.entries = [
                    (t, s, p, tuple(v) if isinstance(v, list) else v, tuple(r) if r else None)
                    for t, s, p, v, r in entries
                ]
                group.last_fire = last_fire
                group.window_start = window_start
                group.updated = updated
                corr.groups[tuple(key)] = group
        for end, seq, corr_id, key, start in state["closing"]:
            if corr_id in self._by_id:
                self._heap.append((end, seq, self._by_id[corr_id].index, tuple(key), start))
        heapq.heapify(self._heap)
        self._heap_seq = int(state["heap_seq"])

    # -- internals ----------------------------------------------------------------------------

    def _update_watermark(self) -> None:
        if not self._partitions or not self._expected <= self._partitions.keys():
            self._watermark = -_INF
        else:
            self._watermark = min(self._partitions.values()) - self.allowed_lateness_ms

    def _push(self, corr: _Correlation, key: tuple[Any, ...], start: int) -> None:
        self._heap_seq += 1
        heapq.heappush(self._heap, (start + corr.span_ms, self._heap_seq, corr.index, key, start))

    def _dispatch(self, hit: Hit, out: list[CorrelationHit], depth: int) -> None:
        for corr in self._consumers.get(hit.rule_id, ()):
            self._apply(corr, hit, out, depth)

    def _emit(self, corr: _Correlation, key: tuple[Any, ...], window: list[Entry], value: float,
              out: list[CorrelationHit], depth: int) -> None:
        spec = corr.spec
        refs: list[Ref] = []
        for entry in window:
            if len(refs) >= self.max_refs:
                break
            if entry[4] is not None:
                refs.append(entry[4])
        group = dict(zip(spec.group_by, key, strict=True))
        result = CorrelationHit(
            correlation_id=spec.id,
            title=spec.title,
            level=spec.level,
            type=spec.type,
            name=spec.name,
            group=group,
            first_event_ms=window[0][0],
            last_event_ms=window[-1][0],
            value=value,
            refs=tuple(refs),
            ref_count=len(window),
        )
        corr.stats.fired += 1
        out.append(result)
        if spec.id in self._consumers and depth < MAX_CHAIN_DEPTH:
            self._dispatch(Hit(spec.id, result.last_event_ms, group), out, depth + 1)

    def _entry_value(self, corr: _Correlation, fields: Mapping[str, Any]) -> Any:
        """The value a hit contributes, or _MISSING when it lacks the condition field."""
        kind = corr.spec.type
        if kind == "value_count":
            values = tuple(_plain(_field(fields, f)) for f in corr.value_fields)
            if any(v is None for v in values):
                return _MISSING
            return values[0] if len(values) == 1 else values
        if kind in ("value_sum", "value_avg") or (kind == "value_percentile" and corr.percentile is not None):
            number = _number(_field(fields, corr.value_fields[0]))
            return _MISSING if number is None else number
        if kind == "value_percentile":
            value = _plain(_field(fields, corr.value_fields[0]))
            return _MISSING if value is None else value
        return None

    def _apply(self, corr: _Correlation, hit: Hit, out: list[CorrelationHit], depth: int) -> None:
        fields = hit.fields
        value = self._entry_value(corr, fields)
        if value is _MISSING:
            corr.stats.missing_field += 1
            return
        key = tuple(_plain(_field(fields, name)) for name in corr.key_fields[hit.rule_id])
        if None in key:
            corr.stats.missing_field += 1
            return
        time = hit.event_time_ms
        self._seq += 1
        entry: Entry = (time, self._seq, corr.rule_pos[hit.rule_id], value, hit.ref)
        groups = corr.groups
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
            if len(groups) > self.max_groups:
                old_key, old = groups.popitem(last=False)
                corr.stats.evicted += 1
                if corr.closing:
                    self._evaluate_closing(corr, old_key, old, out, depth)
        else:
            groups.move_to_end(key)
        if time > group.updated:
            group.updated = time
        if corr.closing:
            self._apply_closing(corr, key, group, entry, out, depth)
        else:
            self._apply_sliding(corr, key, group, entry, out, depth)
        self._expire(corr, out, depth)

    def _apply_sliding(self, corr: _Correlation, key: tuple[Any, ...], group: _Group, entry: Entry,
                       out: list[CorrelationHit], depth: int) -> None:
        entries = group.entries
        time = entry[0]
        if not entries or time >= entries[-1][0]:
            entries.append(entry)
        else:
            insort(entries, entry)
        newest = entries[-1][0]
        span = corr.span_ms
        keep_from = bisect_right(entries, (newest - span - self.allowed_lateness_ms, _INF))
        if keep_from:
            del entries[:keep_from]
        end = newest if time > newest - span else time
        lo = bisect_right(entries, (end - span, _INF))
        hi = len(entries) if end == newest else bisect_right(entries, (end, _INF))
        if corr.spec.type == "event_count":
            value: float = float(hi - lo)
        else:
            value = self._aggregate(corr, entries[lo:hi], entry)
        if not OPS[corr.op](value, corr.threshold):
            return
        if group.last_fire is not None and end - group.last_fire < span:
            return  # fired within the last timespan
        group.last_fire = end
        self._emit(corr, key, entries[lo:hi], value, out, depth)

    def _apply_closing(self, corr: _Correlation, key: tuple[Any, ...], group: _Group, entry: Entry,
                       out: list[CorrelationHit], depth: int) -> None:
        time = entry[0]
        if group.window_start is not None and time >= group.window_start + corr.span_ms:
            self._evaluate_closing(corr, key, group, out, depth)
            group.entries = []
            group.window_start = None
        if group.window_start is None:
            group.window_start = time
            self._push(corr, key, time)
        insort(group.entries, entry)  # a late hit before the window start joins this window

    def _evaluate_closing(self, corr: _Correlation, key: tuple[Any, ...], group: _Group,
                          out: list[CorrelationHit], depth: int) -> None:
        window = group.entries
        if not window:
            return
        value = self._aggregate(corr, window, None)
        if OPS[corr.op](value, corr.threshold):
            self._emit(corr, key, window, value, out, depth)

    def _close_due(self, out: list[CorrelationHit]) -> None:
        heap = self._heap
        while heap and heap[0][0] <= self._watermark:
            _end, _seq, index, key, start = heapq.heappop(heap)
            corr = self._corrs[index]
            group = corr.groups.get(key)
            if group is None or group.window_start != start:
                continue  # already closed (by a later hit, eviction or expiry)
            del corr.groups[key]
            self._evaluate_closing(corr, key, group, out, 0)

    def _expire(self, corr: _Correlation, out: list[CorrelationHit], depth: int) -> None:
        if self._max_time is None:
            return
        horizon = self._max_time - corr.ttl_ms
        groups = corr.groups
        while groups:
            key, group = next(iter(groups.items()))
            if group.updated > horizon:
                return
            del groups[key]
            corr.stats.expired += 1
            if corr.closing:
                self._evaluate_closing(corr, key, group, out, depth)

    def _aggregate(self, corr: _Correlation, window: list[Entry], current: Entry | None) -> float:
        kind = corr.spec.type
        if kind == "event_count":
            return float(len(window))
        if kind == "value_count":
            return float(len({e[3] for e in window}))
        if kind == "temporal":
            return float(len({e[2] for e in window}))
        if kind == "temporal_ordered":
            rules = corr.spec.rules
            matched = 0
            for e in window:  # greedy earliest match of the rules in order
                if matched < len(rules) and rules[e[2]] == rules[matched]:
                    matched += 1
            return float(matched)
        if kind == "value_sum":
            return float(sum(e[3] for e in window))
        if kind == "value_avg":
            return float(sum(e[3] for e in window) / len(window))
        # value_percentile
        if corr.percentile is not None:
            values = sorted(e[3] for e in window)
            rank = max(1, math.ceil(corr.percentile / 100.0 * len(values)))
            return float(values[min(rank, len(values)) - 1])
        target = current[3] if current is not None else window[-1][3]
        return 100.0 * sum(1 for e in window if e[3] == target) / len(window)
