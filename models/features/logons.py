"""Failed-logon ratio of an entity: a decayed share of failures among its logon attempts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.features.base import Feature, category_index, kernel

_WEIGHT = 0.1
_FAILED = {"4625", "4771"}
_OUTCOME = {"4624", "4625", "4771", "4776", "4768"}
_LOGON = category_index("logon")
_NOT_AN_ATTEMPT = (0.0, 0.0)


def outcome(event: Mapping[str, Any]) -> float | None:
    """1.0 failed, 0.0 succeeded, None not a logon attempt."""
    event_id = str(event.get("EventID", ""))
    if event_id not in _OUTCOME:
        return None
    if event_id in ("4776", "4768"):  # NTLM validation / Kerberos TGT: Status 0x0 is success
        return 0.0 if str(event.get("Status", "0x0")).lower() in ("0x0", "0") else 1.0
    return 1.0 if event_id in _FAILED else 0.0


def extract(event: Mapping[str, Any], category: str) -> tuple[float, ...]:
    """(1.0 if a logon attempt, 1.0 if it failed)."""
    if category != "logon":
        return _NOT_AN_ATTEMPT
    failed = outcome(event)
    return _NOT_AN_ATTEMPT if failed is None else (1.0, failed)


@kernel
def step(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray, category: np.ndarray,
         inputs: np.ndarray, state: np.ndarray, world: np.ndarray, out: np.ndarray) -> None:
    for r in range(slot.shape[0]):
        s = state[slot[r]]  # (attempts seen, decayed failure ratio)
        e = event[r]
        out[r, 0] = s[1]
        if category[e] == _LOGON and inputs[e, 0] > 0.0:
            failed = inputs[e, 1]
            s[1] = (1.0 - _WEIGHT) * (failed if s[0] == 0.0 else s[1]) + _WEIGHT * failed
            s[0] += 1.0


FAILED_LOGONS = Feature("failed_logons", ("failed_logon_ratio",), step, state=2, inputs=2, extract=extract,
                        doc="decayed share of failed logons among the entity's logon attempts")
