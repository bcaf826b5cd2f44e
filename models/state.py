"""Which entities are remembered, with a hard cap: LRU and TTL eviction, both in event time.

The table maps an entity's id to a slot: a row number in the feature and model state arrays
that the scorer keeps (one row per entity, a few hundred bytes: decayed counts, a 512-bit Bloom
filter, ...; tests/test_entity_scoring.py measures it). Models are shared per entity type, never
kept per entity.

A slot freed by eviction is reused only from the next batch on (`end_batch`): the batch's
compiled feature loops run after the whole batch has been assigned slots, and the evicted
entity's earlier rows in this batch still read its state.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class EvictionStats:
    expired: int = 0  # idle for longer than the TTL (event time)
    capped: int = 0  # least recently seen, dropped to stay under max_entities


class EntityTable:
    """Entity id -> slot, most recently seen last.

    TTL is in event time: an entity idle for `ttl_ms` of stream time is forgotten, so a replay
    evicts exactly what the live run evicted. `max_entities` is a hard cap whatever the TTL.
    """

    def __init__(self, max_entities: int = 200_000, ttl_ms: int = 7 * 24 * 3600 * 1000) -> None:
        if max_entities < 1:
            raise ValueError("max_entities must be at least 1")
        self.max_entities = max_entities
        self.ttl_ms = ttl_ms
        self.stats = EvictionStats()
        self._slots: OrderedDict[str, int] = OrderedDict()
        self._last_ms: list[int] = []  # per slot: the entity's latest event time
        self._free: list[int] = []
        self._released: list[int] = []  # freed during this batch
        self.fresh: list[int] = []  # slots handed to new entities during this batch

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: str) -> bool:
        return key in self._slots

    @property
    def size(self) -> int:
        """Slots ever handed out: state arrays need this many rows."""
        return len(self._last_ms)

    def slot(self, key: str) -> int | None:
        return self._slots.get(key)

    def touch(self, key: str, time_ms: int) -> int:
        """The entity's slot (a new one, listed in `fresh`, if unknown), marked most recently
        seen; evicts as needed."""
        slots = self._slots
        slot = slots.get(key)
        if slot is not None:
            slots.move_to_end(key)
            if time_ms > self._last_ms[slot]:
                self._last_ms[slot] = time_ms
            return slot
        if self._free:
            slot = self._free.pop()
            self._last_ms[slot] = time_ms
        else:
            slot = len(self._last_ms)
            self._last_ms.append(time_ms)
        slots[key] = slot
        self.fresh.append(slot)
        self._expire(time_ms)
        while len(slots) > self.max_entities:
            self._released.append(slots.popitem(last=False)[1])
            self.stats.capped += 1
        return slot

    def end_batch(self) -> None:
        """The batch's state is written: freed slots may be handed out again."""
        self._free.extend(self._released)
        self._released.clear()
        self.fresh.clear()

    def _expire(self, now_ms: int) -> None:
        # Oldest first: stops at the first entity still inside the TTL. Out-of-order event
        # time only delays an eviction, never evicts an active entity early.
        slots = self._slots
        horizon = now_ms - self.ttl_ms
        last = self._last_ms
        while slots:
            key, oldest = next(iter(slots.items()))
            if last[oldest] >= horizon:
                break
            del slots[key]
            self._released.append(oldest)
            self.stats.expired += 1
