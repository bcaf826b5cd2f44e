"""Cluster configuration: every setting has a default, and a bad value names its key.

    kafka:
      bootstrap_servers: 127.0.0.1:9092     # your cluster; SASL/SSL go in `client`
      input_topics: [sigmaray.events]
      detections_topic: sigmaray.detections
      dead_letter_topic: sigmaray.dead-letter
      group_id: sigmaray                    # offsets are committed under this group
      client: {}                            # extra librdkafka settings for every client
      client_env: {}                        # librdkafka settings read from environment variables, e.g.
                                            # {sasl.password: KAFKA_PASSWORD}: no secret in the file or in Ray
      replication_factor: 1                 # for the topics sigmaray creates (the dev broker: 1; managed Kafka: 3)
    processing:
      guarantee: at_least_once              # or exactly_once
      batch_size: 500                       # records per consumer poll
      batch_timeout_ms: 200
      max_in_flight: 20000                  # produced but unacknowledged records before pausing
      flush_timeout_s: 15                   # a batch not acknowledged by then is processed again
    workers: 2                              # PartitionWorker actors
    rules:
      paths: [rules/]
      pipelines: []
      placeholders: {}
      topic: ""                             # e.g. sigmaray.rules: live rules from `sigmaray rules push`
      mapping: ""                           # logsource mapping YAML; "" = the built-in Windows mapping
      regex_timeout_s: 0.1                  # per match of a regex RE2 cannot run (backreferences); 0 = no bound
    models:
      enabled: true                         # entity anomaly scores on every detection, anomaly detections
      model: hst                            # a name from `sigmaray models list`
      shadow: ""                            # a candidate scored beside it, published to shadow_topic
      shadow_topic: sigmaray.shadow-scores
      threshold: 0.995                      # calibrated score at which an entity is anomalous
      max_entities: 200000                  # per partition, hard cap (least recently seen go first)
      entity_ttl_hours: 168                 # forget entities idle this long (event time)
      checkpoint_url: ""                    # model state with its offsets; "" = ~/.cache/sigmaray/checkpoints, or s3://...
      checkpoint_interval_s: 30             # 0 = after every batch
      calibration_window: 2000              # scores per calibration window; no anomaly before the first
      seed: 0
      entity_fields: {}                     # {type: [field, ...]}, first present wins; {} = Windows defaults
      entities: []                          # per Sigma logsource, over entity_fields; [] switches a type off, e.g.
                                            # - {logsource: {service: security}, fields: {user: [TargetUserName]}}
    ray:
      host: 127.0.0.1                       # where a Ray that sigmaray starts (`run` without --address, `demo`)
                                            # listens, Prometheus metrics included; 0.0.0.0 = every interface
      actor_cpus: 0                         # CPUs each worker and correlator reserves; 1 on an autoscaling cluster,
                                            # so `sigmaray scale` adds nodes (0: they share whatever is there)
    correlator:
      enabled: true                         # Correlator actors: correlation rules + fusion into alerts
      instances: 1                          # Correlator actors (`sigmaray scale --correlators N`)
      alerts_topic: sigmaray.alerts         # OCSF Detection Findings, keyed by alert id
      verdicts_topic: sigmaray.verdicts     # analyst verdicts (`sigmaray alerts verdict`), read by every correlator
      repartition_topic: sigmaray.correlation-repartition  # hits re-keyed by a correlation's group-by
      alerts_dead_letter_topic: sigmaray.alerts-dead-letter  # alerts the webhook could not deliver
      criticality: ""                       # CSV/YAML asset and identity lookup; reloaded when the file changes
      allowed_lateness_s: 60                # out-of-order detections within this count; later ones are counted
      max_groups: 100000                    # per correlation and partition (least recently updated go first)
      checkpoint_interval_s: 30             # correlator state with its offsets, in models.checkpoint_url
      fusion: {}                            # risk / priority / alerts / feedback settings (correlator/settings.py)
      webhook:
        url: ""                             # "" = no webhook; else alerts are POSTed here, signed
        secret_env: SIGMARAY_WEBHOOK_SECRET # the environment variable holding the HMAC secret
        min_priority: 2                     # deliver P1..P<min_priority>
        timeout_s: 10
        max_queue: 10000
        max_attempts: 8
        backoff_initial_s: 0.5
        backoff_max_s: 30
    console:
      enabled: true                         # `sigmaray run` starts the web console
      host: 127.0.0.1
      port: 8765
      token_env: SIGMARAY_CONSOLE_TOKEN     # login token; unset = one generated at start and printed once
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from detectors.errors import ConfigError


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    input_topics: tuple[str, ...] = ("sigmaray.events",)
    detections_topic: str = "sigmaray.detections"
    dead_letter_topic: str = "sigmaray.dead-letter"
    group_id: str = "sigmaray"
    client: dict[str, Any] = field(default_factory=dict)
    client_env: dict[str, str] = field(default_factory=dict)  # librdkafka setting -> environment variable
    replication_factor: int = 1


@dataclass(frozen=True, slots=True)
class ProcessingConfig:
    guarantee: str = "at_least_once"
    batch_size: int = 500
    batch_timeout_ms: int = 200
    max_in_flight: int = 20000
    flush_timeout_s: int = 15


@dataclass(frozen=True, slots=True)
class RulesConfig:
    paths: tuple[str, ...] = ("rules",)
    pipelines: tuple[str, ...] = ()
    placeholders: dict[str, list[str]] = field(default_factory=dict)
    topic: str = ""  # compacted rules topic for live rules (sigmaray rules push); "" = files only
    mapping: str = ""  # logsource mapping YAML (`sigmaray scan --mapping`); "" = the built-in Windows mapping
    regex_timeout_s: float = 0.1  # per match of a regex RE2 cannot run; past it the rule is degraded


@dataclass(frozen=True, slots=True)
class ModelsConfig:
    enabled: bool = True
    model: str = "hst"
    shadow: str = ""
    shadow_topic: str = "sigmaray.shadow-scores"
    threshold: float = 0.995
    max_entities: int = 200_000
    entity_ttl_hours: int = 168
    checkpoint_url: str = ""
    checkpoint_interval_s: int = 30
    calibration_window: int = 2000  # learned scores per calibration reference (warm-up before alerts)
    seed: int = 0
    entity_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # {} = the Windows defaults
    entities: tuple[Any, ...] = ()  # EntityRule per Sigma logsource


@dataclass(frozen=True, slots=True)
class RayConfig:
    host: str = "127.0.0.1"  # a local Ray's listening interface: "127.0.0.1" or "0.0.0.0"
    actor_cpus: float = 0  # CPUs each worker and correlator actor reserves: 1 lets Ray's autoscaler add nodes


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str = ""
    secret_env: str = "SIGMARAY_WEBHOOK_SECRET"
    min_priority: int = 2
    timeout_s: float = 10.0
    max_queue: int = 10_000
    max_attempts: int = 8
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class CorrelatorConfig:
    enabled: bool = True
    instances: int = 1
    alerts_topic: str = "sigmaray.alerts"
    verdicts_topic: str = "sigmaray.verdicts"
    repartition_topic: str = "sigmaray.correlation-repartition"
    alerts_dead_letter_topic: str = "sigmaray.alerts-dead-letter"
    criticality: str = ""
    allowed_lateness_s: int = 60
    max_groups: int = 100_000
    checkpoint_interval_s: int = 30
    fusion: dict[str, Any] = field(default_factory=dict)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8765
    token_env: str = "SIGMARAY_CONSOLE_TOKEN"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    processing: ProcessingConfig = field(default_factory=ProcessingConfig)
    rules: RulesConfig = field(default_factory=RulesConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    workers: int = 2
    ray: RayConfig = field(default_factory=RayConfig)
    correlator: CorrelatorConfig = field(default_factory=CorrelatorConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)


_GUARANTEES = ("at_least_once", "exactly_once")
# Ray binds its HTTP endpoints to the loopback address or to every interface, nothing between.
RAY_HOSTS = ("127.0.0.1", "0.0.0.0")


def load_config(path: str | Path | None) -> ClusterConfig:
    """Read a YAML config; missing keys take their defaults."""
    if path is None:
        return ClusterConfig()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from error
    except yaml.YAMLError as error:  # `from None`: PyYAML's own message quotes the line
        raise ConfigError(f"config {path} is not valid YAML{_yaml_problem(error)}") from None
    return config_from_dict(data or {}, str(path))


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what, without the text of the line: it may be a kafka.client password. PyYAML
    quotes fragments of the value in its problem too (a character, an alias, a tag): cut, but
    for its token names such as '<scalar>'."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = re.sub(r"'(?!<[a-z ]+>')[^']*'", "'...'", str(getattr(error, "problem", None) or "")).strip()
    return f"{where}: {problem}" if problem else where


def config_from_dict(data: Any, source: str = "<config>") -> ClusterConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping")
    _known(data, {"kafka", "processing", "rules", "models", "workers", "ray", "correlator", "console"}, "", source)
    kafka = _section(KafkaConfig, data.get("kafka", {}), "kafka", source)
    processing = _section(ProcessingConfig, data.get("processing", {}), "processing", source)
    rules = _section(RulesConfig, data.get("rules", {}), "rules", source)
    workers = data.get("workers", 2)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"{source}: workers must be a positive integer, got {workers!r}")
    if processing.guarantee not in _GUARANTEES:
        raise ConfigError(f"{source}: processing.guarantee must be one of {', '.join(_GUARANTEES)}, got {processing.guarantee!r}")
    for name in ("batch_size", "batch_timeout_ms", "max_in_flight", "flush_timeout_s"):
        if getattr(processing, name) < 1:
            raise ConfigError(f"{source}: processing.{name} must be at least 1")
    if not kafka.input_topics:
        raise ConfigError(f"{source}: kafka.input_topics must name at least one topic")
    if kafka.replication_factor < 1:
        raise ConfigError(f"{source}: kafka.replication_factor must be at least 1")
    if not all(isinstance(v, str) and v for v in kafka.client_env.values()):
        raise ConfigError(f"{source}: kafka.client_env maps librdkafka settings to environment variable names")
    if rules.regex_timeout_s < 0:
        raise ConfigError(f"{source}: rules.regex_timeout_s must be 0 (no bound) or more, got {rules.regex_timeout_s!r}")
    if rules.mapping and not Path(rules.mapping).is_file():
        raise ConfigError(f"{source}: rules.mapping: no such file {rules.mapping}")
    models = _models_section(data.get("models", {}), source)
    if not 0 < models.threshold <= 1:
        raise ConfigError(f"{source}: models.threshold must be in (0, 1], got {models.threshold!r}")
    for name in ("max_entities", "entity_ttl_hours", "checkpoint_interval_s", "calibration_window"):
        if getattr(models, name) < 0 or (name in ("max_entities", "calibration_window") and getattr(models, name) < 1):
            raise ConfigError(f"{source}: models.{name} must be positive")
    if models.enabled:
        from models.scorer import check_model

        for name in filter(None, (models.model, models.shadow)):
            try:
                check_model(name)
            except Exception as error:
                raise ConfigError(f"{source}: models.model/shadow: {error}") from error
    ray = _section(RayConfig, data.get("ray", {}), "ray", source)
    if ray.actor_cpus < 0:
        raise ConfigError(f"{source}: ray.actor_cpus must be 0 or more")
    if ray.host not in RAY_HOSTS:
        raise ConfigError(f"{source}: ray.host must be 127.0.0.1 (this machine only) or 0.0.0.0 (every "
                          f"interface; Ray binds its metrics endpoints to no single other one), got {ray.host!r}")
    correlator = _correlator_section(data.get("correlator", {}), source)
    console = _section(ConsoleConfig, data.get("console", {}), "console", source)
    if console.host not in RAY_HOSTS and not re.fullmatch(r"[0-9.]+|[A-Za-z0-9.-]+", console.host):
        raise ConfigError(f"{source}: console.host must be an address or host name, got {console.host!r}")
    if not 0 <= console.port <= 65535:
        raise ConfigError(f"{source}: console.port must be 0..65535 (0 = any free port), got {console.port!r}")
    return ClusterConfig(kafka=kafka, processing=processing, rules=rules, models=models, workers=workers, ray=ray,
                         correlator=correlator, console=console)


def _correlator_section(raw: Any, source: str) -> CorrelatorConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: correlator must be a mapping")
    webhook = _section(WebhookConfig, raw.get("webhook", {}), "correlator.webhook", source)
    correlator = _section(CorrelatorConfig, {k: v for k, v in raw.items() if k != "webhook"}, "correlator", source)
    for name in ("instances", "max_groups"):
        if getattr(correlator, name) < 1:
            raise ConfigError(f"{source}: correlator.{name} must be at least 1")
    for name in ("allowed_lateness_s", "checkpoint_interval_s"):
        if getattr(correlator, name) < 0:
            raise ConfigError(f"{source}: correlator.{name} must be 0 or more")
    if correlator.criticality and not Path(correlator.criticality).is_file():
        raise ConfigError(f"{source}: correlator.criticality: no such file {correlator.criticality}")
    if not 1 <= webhook.min_priority <= 4:
        raise ConfigError(f"{source}: correlator.webhook.min_priority must be 1..4 (P1..P4), got {webhook.min_priority!r}")
    if webhook.url and not webhook.url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: correlator.webhook.url must be an http:// or https:// URL")
    for name in ("timeout_s", "max_queue", "max_attempts", "backoff_initial_s", "backoff_max_s"):
        if getattr(webhook, name) <= 0:
            raise ConfigError(f"{source}: correlator.webhook.{name} must be positive")
    from correlator.settings import fusion_config_from_dict

    try:
        fusion_config_from_dict(correlator.fusion)
    except ValueError as error:
        raise ConfigError(f"{source}: correlator.fusion: {error}") from error
    return replace(correlator, webhook=webhook)


def _known(data: dict[str, Any], allowed: set[str], prefix: str, source: str) -> None:
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(allowed))})")


def _models_section(raw: Any, source: str) -> ModelsConfig:
    from models.entities import entity_fields_from_config, entity_rules_from_config

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: models must be a mapping")
    rest = {k: v for k, v in raw.items() if k not in ("entity_fields", "entities")}
    models = _section(ModelsConfig, rest, "models", source)
    extra: dict[str, Any] = {}
    if "entity_fields" in raw:
        extra["entity_fields"] = entity_fields_from_config(raw["entity_fields"], f"{source}: models.entity_fields")
    if "entities" in raw:
        extra["entities"] = entity_rules_from_config(raw["entities"] or [], f"{source}: models.entities")
    return replace(models, **extra) if extra else models


def _section(cls: Any, raw: Any, name: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {name} must be a mapping")
    spec = {f.name: f for f in fields(cls)}
    _known(raw, set(spec), f"{name}.", source)
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(defaults, key)
        where = f"{source}: {name}.{key}"
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where} must be a mapping")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, type(default)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a {type(default).__name__}, got {value!r}")
        values[key] = value
    return cls(**values)
