"""Cutting output records down to their topic's size limit, so that nothing is dropped or retried.

A detection embeds the whole event and a dead letter copies the whole input value, so an input
near the output topic's limit (input topics may allow much more) has nowhere to go: the producer
fails with MSG_SIZE_TOO_LARGE on every retry and the partition stalls. Here such a record is cut
to fit instead: the event's largest values are truncated with a marker, then, if it still does
not fit (100,000 small fields), fields are dropped largest first, the fields named in `keep`
last; a dead letter keeps the prefix of its value. The record says what was cut, and keeps its
`source`, so the original can still be fetched from the input topic.

Pure functions over plain values: no Kafka here.

>>> doc = {"rule": {"id": "r1"}, "source": {"offset": 7}, "event": {"EventID": 1, "CommandLine": "x" * 5000}}
>>> fitted = fit_document(doc, b"ws-01", limit=3000, keep=("CommandLine",))
>>> record_bytes(fitted.key, fitted.value, ()) <= 3000, fitted.truncated["fields"], fitted.truncated["dropped_fields"]
(True, ['CommandLine'], 0)
>>> orjson.loads(fitted.value)["event"]["CommandLine"][-25:]
'xx…[truncated 2767 bytes]'
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# What a record costs beyond its key, value and headers (record and batch framing, header
# lengths); generous, so a record that passes here is never the one the broker refuses.
RECORD_OVERHEAD_BYTES = 512
MIN_VALUE_BYTES = 256  # a truncated value keeps at least this much (its marker included)
LISTED_FIELDS = 20  # at most this many names in `truncated.fields` (each name at most 64 chars)
ENVELOPE_TEXT_BYTES = 1024  # strings outside the event (entity names) are cut to this, if need be
KEY_BYTES = 1024  # a key is cut to this, if need be
# The fields a detection keeps the longest: who, where, when, what ran.
IDENTITY_FIELDS: tuple[str, ...] = (
    "Computer", "EventID", "Channel", "Provider_Name", "EventRecordID", "UtcTime", "TimeCreated_SystemTime",
    "@timestamp", "timestamp", "Image", "ParentImage", "CommandLine", "User", "TargetUserName", "SubjectUserName",
    "ProcessId", "ProcessGuid", "host", "hostname",
)
_OPTIONS = orjson.OPT_NON_STR_KEYS
_NO_LIMIT = 1 << 62


class DoesNotFit(ValueError):
    """Even the cut-down record is over the limit (a limit too small for the record's envelope)."""


@dataclass(frozen=True, slots=True)
class Fitted:
    """A serialized record, and what was cut to make it fit (None: nothing)."""

    key: bytes | None
    value: bytes
    truncated: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EventCut:
    """An event cut down: the fields whose values were shortened, and how many were dropped."""

    event: dict[Any, Any]
    fields: tuple[str, ...] = ()
    dropped: int = 0

    def summary(self, original_bytes: int) -> dict[str, Any]:
        return {"original_bytes": original_bytes, "fields": [name[:64] for name in self.fields[:LISTED_FIELDS]],
                "dropped_fields": self.dropped}


def dumps(value: Any) -> bytes:
    """The JSON the outputs use (non-string keys as text, unknown types as str())."""
    return orjson.dumps(value, option=_OPTIONS, default=str)


def record_bytes(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """What a record counts against a topic's limit, framing included.

    >>> record_bytes(b"k", b"value", [("error", b"bad")])
    526
    """
    return (len(key or b"") + len(value or b"") + sum(len(name.encode()) + len(data) for name, data in headers)
            + RECORD_OVERHEAD_BYTES)


def truncate_text(text: str, max_bytes: int) -> str:
    """`text` cut so that its JSON form (quotes and escapes included) takes at most `max_bytes`,
    ending in a marker that says how many UTF-8 bytes were cut.

    >>> truncate_text("a" * 100, 40)
    'aaaaaaaaaaaaaa…[truncated 86 bytes]'
    >>> len(orjson.dumps(truncate_text("é\\n" * 100, 40))) <= 40
    True
    """
    if len(text) + 2 <= max_bytes and len(orjson.dumps(text)) <= max_bytes:
        return text
    original = len(text.encode("utf-8", "surrogatepass"))
    room = max_bytes - 2 - len(f"…[truncated {original} bytes]".encode())
    if room <= 0:
        return f"…[truncated {original} bytes]"
    # The longest prefix whose JSON fits `room`: every character takes at least one byte, so it
    # is at most `room` characters; plain ASCII takes exactly one, the common case, tried first.
    low, high = 0, min(len(text), room)
    if _json_len(text[:high]) <= room:
        low = high
    while low < high:
        middle = (low + high + 1) // 2
        if _json_len(text[:middle]) <= room:
            low = middle
        else:
            high = middle - 1
    prefix = text[:low]
    return f"{prefix}…[truncated {original - len(prefix.encode('utf-8', 'surrogatepass'))} bytes]"


def _json_len(text: str) -> int:
    try:
        return len(orjson.dumps(text)) - 2
    except TypeError:  # a lone surrogate: JSON cannot carry it, so no prefix that holds one fits
        return 1 << 62


def cut_event(event: Mapping[Any, Any], budget: int, keep: Collection[str] = ()) -> EventCut:
    """`event` in at most `budget` bytes of JSON: values that cannot be serialized (nesting past
    orjson's 254 levels, 65-bit integers) become a marker; then the largest values are truncated
    to a common cap (at least MIN_VALUE_BYTES); then, if still over, fields are dropped largest
    first, those named in `keep` last.

    >>> cut = cut_event({"EventID": 1, "Image": "C:\\\\x.exe", "Payload": "A" * 10_000}, 400)
    >>> cut.fields, cut.dropped, len(dumps(cut.event)) <= 400
    (('Payload',), 0, True)
    >>> cut = cut_event({"EventID": 1, **{f"f{i}": i for i in range(10_000)}}, 400, keep=("EventID",))
    >>> cut.event["EventID"], cut.dropped > 9_000, len(dumps(cut.event)) <= 400
    (1, True, True)
    """
    # (key, value, bytes of `"key":` plus a comma, bytes of the value), in event order
    fields: list[list[Any]] = []
    shortened: list[str] = []
    seen: set[str] = set()
    unwritable = 0
    for raw_key, value in event.items():
        key = raw_key if isinstance(raw_key, str) else _key_text(raw_key)
        key_bytes = _json_len(key) + 4  # `"key":` and a comma
        if key in seen or key_bytes > budget:  # 1 and "1" read the same; JSON cannot hold a lone surrogate
            unwritable += 1
            continue
        seen.add(key)
        try:
            value_bytes = len(dumps(value))
        except TypeError as error:  # orjson.JSONEncodeError
            value = f"[unserializable: {str(error)[:100]}]"
            value_bytes = len(dumps(value))
            shortened.append(key)
        fields.append([key, value, key_bytes, value_bytes])
    total = 2 + sum(f[2] + f[3] for f in fields)
    if total > budget:
        cap = max(_common_cap([f[3] for f in fields], budget - 2 - sum(f[2] for f in fields)), MIN_VALUE_BYTES)
        for entry in fields:
            if entry[3] > cap:
                text = entry[1] if isinstance(entry[1], str) else dumps(entry[1]).decode()
                entry[1] = truncate_text(text, cap)
                total -= entry[3]
                entry[3] = len(dumps(entry[1]))
                total += entry[3]
                if entry[0] not in shortened:
                    shortened.append(entry[0])
    dropped: set[int] = set()
    if total > budget:
        wanted = set(keep)
        order = sorted(range(len(fields)), key=lambda i: (fields[i][0] in wanted, -(fields[i][2] + fields[i][3])))
        for i in order:
            if total <= budget:
                break
            dropped.add(i)
            total -= fields[i][2] + fields[i][3]
    kept = {f[0]: f[1] for i, f in enumerate(fields) if i not in dropped}
    return EventCut(kept, tuple(name for name in shortened if name in kept), len(dropped) + unwritable)


def _key_text(key: Any) -> str:
    """A non-string key as orjson's OPT_NON_STR_KEYS writes it (1 -> "1", None -> "null"), or str()."""
    try:
        return orjson.loads(orjson.dumps({key: 0}, option=_OPTIONS)).popitem()[0]
    except TypeError:
        return str(key)


def _common_cap(sizes: list[int], room: int) -> int:
    """The largest cap such that the sizes, each cut to the cap, sum to at most `room` (water
    filling over the sizes, largest first); 0 when even a cap of 0 is too much.

    >>> _common_cap([1000, 10, 10], 220)
    200
    """
    ordered = sorted(sizes, reverse=True)
    rest = sum(ordered)
    for count, size in enumerate(ordered, 1):
        rest -= size
        cap = (room - rest) // count
        following = ordered[count] if count < len(ordered) else 0
        if cap >= following:
            return min(cap, size)
    return 0


def shorten(value: Any, max_bytes: int) -> Any:
    """`value` with every string (dict keys too) longer than `max_bytes` truncated.

    >>> shorten({"host:" + "w" * 50: 0.5, "user:bob": 0.1}, 40)
    {'host:wwwwwwwwww…[truncated 40 bytes]': 0.5, 'user:bob': 0.1}
    """
    if isinstance(value, str):
        return value if len(value) <= max_bytes // 6 else truncate_text(value, max_bytes)
    if isinstance(value, Mapping):
        return {shorten(k, max_bytes) if isinstance(k, str) else k: shorten(v, max_bytes) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shorten(item, max_bytes) for item in value]
    return value


def fit_document(document: Mapping[str, Any], key: bytes | None, limit: int, keep: Collection[str] = (),
                 headers: Sequence[tuple[str, bytes]] = ()) -> Fitted:
    """`document` serialized to fit `limit` (0: no limit) as one record with `key` and `headers`.

    Over the limit, or not serializable as it is: its "event" is cut (cut_event) and a
    "truncated" entry says what was cut; if the rest alone is still too large, its long strings
    (entity names from the event) and the key are cut too. Raises DoesNotFit when even that
    record is over the limit."""
    try:
        value = dumps(document)
        if not limit or record_bytes(key, value, headers) <= limit:
            return Fitted(key, value)
        original = len(value)
    except TypeError:  # something in the event orjson cannot write: cut_event replaces it
        value, original = None, 0
    envelope = {name: item for name, item in document.items() if name != "event"}
    has_event = "event" in document
    event = document.get("event")
    event = event if isinstance(event, Mapping) else {}
    envelope_bytes = len(dumps(envelope))
    if limit and record_bytes(key, None, headers) + envelope_bytes > limit // 2:
        envelope = shorten(envelope, ENVELOPE_TEXT_BYTES)
        key = key[:KEY_BYTES] if key is not None else None
        envelope_bytes = len(dumps(envelope))
    if not original:
        original = envelope_bytes + len(dumps(cut_event(event, _NO_LIMIT).event))
    # `,"truncated":{...},"event":`, before the names of the cut fields (added in the loop)
    framing = len(dumps({"truncated": EventCut({}).summary(original), "event": None}))
    budget = limit - record_bytes(key, None, headers) - envelope_bytes - framing if limit else _NO_LIMIT
    # The summary's size depends on what is cut, so a cut that overshoots (by the names it
    # lists) is redone with the overshoot taken off the budget; two rounds do in practice.
    for _ in range(4):
        cut = cut_event(event, max(budget, 0), keep)
        summary = cut.summary(original)
        value = dumps({**envelope, "truncated": summary, "event": cut.event} if has_event
                      else {**envelope, "truncated": summary})
        over = record_bytes(key, value, headers) - limit if limit else 0
        if over <= 0:
            return Fitted(key, value, summary)
        budget -= over + 64
    raise DoesNotFit(f"a record of {original} bytes does not fit the topic's limit of {limit} bytes, "
                     f"even cut down to {record_bytes(key, value, headers)}")


def fit_value(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]],
              limit: int) -> tuple[bytes | None, bytes | None, tuple[tuple[str, bytes], ...], bool]:
    """A raw record (a dead letter) cut to `limit`: the prefix of its value, then of its key,
    then (a limit smaller than its headers) of its first header's value (the error: why, which
    can be cut, where the source headers cannot). Returns (key, value, headers, whether cut).
    `headers` should already hold what the cut adds (room for them).

    >>> key, value, headers, cut = fit_value(b"k", b"x" * 2000, [("error", b"bad")], 1000)
    >>> key, len(value), headers, cut
    (b'k', 479, (('error', b'bad'),), True)
    """
    headers = tuple(headers)
    if not limit or record_bytes(key, value, headers) <= limit:
        return key, value, headers, False
    if key is not None and len(key) > KEY_BYTES:
        key = key[:KEY_BYTES]
    room = limit - record_bytes(key, None, headers)
    if room < 0 and headers:
        name, data = headers[0]
        kept = data[:max(len(data) + room, 0)].decode("utf-8", "ignore").encode()  # never half a character
        headers = ((name, kept), *headers[1:])
    room = max(limit - record_bytes(key, None, headers), 0)
    return key, (value[:room] if value is not None else None), headers, True
