"""Reads rule files and pipelines from disk for the pure loader in `detectors.loader`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from detectors.errors import ConfigError
from detectors.ruleset import Rejection, Ruleset, RuleSource

if TYPE_CHECKING:  # pySigma is imported when rules are parsed: a warm cache load never does
    from sigma.processing.pipeline import ProcessingPipeline

RULE_SUFFIXES = (".yml", ".yaml")


def rule_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus every .yml/.yaml below named folders, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in RULE_SUFFIXES and p.is_file()))
        elif path.exists():
            found.append(path)
        else:
            raise ConfigError(f"rule path does not exist: {path}")
    return found


def read_rule_sources(paths: Iterable[str | Path]) -> tuple[list[RuleSource], list[Rejection]]:
    """Rule texts, and a rejection for each file that cannot be read as UTF-8 text."""
    sources: list[RuleSource] = []
    rejections: list[Rejection] = []
    for path in rule_paths(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            rejections.append(Rejection(str(path), None, None, f"unreadable: {error}"))
            continue
        sources.append(RuleSource(str(path), text))
    return sources, rejections


def resolve_pipeline(name: str) -> ProcessingPipeline:
    """A pySigma pipeline by name (`sysmon`, `windows`, or any installed plugin) or YAML path."""
    from sigma.processing.pipeline import ProcessingPipeline

    candidate = Path(name)
    if candidate.suffix in RULE_SUFFIXES:
        if not candidate.is_file():
            raise ConfigError(f"pipeline file does not exist: {candidate}")
        return ProcessingPipeline.from_yaml(candidate.read_text(encoding="utf-8"))
    if name == "sysmon":
        # pySigma's `@Pipeline` decorator is one shared instance that calls the function it
        # decorated last: once plugin discovery (below) has imported another decorated pipeline,
        # `sysmon_pipeline()` builds that one. Importing the module again makes it sysmon's.
        import importlib

        import sigma.pipelines.sysmon.sysmon as sysmon_module

        return importlib.reload(sysmon_module).sysmon_pipeline()
    if name == "windows":
        from sigma.pipelines.windows import windows_logsource_pipeline

        return windows_logsource_pipeline()
    try:
        from sigma.plugins import InstalledSigmaPlugins

        plugins = InstalledSigmaPlugins.autodiscover()
        if name in plugins.pipelines:
            return plugins.pipelines[name]()
    except Exception:  # plugin discovery is best effort; the error below names the choices
        pass
    raise ConfigError(f"unknown pipeline {name!r}: use sysmon, windows, or a pipeline YAML file")


def load_rules_from_paths(
    paths: Sequence[str | Path],
    pipelines: Sequence[str] = (),
    placeholders: Mapping[str, Sequence[str]] | None = None,
) -> Ruleset:
    """Read, parse and compile rules from files and folders; unreadable files become rejections."""
    from detectors.loader import load_ruleset

    sources, unreadable = read_rule_sources(paths)
    ruleset = load_ruleset(sources, [resolve_pipeline(p) for p in pipelines], placeholders)
    ruleset.rejections[:0] = unreadable
    ruleset.loaded += len(unreadable)
    return ruleset
