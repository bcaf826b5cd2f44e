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
                     "nt authority\\system", "anonymous logon", "n/a", "null"})


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
    if entity_type == "user" and "\\" not in value and "@" in value:
        name, _, domain = value.partition("@")
        return f"{domain.split('.')[0]}\\{name}"
    if entity_type == "host":
        return value.split(".", 1)[0]  # WS-01.corp.local and WS-01 are one host
    return value


_KNOWN: dict[tuple[str, str], Entity | None] = {}


def _entity(entity_type: str, value: str) -> Entity | None:
    # Hosts, users and images repeat endlessly: build each distinct entity once (bounded cache).
    found = _KNOWN.get((entity_type, value), False)
    if found is False:
        if len(_KNOWN) > 100_000:
            _KNOWN.clear()
        key = normalize(entity_type, value)
        found = None if key in _NOBODY or key.endswith("$") else Entity(entity_type, key)  # computer accounts act for the host
        _KNOWN[(entity_type, value)] = found
    return found  # type: ignore[return-value]


def extract_entities(
    event: Mapping[str, Any], fields: Mapping[str, tuple[str, ...]] = DEFAULT_ENTITY_FIELDS
) -> list[Entity]:
    """One entity per type at most, in the order of `fields`; empty and placeholder values skipped."""
    found: list[Entity] = []
    for entity_type, names in fields.items():
        for name in names:
            value = event.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                continue
            entity = _entity(entity_type, value)
            if entity is None:
                continue
            found.append(entity)
            break
    return found
