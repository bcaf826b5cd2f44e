"""Failed-logon ratio of an entity: a decayed share of failures among its logon attempts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.features.base import Feature, View

_WEIGHT = 0.1
_FAILED = {"4625", "4771"}
_OUTCOME = {"4624", "4625", "4771", "4776", "4768"}


def outcome(event: Mapping[str, Any]) -> float | None:
    """1.0 failed, 0.0 succeeded, None not a logon attempt."""
    event_id = str(event.get("EventID", ""))
    if event_id not in _OUTCOME:
        return None
    if event_id in ("4776", "4768"):  # NTLM validation / Kerberos TGT: Status 0x0 is success
        return 0.0 if str(event.get("Status", "0x0")).lower() in ("0x0", "0") else 1.0
    return 1.0 if event_id in _FAILED else 0.0


def step(view: View) -> tuple[float, ...]:
    values = view.state.values
    ratio = values.get("fail_ratio")
    if view.category == "logon":
        failed = outcome(view.event)
        if failed is not None:
            values["fail_ratio"] = (1 - _WEIGHT) * (failed if ratio is None else ratio) + _WEIGHT * failed
    return (0.0 if ratio is None else ratio,)


FAILED_LOGONS = Feature("failed_logons", ("failed_logon_ratio",), step,
                        "decayed share of failed logons among the entity's logon attempts")
