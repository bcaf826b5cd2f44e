"""Which entities an event is about: host, user, addresses, process image.

The mapping is data (entity type -> the event fields that name it, first present wins), so a
deployment with other log shapes configures it instead of changing code. The defaults follow
the flattened Windows events of ../shared/README.md (Sysmon and Security channels).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class Entity:
    type: str
    key: str
    id: str = ""  # "type:key", the entity's name everywhere (tables, detections)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"{self.type}:{self.key}")

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
