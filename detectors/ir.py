"""The engine's own condition tree, built once per rule from pySigma's parsed condition.

Nothing here refers to pySigma: after compilation a rule is plain data plus closures, so the
per-event path never touches a pySigma object. The same tree feeds both the evaluator
(`evaluate.py`) and the prefilter (`cover.py`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from detectors.rule_regex import RuleRegex
from detectors.values import Number, as_text, to_number

# ---------------------------------------------------------------------------------------------
# Value predicates: a test of one scalar event value.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StrEq:
    """The whole value equals `text` (lowercase unless `cased`)."""

    text: str
    cased: bool = False

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return (s if self.cased else s.lower()) == self.text


@dataclass(frozen=True, slots=True)
class StrStarts:
    text: str
    cased: bool = False

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return (s if self.cased else s.lower()).startswith(self.text)


@dataclass(frozen=True, slots=True)
class StrEnds:
    text: str
    cased: bool = False

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return (s if self.cased else s.lower()).endswith(self.text)


@dataclass(frozen=True, slots=True)
class StrContains:
    text: str
    cased: bool = False

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return self.text in (s if self.cased else s.lower())


@dataclass(frozen=True, slots=True)
class StrPattern:
    """A Sigma wildcard pattern (`*`, `?`) compiled to an anchored regex.

    `literals` are the plain runs between wildcards (lowercase unless cased); the prefilter
    indexes the longest of them. The regex runs on RE2: under `re`, `*a*a*a*a*b` takes
    seconds on a few hundred characters.
    """

    regex: RuleRegex
    literals: tuple[str, ...]
    source: str
    cased: bool = False

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return self.regex.matches(s if self.cased else s.lower())


@dataclass(frozen=True, slots=True)
class Regex:
    """The `re` modifier: an unanchored search, case-sensitive unless the `i` flag is set.

    `required` is a lowercase ASCII literal that the lowercased text of every match contains,
    or "" when none could be proven; the prefilter uses it. `test` raises `RegexTimeout` when
    the pattern runs on the backtracking engine and takes too long.
    """

    regex: RuleRegex
    required: str = ""

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None:
            return False
        return self.regex.matches(s)


@dataclass(frozen=True, slots=True)
class NumEq:
    number: Number

    def test(self, value: Any) -> bool:
        if value.__class__ is bool:
            return False
        n = to_number(value)
        return n is not None and n == self.number


@dataclass(frozen=True, slots=True)
class NumCmp:
    """`lt`, `lte`, `gt`, `gte` against a number; non-numeric values never match."""

    op: str
    number: Number

    def test(self, value: Any) -> bool:
        if value.__class__ is bool:
            return False
        n = to_number(value)
        if n is None:
            return False
        if self.op == "lt":
            return n < self.number
        if self.op == "lte":
            return n <= self.number
        if self.op == "gt":
            return n > self.number
        return n >= self.number


@dataclass(frozen=True, slots=True)
class BoolEq:
    value: bool

    def test(self, value: Any) -> bool:
        if value.__class__ is bool:
            return value is self.value
        s = as_text(value)
        return s is not None and s.lower() == ("true" if self.value else "false")


@dataclass(frozen=True, slots=True)
class Cidr:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def test(self, value: Any) -> bool:
        s = as_text(value)
        if s is None or not s:
            return False
        try:
            address = ipaddress.ip_address(s.strip().strip("[]"))
        except ValueError:
            return False
        if address.version != self.network.version:
            mapped = getattr(address, "ipv4_mapped", None)
            if mapped is None or self.network.version != 4:
                return False
            address = mapped
        return address in self.network


_TIME_PARTS = ("minute", "hour", "day", "week", "month", "year")


def parse_timestamp(value: Any) -> datetime | None:
    """Reads ISO-8601 timestamps (with `Z`) and epoch seconds or milliseconds."""
    if value.__class__ in (int, float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.utcfromtimestamp(seconds)  # noqa: DTZ004 - a naive datetime in UTC, as before
        except (OverflowError, OSError, ValueError):
            return None
    s = as_text(value)
    if not s:
        return None
    text = s.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TimePart:
    """The time-part modifiers (`minute`, `hour`, ...): a part of a timestamp equals a number."""

    part: str
    number: int

    def test(self, value: Any) -> bool:
        moment = parse_timestamp(value)
        if moment is None:
            return False
        if self.part == "week":
            got = moment.isocalendar()[1]
        else:
            got = getattr(moment, self.part)
        return got == self.number


Predicate = (
    StrEq | StrStarts | StrEnds | StrContains | StrPattern | Regex | NumEq | NumCmp | BoolEq
    | Cidr | TimePart
)

# ---------------------------------------------------------------------------------------------
# Condition nodes.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldTest:
    """True when any scalar value of `field` satisfies `predicate`."""

    field: str
    predicate: Predicate


@dataclass(frozen=True, slots=True)
class FieldNull:
    """`field: null`: the field is absent or holds JSON null, nothing else.

    The specification gives null a type of its own ("shares no type with any other value"), so
    neither `""` nor `[]` is null: SigmaHQ rules filter `''` in a selection of its own when they
    mean it (e.g. "Uncommon New Firewall Rule Added" has both `ApplicationPath: null` and `''`).
    """

    field: str


@dataclass(frozen=True, slots=True)
class FieldExists:
    """`field|exists: true/false`: presence of the key, whatever its value."""

    field: str
    exists: bool


@dataclass(frozen=True, slots=True)
class FieldRef:
    """`field|fieldref: other`: the two fields hold equal values (case-insensitive strings)."""

    field: str
    other: str
    mode: str = "eq"  # eq | startswith | endswith
    cased: bool = False


@dataclass(frozen=True, slots=True)
class Keyword:
    """A value without a field: true when any string value of the event satisfies it."""

    predicate: Predicate


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


Node = FieldTest | FieldNull | FieldExists | FieldRef | Keyword | And | Or | Not | Const


def node_fields(node: Node, out: set[str] | None = None) -> set[str]:
    """Every event field a condition reads (keyword searches read all and add nothing)."""
    out = set() if out is None else out
    if isinstance(node, (FieldTest, FieldNull, FieldExists)):
        out.add(node.field)
    elif isinstance(node, FieldRef):
        out.add(node.field)
        out.add(node.other)
    elif isinstance(node, (And, Or)):
        for child in node.children:
            node_fields(child, out)
    elif isinstance(node, Not):
        node_fields(node.child, out)
    return out


@dataclass(frozen=True, slots=True)
class RuleMeta:
    """What a detection says about the rule that fired: plain values only."""

    id: str
    title: str
    level: str | None
    tags: tuple[str, ...]
    path: str | None
    product: str | None
    category: str | None
    service: str | None
    status: str | None = None
    falsepositives: tuple[str, ...] = ()
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "level": self.level, "tags": list(self.tags)}


@dataclass(slots=True)
class CompiledRule:
    """A rule after compilation: its metadata and its condition tree, no pySigma objects."""

    meta: RuleMeta
    condition: Node
    fields: frozenset[str] = field(default_factory=frozenset)
