"""Which owner evaluates a rule hit for which correlations: the key of the repartition step.

The detections topic is keyed by entity (the host). A correlation that groups by something else
(a user, a source address) needs every hit of one group in one place, whatever host it came
from, so its hits are re-keyed (Kafka Streams' repartition topic): `Router.route` gives, for one
rule hit, a `Routed` per *component* (correlations chained to each other form one component, as
a chain's windows must live together) with

- `key`: the component id and the values of the group-by names that every correlation of the
  component shares (aliases resolved per rule). Two hits that can ever meet in one group of any
  correlation of the component share these values, so the key gives each group exactly one
  owner. A component with no shared name gets the component id alone: one owner for all, which
  is correct but does not spread;
- `hit`: the Hit with only the fields the component's correlations read (group-by fields and
  condition fields), so the repartition topic does not carry whole events.

A hit lacking a shared group-by field cannot join any group: it is not routed and is counted in
`stats()["missing_field"]`. Pure: no I/O.

>>> from detectors.correlation import CorrelationSpec
>>> spray = CorrelationSpec(id="c1", title="spray", type="value_count", rules=("r1",), group_by=("IpAddress",),
...                         timespan_seconds=600, condition={"op": "gte", "count": 3, "field": "TargetUserName"})
>>> router = Router([spray])
>>> [(r.component, r.key, dict(r.hit.fields)) for r in router.route(
...     Hit("r1", 0, {"IpAddress": "10.0.0.9", "TargetUserName": "bob", "CommandLine": "x"}))]
[('c1', 'c1|["10.0.0.9"]', {'IpAddress': '10.0.0.9', 'TargetUserName': 'bob'})]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from correlator.records import Hit
from detectors.correlation import CorrelationSpec

__all__ = ["Component", "Routed", "Router"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Component:
    """Correlations that must be evaluated together (a chain, or a correlation alone)."""

    id: str  # the smallest correlation id of the component: stable while its rules are
    specs: tuple[CorrelationSpec, ...]
    key_names: tuple[str, ...]  # group-by names shared by every correlation of the component


@dataclass(frozen=True, slots=True)
class Routed:
    component: str
    key: str
    hit: Hit

    def to_dict(self) -> dict[str, Any]:
        """The repartition topic's record (JSON)."""
        hit = self.hit
        return {"schema_version": 1, "component": self.component, "rule_id": hit.rule_id,
                "event_time_ms": hit.event_time_ms, "fields": dict(hit.fields), "partition": hit.partition,
                "ref": list(hit.ref) if hit.ref is not None else None}

    @classmethod
    def from_dict(cls, data: Any, key: str = "") -> Routed:
        """ValueError naming the problem for a malformed record."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a repartitioned hit must be a JSON object, not {type(data).__name__}")
        if data.get("schema_version", 1) not in (1, "1"):
            raise ValueError(f"unknown repartitioned hit schema_version {data.get('schema_version')!r}")
        try:
            ref = data.get("ref")
            fields = data["fields"]
            if not isinstance(fields, Mapping) or not isinstance(data["component"], str) \
                    or not isinstance(data["rule_id"], str):
                raise TypeError("component and rule_id must be strings, fields an object")
            hit = Hit(data["rule_id"], int(data["event_time_ms"]), dict(fields), int(data.get("partition") or 0),
                      (str(ref[0]), int(ref[1]), int(ref[2])) if ref else None)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise ValueError(f"malformed repartitioned hit: {type(error).__name__}: {error}") from None
        return cls(data["component"], key, hit)


def _components(specs: list[CorrelationSpec], rule_names: Mapping[str, str]) -> list[list[CorrelationSpec]]:
    """Connected components of the chain graph (a correlation referencing another)."""
    by_id = {spec.id: spec for spec in specs}
    names = {**rule_names, **{spec.name: spec.id for spec in specs if spec.name}}
    parent = {spec.id: spec.id for spec in specs}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for spec in specs:
        for reference in spec.rules:
            target = names.get(reference, reference)
            if target in by_id:
                parent[find(spec.id)] = find(target)
    groups: dict[str, list[CorrelationSpec]] = {}
    for spec in specs:
        groups.setdefault(find(spec.id), []).append(spec)
    return list(groups.values())


class Router:
    """Routes rule hits to correlation components (see the module docstring)."""

    def __init__(self, specs: Iterable[CorrelationSpec], rule_names: Mapping[str, str] | None = None) -> None:
        specs = list(specs)
        names = {**(rule_names or {}), **{spec.name: spec.id for spec in specs if spec.name}}
        correlation_ids = {spec.id for spec in specs}
        self.components: list[Component] = []
        # rule id -> [(component id, fields of the key names, every field to keep)]
        self._routes: dict[str, list[tuple[str, tuple[str, ...], tuple[str, ...]]]] = {}
        for members in _components(specs, names):
            members.sort(key=lambda spec: spec.id)
            shared = set(members[0].group_by)
            for spec in members[1:]:
                shared &= set(spec.group_by)
            # A name aliased onto a chained correlation's field may carry another value there:
            # not a safe key.
            for spec in members:
                for alias, mapping in spec.aliases.items():
                    if any(names.get(ref, ref) in correlation_ids for ref in mapping):
                        shared.discard(alias)
            key_names = tuple(name for name in members[0].group_by if name in shared)
            component = Component(members[0].id, tuple(members), key_names)
            self.components.append(component)
            keep: dict[str, dict[str, None]] = {}
            key_fields: dict[str, tuple[str, ...]] = {}
            for spec in members:
                aliases = {alias: {names.get(ref, ref): field for ref, field in mapping.items()}
                           for alias, mapping in spec.aliases.items()}
                raw_field = (spec.condition or {}).get("field")
                value_fields = [] if raw_field is None else [raw_field] if isinstance(raw_field, str) else \
                    [str(f) for f in raw_field]
                for reference in spec.rules:
                    rule = names.get(reference, reference)
                    if rule in correlation_ids:
                        continue  # chained: evaluated inside the component
                    resolved = [aliases.get(name, {}).get(rule, name) for name in spec.group_by]
                    fields = keep.setdefault(rule, {})
                    fields.update(dict.fromkeys(resolved + value_fields))
                    key_fields.setdefault(rule, tuple(aliases.get(name, {}).get(rule, name) for name in key_names))
            for rule, fields in keep.items():
                self._routes.setdefault(rule, []).append((component.id, key_fields[rule], tuple(fields)))
        self.by_id = {component.id: component for component in self.components}
        self.counts: Counter[str] = Counter()

    @property
    def rule_ids(self) -> frozenset[str]:
        """Detection rules whose hits feed some correlation."""
        return frozenset(self._routes)

    def route(self, hit: Hit) -> list[Routed]:
        routes = self._routes.get(hit.rule_id)
        if not routes:
            return []
        out: list[Routed] = []
        for component, key_fields, keep in routes:
            values = []
            for name in key_fields:
                value = _field(hit.fields, name)
                if value is _MISSING or value is None:
                    break
                values.append(value if isinstance(value, str | int | float | bool) else str(value))
            else:
                fields = {}
                for name in keep:
                    value = _field(hit.fields, name)
                    if value is not _MISSING:
                        fields[name] = value
                key = f"{component}|{orjson.dumps(values).decode()}" if key_fields else component
                out.append(Routed(component, key, Hit(hit.rule_id, hit.event_time_ms, fields, hit.partition, hit.ref)))
                self.counts["routed"] += 1
                continue
            self.counts["missing_field"] += 1
        return out

    def stats(self) -> dict[str, int]:
        return dict(self.counts)


def _field(fields: Mapping[str, Any], name: str) -> Any:
    """As the correlation engine reads a field: flat key first, then a dotted path."""
    value = fields.get(name, _MISSING)
    if value is _MISSING and "." in name:
        value = fields
        for part in name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return _MISSING
            value = value[part]
    return value
