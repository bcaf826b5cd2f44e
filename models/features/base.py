"""The feature contract: one function per feature, reading history before recording the event.

`step(view)` returns a tuple of floats in [0, 1], one per name in `outputs` (0.0 where it does
not apply: a model reads a missing feature as 0.0), computed from the entity's history BEFORE this
event (features are scored before they learn, like the models), then folds the event into the
entity's `state.values` (and, on the event's first entity, into the shared `world`).
`view.shared` is a per-event cache: work that depends only on the event (a command line's
entropy, a process name's global rarity) is done once, not once per entity.

Adding a feature is writing one such function in a module here and listing it in
`models/features/__init__.py`; no cluster code changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.entities import Entity
from models.sketch import CountMinSketch
from models.state import EntityState


@dataclass(slots=True)
class World:
    """State shared by all entities of a scorer: how common things are across everyone."""

    sketch: CountMinSketch = field(default_factory=CountMinSketch)


@dataclass(slots=True)
class View:
    event: Mapping[str, Any]
    time_ms: int
    entity: Entity
    state: EntityState
    world: World
    category: str
    first: bool  # the event's first entity: world state learns once per event, not per entity
    shared: dict[str, Any]  # per-event cache, common to the event's entities


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    outputs: tuple[str, ...]  # the names of the values step() returns, in order
    step: Callable[[View], tuple[float, ...]]
    doc: str = ""


def squash(value: float, half: float) -> float:
    """[0, inf) -> [0, 1): `half` maps to 0.5. Keeps rates usable by [0, 1]-bounded models."""
    return value / (value + half) if value > 0 else 0.0
