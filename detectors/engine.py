"""The evaluate stage: (compiled rules, event) -> matching rules, with no I/O.

Two modes return identical matches:
- "plain": every rule of the event's logsource is evaluated in full (the reference and baseline);
- "indexed": only the candidates that the prefilter index lets through are evaluated.

Caches here (routes, groups, field-value hits) are memoization of pure functions, so the result
never depends on the order or history of events. The one exception is a regex on the
backtracking engine that runs past its timeout: that rule is skipped for that event, counted,
and reported as degraded (`regex_timeouts`, `degraded_rules`).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from detectors.cover import Cover, required_covers
from detectors.evaluate import Matcher, build_matcher
from detectors.index import GroupIndex, RuleIndex
from detectors.ir import CompiledRule, RuleMeta
from detectors.routing import LogSource, LogsourceMapping, Route
from detectors.rule_regex import DEFAULT_TIMEOUT, RegexTimeout

Mode = Literal["indexed", "plain"]


@dataclass(slots=True)
class _Group:
    """The rules that apply to one set of event logsources."""

    positions: tuple[int, ...]  # indexes into the engine's rule list, ascending
    index: GroupIndex | None


@dataclass(slots=True)
class EngineStats:
    """Counters that make skips visible instead of silent."""

    events: int = 0
    unrouted: int = 0
    rule_errors: int = 0
    last_rule_error: str | None = None
    regex_timeouts: int = 0  # rule evaluations dropped because a regex ran out of time
    groups: int = 0
    routes: int = 0


@dataclass(slots=True)
class _Routed:
    group: _Group
    aliases: tuple[tuple[str, str], ...] = field(default_factory=tuple)


class SigmaEngine:
    """Matches events against compiled rules, routed by logsource."""

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        mapping: LogsourceMapping | None = None,
        mode: Mode = "indexed",
        literal_backend: str | None = None,
        regex_timeout: float | None = DEFAULT_TIMEOUT,
        reuse: SigmaEngine | None = None,
    ) -> None:
        """`regex_timeout`: seconds one match of a regex that RE2 cannot run may take (None: no
        bound); past it the rule counts as not matching that event and is marked degraded.

        `reuse`: an engine over mostly the same `CompiledRule` objects (a live rule push): the
        closures and covers of those rules, and the index of every logsource class whose rules
        are unchanged, are taken from it instead of built again. The result matches exactly as
        an engine built from scratch; the two share memo tables and Hyperscan scratch space, so
        use one of them at a time (the live swap does)."""
        if mode not in ("indexed", "plain"):
            raise ValueError(f"unknown engine mode {mode!r} (indexed or plain)")
        with _gc_paused():
            self._build(rules, mapping, mode, literal_backend, regex_timeout, reuse)

    def _build(self, rules: Sequence[CompiledRule], mapping: LogsourceMapping | None, mode: Mode,
               literal_backend: str | None, regex_timeout: float | None, reuse: SigmaEngine | None) -> None:
        self.rules: tuple[CompiledRule, ...] = tuple(rules)
        self.mapping = mapping if mapping is not None else LogsourceMapping.default()
        self.mode: Mode = mode
        self.literal_backend = literal_backend
        self.regex_timeout = regex_timeout
        self.stats = EngineStats()
        self._regex_timeouts: dict[str, int] = {}
        self._timed_out_pattern: dict[str, str] = {}
        self._rule_logsources = [
            LogSource(r.meta.product, r.meta.category, r.meta.service) for r in self.rules
        ]
        # What can be taken over from `reuse`: the work done for the very same rule objects.
        same = (reuse is not None and reuse.mode == mode and reuse.regex_timeout == regex_timeout
                and reuse.literal_backend == literal_backend)
        previous: dict[int, int] = {id(r): i for i, r in enumerate(reuse.rules)} if same and reuse else {}
        self.reused = 0  # rules whose closure and covers came from `reuse`
        # Compile every condition to a closure up front, so no event pays for it.
        self._matchers: list[Matcher] = []
        self._covers: list[list[Cover]] = []
        for rule in self.rules:
            before = previous.get(id(rule))
            if before is not None and reuse is not None:
                self._matchers.append(reuse._matchers[before])
                self._covers.append(reuse._covers[before])
                self.reused += 1
            else:
                self._matchers.append(build_matcher(rule.condition, regex_timeout))
                self._covers.append(required_covers(rule.condition) if mode == "indexed" else [])
        # The field index over all rules is built here too: compile once, not on first event.
        self._index: RuleIndex | None = None
        if mode == "indexed":
            previous_index = reuse._index if reuse is not None and previous else None
            old_rules = reuse.rules if reuse is not None else ()

            def kept(positions: Sequence[int]) -> bool:
                # A logsource class is taken over whole when it holds the same rule
                # objects at the same positions (its tokens name positions).
                return all(p < len(old_rules) and old_rules[p] is self.rules[p] for p in positions)

            self._index = RuleIndex(self._covers, self._rule_logsources, literal_backend,
                                    previous=previous_index, unchanged=kept)
        self._routes: dict[tuple[Any, ...], _Routed] = {}
        self._key_fields = tuple(self.mapping.key_fields)
        self._by_logsource: dict[LogSource, list[int]] = {}
        for position, logsource in enumerate(self._rule_logsources):
            self._by_logsource.setdefault(logsource, []).append(position)
        self._groups: dict[frozenset[LogSource], _Group] = {}

    # --- public API -------------------------------------------------------------------------

    def match(self, event: Mapping[str, Any]) -> list[RuleMeta]:
        """The rules that match `event`, in rule order."""
        return [self.rules[i].meta for i in self.match_positions(event)]

    def match_positions(self, event: Mapping[str, Any]) -> list[int]:
        """Like `match`, as positions into `self.rules`."""
        self.stats.events += 1
        routed = self._route(event)
        group = routed.group
        if not group.positions:
            return []
        if routed.aliases:
            event = _with_aliases(event, routed.aliases)
        matchers = self._matchers
        candidates = group.index.candidates(event) if group.index is not None else group.positions
        out: list[int] = []
        for position in candidates:
            try:
                if matchers[position](event):
                    out.append(position)
            except RegexTimeout as timeout:  # the rule is undecided here; every other rule goes on
                self._regex_timed_out(position, timeout)
            except Exception as error:  # noqa: BLE001 - a rule must never take the pipeline down
                self._rule_failed(position, error)
        return out

    @property
    def regex_timeouts(self) -> dict[str, int]:
        """Rule id -> how many events that rule was skipped on because a regex timed out."""
        return dict(self._regex_timeouts)

    def degraded_rules(self) -> dict[str, str]:
        """Rule id -> why the rule's matches are incomplete (plain text, for status reports)."""
        return {
            rule_id: f"{count} regex match{'es' if count != 1 else ''} timed out after "
            f"{self.regex_timeout}s (pattern '{self._timed_out_pattern[rule_id]}'); "
            "the rule did not match those events"
            for rule_id, count in self._regex_timeouts.items()
        }

    # --- routing and groups -----------------------------------------------------------------

    def _route(self, event: Mapping[str, Any]) -> _Routed:
        # The raw key-field values with their types (so 1, 1.0 and True stay apart) are a cheap
        # cache key; unhashable values (lists) fall back to the mapping's frozen key.
        raw = tuple(map(event.get, self._key_fields))
        key: tuple[Any, ...] = (raw, tuple(map(type, raw)))
        try:
            routed = self._routes.get(key)
        except TypeError:
            key = self.mapping.route_key(event)
            routed = self._routes.get(key)
        if routed is None:
            route = self.mapping.route(event)
            routed = _Routed(self._group(route), tuple(route.field_aliases))
            self._routes[key] = routed
            self.stats.routes = len(self._routes)
        if not routed.group.positions:
            self.stats.unrouted += 1
        return routed

    def _group(self, route: Route) -> _Group:
        logsources = frozenset(route.logsources)
        group = self._groups.get(logsources)
        if group is not None:
            return group
        classes = [ls for ls in self._by_logsource if any(ls.covers(event_ls) for event_ls in logsources)]
        positions = tuple(sorted(p for ls in classes for p in self._by_logsource[ls]))
        index = self._index.group(classes) if self._index is not None else None
        group = _Group(positions, index)
        self._groups[logsources] = group
        self.stats.groups = len(self._groups)
        return group

    def _regex_timed_out(self, position: int, timeout: RegexTimeout) -> None:
        rule_id = self.rules[position].meta.id
        self.stats.regex_timeouts += 1
        self._regex_timeouts[rule_id] = self._regex_timeouts.get(rule_id, 0) + 1
        self._timed_out_pattern[rule_id] = timeout.pattern

    def _rule_failed(self, position: int, error: Exception) -> None:
        self.stats.rule_errors += 1
        self.stats.last_rule_error = f"{self.rules[position].meta.id}: {type(error).__name__}: {error}"


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Building an engine allocates ~10^6 long-lived objects; each allocation burst makes the
    cyclic collector walk the young objects again, and the first collection after the build
    walks all of them (together half the build time on SigmaHQ's rules). None of them are
    garbage, so the collector is paused while they are made, and what is alive afterwards is
    moved to the permanent generation (`gc.freeze`), where no later collection walks it: an
    engine lives as long as its process or until a live swap, and is then freed by reference
    counting (it holds no cycles). Garbage waiting for the collector is collected first (cheap
    before the build, and a cold pySigma load leaves a lot of it), so none of it is frozen."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _with_aliases(event: Mapping[str, Any], aliases: tuple[tuple[str, str], ...]) -> Mapping[str, Any]:
    """A view where rule field names read their mapped event fields (e.g. Image from NewProcessName)."""
    view = dict(event)
    for rule_field, event_field in aliases:
        if rule_field not in view and event_field in view:
            view[rule_field] = view[event_field]
    return view
