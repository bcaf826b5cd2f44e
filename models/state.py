"""Per-entity state with a hard cap: LRU and TTL eviction, both driven by event time.

An entity's state is small on purpose (tests/test_entity_state.py measures it): counters,
a 512-bit Bloom filter of what it has done, and a dict of floats that the feature functions
own (one key per feature state, e.g. a decayed rate). Models are shared per entity type,
never kept per entity.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass


class EntityState:
    __slots__ = ("first_ms", "last_ms", "count", "seen", "values")

    def __init__(self, time_ms: int) -> None:
        self.first_ms = time_ms
        self.last_ms = time_ms
        self.count = 0
        self.seen = 0  # Bloom filter bits (models.sketch.bloom_bits)
        self.values: dict[str, float] = {}

    def __getstate__(self) -> tuple[int, int, int, int, dict[str, float]]:
        return self.first_ms, self.last_ms, self.count, self.seen, self.values

    def __setstate__(self, state: tuple[int, int, int, int, dict[str, float]]) -> None:
        self.first_ms, self.last_ms, self.count, self.seen, self.values = state


@dataclass(slots=True)
class EvictionStats:
    expired: int = 0  # idle for longer than the TTL (event time)
    capped: int = 0  # least recently seen, dropped to stay under max_entities


class EntityTable:
    """Entity key -> EntityState, most recently seen last.

    TTL is in event time: an entity idle for `ttl_ms` of stream time is forgotten, so a replay
    evicts exactly what the live run evicted. `max_entities` is a hard cap whatever the TTL.
    """

    def __init__(self, max_entities: int = 200_000, ttl_ms: int = 7 * 24 * 3600 * 1000) -> None:
        if max_entities < 1:
            raise ValueError("max_entities must be at least 1")
        self.max_entities = max_entities
        self.ttl_ms = ttl_ms
        self.stats = EvictionStats()
        self._states: OrderedDict[str, EntityState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def items(self) -> Iterator[tuple[str, EntityState]]:
        return iter(self._states.items())

    def get(self, key: str) -> EntityState | None:
        return self._states.get(key)

    def touch(self, key: str, time_ms: int) -> EntityState:
        """The entity's state (new if unknown), marked most recently seen; evicts as needed."""
        states = self._states
        state = states.get(key)
        if state is None:
            state = EntityState(time_ms)
            states[key] = state
            self._expire(time_ms)
            while len(states) > self.max_entities:
                states.popitem(last=False)
                self.stats.capped += 1
        else:
            states.move_to_end(key)
        return state

    def _expire(self, now_ms: int) -> None:
        # Oldest first: stops at the first entity still inside the TTL. Out-of-order event
        # time only delays an eviction, never evicts an active entity early.
        states = self._states
        horizon = now_ms - self.ttl_ms
        while states:
            key, oldest = next(iter(states.items()))
            if oldest.last_ms >= horizon:
                break
            del states[key]
            self.stats.expired += 1
