"""First-seen and frequency of what an entity does: a process, a parent->child pair, a network
destination, a logon type. First-seen is per entity (its Bloom filter); rarity is across all
entities (the world's count-min sketch). Both are bounded whatever the stream."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.features.base import Feature, kernel
from models.sketch import BLOOM_WORDS, bloom_seen_then_add, key_hashes, rarity_then_add

_KINDS = ("process", "pair", "dest", "logon_type")
_ABSENT = -1.0
_NONE = (_ABSENT,) * (2 * len(_KINDS))
_DEPTH, _WIDTH = 4, 4096
# Process names, pairs and destinations repeat endlessly: hash each key string once.
_HASHES: dict[str, tuple[int, int]] = {}
_HASHES_CAP = 100_000


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


_SLOT = {kind: 2 * i for i, kind in enumerate(_KINDS)}


def extract(event: Mapping[str, Any], category: str) -> tuple[float, ...]:
    """The two hashes of each kind's key, -1 where the event has none of that kind."""
    if category not in ("process", "network", "logon"):
        return _NONE
    found = things(event, category)
    if not found:
        return _NONE
    values = list(_NONE)
    for kind, key in found:
        hashes = _HASHES.get(key)
        if hashes is None:
            if len(_HASHES) >= _HASHES_CAP:
                _HASHES.clear()
            hashes = _HASHES[key] = key_hashes(key)
        slot = _SLOT[kind]
        values[slot], values[slot + 1] = hashes
    return tuple(values)


@kernel
def step(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray, category: np.ndarray,
         inputs: np.ndarray, state: np.ndarray, world: np.ndarray, out: np.ndarray) -> None:
    kinds = inputs.shape[1] // 2
    common = np.zeros(kinds)  # rarity across everyone: once per event, read before counting it
    for r in range(slot.shape[0]):
        e = event[r]
        bits = state[slot[r]]
        for k in range(kinds):
            h1 = inputs[e, 2 * k]
            if h1 < 0.0:
                out[r, 2 * k] = 0.0
                out[r, 2 * k + 1] = 0.0
                continue
            h2 = inputs[e, 2 * k + 1]
            if first[r]:
                common[k] = rarity_then_add(world, int(h1), int(h2), k)
            out[r, 2 * k] = 0.0 if bloom_seen_then_add(bits, int(h1), int(h2)) else 1.0  # new_<kind>
            out[r, 2 * k + 1] = common[k]  # <kind>_rarity


RARITY = Feature("rarity", tuple(n for k in _KINDS for n in (f"new_{k}", f"{k}_rarity")), step,
                 state=BLOOM_WORDS, state_dtype="uint64", inputs=2 * len(_KINDS), extract=extract,
                 world=(_DEPTH + 1, _WIDTH), world_dtype="uint64",
                 doc="first time this entity does it (per entity) and how rare it is across all entities")
