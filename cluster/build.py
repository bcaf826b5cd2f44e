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

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cluster.config import ClusterConfig, ModelsConfig, RulesConfig
from cluster.processing.detector import DetectionSettings, Detector
from detectors.engine import SigmaEngine
from detectors.loader import Ruleset, RuleSource, load_ruleset
from detectors.routing import LogsourceMapping
from detectors.rulefiles import read_rule_sources, resolve_pipeline


def logsource_mapping(rules: RulesConfig) -> LogsourceMapping:
    """`rules.mapping` (a logsource mapping YAML), or the built-in Windows mapping."""
    return LogsourceMapping.from_yaml(rules.mapping) if rules.mapping else LogsourceMapping.default()


def load_rules(rules: RulesConfig, paths: Sequence[str] = (), extra: Sequence[RuleSource] = (),
               files: Sequence[RuleSource] | None = None) -> Ruleset:
    """The rule files (`paths`, default `rules.paths`; or `files` already read) plus `extra`
    sources (the rules topic), parsed and compiled with the config's pipelines and placeholders.
    Bad rules are collected in `ruleset.rejections`, never raised."""
    if files is None:
        sources, unreadable = read_rule_sources(list(paths) or list(rules.paths))
    else:
        sources, unreadable = list(files), []
    ruleset = load_ruleset([*sources, *extra], [resolve_pipeline(p) for p in rules.pipelines], rules.placeholders)
    ruleset.rejections[:0] = unreadable
    ruleset.loaded += len(unreadable)
    return ruleset


def build_engine(ruleset: Ruleset, rules: RulesConfig, mode: str = "indexed",
                 mapping: LogsourceMapping | None = None) -> SigmaEngine:
    return SigmaEngine(ruleset.rules, mapping or logsource_mapping(rules), mode=mode,  # type: ignore[arg-type]
                       regex_timeout=rules.regex_timeout_s or None)


def detection_settings(config: ClusterConfig, shadow_topic: str = "") -> DetectionSettings:
    return DetectionSettings(config.kafka.detections_topic, config.kafka.dead_letter_topic, shadow_topic=shadow_topic)


def build_detector(config: ClusterConfig, ruleset: Ruleset | None = None, shadow_topic: str = "",
                   paths: Sequence[str] = ()) -> tuple[Detector, Ruleset]:
    """A Detector over the config's rules (or `ruleset`), with the config's output topics."""
    ruleset = ruleset if ruleset is not None else load_rules(config.rules, paths)
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
