"""A JSON Schema (draft 2020-12) for one OCSF event class, generated from the schema that
`ocsf-lib` compiles (`python -m ocsf.compile <schema dir>` prints one JSON document).

ocsf-lib 0.10 compiles, compares and checks schemas but does not validate events, so the tests
turn the compiled class into a JSON Schema and validate with `jsonschema`. What it checks, as the
OCSF server's validator does: every required attribute (attributes added by a profile only when
that profile is applied), attribute types (scalar types resolved through the schema's `types`),
arrays, the closed enums of `*_id` integer attributes, `at_least_one` / `just_one` constraints,
and no attribute the class or object does not define (at class level, none from a profile that is
not applied: an event declares its profiles in `metadata.profiles`). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_SCALARS = {"string_t": "string", "integer_t": "integer", "long_t": "integer", "float_t": "number",
            "boolean_t": "boolean"}


def _scalar(types: Mapping[str, Any], name: str) -> str | None:
    """The JSON type of an OCSF scalar type, following `type` links (timestamp_t -> long_t)."""
    seen = 0
    while name not in _SCALARS and name in types and seen < 8:
        base = types[name].get("type")
        if base is None:
            break
        name, seen = base, seen + 1
    return _SCALARS.get(name)


class _Builder:
    def __init__(self, compiled: Mapping[str, Any], profiles: Iterable[str]) -> None:
        self.types: Mapping[str, Any] = compiled["types"]
        self.objects: Mapping[str, Any] = compiled["objects"]
        self.profiles = frozenset(profiles)
        self.defs: dict[str, Any] = {}

    def attribute(self, attr: Mapping[str, Any]) -> dict[str, Any]:
        kind = attr["type"]
        schema: dict[str, Any]
        if kind == "json_t":
            schema = {}
        elif kind == "object":
            schema = {"type": "object"}
        elif kind in self.types:
            json_type = _scalar(self.types, kind)
            schema = {"type": json_type} if json_type else {}
            enum = attr.get("enum")
            if enum and json_type == "integer":
                schema["enum"] = sorted(int(value) for value in enum)
        else:
            schema = {"$ref": f"#/$defs/{self.reference(kind)}"}
        if attr.get("is_array"):
            return {"type": "array", "items": schema}
        return schema

    def reference(self, name: str) -> str:
        key = name.replace("/", "__")
        if key not in self.defs:
            self.defs[key] = {}  # placeholder against recursion (process.parent_process, ...)
            self.defs[key] = self.shape(self.objects[name])
        return key

    def shape(self, item: Mapping[str, Any], strict_profiles: bool = False) -> dict[str, Any]:
        attributes: Mapping[str, Any] = item.get("attributes") or {}
        if strict_profiles:  # the class: attributes of a profile that is not applied are not allowed
            attributes = {name: attr for name, attr in attributes.items()
                          if attr.get("profile") is None or attr.get("profile") in self.profiles}
        properties = {name: self.attribute(attr) for name, attr in attributes.items()}
        required = sorted(name for name, attr in attributes.items()
                          if attr.get("requirement") == "required"
                          and (attr.get("profile") is None or attr.get("profile") in self.profiles))
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if required:
            schema["required"] = required
        constraints = item.get("constraints") or {}
        if constraints.get("at_least_one"):
            schema["anyOf"] = [{"required": [name]} for name in constraints["at_least_one"]]
        if constraints.get("just_one"):
            schema["oneOf"] = [{"required": [name]} for name in constraints["just_one"]]
        return schema


def class_json_schema(compiled: Mapping[str, Any], class_name: str, profiles: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON Schema of OCSF class `class_name` (e.g. "detection_finding") in `compiled`, with
    the given profiles applied (their required attributes become required)."""
    builder = _Builder(compiled, profiles)
    item = compiled["classes"][class_name]
    schema = builder.shape(item, strict_profiles=True)
    schema["properties"]["class_uid"]["const"] = item["uid"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": item.get("caption", class_name),
            **schema, "$defs": builder.defs}
