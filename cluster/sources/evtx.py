"""Flatten one EVTX record, as rendered by the `evtx` package, into a flat Sigma event.

The rules are those of "The flattened Windows event shape" in shared/README.md. The `evtx`
package renders XML as JSON like this: an element holding only text becomes its value (ints
stay ints), an empty element becomes null, anything else becomes an object with the element's
attributes under `#attributes`, its text under `#text` and one key per child element (repeats
get `_1`, `_2` suffixes). Inside EventData/UserData, `<Data Name="X">` becomes key `X`; unnamed
`<Data>` elements become `{"Data": {"#text": value-or-list}}`.

An empty data element (`<Data Name="X"/>`, rendered as null) is kept as `"X": null`, as the
flattened JSON lines convention does: dropping it would make `X|exists` and `X: null` answer
differently for the EVTX and the JSON form of one event. Empty System elements (`<Correlation/>`)
carry no field of the event and stay out.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_NOT_KEY_CHAR = re.compile(r"[^A-Za-z0-9_]")
_ATTRS = "#attributes"
_TEXT = "#text"


def flatten_evtx_record(record: dict) -> dict:
    """Return the flat event dict for one record from `PyEvtxParser.records_json()`.

    Raises ValueError when the record is not a rendered `<Event>`.
    """
    data = record.get("data") if isinstance(record, dict) else None
    if not isinstance(data, (str, bytes)):
        raise ValueError("EVTX record has no 'data' JSON string")
    root = orjson.loads(data)
    event = root.get("Event") if isinstance(root, dict) else None
    if not isinstance(event, dict):
        raise ValueError("EVTX record data has no 'Event' object")

    out: dict[str, Any] = {}
    system = event.get("System")
    if isinstance(system, dict):
        for name, value in system.items():
            if name != _ATTRS:
                _walk(out, _key(name), value, "System")
    for section, value in event.items():
        if section == "EventData":
            _put_fields(out, value, "EventData")
        elif section == "UserData":
            # Each child of UserData is a provider-specific wrapper element: drop its name.
            if isinstance(value, dict):
                for wrapper, inner in value.items():
                    if wrapper == _ATTRS:
                        continue
                    if isinstance(inner, dict):
                        _put_fields(out, inner, "UserData")
                    else:
                        _walk(out, _key(wrapper), inner, "UserData")
        elif section not in ("System", _ATTRS):
            # RenderingInfo, ProcessingErrorData, ...: keep them, prefixed, rather than lose them.
            _walk(out, _key(section), value, section)
    return out


def _put_fields(out: dict[str, Any], fields: Any, origin: str) -> None:
    """Put each child of a data container at top level; the container's attributes are dropped."""
    if not isinstance(fields, dict):
        _walk(out, origin, fields, origin)
        return
    for name, value in fields.items():
        if name == _ATTRS:
            continue
        _walk(out, origin if name == _TEXT else _key(name), value, origin, keep_null=True)


def _walk(out: dict[str, Any], key: str, value: Any, origin: str, keep_null: bool = False) -> None:
    """Store `value` under `key`; nested elements and attributes get `key_child` names.

    `keep_null`: an empty element is a field with a null value (EventData/UserData) rather than
    nothing at all (System and the other sections)."""
    if value is None:
        if keep_null:
            _store(out, key, None, origin)
        return
    if not isinstance(value, dict):
        _store(out, key, value, origin)
        return
    for name, child in value.items():
        if name == _ATTRS:
            if isinstance(child, dict):
                for attr, attr_value in child.items():
                    if not attr.startswith("xmlns"):  # namespace declarations are not data
                        _walk(out, _join(key, attr), attr_value, origin)
        elif name == _TEXT:
            _walk(out, key, child, origin, keep_null)
        else:
            _walk(out, _join(key, name), child, origin, keep_null)


def _store(out: dict[str, Any], key: str, value: Any, origin: str) -> None:
    # The first writer of a key wins (System comes first); later ones move to `<origin>_<key>`.
    if key and key not in out:
        out[key] = value
        return
    alt = _join(origin, key)
    candidate, n = alt, 1
    while candidate in out:
        candidate = f"{alt}_{n}"
        n += 1
    out[candidate] = value


def _key(name: str) -> str:
    return _NOT_KEY_CHAR.sub("", name)


def _join(prefix: str, name: str) -> str:
    name = _key(name)
    return f"{prefix}_{name}" if prefix and name else prefix or name
