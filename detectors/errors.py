"""One error hierarchy for the engine: every error knows where it came from.

As in pySigma, loading can collect these instead of raising, so one bad rule never stops the
others from loading.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where an error was found: a file, and when known the rule inside it."""

    path: str | None = None
    rule_id: str | None = None
    title: str | None = None

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.rule_id and f"id={self.rule_id}") if p]
        return " ".join(parts) or "<unknown source>"


class SigmaRayError(Exception):
    """Root of every error the project raises on purpose."""

    def __init__(self, reason: str, source: SourceLocation | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source or SourceLocation()

    def __str__(self) -> str:
        if self.source.path or self.source.rule_id:
            return f"{self.source}: {self.reason}"
        return self.reason


class RuleCompileError(SigmaRayError):
    """A parsed rule uses something the engine cannot evaluate (or an unresolved placeholder)."""


class MappingError(SigmaRayError, ValueError):
    """A logsource mapping or pipeline configuration is invalid."""


class ConfigError(SigmaRayError, ValueError):
    """A configuration file or setting is invalid; the reason names the key."""
