"""The feature contract: plain Python per event, a compiled loop per batch of entity rows.

A feature is at most two functions, both written in plain Python:

- `extract(event, category) -> tuple[float, ...]` (optional), run once per event: what the
  feature needs from the event's fields (a command line's entropy, the hash of a process name),
  `inputs` floats wide. Strings and dicts stay on this side.
- `kernel(slot, event, first, time_ms, category, inputs, state, world, out)`, compiled with
  `@kernel` (numba), run once per batch over the batch's entity rows in stream order. Row r is
  entity slot `slot[r]` in event `event[r]`; `first[r]` marks the event's first entity (state
  shared by all entities, `world`, learns once per event); `time_ms` (event time, never the wall
  clock), `category` (an index into CATEGORIES) and `inputs` are per event. For every row the
  kernel writes one value in [0, 1] per name in `outputs` into `out[r]`, computed from the
  entity's history BEFORE this event (features are scored before they learn, like the models),
  then folds the event into `state[slot[r]]`, the `state` columns this feature owns for the
  entity. A new entity's state is all zeros. A model reads a missing feature as 0.0.

Adding a feature is writing one module like these and listing it in `models/features/__init__.py`;
no cluster code changes. `@kernel` is optional: an undecorated loop runs as plain Python (any
Python allowed, about a microsecond per row instead of nanoseconds), which is how a feature can
start before it is made fast. `kernel.py_func` is the compiled loop's own source: tests run both
on real events and require identical values, and NUMBA_DISABLE_JIT=1 runs everything
uncompiled for a debugger. Compiled loops are not bounds-checked: set NUMBA_BOUNDSCHECK=1 while
writing one. An `extract` that raises (or returns the wrong number of values) costs that event
its inputs, as 0.0, counted in `EntityScorer.feature_errors`; it never fails the batch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numba

from models.features.categories import CATEGORIES

Extract = Callable[[Mapping[str, Any], str], tuple[float, ...]]


def kernel(function: Callable[..., None]) -> Any:
    """Compiles a feature's batch loop. IEEE division (x/0 is inf or nan, as in numpy, not an
    exception) and no fast-math, so the compiled loop gives exactly its Python source's floats."""
    return numba.njit(cache=True, error_model="numpy", nogil=True)(function)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    outputs: tuple[str, ...]  # the names of the values the kernel writes per row, in order
    kernel: Any  # a @kernel-compiled function with the signature above
    state: int = 0  # state columns per entity
    state_dtype: str = "float64"  # uint64 for bit sets
    inputs: int = 0  # floats per event from `extract`
    extract: Extract | None = None
    world: tuple[int, ...] = (1,)  # shape of the state shared by every entity
    world_dtype: str = "float64"
    doc: str = ""

    def __post_init__(self) -> None:
        if (self.extract is None) != (self.inputs == 0):
            raise ValueError(f"feature {self.name!r}: `extract` and `inputs` go together")

    def __reduce__(self) -> tuple[Callable[..., Feature], tuple[str, str]]:
        # A pickled scorer names the feature instead of pickling its compiled kernel (a checkpoint
        # names it in the state dict, and the restoring scorer is given the features).
        return _load_feature, (getattr(self.kernel, "py_func", self.kernel).__module__, self.name)


def _load_feature(module: str, name: str) -> Feature:
    for value in vars(importlib.import_module(module)).values():
        if isinstance(value, Feature) and value.name == name:
            return value
    raise LookupError(f"feature {name!r} is no longer defined in {module}")


def category_index(name: str) -> int:
    """The index kernels see for a category name (CATEGORIES order)."""
    return CATEGORIES.index(name)
