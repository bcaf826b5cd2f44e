"""Versions of the scorer's state dict, and how an older one becomes the current one.

`EntityScorer.state_dict()` carries `"version"`: one number for the layout of the whole tree
(table, feature arrays, estimators, calibrators, shadow). Any change to that layout bumps
STATE_VERSION and adds one small function here that turns the previous layout into the new one,
so an old checkpoint is migrated step by step, explicitly, or refused by number: never patched
field by field where the state is used.

Version 1 is the layout before the scorer counted failing feature extracts: it lacks
`feature_errors` and `last_feature_error` (the fields older pickled scorers lacked and that
used to be filled in with `setdefault`).

>>> upgrade({"version": 1, "events_seen": 7})["feature_errors"]
{}
>>> upgrade({"version": 99})
Traceback (most recent call last):
...
models.migrations.UnsupportedStateVersion: scorer state version 99: this version of sigmaray reads version 2 (and migrates 1)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MIGRATIONS", "STATE_VERSION", "UnsupportedStateVersion", "upgrade"]

STATE_VERSION = 2

State = dict[str, Any]


class UnsupportedStateVersion(ValueError):
    """A state dict of a version this code neither reads nor migrates (newer, or unknown)."""


def _from_1(state: State) -> State:
    """1 -> 2: the feature-error counters, zero (version 1 did not count)."""
    return {**state, "version": 2, "feature_errors": {}, "last_feature_error": ""}


MIGRATIONS: dict[int, Callable[[State], State]] = {1: _from_1}  # version -> its state one version later


def upgrade(state: State) -> State:
    """`state` in the current layout: returned as is when current, migrated when older and known,
    else UnsupportedStateVersion naming both versions."""
    version = state.get("version") if isinstance(state, dict) else None
    while version != STATE_VERSION:
        step = MIGRATIONS.get(version) if isinstance(version, int) and not isinstance(version, bool) else None
        if step is None:
            known = ", ".join(str(v) for v in sorted(MIGRATIONS)) or "none"
            raise UnsupportedStateVersion(f"scorer state version {version!r}: this version of sigmaray reads "
                                          f"version {STATE_VERSION} (and migrates {known})")
        state = step(state)
        version = state["version"]
    return state
