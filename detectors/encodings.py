"""Byte-exact `wide`/`utf16*` and `base64*` modifiers.

pySigma 1.x keeps strings as text and turns them into bytes with UTF-8, so `utf16` writes its
byte order mark as EF BB BF instead of FF FE, and non-ASCII text cannot be made wide at all. Here
the UTF-16 modifiers emit one character per byte (latin-1), and the base64 modifiers encode such
strings back byte for byte.

pySigma looks modifiers up in one process-wide table, so installing these replaces pySigma's
versions for every rule parsed in the process, ours or not. That is why it is an explicit call,
`register_modifiers()`, made by the loaders right before they parse, and never an import side
effect: importing `detectors` leaves pySigma as it found it.
"""

from __future__ import annotations

from base64 import b64encode

from sigma.exceptions import SigmaValueError
from sigma.modifiers import (
    SigmaBase64Modifier,
    SigmaBase64OffsetModifier,
    SigmaModifier,
    SigmaUTF16BEModifier,
    SigmaUTF16Modifier,
    SigmaWideModifier,
    modifier_mapping,
    reverse_modifier_mapping,
)
from sigma.types import SigmaExpansion, SigmaString


def _bytes_as_text(val: SigmaString, encoding: str, bom: bytes = b"") -> SigmaString:
    parts: list = [bom.decode("latin-1")] if bom else []
    for item in val.s:
        parts.append(item.encode(encoding).decode("latin-1") if isinstance(item, str) else item)
    out = SigmaString()
    out.s = parts
    return out


class WideModifier(SigmaWideModifier):
    def modify(self, val: SigmaString) -> SigmaString:
        return _bytes_as_text(val, "utf-16le")


class UTF16BEModifier(SigmaUTF16BEModifier):
    def modify(self, val: SigmaString) -> SigmaString:
        return _bytes_as_text(val, "utf-16be")


class UTF16Modifier(SigmaUTF16Modifier):
    def modify(self, val: SigmaString) -> SigmaString:
        return _bytes_as_text(val, "utf-16le", bom=b"\xff\xfe")


_BYTE_MODIFIERS = (WideModifier, UTF16BEModifier, UTF16Modifier)


def _raw_bytes(modifier: SigmaBase64Modifier | SigmaBase64OffsetModifier, val: SigmaString) -> bytes:
    """The bytes a string stands for: latin-1 after a UTF-16 modifier, UTF-8 otherwise."""
    if val.contains_special():
        raise SigmaValueError("Base64 encoding of strings with wildcards is not allowed", source=modifier.source)
    text = str(val)
    if any(issubclass(m, _BYTE_MODIFIERS) for m in modifier.applied_modifiers):
        return text.encode("latin-1")
    return text.encode("utf-8")


class Base64Modifier(SigmaBase64Modifier):
    def modify(self, val: SigmaString) -> SigmaString:
        return SigmaString(b64encode(_raw_bytes(self, val)).decode())


class Base64OffsetModifier(SigmaBase64OffsetModifier):
    def modify(self, val: SigmaString) -> SigmaExpansion:
        raw = _raw_bytes(self, val)
        return SigmaExpansion(
            [
                SigmaString(
                    b64encode(i * b" " + raw)[self.start_offsets[i] : self.end_offsets[(len(raw) + i) % 3]].decode()
                )
                for i in range(3)
            ]
        )


# What `register_modifiers` installs, by modifier name.
_REPLACEMENTS: tuple[tuple[str, type[SigmaModifier]], ...] = (
    ("wide", WideModifier),
    ("utf16le", WideModifier),
    ("utf16be", UTF16BEModifier),
    ("utf16", UTF16Modifier),
    ("base64", Base64Modifier),
    ("base64offset", Base64OffsetModifier),
)


def register_modifiers() -> None:
    """Install the byte-exact modifiers in pySigma's modifier table, plus the v2.1 name `utf16le`.

    Idempotent: a second call writes the same entries again, so every loader can call it before
    it parses without keeping track of who called it first.

    >>> from sigma.modifiers import modifier_mapping
    >>> register_modifiers()
    >>> modifier_mapping["wide"] is WideModifier and modifier_mapping["utf16le"] is WideModifier
    True
    """
    for name, cls in _REPLACEMENTS:
        modifier_mapping[name] = cls
        # utf16le is an alias: the canonical name of WideModifier stays `wide`.
        reverse_modifier_mapping[cls.__name__] = "wide" if name == "utf16le" else name
