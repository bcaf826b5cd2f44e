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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


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

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Plain data: the entities, least recently seen first, with their slots; each slot's
        latest event time; the free slots. The cap and the TTL are configuration, not state.

        >>> table = EntityTable(max_entities=2)
        >>> for key, ms in (("host:a", 1), ("host:b", 2), ("host:a", 3), ("host:c", 4)):
        ...     _ = table.touch(key, ms)
        >>> table.end_batch()
        >>> back = EntityTable(max_entities=2)
        >>> back.load_state_dict(table.state_dict())
        >>> list(back._slots.items()), back.stats
        ([('host:a', 0), ('host:c', 2)], EvictionStats(expired=0, capped=1))
        """
        return {
            "keys": list(self._slots),
            "slots": np.fromiter(self._slots.values(), dtype=np.int64, count=len(self._slots)),
            "last_ms": np.asarray(self._last_ms, dtype=np.int64),
            "free": list(self._free), "released": list(self._released), "fresh": list(self.fresh),
            "expired": self.stats.expired, "capped": self.stats.capped,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        keys, slots = state["keys"], np.asarray(state["slots"]).tolist()
        last_ms = np.asarray(state["last_ms"]).tolist()
        if len(keys) != len(slots) or any(not 0 <= slot < len(last_ms) for slot in slots):
            raise ValueError("entity table state: keys, slots and times do not line up")
        self._slots = OrderedDict(zip(keys, slots, strict=True))
        self._last_ms = last_ms
        self._free, self._released, self.fresh = list(state["free"]), list(state["released"]), list(state["fresh"])
        self.stats = EvictionStats(int(state["expired"]), int(state["capped"]))
