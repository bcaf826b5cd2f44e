"""The one way to build what processes events, from a cluster config: the rules, the Sigma engine,
the detector and the entity scorer.

The PartitionWorkers, live rules, `sigmaray replay`, `scan` and the model workbench all build
through here, so the same config gives the same engine everywhere: the same rule paths,
pipelines, placeholders, logsource mapping and regex timeout.

>>> from cluster.build import build_detector
>>> from cluster.config import config_from_dict
>>> from detectors.shipped import shipped_rules_path
>>> config = config_from_dict({"rules": {"paths": [str(shipped_rules_path())]}, "models": {"enabled": False}})
>>> detector, ruleset = build_detector(config)
>>> len(ruleset.rules) > 10, ruleset.rejections
(True, [])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cluster.config import ClusterConfig, ModelsConfig, RulesConfig
from cluster.processing.detector import DetectionSettings, Detector
from detectors.cache import CacheOutcome, cached_load, ruleset_key
from detectors.cache import default_url as default_cache_url
from detectors.engine import SigmaEngine
from detectors.literals import set_database_cache
from detectors.routing import LogsourceMapping
from detectors.rulefiles import read_rule_sources, resolve_pipeline
from detectors.ruleset import Ruleset, RuleSource


def logsource_mapping(rules: RulesConfig) -> LogsourceMapping:
    """`rules.mapping` (a logsource mapping YAML), or the built-in Windows mapping."""
    return LogsourceMapping.from_yaml(rules.mapping) if rules.mapping else LogsourceMapping.default()


def rule_cache_url(models: ModelsConfig | None = None) -> str:
    """Where compiled rulesets are cached: beside the checkpoints when `models.checkpoint_url`
    names a URL (every worker of a cluster then shares it), else ~/.cache/sigmaray/rulesets.
    $SIGMARAY_RULE_CACHE overrides both ("off" disables the cache)."""
    override = os.environ.get("SIGMARAY_RULE_CACHE")
    if override:
        return override
    if models is not None and models.checkpoint_url:
        return models.checkpoint_url.rstrip("/") + "/rulesets"
    return default_cache_url()


def _configure_database_cache() -> None:
    # Hyperscan databases are cached on local disk only (see detectors.literals), whatever the
    # ruleset cache URL is; none at all when the cache is switched off.
    if os.environ.get("SIGMARAY_RULE_CACHE") == "off":
        set_database_cache(None)
    else:
        set_database_cache(Path.home() / ".cache" / "sigmaray" / "hyperscan")


def load_rules(rules: RulesConfig, paths: Sequence[str] = (), extra: Sequence[RuleSource] = (),
               files: Sequence[RuleSource] | None = None, cache_url: str | None = None,
               outcome: CacheOutcome | None = None) -> Ruleset:
    """The rule files (`paths`, default `rules.paths`; or `files` already read) plus `extra`
    sources (the rules topic), parsed and compiled with the config's pipelines and placeholders.
    Bad rules are collected in `ruleset.rejections`, never raised.

    The result comes from the compiled-ruleset cache (`cache_url`, default `rule_cache_url()`;
    "off": none) when it holds this exact input (`detectors.cache`); `outcome` says whether it
    did."""
    if files is None:
        sources, unreadable = read_rule_sources(list(paths) or list(rules.paths))
    else:
        sources, unreadable = list(files), []
    all_sources = [*sources, *extra]

    def compile_ruleset() -> Ruleset:
        from detectors.loader import load_ruleset  # pySigma is imported only on a cache miss
        from detectors.parallel import load_ruleset_parallel, parallel_workers

        workers = parallel_workers(all_sources)
        if workers > 1:
            try:
                return load_ruleset_parallel(all_sources, rules.pipelines, rules.placeholders, workers)
            except Exception:  # noqa: BLE001 - a failed fork or child: the serial load decides
                pass
        return load_ruleset(all_sources, [resolve_pipeline(p) for p in rules.pipelines], rules.placeholders)

    url = cache_url if cache_url is not None else rule_cache_url()
    mapping_text = Path(rules.mapping).read_text(encoding="utf-8") if rules.mapping else ""
    key = ruleset_key(all_sources, rules.pipelines, rules.placeholders, mapping_text)
    ruleset = cached_load(key, url, compile_ruleset, outcome)
    if unreadable:
        ruleset.rejections[:0] = unreadable
        ruleset.loaded += len(unreadable)
    return ruleset


def build_engine(ruleset: Ruleset, rules: RulesConfig, mode: str = "indexed",
                 mapping: LogsourceMapping | None = None, reuse: SigmaEngine | None = None) -> SigmaEngine:
    """The Sigma engine over the ruleset, with the config's mapping and regex timeout. `reuse`:
    the engine it replaces (live rules), whose work for unchanged rules is taken over."""
    _configure_database_cache()
    return SigmaEngine(ruleset.rules, mapping or logsource_mapping(rules), mode=mode,  # type: ignore[arg-type]
                       regex_timeout=rules.regex_timeout_s or None, reuse=reuse)


def detection_settings(config: ClusterConfig, shadow_topic: str = "") -> DetectionSettings:
    return DetectionSettings(config.kafka.detections_topic, config.kafka.dead_letter_topic, shadow_topic=shadow_topic)


def build_detector(config: ClusterConfig, ruleset: Ruleset | None = None, shadow_topic: str = "",
                   paths: Sequence[str] = ()) -> tuple[Detector, Ruleset]:
    """A Detector over the config's rules (or `ruleset`), with the config's output topics."""
    ruleset = ruleset if ruleset is not None else load_rules(config.rules, paths,
                                                              cache_url=rule_cache_url(config.models))
    engine = build_engine(ruleset, config.rules)
    return Detector(engine, ruleset.version, detection_settings(config, shadow_topic), quiet_rules=quiet_rules(ruleset)), ruleset


def quiet_rules(ruleset: Ruleset) -> frozenset[str]:
    """Rules that raise no alert of their own: the base rules of `generate: false` correlations."""
    from correlator.correlations import suppressed_rule_ids

    return frozenset(suppressed_rule_ids(ruleset.correlations))


def scorer_config(models: ModelsConfig, mapping: str = "") -> Any:
    """The scorer's settings from the `models` section (and the engine's logsource mapping, which
    routes the per-logsource entity rules)."""
    from models.entities import DEFAULT_ENTITY_FIELDS
    from models.scorer import ScorerConfig

    return ScorerConfig(model=models.model, seed=models.seed, threshold=models.threshold,
                        calibration_window=models.calibration_window, max_entities=models.max_entities,
                        ttl_ms=models.entity_ttl_hours * 3600 * 1000,
                        entity_fields=models.entity_fields or dict(DEFAULT_ENTITY_FIELDS), entity_rules=models.entities,
                        logsource_mapping=mapping)


def build_scorer(config: ClusterConfig, model: str | None = None) -> Any:
    """An EntityScorer as the workers run it (model `model`, or the config's; a shadow if set)."""
    from models.scorer import EntityScorer

    models = config.models
    scorer = EntityScorer(scorer_config(replace(models, model=model) if model else models, config.rules.mapping))
    if models.shadow and not model:
        scorer.start_shadow(models.shadow)
    return scorer


def build_correlator(config: ClusterConfig, ruleset: Ruleset, criticality: Any = None, fusion: Any = None) -> Any:
    """A `correlator.Correlator` over the ruleset's correlation rules with the config's fusion
    settings (`correlator.fusion`, or `fusion`, a FusionConfig, for an evaluation's variant),
    lateness and group cap: the correlator actors, replay and eval all build it here."""
    from correlator.pipeline import Correlator
    from correlator.settings import fusion_config_from_dict

    settings = config.correlator
    return Correlator.from_ruleset(ruleset, fusion or fusion_config_from_dict(settings.fusion), criticality,
                                   allowed_lateness_ms=settings.allowed_lateness_s * 1000,
                                   max_groups=settings.max_groups)


def load_criticality_file(config: ClusterConfig) -> tuple[Any, list[str]]:
    """(`correlator.criticality.Criticality`, errors per bad line) from `correlator.criticality`;
    an empty lookup when none is configured."""
    from correlator.criticality import Criticality, load_criticality

    if not config.correlator.criticality:
        return Criticality(), []
    return load_criticality(config.correlator.criticality)
