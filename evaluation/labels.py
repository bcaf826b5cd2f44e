"""Incident labels for `sigmaray eval`: which events of which files belong to an incident.

Every event not covered by a label is benign. A label names an incident and either a whole
file or a range of its lines (1-based, inclusive: the line numbers `sigmaray replay` puts in a
detection's `source.offset`), with the incident's ATT&CK techniques when known. Several labels
with the same `incident` make one incident spread over several files or ranges (a campaign).

JSON lines, one label per line (`first_line`/`last_line` both absent = the whole file):

    {"incident": "c1", "file": "campaign-c1.jsonl", "techniques": ["T1003.001"], "title": "LSASS dump"}
    {"incident": "s2", "file": "events.jsonl", "first_line": 120, "last_line": 134}

CSV with a header (techniques separated by `;` or spaces; empty lines = whole file):

    incident,file,first_line,last_line,techniques,title
    c1,campaign-c1.jsonl,,,T1003.001;T1059.001,LSASS dump
    s2,events.jsonl,120,134,,

For an EVTX file, lines are record positions (1-based), as in the replay's `source.offset`.
A relative `file` is relative to the labels file's folder. `read_labels` checks the labels
against the events files being evaluated and raises `LabelError` naming the labels line for an
unknown file, a bad or out-of-range line number and overlapping ranges.

>>> labels = parse_labels('{"incident": "a", "file": "e.jsonl", "first_line": 3, "last_line": 5}', "jsonl")
>>> labels.incident_at("e.jsonl", 4), labels.incident_at("e.jsonl", 6)
('a', None)
>>> parse_labels('incident,file,first_line,last_line\\na,e.jsonl,5,3', "csv")
Traceback (most recent call last):
evaluation.labels.LabelError: labels line 2: last_line 3 is before first_line 5
"""

from __future__ import annotations

import bisect
import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Incident", "LabelError", "LabelRange", "Labels", "parse_labels", "read_labels", "write_labels"]

FIELDS = ("incident", "file", "first_line", "last_line", "techniques", "title")
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")


class LabelError(ValueError):
    """A labels file that cannot be used; the message names the file, line and reason."""


@dataclass(frozen=True, slots=True)
class LabelRange:
    file: str
    first_line: int | None = None  # None with last_line None: the whole file
    last_line: int | None = None
    source_line: int = 0  # where in the labels file (for error messages)

    @property
    def whole_file(self) -> bool:
        return self.first_line is None

    def bounds(self) -> tuple[int, float]:
        return (1, float("inf")) if self.first_line is None else (self.first_line, float(self.last_line or 0))


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    ranges: tuple[LabelRange, ...]
    techniques: tuple[str, ...] = ()
    title: str = ""

    def to_rows(self) -> list[dict[str, Any]]:
        rows = []
        for item in self.ranges:
            row: dict[str, Any] = {"incident": self.id, "file": item.file}
            if not item.whole_file:
                row["first_line"], row["last_line"] = item.first_line, item.last_line
            if self.techniques:
                row["techniques"] = list(self.techniques)
            if self.title:
                row["title"] = self.title
            rows.append(row)
        return rows


@dataclass(slots=True)
class Labels:
    """The incidents, with a per-file interval index for `incident_at`."""

    incidents: dict[str, Incident] = field(default_factory=dict)
    # file -> sorted [(first, last, incident id)]; whole files are (1, inf)
    _index: dict[str, list[tuple[int, float, str]]] = field(default_factory=dict, init=False, repr=False)
    _starts: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._build()

    def _build(self) -> None:
        index: dict[str, list[tuple[int, float, str, LabelRange]]] = {}
        for incident in self.incidents.values():
            for item in incident.ranges:
                first, last = item.bounds()
                index.setdefault(item.file, []).append((first, last, incident.id, item))
        self._index, self._starts = {}, {}
        for name, spans in index.items():
            spans.sort(key=lambda span: (span[0], span[1]))
            for before, after in zip(spans, spans[1:], strict=False):
                if after[0] <= before[1]:
                    raise LabelError(f"labels line {after[3].source_line}: {_describe(after[3])} of incident "
                                     f"{after[2]!r} overlaps {_describe(before[3])} of incident {before[2]!r} "
                                     f"(labels line {before[3].source_line}); an event belongs to one incident")
            self._index[name] = [(first, last, ident) for first, last, ident, _ in spans]
            self._starts[name] = [span[0] for span in spans]

    @property
    def files(self) -> list[str]:
        return sorted(self._index)

    def incident_at(self, file: str, line: int) -> str | None:
        """The incident that line `line` of `file` belongs to, or None (benign)."""
        spans = self._index.get(file)
        if not spans:
            return None
        position = bisect.bisect_right(self._starts[file], line) - 1
        if position >= 0 and spans[position][0] <= line <= spans[position][1]:
            return spans[position][2]
        return None

    def rebased(self, mapping: Mapping[str, str]) -> Labels:
        """The same labels with file names replaced through `mapping` (names not in it are kept)."""
        incidents = {ident: Incident(ident, tuple(LabelRange(mapping.get(r.file, r.file), r.first_line, r.last_line,
                                                             r.source_line) for r in inc.ranges),
                                     inc.techniques, inc.title) for ident, inc in self.incidents.items()}
        return Labels(incidents)


def _describe(item: LabelRange) -> str:
    return f"the whole of {item.file}" if item.whole_file else f"lines {item.first_line}-{item.last_line} of {item.file}"


def _line_number(value: Any, name: str, where: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise LabelError(f"{where}: {name} must be a line number (1 or more), not {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit():
            raise LabelError(f"{where}: {name} must be a line number (1 or more), not {value!r}")
        value = int(text)
    if not isinstance(value, int):
        raise LabelError(f"{where}: {name} must be a line number (1 or more), not {value!r}")
    if value < 1:
        raise LabelError(f"{where}: {name} must be 1 or more (lines count from 1), not {value}")
    return value


def _techniques(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = re.split(r"[;,\s]+", value) if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise LabelError(f"{where}: techniques must be a list or a ';'-separated string, not {value!r}")
    out: list[str] = []
    for item in items:
        text = str(item).strip().upper()
        if not text:
            continue
        if not _TECHNIQUE.match(text):
            raise LabelError(f"{where}: {item!r} is not an ATT&CK technique id (T1234 or T1234.001)")
        if text not in out:
            out.append(text)
    return tuple(out)


def _rows(text: str, fmt: str) -> Iterable[tuple[int, Mapping[str, Any]]]:
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        header = [name.strip() for name in reader.fieldnames or ()]
        missing = [name for name in ("incident", "file") if name not in header]
        if missing:
            raise LabelError(f"labels line 1: the CSV header must name {', '.join(missing)} "
                             f"(columns: {', '.join(FIELDS)}); found {header}")
        unknown = [name for name in header if name not in FIELDS]
        if unknown:
            raise LabelError(f"labels line 1: unknown column(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
        for row in reader:
            yield reader.line_num, {key.strip(): value for key, value in row.items() if key is not None}
        return
    if fmt != "jsonl":
        raise LabelError(f"unknown labels format {fmt!r} (jsonl or csv)")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise LabelError(f"labels line {number}: not JSON ({error})") from None
        if not isinstance(row, dict):
            raise LabelError(f"labels line {number}: expected a JSON object, got {type(row).__name__}")
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:
            raise LabelError(f"labels line {number}: unknown key(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
        yield number, row


def parse_labels(text: str, fmt: str = "jsonl", base_dir: str | Path | None = None) -> Labels:
    """Labels from `text` (fmt "jsonl" or "csv"); relative files are joined to `base_dir` when given
    (and kept as written otherwise). Raises LabelError naming the line."""
    ranges: dict[str, list[LabelRange]] = {}
    techniques: dict[str, list[str]] = {}
    titles: dict[str, str] = {}
    for number, row in _rows(text, fmt):
        where = f"labels line {number}"
        ident = str(row.get("incident") or "").strip()
        if not ident:
            raise LabelError(f"{where}: no incident id")
        name = str(row.get("file") or "").strip()
        if not name:
            raise LabelError(f"{where}: no file")
        if base_dir is not None and not Path(name).is_absolute():
            name = str(Path(base_dir) / name)
        first = _line_number(row.get("first_line"), "first_line", where)
        last = _line_number(row.get("last_line"), "last_line", where)
        if (first is None) != (last is None):
            raise LabelError(f"{where}: give both first_line and last_line (a range), or neither (the whole file)")
        if first is not None and last is not None and last < first:
            raise LabelError(f"{where}: last_line {last} is before first_line {first}")
        ranges.setdefault(ident, []).append(LabelRange(name, first, last, number))
        for technique in _techniques(row.get("techniques"), where):
            if technique not in techniques.setdefault(ident, []):
                techniques[ident].append(technique)
        title = str(row.get("title") or "").strip()
        if title and ident not in titles:
            titles[ident] = title
    incidents = {ident: Incident(ident, tuple(items), tuple(techniques.get(ident, ())), titles.get(ident, ""))
                 for ident, items in ranges.items()}
    return Labels(incidents)


def _line_count(path: str) -> int:
    count = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def read_labels(path: str | Path, events: Sequence[str | Path] | None = None) -> Labels:
    """The labels file at `path` (.csv is CSV, anything else JSON lines). With `events` (the files
    being evaluated), every labeled file must be one of them (matched by resolved path, else by a
    unique file name) and every range must lie within its file; the labels come back naming the
    files as given in `events`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise LabelError(f"cannot read labels {path}: {error.strerror or error}") from None
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    try:
        labels = parse_labels(text, fmt, base_dir=path.parent)
    except LabelError as error:
        raise LabelError(f"{path}: {error}") from None
    if events is None:
        return labels
    by_path = {str(Path(name).resolve()): str(name) for name in events}
    by_name: dict[str, list[str]] = {}
    for name in events:
        by_name.setdefault(Path(name).name, []).append(str(name))
    mapping: dict[str, str] = {}
    for incident in labels.incidents.values():
        for item in incident.ranges:
            if item.file in mapping:
                continue
            found = by_path.get(str(Path(item.file).resolve()))
            if found is None and len(by_name.get(Path(item.file).name, ())) == 1:
                found = by_name[Path(item.file).name][0]
            if found is None:
                raise LabelError(f"{path}: labels line {item.source_line}: unknown file {item.file}: not among the "
                                 f"events files evaluated ({', '.join(str(name) for name in events)})")
            mapping[item.file] = found
    counts: dict[str, int] = {}
    for incident in labels.incidents.values():
        for item in incident.ranges:
            target = mapping[item.file]
            if item.last_line is None or Path(target).suffix.lower() == ".evtx":
                continue  # an EVTX file's "lines" are record positions: the replay numbers them
            if target not in counts:
                counts[target] = _line_count(target)
            if item.last_line > counts[target]:
                raise LabelError(f"{path}: labels line {item.source_line}: last_line {item.last_line} is past the "
                                 f"end of {target} ({counts[target]} lines)")
    try:
        return labels.rebased(mapping)
    except LabelError as error:
        raise LabelError(f"{path}: {error}") from None


def write_labels(path: str | Path, incidents: Iterable[Incident]) -> None:
    """Write labels as CSV (a .csv path) or JSON lines; files are written as the ranges name them."""
    path = Path(path)
    rows = [row for incident in incidents for row in incident.to_rows()]
    if path.suffix.lower() == ".csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "techniques": ";".join(row.get("techniques", ()))})
        path.write_text(out.getvalue(), encoding="utf-8")
    else:
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
