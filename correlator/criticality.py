"""Asset and identity criticality: host or user -> criticality, role, owner.

`Criticality.from_text` is pure and never raises on content: each bad line becomes an error
string (`line N: why`) and is skipped. `load_criticality(path)` is the thin file-reading part;
reload by building a new object and swapping it in (`FusionEngine.set_criticality`).

CSV: a header with at least `type,name,criticality` (optional `role,owner`); YAML: a list of
mappings with the same keys. `type` is host or user; names are normalized as the entity models
normalize them (WS-01.corp.local -> ws-01, CORP\\alice -> alice).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.entities import normalize

LEVELS = ("low", "medium", "high", "critical")
ENTITY_TYPES = ("host", "user")


@dataclass(frozen=True, slots=True)
class Asset:
    entity_type: str
    name: str
    criticality: str  # one of LEVELS
    role: str = ""
    owner: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"type": self.entity_type, "name": self.name, "criticality": self.criticality,
                "role": self.role, "owner": self.owner}


class Criticality:
    """A lookup table of assets and identities (its entries never change; reload = a new object)."""

    def __init__(self, assets: dict[tuple[str, str], Asset] | None = None) -> None:
        self._assets = dict(assets or {})
        self._names: dict[tuple[str, str], str] = {}  # a bounded cache of normalized names

    def __len__(self) -> int:
        return len(self._assets)

    def get(self, entity_type: str, name: str | None) -> Asset | None:
        if not name or not self._assets:
            return None
        found = self._assets.get((entity_type, name))  # most names come normalized already
        if found is None:
            key = (entity_type, name)
            normalized = self._names.get(key)
            if normalized is None:
                if len(self._names) > 100_000:
                    self._names.clear()
                normalized = self._names[key] = normalize(entity_type, name)
            if normalized != name:
                found = self._assets.get((entity_type, normalized))
        return found

    @classmethod
    def from_text(cls, text: str, fmt: str = "csv") -> tuple[Criticality, list[str]]:
        """The table in `text` (fmt "csv" or "yaml") and the errors of the lines it skipped."""
        errors: list[str] = []
        rows: list[tuple[int, Any]] = []
        if fmt == "yaml":
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as error:
                return cls(), [f"yaml: {str(error).splitlines()[0]}"]
            if data is None:
                data = []
            if not isinstance(data, list):
                return cls(), ["yaml: expected a list of entries"]
            rows = [(index + 1, item) for index, item in enumerate(data)]
        elif fmt == "csv":
            reader = csv.DictReader(io.StringIO(text))
            missing = {"type", "name", "criticality"} - set(reader.fieldnames or ())
            if missing:
                return cls(), [f"line 1: header lacks {', '.join(sorted(missing))}"]
            rows = [(reader.line_num, row) for row in reader]
        else:
            return cls(), [f"unknown format {fmt!r}"]
        assets: dict[tuple[str, str], Asset] = {}
        for line, row in rows:
            asset, why = _asset(row)
            if asset is None:
                errors.append(f"line {line}: {why}" if fmt == "csv" else f"entry {line}: {why}")
                continue
            assets[(asset.entity_type, asset.name)] = asset
        return cls(assets), errors


def _asset(row: Any) -> tuple[Asset | None, str]:
    if not isinstance(row, dict):
        return None, "not a mapping"
    if None in row:
        return None, "too many columns"
    entity_type = str(row.get("type") or "").strip().lower()
    name = str(row.get("name") or "").strip()
    level = str(row.get("criticality") or "").strip().lower()
    if entity_type not in ENTITY_TYPES:
        return None, f"type must be one of {', '.join(ENTITY_TYPES)}, not {entity_type!r}"
    if not name:
        return None, "empty name"
    if level not in LEVELS:
        return None, f"criticality must be one of {', '.join(LEVELS)}, not {level!r}"
    return Asset(entity_type, normalize(entity_type, name), level, str(row.get("role") or "").strip(),
                 str(row.get("owner") or "").strip()), ""


def load_criticality(path: str | Path) -> tuple[Criticality, list[str]]:
    """Read `path` (.yml/.yaml as YAML, anything else as CSV); an unreadable file is an error too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return Criticality(), [f"{path}: {error}"]
    return Criticality.from_text(text, "yaml" if path.suffix in (".yml", ".yaml") else "csv")
