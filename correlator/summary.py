"""Alerts as people and SOARs read them: an alerts-topic record decoded (`decode_alert`), one
terminal-safe line per alert (`alert_line`, with `why_terms`: the top terms of its explanation),
and a terminal-safe JSON line (`json_line`). `sigmaray alerts tail`, the webhook forwarder and
`sigmaray demo` all use these. Pure: no I/O.

Alerts carry event values (host and user names, titles built from them): they are
attacker-controlled, so every control and format character (ANSI escapes, newlines, bidi
overrides) is shown as its escape (`\\x1b`), never sent to a terminal.

>>> inert("ws5\\x1b[2J")
'ws5\\\\x1b[2J'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from correlator.ocsf import ACTIVITIES

__all__ = ["AlertRecord", "alert_line", "decode_alert", "header_values", "inert", "json_line", "priority_number",
           "why_terms"]

HeaderValue = str | bytes | None
Headers = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]] | None  # as confluent_kafka gives them
FIELD_LIMIT = 120  # characters of one event-controlled field shown on a line (a hostile name can be huge)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alerts-topic record, decoded: what the webhook sink reads of an alert."""

    alert_id: str
    activity: str  # Create | Update | Close
    priority: int  # 1..4
    count: int
    ocsf: dict[str, Any]


def header_values(headers: Headers) -> dict[str, str]:
    """Kafka record headers as text (the last value of a repeated name wins)."""
    out: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in pairs:
        if value is None:
            continue
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return out


def priority_number(value: Any) -> int | None:
    """1..4 from "P2", "p2", "2" or 2; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip().upper().removeprefix("P")
        value = int(text) if text.isdigit() else None
    return value if isinstance(value, int) and 1 <= value <= 4 else None


def decode_alert(value: bytes | None, headers: Headers = None) -> AlertRecord:
    """An alerts-topic record (OCSF Detection Finding JSON, headers `activity` and `priority`) as an
    AlertRecord; ValueError naming what is wrong (never quoting the record: it may be hostile)."""
    if value is None:
        raise ValueError("tombstone: the record has no value")
    try:
        ocsf = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"invalid JSON: {error}") from None
    if not isinstance(ocsf, dict):
        raise ValueError(f"not a JSON object but {type(ocsf).__name__}")
    info = ocsf.get("finding_info")
    alert_id = info.get("uid") if isinstance(info, dict) else None
    if not isinstance(alert_id, str) or not alert_id:
        raise ValueError("no alert id (finding_info.uid)")
    named = header_values(headers)
    activity_id = ocsf.get("activity_id")
    # The finding itself is authoritative; the headers are the correlator's copy for routing.
    activity = ACTIVITIES.get(activity_id) if type(activity_id) is int else None
    activity = activity or (named.get("activity") if named.get("activity") in ACTIVITIES.values() else None)
    if activity is None:
        raise ValueError("no activity (activity_id 1, 2 or 3)")
    priority = priority_number(ocsf.get("priority")) or priority_number(named.get("priority"))
    if priority is None:
        raise ValueError("no priority (P1..P4)")
    count = ocsf.get("count")
    if type(count) is not int or count < 1:
        raise ValueError("no count (a positive integer)")
    return AlertRecord(alert_id, activity, priority, count, ocsf)


def inert(text: str) -> str:
    """`text` safe for a terminal: every non-printable character (C0/C1 controls such as ESC,
    newlines, format characters such as bidi overrides) becomes its Python escape, e.g. `\\x1b`."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _short(value: Any, limit: int = FIELD_LIMIT) -> str:
    text = inert(str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def why_terms(explanation: dict[str, Any]) -> list[str]:
    """The top terms of an alert's explanation: contributing rules with their counts, tactics, the
    highest anomaly score, asset criticality and the priority's reasons (P1 gates first)."""
    terms: list[str] = []
    rules = [rule for rule in _items(explanation.get("rules")) if isinstance(rule, dict)]
    if rules:
        rules.sort(key=lambda rule: rule["count"] if type(rule.get("count")) is int else 0, reverse=True)
        shown = ", ".join(f"{_short(rule.get('title') or rule.get('id'), 60)} x{rule.get('count', 1)}" for rule in rules[:3])
        terms.append(f"rules {shown}" + (f" (+{len(rules) - 3} more)" if len(rules) > 3 else ""))
    tactics = [name for name in _items(explanation.get("tactics")) if isinstance(name, str)]
    if tactics:
        terms.append("tactics " + ", ".join(tactics[:4]) + (f" (+{len(tactics) - 4})" if len(tactics) > 4 else ""))
    anomaly = _mapping(explanation.get("anomaly"))
    scores = [_mapping(item).get("score") for item in anomaly.values()]
    best = max((s for s in scores if isinstance(s, int | float) and not isinstance(s, bool)), default=0)
    if best > 0:
        terms.append(f"anomaly {best:.2f}")
    criticality = _mapping(explanation.get("criticality"))
    for kind in ("host", "user"):
        level = _mapping(criticality.get(kind)).get("criticality")
        if level:
            terms.append(f"{kind} criticality {level}")
    priority = _mapping(explanation.get("priority"))
    terms += [str(item) for item in _items(priority.get("p1_gates"))[:2]]
    terms += [str(item) for item in _items(priority.get("reasons"))[:2]]
    return [inert(term) for term in terms]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _time(ms: Any) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-"
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "-"


def alert_line(alert: AlertRecord) -> str:
    """One terminal-safe line: time, priority, activity, entity, title, count, why, alert id."""
    ocsf = alert.ocsf
    explanation = _mapping(_mapping(_mapping(ocsf.get("unmapped")).get("sigmaray")).get("explanation"))
    resources = _items(ocsf.get("resources"))
    entity = _mapping(explanation.get("entity")).get("host") or (_mapping(resources[0]).get("name") if resources else None)
    info = _mapping(ocsf.get("finding_info"))
    why = "; ".join(why_terms(explanation)) or "-"
    return (f"{_time(ocsf.get('time'))} P{alert.priority} {alert.activity:<6} {_short(entity or '-', 40)}  "
            f"{_short(info.get('title', '-'))}  x{alert.count}  why: {why}  id {_short(alert.alert_id, 64)}")


def json_line(ocsf: dict[str, Any]) -> str:
    """The finding as one line of JSON, terminal-safe: orjson escapes C0 controls; C1 controls,
    DEL and format characters (which some terminals act on) are escaped here (still valid JSON,
    the same value)."""
    text = orjson.dumps(ocsf).decode("utf-8")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else
                   "".join(f"\\u{unit:04x}" for unit in _surrogates(ord(ch))) for ch in text)


def _surrogates(code: int) -> tuple[int, int]:
    code -= 0x10000
    return 0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF)
