"""First-seen and frequency of what an entity does: a process, a parent->child pair, a network
destination, a logon type. First-seen is per entity (its Bloom filter); rarity is across all
entities (the world's count-min sketch). Both are bounded whatever the stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.features.base import Feature, View
from models.sketch import bloom_bits


def _base(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    return path.rsplit("\\", 1)[-1].lower()


def things(event: Mapping[str, Any], category: str) -> list[tuple[str, str]]:
    """(kind, key) pairs this event shows its entities doing."""
    found: list[tuple[str, str]] = []
    if category == "process":
        image = _base(event.get("Image") or event.get("NewProcessName"))
        parent = _base(event.get("ParentImage") or event.get("ParentProcessName"))
        if image:
            found.append(("process", "p:" + image))
            if parent:
                found.append(("pair", f"pc:{parent}>{image}"))
    elif category == "network":
        destination = event.get("DestinationHostname") or event.get("DestinationIp") or event.get("DestAddress")
        port = event.get("DestinationPort") or event.get("DestPort") or ""
        if isinstance(destination, str) and destination and destination != "-":
            found.append(("dest", f"d:{destination.lower()}:{port}"))
    elif category == "logon":
        logon_type = event.get("LogonType")
        if logon_type is not None and logon_type != "":
            found.append(("logon_type", f"l:{logon_type}"))
    return found


_KINDS = ("process", "pair", "dest", "logon_type")
_SLOT = {kind: 2 * i for i, kind in enumerate(_KINDS)}
_NONE = (0.0,) * (2 * len(_KINDS))


def _event_level(view: View) -> list[tuple[int, int, float]]:
    """(output slot, Bloom bits, global rarity before this event) per thing; once per event."""
    cached = view.shared.get("rarity")
    if cached is None:
        sketch = view.world.sketch
        cached = []
        for kind, key in things(view.event, view.category):
            # read before counting: the event does not make itself common
            cached.append((_SLOT[kind], bloom_bits(key), sketch.rarity_then_add(key)))
        view.shared["rarity"] = cached
    return cached


def step(view: View) -> tuple[float, ...]:
    found = _event_level(view)
    if not found:
        return _NONE
    result = list(_NONE)
    state = view.state
    for slot, bits, global_rarity in found:
        result[slot] = 0.0 if state.seen & bits == bits else 1.0  # new_<kind>
        result[slot + 1] = global_rarity  # <kind>_rarity
        state.seen |= bits
    return tuple(result)


RARITY = Feature("rarity", tuple(n for k in _KINDS for n in (f"new_{k}", f"{k}_rarity")), step,
                 "first time this entity does it (per entity) and how rare it is across all entities")
