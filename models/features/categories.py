"""The coarse activity category of an event, for per-category rates and rarity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CATEGORIES = ("process", "network", "file", "registry", "image_load", "process_access", "dns", "logon",
              "powershell", "other")
_SYSMON = {1: "process", 3: "network", 7: "image_load", 8: "process_access", 10: "process_access",
           11: "file", 23: "file", 26: "file", 15: "file", 2: "file", 12: "registry", 13: "registry",
           14: "registry", 22: "dns"}
_SECURITY = {4624: "logon", 4625: "logon", 4634: "logon", 4647: "logon", 4648: "logon", 4672: "logon",
             4768: "logon", 4769: "logon", 4771: "logon", 4776: "logon", 4688: "process", 4689: "process",
             5156: "network", 5157: "network", 4656: "process_access", 4663: "file", 4657: "registry"}


def _event_id(event: Mapping[str, Any]) -> int | None:
    value = event.get("EventID")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def event_category(event: Mapping[str, Any]) -> str:
    channel = str(event.get("Channel", ""))
    number = _event_id(event)
    if number is None:
        return "other"
    if "Sysmon" in channel:
        return _SYSMON.get(number, "other")
    if channel == "Security":
        return _SECURITY.get(number, "other")
    if "PowerShell" in channel:
        return "powershell"
    return "other"


CATEGORY_INDEX: dict[str, int] = {name: i for i, name in enumerate(CATEGORIES)}
