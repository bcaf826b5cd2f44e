"""Parse stage: rule YAML texts -> compiled rules, correlations and a list of rejections.

Input is text with a path label, not files: the same function serves rule folders on disk and
rules pushed through a Kafka topic. One bad rule is rejected with its path, id and reason; it
never stops the others.

`load_ruleset` installs the byte-exact encoding modifiers (`encodings.register_modifiers`) in
pySigma before it parses; importing this module changes nothing in pySigma.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.filters import SigmaFilter
from sigma.processing.pipeline import ProcessingPipeline
from sigma.rule import SigmaRule
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from detectors.compiler import Placeholders, compile_rule
from detectors.correlation import correlation_spec
from detectors.encodings import register_modifiers
from detectors.errors import RuleCompileError
from detectors.regex_safety import regex_warnings
from detectors.ruleset import Rejection, Ruleset, RuleSource

__all__ = ["Rejection", "RuleSource", "Ruleset", "load_ruleset", "ruleset_version"]

try:  # libyaml is ~10x faster on 3,700 files; fall back to the pure-Python loader
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"


class _SlowPath(Exception):
    """A document that `_YamlLoader`'s fast construction leaves to SafeLoader's own."""


class _YamlLoader(_SafeLoader):
    """PyYAML's safe loader, giving the very same objects with less Python per node.

    libyaml parses and composes the node tree; what remains in Python is resolving each plain
    scalar's tag and building the objects, a third of the time a rule file takes to parse. Both
    are done here without SafeLoader's generality where a rule does not need it: a document of
    plain mappings (string keys, no merge keys), lists and scalars, with no alias of a mapping
    or list, is built directly (every scalar that is not a string by SafeLoader's own
    constructor); any other document (or error) is built by SafeLoader, unchanged."""

    # Implicit resolvers by first character, the catch-all ones appended (Resolver.resolve's
    # lookup, done once at import); this class adds no resolver of its own, and leaves scalars
    # to Resolver.resolve if path resolvers are ever added.
    _implicit: dict[str, tuple[tuple[str, Any], ...]] = {}
    _wildcard: tuple[tuple[str, Any], ...] = ()

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and not self.yaml_path_resolvers:
            if implicit[0]:
                for tag, regexp in self._implicit.get(value[:1], self._wildcard):
                    if regexp.match(value):
                        return tag
            return _STR_TAG
        return super().resolve(kind, value, implicit)

    def construct_document(self, node: Any) -> Any:
        try:
            data = self._build(node, set())
            if self.state_generators:  # a scalar tagged as a mapping or list (`!!map x`)
                raise _SlowPath
            return data
        except Exception:  # noqa: BLE001 - SafeLoader builds it again, and raises its own error
            self.constructed_objects, self.recursive_objects = {}, {}
            self.state_generators, self.deep_construct = [], False
            return super().construct_document(node)
        finally:
            self.constructed_objects = {}

    def _build(self, node: Any, collections: set[int]) -> Any:
        kind = node.__class__
        if kind is ScalarNode:
            return node.value if node.tag == _STR_TAG else self.construct_object(node)
        if id(node) in collections:  # an alias: SafeLoader gives the same object twice
            raise _SlowPath
        collections.add(id(node))
        if kind is MappingNode and node.tag == _MAP_TAG:
            mapping = {}
            for key, value in node.value:
                if key.__class__ is not ScalarNode or key.tag != _STR_TAG:
                    raise _SlowPath  # merge keys, `=`, other key types: SafeLoader's rules
                mapping[key.value] = self._build(value, collections)
            return mapping
        if kind is SequenceNode and node.tag == _SEQ_TAG:
            return [self._build(item, collections) for item in node.value]
        raise _SlowPath


_YamlLoader._wildcard = tuple(_SafeLoader.yaml_implicit_resolvers.get(None, []))
_YamlLoader._implicit = {
    first: tuple(resolvers) + _YamlLoader._wildcard
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items() if first is not None
}


def load_ruleset(
    sources: Iterable[RuleSource],
    pipelines: Sequence[ProcessingPipeline] = (),
    placeholders: Placeholders | None = None,
) -> Ruleset:
    """Parse, filter, resolve and compile rule sources. Collects errors instead of raising."""
    with _collector_paused():
        return _load_ruleset(list(sources), pipelines, placeholders)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector is paused while rules load, as while an engine builds
    (`detectors.engine._gc_paused`). A load allocates ~10^6 objects that live until it ends
    (the parsed rules: pySigma links each detection item to its parent, so every rule is a
    web of cycles), and each allocation burst made the collector walk all of them again, ever
    more of them: 8 full collections, a third of a cold load of SigmaHQ's rules, which
    found nothing to free until the load was over. The load's garbage is left for one
    collection after it (the next automatic one, or the engine build's)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_ruleset(
    sources: list[RuleSource], pipelines: Sequence[ProcessingPipeline], placeholders: Placeholders | None
) -> Ruleset:
    register_modifiers()  # before the first parse: pySigma resolves `|wide`, `|base64`... while parsing
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
    except (yaml.YAMLError, ValueError, OverflowError) as error:  # a bad date (`2023-02-30`) raises ValueError
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
