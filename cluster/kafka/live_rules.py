"""Rules from a compacted Kafka topic: key = rule id, value = rule YAML, tombstone = delete.

Workers read the whole topic from the start, keep the latest text per id, and recompile in a
background thread when it changes; the loop swaps the new engine in between batches, so no
batch sees two rulesets and no event is skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from cluster.config import KafkaConfig, RulesConfig
from cluster.kafka import client as kafka
from detectors.engine import SigmaEngine
from detectors.errors import ConfigError
from detectors.loader import Ruleset, RuleSource
from detectors.rulefiles import read_rule_sources


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


class LiveRules:
    """File rules plus the rules topic, compiled into engines off the processing thread."""

    def __init__(self, kafka_config: KafkaConfig, rules: RulesConfig) -> None:
        self.topic = rules.topic
        self.rules = rules
        self.file_sources, _ = read_rule_sources(rules.paths) if rules.paths else ([], [])
        self.texts: dict[str, str] = {}
        # Never commits: every worker reads the whole topic.
        self.consumer = kafka.consumer(kafka_config, "sigmaray-rules-reader",
                                       **{"enable.auto.commit": False, "enable.partition.eof": True})
        ensure_rules_topic(kafka_config, self.topic)
        self.consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._ready: tuple[SigmaEngine, Ruleset] | None = None
        self._building: threading.Thread | None = None
        self._lock = threading.Lock()
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
        """Compile file rules plus topic rules (a snapshot, so the feed can move on meanwhile)."""
        from cluster.build import build_engine, load_rules

        texts = dict(self.texts) if texts is None else texts
        topic_sources = [RuleSource(f"kafka:{self.topic}/{k}", v) for k, v in sorted(texts.items())]
        ruleset = load_rules(self.rules, extra=topic_sources, files=self.file_sources)
        return build_engine(ruleset, self.rules), ruleset

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
