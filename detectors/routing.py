"""Logsource routing: which Sigma logsources (product / category / service) an event belongs to.

A rule only sees the events of its logsource: `rule_applies(rule_logsource, mapping.route(event))`.
The mapping YAML (format documented in `logsources/windows.yml`) is read and validated once, at
construction; `route` is then a pure function of the event's `key_fields` values, with no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from detectors.errors import MappingError, SourceLocation

__all__ = [
    "LogSource",
    "LogsourceMapping",
    "MappingError",
    "Route",
    "rule_applies",
]

DEFAULT_MAPPING_PATH = Path(__file__).parent / "logsources" / "windows.yml"

DEFAULT_HINTS: dict[str, tuple[str, ...]] = {
    "product": ("logsource_product", "logsource.product"),
    "category": ("logsource_category", "logsource.category"),
    "service": ("logsource_service", "logsource.service"),
}


@dataclass(frozen=True, slots=True, order=True)
class LogSource:
    """A Sigma logsource triple; None means "not specified"."""

    product: str | None = None
    category: str | None = None
    service: str | None = None

    def covers(self, other: LogSource) -> bool:
        """True when every non-None field of self equals other's (a rule's logsource covers an event's)."""
        return (
            (self.product is None or self.product == other.product)
            and (self.category is None or self.category == other.category)
            and (self.service is None or self.service == other.service)
        )

    def sort_key(self) -> tuple[str, str, str]:
        """A key for sorted(): the generated ordering raises TypeError when None meets a string."""
        return (self.product or "", self.category or "", self.service or "")


@dataclass(frozen=True, slots=True)
class Route:
    """The logsources an event belongs to, and the rule→event field renames that apply to it."""

    logsources: frozenset[LogSource]
    field_aliases: tuple[tuple[str, str], ...] = ()


def rule_applies(rule_logsource: LogSource, route: Route) -> bool:
    """True when the rule's logsource covers any of the event's logsources."""
    return any(rule_logsource.covers(ls) for ls in route.logsources)


# --- value normalisation ----------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?\d+")


def _norm(value: Any) -> str | None:
    """Canonical form for condition comparison: 4688 == "4688"; strings compare case-insensitively."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return str(int(text))
        return text.casefold()
    return None


def _freeze(value: Any) -> Any:
    """A hashable stand-in for an event value (lists → tuples, mappings → sorted item tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted(((str(k), _freeze(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    return value


def _lookup(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# --- compiled mapping -------------------------------------------------------------------------

# One `when` alternative: every (field, allowed values) pair must match.
_Conjunction = tuple[tuple[str, frozenset[str]], ...]


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    alternatives: tuple[_Conjunction, ...]
    aliases: tuple[tuple[str, str], ...]

    def matches(self, event: Mapping[str, Any]) -> bool:
        return any(all(_field_matches(event.get(f), allowed) for f, allowed in conj) for conj in self.alternatives)


def _field_matches(value: Any, allowed: frozenset[str]) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_norm(v) in allowed for v in value)
    return _norm(value) in allowed


@dataclass(frozen=True, slots=True)
class _Service:
    name: str
    categories: tuple[_Category, ...]


class LogsourceMapping:
    """Routes events to Sigma logsources; built once from a validated mapping YAML."""

    __slots__ = ("source", "product", "channel_field", "key_fields", "_by_channel", "_hints", "_services")

    def __init__(self, config: Any, source: str = "<mapping>") -> None:
        """Validate a parsed mapping document; raises MappingError naming `source` and the key."""
        v = _Validator(source)
        doc = v.mapping(config, "<top level>")
        v.known_keys(doc, "<top level>", {"version", "product", "channel_field", "hints", "services"})
        version = doc.get("version", 1)
        if version != 1:
            v.fail("version", f"unsupported format version {version!r} (only 1 exists)")
        self.source = source
        self.product: str = v.text(doc.get("product", "windows"), "product")
        self.channel_field: str = v.text(doc.get("channel_field", "Channel"), "channel_field")
        self._hints = self._parse_hints(v, doc.get("hints"))
        self._services, self._by_channel = self._parse_services(v, doc)

        condition_fields = sorted(
            {f for svc in self._services for cat in svc.categories for conj in cat.alternatives for f, _ in conj}
            - {self.channel_field}
        )
        hint_roots = sorted({path[0] for paths in self._hints.values() for path in paths})
        ordered = [self.channel_field, *condition_fields, *hint_roots]
        self.key_fields: tuple[str, ...] = tuple(dict.fromkeys(ordered))

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, path: str | Path) -> LogsourceMapping:
        """Load and validate a mapping YAML file."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        try:
            config = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as error:
            raise MappingError(f"invalid YAML: {error}", SourceLocation(path=str(path))) from error
        return cls(config, source=str(path))

    @classmethod
    def default(cls) -> LogsourceMapping:
        """The project's default Windows mapping (detectors/logsources/windows.yml), loaded once."""
        return _default_mapping()

    @staticmethod
    def _parse_hints(v: _Validator, raw: Any) -> dict[str, tuple[tuple[str, ...], ...]]:
        if raw is None:
            spec: Mapping[str, Any] = DEFAULT_HINTS
        else:
            spec = v.mapping(raw, "hints")
            v.known_keys(spec, "hints", set(DEFAULT_HINTS))
        hints: dict[str, tuple[tuple[str, ...], ...]] = {}
        for part in DEFAULT_HINTS:
            fields = spec.get(part, ())
            if isinstance(fields, (str, tuple)):
                fields = [fields] if isinstance(fields, str) else list(fields)
            paths = []
            for i, name in enumerate(v.sequence(fields, f"hints.{part}", allow_empty=True)):
                name = v.text(name, f"hints.{part}[{i}]")
                if any(not p for p in name.split(".")):
                    v.fail(f"hints.{part}[{i}]", f"{name!r} has an empty path segment")
                paths.append(tuple(name.split(".")))
            hints[part] = tuple(paths)
        return hints

    @staticmethod
    def _parse_services(
        v: _Validator, doc: Mapping[str, Any]
    ) -> tuple[tuple[_Service, ...], dict[str, tuple[_Service, ...]]]:
        if "services" not in doc:
            v.fail("services", "missing (a mapping of service name to channels/categories)")
        raw_services = v.mapping(doc["services"], "services")
        services: list[_Service] = []
        by_channel: dict[str, list[_Service]] = {}
        for name, raw in raw_services.items():
            key = f"services.{name}"
            name = v.text(name, key)
            body = v.mapping(raw, key)
            v.known_keys(body, key, {"channels", "categories"})
            if "channels" not in body:
                v.fail(f"{key}.channels", "missing (a list of channel names)")
            channels = [
                v.text(c, f"{key}.channels[{i}]").casefold()
                for i, c in enumerate(v.sequence(body["channels"], f"{key}.channels"))
            ]
            categories = []
            for cat_name, cat_raw in v.mapping(body.get("categories", {}), f"{key}.categories").items():
                categories.append(_parse_category(v, f"{key}.categories.{cat_name}", cat_name, cat_raw))
            service = _Service(name, tuple(categories))
            services.append(service)
            for channel in dict.fromkeys(channels):
                by_channel.setdefault(channel, []).append(service)
        return tuple(services), {c: tuple(s) for c, s in by_channel.items()}

    # --- routing ------------------------------------------------------------------------------

    def route(self, event: Mapping[str, Any]) -> Route:
        """The logsources of `event`; a pure function of its `key_fields` values."""
        logsources: set[LogSource] = set()
        aliases: set[tuple[str, str]] = set()
        channel = event.get(self.channel_field)
        if isinstance(channel, str) and channel.strip():
            # Windows channel names are case-insensitive (OTRF has both "Security" and "security").
            services = self._by_channel.get(channel.strip().casefold(), ())
            if not services:
                logsources.add(LogSource(self.product))
            for service in services:
                logsources.add(LogSource(self.product, None, service.name))
                for category in service.categories:
                    if category.matches(event):
                        logsources.add(LogSource(self.product, category.name, service.name))
                        aliases.update(category.aliases)
        hinted = self._hinted(event)
        if hinted is not None:
            logsources.add(hinted)
        return Route(frozenset(logsources), tuple(sorted(aliases)))

    def route_key(self, event: Mapping[str, Any]) -> tuple[Any, ...]:
        """The hashable tuple of the event's `key_fields` values: equal keys give equal routes."""
        return tuple(_freeze(event.get(f)) for f in self.key_fields)

    def _hinted(self, event: Mapping[str, Any]) -> LogSource | None:
        found: dict[str, str | None] = {}
        for part, paths in self._hints.items():
            found[part] = None
            for path in paths:
                value = _lookup(event, path)
                if isinstance(value, str) and value.strip():
                    found[part] = value.strip().lower()
                    break
        if not any(found.values()):
            return None
        return LogSource(found["product"], found["category"], found["service"])

    def __repr__(self) -> str:
        return f"LogsourceMapping(source={self.source!r}, services={len(self._services)})"


@functools.cache
def _default_mapping() -> LogsourceMapping:
    return LogsourceMapping.from_yaml(DEFAULT_MAPPING_PATH)


# --- validation -------------------------------------------------------------------------------


def _parse_category(v: _Validator, key: str, name: Any, raw: Any) -> _Category:
    name = v.text(name, key)
    body = v.mapping(raw, key)
    v.known_keys(body, key, {"when", "fieldmappings"})
    if "when" not in body:
        v.fail(f"{key}.when", "missing (a mapping of event field to value(s))")
    when = body["when"]
    raw_alternatives = when if isinstance(when, list) else [when]
    if not raw_alternatives:
        v.fail(f"{key}.when", "is an empty list")
    alternatives: list[_Conjunction] = []
    for i, alt in enumerate(raw_alternatives):
        alt_key = f"{key}.when" if not isinstance(when, list) else f"{key}.when[{i}]"
        conditions = v.mapping(alt, alt_key)
        if not conditions:
            v.fail(alt_key, "has no conditions")
        conj = []
        for field, values in conditions.items():
            field_key = f"{alt_key}.{field}"
            field = v.text(field, field_key)
            listed = values if isinstance(values, list) else [values]
            allowed = set()
            for value in v.sequence(listed, field_key):
                normalised = _norm(value)
                if normalised is None or isinstance(value, bool):
                    v.fail(field_key, f"value {value!r} is not a string or integer")
                allowed.add(normalised)
            conj.append((field, frozenset(allowed)))
        alternatives.append(tuple(conj))
    aliases = []
    for rule_field, event_field in v.mapping(body.get("fieldmappings", {}), f"{key}.fieldmappings").items():
        fm_key = f"{key}.fieldmappings.{rule_field}"
        aliases.append((v.text(rule_field, fm_key), v.text(event_field, fm_key)))
    return _Category(name, tuple(alternatives), tuple(aliases))


class _Validator:
    """Type checks that raise MappingError naming the file and the offending key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> NoReturn:
        raise MappingError(f"logsource mapping key {key!r}: {problem}", SourceLocation(path=self.source))

    def mapping(self, value: Any, key: str) -> Mapping[Any, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def sequence(self, value: Any, key: str, allow_empty: bool = False) -> list[Any]:
        if not isinstance(value, list):
            self.fail(key, f"expected a list, got {type(value).__name__}")
        if not value and not allow_empty:
            self.fail(key, "is an empty list")
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"expected a non-empty string, got {value!r}")
        return value.strip()

    def known_keys(self, body: Mapping[Any, Any], key: str, allowed: set[str]) -> None:
        unknown = sorted(str(k) for k in body if k not in allowed)
        if unknown:
            self.fail(key, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML loading silently overwrites."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let SafeLoader report it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
