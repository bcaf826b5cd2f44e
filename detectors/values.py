"""How event values are normalized before they are compared.

Both evaluation modes and the prefilter index go through these functions, so a value that the
full evaluator accepts is always found by the index: soundness depends on sharing them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Number = int | float


def to_number(value: Any) -> Number | None:
    """The numeric reading of a value: ints, floats and numeric strings ("4688", "1.5")."""
    cls = value.__class__
    if cls is int:
        return value
    if cls is float:
        return value
    if cls is str:
        text = value.strip()
        if not text or len(text) > 40:
            return None
        first = text[0]
        # Most strings are not numbers; failing int() and float() costs two exceptions. Only a
        # sign, a dot or a digit can start a finite number (inf and nan are refused below).
        if not (first.isdigit() or first in "+-."):
            return None
        try:
            return int(text, 10)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def canonical_number(number: Number) -> str:
    """One spelling per numeric value, so 4688, 4688.0 and "04688" share a key."""
    if isinstance(number, float):
        if number.is_integer():
            return str(int(number))
        return repr(number)
    return str(number)


def as_text(value: Any) -> str | None:
    """The string form that string matching sees; None for values that are not scalars."""
    cls = value.__class__
    if cls is str:
        return value
    if cls is bool:
        return "true" if value else "false"
    if cls is int or cls is float:
        return str(value)
    return None


def equality_key(value: Any) -> str | None:
    """The key under which the index files a value for exact-match lookups.

    Equal lowercase strings get equal keys, and numerically equal values get equal keys.
    """
    text = as_text(value)
    if text is None:
        return None
    number = to_number(value) if value.__class__ is not bool else None
    if number is not None:
        return canonical_number(number)
    return text.lower()


def iter_scalars(value: Any) -> Iterator[Any]:
    """The scalar values a field holds: a list matches when any element matches."""
    if value.__class__ is list or value.__class__ is tuple:
        for item in value:
            if item.__class__ is list or item.__class__ is tuple:
                yield from iter_scalars(item)
            elif item is not None:
                yield item
    elif value is not None:
        yield value


def iter_all_strings(event: Mapping[str, Any]) -> Iterator[str]:
    """Every string value of an event, nested objects and lists included (keyword search)."""
    stack: list[Any] = [event]
    while stack:
        item = stack.pop()
        cls = item.__class__
        if cls is str:
            yield item
        elif cls is dict or isinstance(item, Mapping):
            stack.extend(item.values())
        elif cls is list or cls is tuple:
            stack.extend(item)


_MISSING = object()


def field_getter(name: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading field `name` from an event; dotted names reach into nested objects.

    A flat key that contains dots wins over the nested path, since flattened events keep them.
    Returns None when the field is absent.
    """
    if "." not in name:
        def get_flat(event: Mapping[str, Any]) -> Any:
            return event.get(name)

        return get_flat
    path = tuple(name.split("."))

    def get_dotted(event: Mapping[str, Any]) -> Any:
        value = event.get(name, _MISSING)
        if value is not _MISSING:
            return value
        node: Any = event
        for part in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(part)
            if node is None:
                return None
        return node

    return get_dotted


def field_present(event: Mapping[str, Any], name: str) -> bool:
    """Whether the field exists at all (the `exists` modifier ignores its value)."""
    if name in event:
        return True
    if "." not in name:
        return False
    node: Any = event
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
