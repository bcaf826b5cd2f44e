"""Rules from a compacted Kafka topic: key = rule id, value = rule YAML, tombstone = delete.

Workers read the whole topic from the start, keep the latest text per id, and recompile in a
background thread when it changes; the loop swaps the new engine in between batches, so no
batch sees two rulesets and no event is skipped.

A change is compiled incrementally (`IncrementalRules`): only the pushed rule texts go through
pySigma, the other rules keep their compiled objects, and the new engine takes over the
closures of those rules and the index of every logsource class they alone make up
(`SigmaEngine(reuse=...)`). What it builds is what a full load of the same texts builds; a
change that reaches across rules (a meta filter, a correlation, a duplicate id) is loaded in
full, which is what decides those.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from cluster.config import KafkaConfig, RulesConfig
from cluster.kafka import client as kafka
from detectors.engine import SigmaEngine
from detectors.errors import ConfigError
from detectors.rulefiles import read_rule_sources
from detectors.ruleset import Ruleset, RuleSource


def ensure_rules_topic(settings: kafka.Kafka, topic: str) -> None:
    """Create the compacted rules topic if it does not exist yet (a concurrent creator may win)."""
    if topic not in kafka.existing_topics(settings):
        kafka.create_topics(settings, {topic: 1}, config={"cleanup.policy": "compact"}, exist_ok=True)


def rule_documents(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """(rule id, YAML text) for every rule document in the files; a document without an id is an error."""
    sources, unreadable = read_rule_sources(paths)
    if unreadable:
        raise ConfigError(f"cannot read {unreadable[0].path}: {unreadable[0].reason}")
    out: list[tuple[str, str]] = []
    for source in sources:
        try:
            documents = [d for d in yaml.safe_load_all(source.text) if d is not None]
        except yaml.YAMLError as error:
            raise ConfigError(f"{source.path}: invalid YAML: {error}") from error
        for document in documents:
            if not isinstance(document, dict) or not document.get("id"):
                raise ConfigError(f"{source.path}: every pushed rule needs an id (it is the topic key)")
            text = source.text if len(documents) == 1 else yaml.safe_dump(document, sort_keys=False)
            out.append((str(document["id"]), text))
    return out


def push(bootstrap: str | KafkaConfig, topic: str, rules: Sequence[tuple[str, str | None]],
         client: dict[str, Any] | None = None) -> int:
    """Publish rules (None as text deletes); returns how many records were acknowledged."""
    settings: str | KafkaConfig = bootstrap
    if isinstance(bootstrap, str) and client:
        settings = KafkaConfig(bootstrap_servers=bootstrap, client=dict(client))
    ensure_rules_topic(settings, topic)
    producer = kafka.producer(settings, **{"enable.idempotence": True})
    for rule_id, text in rules:
        producer.produce(topic, key=rule_id.encode(), value=None if text is None else text.encode())
    if producer.flush(30):
        raise ConfigError(f"rules topic {topic}: not every record was acknowledged")
    return len(rules)


@dataclass(slots=True)
class BuildReport:
    """How the last build went: incremental or full (and why), and what it recompiled."""

    incremental: bool = False
    reason: str = ""  # why a full load was needed
    recompiled_sources: int = 0
    reused_rules: int = 0
    rebuilt_classes: int = 0
    seconds: float = 0.0


class IncrementalRules:
    """File rules plus topic rules, compiled into an engine; each build after the first
    recompiles only the topic texts that changed (no Kafka here: `LiveRules` feeds it)."""

    def __init__(self, rules: RulesConfig, file_sources: Sequence[RuleSource], topic: str) -> None:
        self.rules = rules
        self.file_sources = list(file_sources)
        self.topic = topic
        self.report = BuildReport()
        self._texts: dict[str, str] | None = None  # the topic texts of the last build
        self._engine: SigmaEngine | None = None
        self._ruleset: Ruleset | None = None

    def source(self, rule_id: str, text: str) -> RuleSource:
        return RuleSource(f"kafka:{self.topic}/{rule_id}", text)

    def sources(self, texts: dict[str, str]) -> list[RuleSource]:
        """Every source in load order: the files, then the topic's rules by id."""
        return [*self.file_sources, *(self.source(k, v) for k, v in sorted(texts.items()))]

    def build(self, texts: dict[str, str]) -> tuple[SigmaEngine, Ruleset]:
        from cluster.build import build_engine, load_rules

        started = time.perf_counter()
        ruleset, reason, recompiled = None, "first build", 0
        if self._texts is not None and self._ruleset is not None:
            ruleset, reason, recompiled = self._incremental(texts)
        if ruleset is None:
            ruleset = load_rules(self.rules, extra=self.sources(texts)[len(self.file_sources):],
                                 files=self.file_sources)
            recompiled = len(self.file_sources) + len(texts)
        engine = build_engine(ruleset, self.rules, reuse=self._engine)
        index = engine._index
        self.report = BuildReport(incremental=not reason, reason=reason, recompiled_sources=recompiled,
                                  reused_rules=engine.reused,
                                  rebuilt_classes=index.rebuilt if index is not None else 0,
                                  seconds=time.perf_counter() - started)
        self._texts, self._engine, self._ruleset = dict(texts), engine, ruleset
        return engine, ruleset

    def _incremental(self, texts: dict[str, str]) -> tuple[Ruleset | None, str, int]:
        """(the new ruleset, "", sources compiled) or (None, why a full load is needed, 0)."""
        from detectors.loader import load_ruleset, ruleset_version
        from detectors.rulefiles import resolve_pipeline

        assert self._texts is not None and self._ruleset is not None
        old, before = self._ruleset, self._texts
        changed = {k for k in {*before, *texts} if before.get(k) != texts.get(k)}
        if old.filters_applied:
            return None, "the rules hold meta filters, which apply across rules", 0
        if any(r.reason.startswith("duplicate rule id") for r in old.rejections):
            return None, "a rule was refused as a duplicate id: which copy stays depends on all of them", 0
        changed_paths = {self.source(k, "").path for k in changed}
        new_sources = [self.source(k, texts[k]) for k in sorted(changed) if k in texts]
        # A pushed correlation or meta filter names other rules (by id or name) that a load of
        # the pushed texts alone cannot resolve: it would be refused there, not applied.
        if any(_names_other_rules(source.text) for source in new_sources):
            return None, "a pushed rule is a meta filter or a correlation", 0
        partial = load_ruleset(new_sources, [resolve_pipeline(p) for p in self.rules.pipelines],
                               self.rules.placeholders)
        if partial.filters_applied or partial.correlations:
            return None, "a pushed rule is a meta filter or a correlation", 0
        if any(c.path in changed_paths for c in old.correlations):
            return None, "a changed rule was a correlation", 0
        # Rules from changed sources, old and new: a correlation naming one is resolved again.
        touched = {r.meta.id for r in old.rules if r.meta.path in changed_paths} | {r.meta.id for r in partial.rules}
        touched |= {r.id for r in old.rejections if r.path in changed_paths and r.id}
        touched |= {r.id for r in partial.rejections if r.id}
        if any(set(c.rules) & touched for c in old.correlations):
            return None, "a correlation references a changed rule", 0
        # Merge in load order: each source's rules from the new compile or the old ruleset.
        order = {source.path: n for n, source in enumerate(self.sources(texts))}
        by_path: dict[str, list[Any]] = {}
        for rule in old.rules:
            if rule.meta.path not in changed_paths:
                by_path.setdefault(rule.meta.path or "", []).append(rule)
        for rule in partial.rules:
            by_path.setdefault(rule.meta.path or "", []).append(rule)
        if any(path not in order for path in by_path):
            return None, "a rule came from an unknown source", 0
        rules = [rule for path in sorted(by_path, key=order.__getitem__) for rule in by_path[path]]
        if len({r.meta.id for r in rules}) != len(rules):
            return None, "a pushed rule's id is already taken (a full load decides which one stays)", 0

        def kept(items: list[Any]) -> list[Any]:
            return [item for item in items if item.path not in changed_paths]

        ruleset = Ruleset(
            rules=rules,
            correlations=list(old.correlations),
            rejections=sorted([*kept(old.rejections), *partial.rejections], key=lambda r: order.get(r.path, -1)),
            warnings=sorted([*kept(old.warnings), *partial.warnings], key=lambda w: order.get(w.path or "", -1)),
            filters_applied=0,
            version=ruleset_version(self.sources(texts)),
        )
        ruleset.loaded = ruleset.compiled + len(ruleset.rejections)
        return ruleset, "", len(new_sources)


class LiveRules:
    """File rules plus the rules topic, compiled into engines off the processing thread."""

    def __init__(self, kafka_config: KafkaConfig, rules: RulesConfig) -> None:
        self.topic = rules.topic
        self.rules = rules
        self.file_sources, _ = read_rule_sources(rules.paths) if rules.paths else ([], [])
        self.compiler = IncrementalRules(rules, self.file_sources, self.topic)
        self.texts: dict[str, str] = {}
        # Never commits: every worker reads the whole topic.
        self.consumer = kafka.consumer(kafka_config, "sigmaray-rules-reader",
                                       **{"enable.auto.commit": False, "enable.partition.eof": True})
        ensure_rules_topic(kafka_config, self.topic)
        self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._ready: tuple[SigmaEngine, Ruleset] | None = None
        self._building: threading.Thread | None = None
        self._lock = threading.Lock()
        self._compiling = threading.Lock()
        self._dirty = False
        self.changes = 0

    def catch_up(self, timeout: float = 30) -> None:
        """Read the topic up to its current end (start-up: begin with every published rule)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._read(self.consumer.consume(1000, 0.5)):
                return

    def poll(self) -> bool:
        """Read what the topic has now; True when the rule texts changed."""
        before = dict(self.texts)
        self._read(self.consumer.consume(1000, 0))
        changed = before != self.texts
        if changed:
            self.changes += 1
            self._dirty = True
        return changed

    def _read(self, messages: list[Any]) -> bool:
        """Apply records; True when the end of the partition was reached."""
        at_end = False
        for message in messages:
            error = message.error()
            if error is not None:
                # EOF marks the end; other errors are transient on this feed and must not stop detection.
                at_end |= error.code() == KafkaError._PARTITION_EOF
                continue
            rule_id = message.key().decode("utf-8", "replace") if message.key() else ""
            if message.value() is None:
                self.texts.pop(rule_id, None)
            else:
                self.texts[rule_id] = message.value().decode("utf-8", "replace")
        return at_end

    def build(self, texts: dict[str, str] | None = None) -> tuple[SigmaEngine, Ruleset]:
        """Compile file rules plus topic rules (a snapshot, so the feed can move on meanwhile);
        after the first build, only what changed is compiled (`IncrementalRules`)."""
        with self._compiling:  # one build at a time: each starts from the one before
            return self.compiler.build(dict(self.texts) if texts is None else texts)

    def rebuild_in_background(self) -> None:
        """Start compiling the current texts unless a build is running (it is retried later)."""
        if not self._dirty or (self._building is not None and self._building.is_alive()):
            return
        self._dirty = False
        snapshot = dict(self.texts)

        def work() -> None:
            built = self.build(snapshot)
            with self._lock:
                self._ready = built

        self._building = threading.Thread(target=work, name="rules-compiler", daemon=True)
        self._building.start()

    def take_ready(self) -> tuple[SigmaEngine, Ruleset] | None:
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def close(self) -> None:
        self.consumer.close()


def _names_other_rules(text: str) -> bool:
    """Whether a rule text holds a correlation or a meta filter document."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return False  # the load refuses it with the reason
    return any(isinstance(doc, dict) and ("correlation" in doc or "filter" in doc) for doc in documents)
