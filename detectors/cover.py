"""Prefilter triggers: for each rule, literals of which at least one must be present to match.

`cover(node)` returns a set of triggers such that whenever the condition is true, at least one
trigger is satisfied by the event; or None when no such set can be proven (such rules are
evaluated on every event of their logsource). A trigger is satisfied when

- kind "sub": `text` occurs in the lowercase string form of some value of `field`;
- kind "eq":  `equality_key(value) == text` for some value of `field`.

`field` None means any string value of the event (keyword searches). Soundness rests on these
definitions matching the predicates in `ir.py`; `tests/test_index_equivalence.py` checks them.
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.ir import (
    And,
    Const,
    FieldTest,
    Keyword,
    Node,
    Not,
    NumEq,
    Or,
    Predicate,
    Regex,
    StrContains,
    StrEnds,
    StrEq,
    StrPattern,
    StrStarts,
)
from detectors.values import canonical_number, equality_key


@dataclass(frozen=True, slots=True, order=True)
class Trigger:
    field: str | None
    kind: str  # "sub" | "eq"
    text: str


Cover = frozenset[Trigger]


def cover(node: Node) -> Cover | None:
    """A sound trigger set for `node`, choosing the most selective option under AND."""
    if isinstance(node, FieldTest):
        trigger = predicate_trigger(node.field, node.predicate)
        return None if trigger is None else frozenset((trigger,))
    if isinstance(node, Keyword):
        trigger = predicate_trigger(None, node.predicate)
        return None if trigger is None else frozenset((trigger,))
    if isinstance(node, Or):
        union: set[Trigger] = set()
        for child in node.children:
            sub = cover(child)
            if sub is None:
                return None
            union |= sub
        return frozenset(union)
    if isinstance(node, And):
        options = [c for c in (cover(child) for child in node.children) if c is not None]
        if not options:
            return None
        return min(options, key=cover_cost)
    if isinstance(node, Const):
        return frozenset() if node.value is False else None
    if isinstance(node, Not):
        return None
    return None  # null / exists / fieldref: nothing literal is required


def required_covers(node: Node, limit: int = 3) -> list[Cover]:
    """Covers that must all be hit for `node` to be true: one per provable conjunct.

    Requiring every conjunct (up to `limit`, the most selective) prunes far more than one cover:
    a rule on `CallTrace|contains` AND `GrantedAccess` needs both. Empty means: always a candidate.
    """
    if isinstance(node, And):
        found: list[Cover] = []
        for child in node.children:
            found.extend(required_covers(child, limit))
        # Ties are broken by the triggers themselves, not by set order (which follows string
        # hashing and so changes between processes): the same rules give the same index, and
        # the same Hyperscan databases, in every process (see literals._database_bytes).
        unique = sorted(set(found), key=lambda c: (cover_cost(c), sorted(map(_trigger_order, c))))
        return unique[:limit]
    single = cover(node)
    return [] if single is None else [single]


def predicate_trigger(field: str | None, predicate: Predicate) -> Trigger | None:
    """The trigger implied by one value predicate, if any."""
    if isinstance(predicate, StrEq):
        key = equality_key(predicate.text)
        if key is not None and field is not None:
            return Trigger(field, "eq", key)
        return _sub(field, predicate.text, predicate.cased)
    if isinstance(predicate, (StrContains, StrStarts, StrEnds)):
        return _sub(field, predicate.text, predicate.cased)
    if isinstance(predicate, StrPattern):
        best = max(predicate.literals, key=len, default="")
        return _sub(field, best, predicate.cased)
    if isinstance(predicate, Regex):
        return Trigger(field, "sub", predicate.required) if predicate.required else None
    if isinstance(predicate, NumEq) and field is not None:
        return Trigger(field, "eq", canonical_number(predicate.number))
    return None


def _sub(field: str | None, text: str, cased: bool) -> Trigger | None:
    if not text:
        return None
    if cased:
        # A cased literal is found in the lowercased value only if lowering is per character,
        # which holds for ASCII.
        if not text.isascii():
            return None
        text = text.lower()
    return Trigger(field, "sub", text)


def _trigger_order(trigger: Trigger) -> tuple[bool, str, str, str]:
    """A total order on triggers (a keyword trigger has no field, and None does not compare)."""
    return (trigger.field is None, trigger.field or "", trigger.kind, trigger.text)


def trigger_cost(trigger: Trigger) -> float:
    """A rough chance that a trigger fires: longer and exact literals are rarer."""
    weight = len(trigger.text) + (3 if trigger.kind == "eq" else 0)
    return 2.0 ** -min(weight, 40)


def cover_cost(triggers: Cover) -> float:
    return sum(trigger_cost(t) for t in triggers)
