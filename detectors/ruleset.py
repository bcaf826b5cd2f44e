"""What loading rules produces: plain dataclasses, importable without pySigma (a warm load from
the compiled-ruleset cache never imports it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.correlation import CorrelationSpec
    from detectors.ir import CompiledRule
    from detectors.regex_safety import RegexWarning


@dataclass(frozen=True, slots=True)
class RuleSource:
    """One rule document (or a file of documents) as text, labelled with where it came from."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """A rule (or file) that was not loaded: where it was, what it was, and why not."""

    path: str
    id: str | None
    title: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "id": self.id, "title": self.title, "reason": self.reason}


@dataclass(slots=True)
class Ruleset:
    """Everything a worker needs to detect: compiled rules, correlations, and what was refused."""

    rules: list[CompiledRule] = field(default_factory=list)
    correlations: list[CorrelationSpec] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # Accepted rules whose `|re` values can backtrack super-linearly or do not run on RE2.
    warnings: list[RegexWarning] = field(default_factory=list)
    loaded: int = 0  # rule documents read: compiled + filters applied + rejected
    filters_applied: int = 0
    version: str = ""

    @property
    def compiled(self) -> int:
        return len(self.rules) + len(self.correlations)

    def summary(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "compiled": self.compiled,
            "rejected": [r.to_dict() for r in self.rejections],
            "warnings": [w.to_dict() for w in self.warnings],
        }
