"""Event time as integer milliseconds, read from the event itself (never from the wall clock)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

TIME_FIELDS: tuple[str, ...] = ("TimeCreated_SystemTime", "UtcTime", "@timestamp", "timestamp")


def parse_time_ms(value: Any) -> int | None:
    """ISO 8601 text (with `Z`, an offset or none: UTC), Sysmon's `2019-05-14 00:01:02.123`, or
    epoch numbers (seconds or milliseconds). None when it is not a time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value * 1000) if value < 10**11 else int(value)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if text.endswith("ms") and text[:-2].isdigit():  # the detector's fallback: broker timestamp
        return int(text[:-2])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def event_time_ms(event: Mapping[str, Any], fields: tuple[str, ...] = TIME_FIELDS) -> int | None:
    for name in fields:
        parsed = parse_time_ms(event.get(name))
        if parsed is not None:
            return parsed
    return None
