"""Parse stage: rule YAML texts -> compiled rules, correlations and a list of rejections.

Input is text with a path label, not files: the same function serves rule folders on disk and
rules pushed through a Kafka topic. One bad rule is rejected with its path, id and reason; it
never stops the others.

`load_ruleset` installs the byte-exact encoding modifiers (`encodings.register_modifiers`) in
pySigma before it parses; importing this module changes nothing in pySigma.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule

from detectors.compiler import Placeholders, compile_rule
from detectors.correlation import correlation_spec
from detectors.encodings import register_modifiers
from detectors.errors import RuleCompileError
from detectors.regex_safety import regex_warnings
from detectors.ruleset import Rejection, Ruleset, RuleSource

__all__ = ["Rejection", "RuleSource", "Ruleset", "load_ruleset", "ruleset_version"]

try:  # libyaml is ~10x faster on 3,700 files; fall back to the pure-Python loader
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]


def load_ruleset(
    sources: Iterable[RuleSource],
    pipelines: Sequence[ProcessingPipeline] = (),
    placeholders: Placeholders | None = None,
) -> Ruleset:
    """Parse, filter, resolve and compile rule sources. Collects errors instead of raising."""
    register_modifiers()  # before the first parse: pySigma resolves `|wide`, `|base64`... while parsing
    sources = list(sources)
    ruleset = Ruleset(version=ruleset_version(sources))
    parsed: list[SigmaRule | SigmaCorrelationRule | SigmaFilter] = []
    for source in sources:
        parsed.extend(_parse_source(source, ruleset.rejections))

    collection = SigmaCollection(parsed, collect_filters=True, resolve_references=False)
    if collection.filters:
        ruleset.filters_applied = _apply_filters(collection, ruleset.rejections)

    pipeline = _combine(pipelines)
    seen_ids: dict[str, str] = {}
    for rule in collection.rules:
        if isinstance(rule, SigmaCorrelationRule):
            continue
        path = _path_of(rule)
        rule_id = str(rule.id) if rule.id is not None else None
        try:
            if pipeline is not None:
                pipeline.apply(rule)
            compiled = compile_rule(rule, placeholders)
        except RuleCompileError as error:
            ruleset.rejections.append(Rejection(path, rule_id, str(rule.title), error.reason))
            continue
        except SigmaError as error:
            ruleset.rejections.append(Rejection(path, rule_id, str(rule.title), f"pipeline: {error}"))
            continue
        except Exception as error:  # noqa: BLE001 - a pySigma bug on one rule must not stop the others
            ruleset.rejections.append(
                Rejection(path, rule_id, str(rule.title), f"internal error: {type(error).__name__}: {error}")
            )
            continue
        if compiled.meta.id in seen_ids:
            ruleset.rejections.append(
                Rejection(path, rule_id, str(rule.title), f"duplicate rule id (first in {seen_ids[compiled.meta.id]})")
            )
            continue
        seen_ids[compiled.meta.id] = path
        ruleset.rules.append(compiled)
        ruleset.warnings.extend(regex_warnings(compiled))

    for rule in collection.rules:
        if not isinstance(rule, SigmaCorrelationRule):
            continue
        path = _path_of(rule)
        try:
            rule.resolve_rule_references(collection)
            ruleset.correlations.append(correlation_spec(rule, {r.meta.id for r in ruleset.rules}))
        except (SigmaError, RuleCompileError) as error:
            reason = error.reason if isinstance(error, RuleCompileError) else str(error)
            ruleset.rejections.append(
                Rejection(path, str(rule.id) if rule.id else None, str(rule.title), f"correlation: {reason}")
            )
    ruleset.loaded = ruleset.compiled + ruleset.filters_applied + len(ruleset.rejections)
    return ruleset


def ruleset_version(sources: Sequence[RuleSource]) -> str:
    """A hash of the rule texts only: the same rules give the same version on every worker,
    wherever the files sit."""
    digest = hashlib.sha256()
    for text in sorted(source.text for source in sources):
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _parse_source(
    source: RuleSource, rejections: list[Rejection]
) -> list[SigmaRule | SigmaCorrelationRule | SigmaFilter]:
    try:
        documents = [d for d in yaml.load_all(source.text, Loader=_YamlLoader) if d is not None]
    except yaml.YAMLError as error:
        rejections.append(Rejection(source.path, None, None, f"invalid YAML: {_one_line(error)}"))
        return []
    if not documents:
        rejections.append(Rejection(source.path, None, None, "no rule in file"))
        return []
    bad = [d for d in documents if not isinstance(d, dict)]
    if bad:
        rejections.append(Rejection(source.path, None, None, f"a YAML document is a {type(bad[0]).__name__}, not a mapping"))
        return []
    location = SigmaRuleLocation(Path(source.path))
    try:
        collection = SigmaCollection.from_dicts(
            documents, collect_errors=True, source=location, collect_filters=True, resolve_references=False
        )
    except Exception as error:  # noqa: BLE001 - pySigma raises plain exceptions on some malformed documents
        rejections.append(Rejection(source.path, _doc_id(documents[0]), _doc_title(documents[0]), _one_line(error)))
        return []
    good: list[SigmaRule | SigmaCorrelationRule | SigmaFilter] = []
    for item in [*collection.rules, *collection.filters]:
        if item.errors:
            reasons = "; ".join(_one_line(e) for e in item.errors)
            rejections.append(Rejection(source.path, str(item.id) if item.id else None, str(item.title), reasons))
        else:
            good.append(item)
    for problem in collection.errors:
        if not any(problem in item.errors for item in [*collection.rules, *collection.filters]):
            rejections.append(Rejection(source.path, None, None, _one_line(problem)))
    return good


def _apply_filters(collection: SigmaCollection, rejections: list[Rejection]) -> int:
    """Apply each meta filter to the rules it names; a filter that fails is rejected alone."""
    applied = 0
    rules = list(collection.rules)
    for sigma_filter in collection.filters:
        updated = []
        try:
            for rule in rules:
                updated.append(sigma_filter.apply_on_rule(rule) if isinstance(rule, SigmaRule) else rule)
        except (SigmaError, Exception) as error:  # noqa: BLE001 - pySigma raises plain errors on bad filters
            rejections.append(
                Rejection(_path_of(sigma_filter), str(sigma_filter.id) if sigma_filter.id else None,
                          str(sigma_filter.title), f"filter: {_one_line(error)}")
            )
            continue
        rules = updated
        applied += 1
    collection.rules = rules
    return applied


def _combine(pipelines: Sequence[ProcessingPipeline]) -> ProcessingPipeline | None:
    if not pipelines:
        return None
    combined = pipelines[0]
    for pipeline in pipelines[1:]:
        combined = combined + pipeline
    return combined


def _path_of(item: Any) -> str:
    source = getattr(item, "source", None)
    return str(source.path) if source is not None and source.path else "<unknown>"


def _doc_id(document: Mapping[str, Any]) -> str | None:
    value = document.get("id")
    return str(value) if value is not None else None


def _doc_title(document: Mapping[str, Any]) -> str | None:
    value = document.get("title")
    return str(value) if value is not None else None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
