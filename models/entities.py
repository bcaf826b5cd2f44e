"""Which entities an event is about: host, user, addresses, process image.

The mapping is data (entity type -> the event fields that name it, first present wins), so a
deployment with other log shapes configures it instead of changing code. The defaults follow
the flattened Windows events of ../shared/README.md (Sysmon and Security channels); rules per
Sigma logsource (EntityMapping) override them for the events of that logsource, routed by the
same mapping the Sigma engine uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detectors.errors import ConfigError
from detectors.routing import LogSource, LogsourceMapping

DEFAULT_ENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "host": ("Computer", "host", "hostname"),
    "user": ("User", "TargetUserName", "SubjectUserName", "AccountName"),
    "src_ip": ("SourceIp", "IpAddress", "src_ip"),
    "dst_ip": ("DestinationIp", "dst_ip"),
    "process": ("Image", "NewProcessName", "SourceImage", "ProcessName"),
}
# Values that name no one: machine accounts, placeholders, loopback.
_NOBODY = frozenset({"", "-", "::1", "127.0.0.1", "0.0.0.0", "system", "local service", "network service",
                     "anonymous logon", "n/a", "null", "dwm-1", "dwm-2", "umfd-0", "umfd-1"})


class Entity:
    """One entity: its type ("host"), its key ("ws-01") and its id ("host:ws-01"), the name it
    has everywhere (tables, detections). Immutable by convention; cheap to make, since a stream
    of ever-new names makes one per event."""

    __slots__ = ("type", "key", "id")

    def __init__(self, type: str, key: str) -> None:  # noqa: A002 - the entity's type
        self.type = type
        self.key = key
        self.id = f"{type}:{key}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entity) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Entity({self.type!r}, {self.key!r})"

    def __str__(self) -> str:
        return self.id


def normalize(entity_type: str, value: str) -> str:
    value = value.strip().lower()
    if entity_type == "process":
        return value.rsplit("\\", 1)[-1].rsplit("/", 1)[-1]
    if entity_type == "user":
        # Sysmon says CORP\alice, Security's TargetUserName says alice, Kerberos alice@corp.local:
        # one person. The account name is the entity (same name in two domains: one entity).
        return value.rsplit("\\", 1)[-1].split("@", 1)[0]
    if entity_type == "host":
        return value.split(".", 1)[0]  # WS-01.corp.local and WS-01 are one host
    return value


# Hosts, users and images repeat endlessly: each distinct raw value becomes an Entity once
# (None when it names no one), per entity type. Bounded: cleared when it grows past the cap.
_KNOWN: dict[str, dict[str, Entity | None]] = {}
_CACHE_CAP = 50_000  # per entity type; a stream of ever-new names costs a rebuild, not memory


def _entity(entity_type: str, value: str) -> Entity | None:
    cache = _KNOWN.get(entity_type)
    if cache is None:
        cache = _KNOWN[entity_type] = {}
    if value in cache:
        return cache[value]
    if len(cache) > _CACHE_CAP:
        cache.clear()
    key = normalize(entity_type, value)
    # computer accounts (NAME$) act for their host, which is already an entity
    found = None if key in _NOBODY or key.endswith("$") else Entity(entity_type, key)
    cache[value] = found
    return found


def extract_entities(
    event: Mapping[str, Any], fields: Mapping[str, tuple[str, ...]] = DEFAULT_ENTITY_FIELDS
) -> list[Entity]:
    """One entity per type at most, in the order of `fields`; empty and placeholder values skipped."""
    found: list[Entity] = []
    get = event.get
    for entity_type, names in fields.items():
        cache = _KNOWN.get(entity_type) or {}
        for name in names:
            value = get(name)
            if value is None:
                continue
            if value.__class__ is str:
                entity = cache[value] if value in cache else _entity(entity_type, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                entity = _entity(entity_type, str(value))
            else:
                continue
            if entity is not None:
                found.append(entity)
                break
    return found


Fields = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class EntityRule:
    """Entity fields for the events of one Sigma logsource (None in the triple: any value).
    The types it lists replace the defaults' for those events; an empty list switches a type off."""

    logsource: LogSource
    fields: Fields


class EntityMapping:
    """Entity fields per event: the first rule whose logsource covers one of the event's
    logsources, merged over the defaults; the defaults alone for every other event."""

    def __init__(self, defaults: Fields = DEFAULT_ENTITY_FIELDS, rules: Sequence[EntityRule] = (),
                 routing: LogsourceMapping | None = None) -> None:
        self.defaults = dict(defaults)
        self.rules = tuple(rules)
        self._merged = [{**self.defaults, **rule.fields} for rule in self.rules]
        types = list(self.defaults)
        for rule in self.rules:
            types += [t for t in rule.fields if t not in types]
        self.types = tuple(types)
        # The engine's mapping, read once here (as the engine reads it), never per event.
        self._routing = (routing or LogsourceMapping.default()) if self.rules else None
        self._by_route: dict[tuple[Any, ...], Fields] = {}

    def fields_for(self, event: Mapping[str, Any]) -> Fields:
        if self._routing is None:
            return self.defaults
        key = self._routing.route_key(event)
        found = self._by_route.get(key)
        if found is None:
            found = self.defaults
            logsources = self._routing.route(event).logsources
            for rule, merged in zip(self.rules, self._merged, strict=True):
                if any(rule.logsource.covers(logsource) for logsource in logsources):
                    found = merged
                    break
            if len(self._by_route) >= 10_000:
                self._by_route.clear()
            self._by_route[key] = found
        return found

    def __getstate__(self) -> tuple[dict[str, tuple[str, ...]], tuple[EntityRule, ...]]:
        return self.defaults, self.rules  # the routing and its cache are rebuilt on load

    def __setstate__(self, state: tuple[dict[str, tuple[str, ...]], tuple[EntityRule, ...]]) -> None:
        self.__init__(*state)  # type: ignore[misc]


def entity_fields_from_config(raw: Any, where: str) -> dict[str, tuple[str, ...]]:
    """{entity type: [field, ...]} from a config, checked."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of entity type to a list of field names")
    fields: dict[str, tuple[str, ...]] = {}
    for entity_type, names in raw.items():
        if isinstance(names, str):
            names = [names]
        if not isinstance(entity_type, str) or not entity_type or not isinstance(names, list) \
                or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{where}.{entity_type} must be a list of field names")
        fields[entity_type] = tuple(names)
    return fields


def entity_rules_from_config(raw: Any, where: str) -> tuple[EntityRule, ...]:
    """`[{logsource: {product, category, service}, fields: {type: [field, ...]}}, ...]`, checked."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where} must be a list of {{logsource: ..., fields: ...}}")
    rules: list[EntityRule] = []
    for number, item in enumerate(raw):
        at = f"{where}[{number}]"
        if not isinstance(item, dict) or set(item) - {"logsource", "fields"} or "fields" not in item:
            raise ConfigError(f"{at} must be a mapping with `logsource` and `fields`")
        logsource = item.get("logsource") or {}
        if not isinstance(logsource, dict) or set(logsource) - {"product", "category", "service"} \
                or not all(isinstance(v, str) for v in logsource.values()):
            raise ConfigError(f"{at}.logsource must be a mapping of product, category and service names")
        rules.append(EntityRule(LogSource(logsource.get("product"), logsource.get("category"), logsource.get("service")),
                                entity_fields_from_config(item["fields"], f"{at}.fields")))
    return tuple(rules)
