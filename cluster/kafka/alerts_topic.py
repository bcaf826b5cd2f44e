"""Reading the alerts topic and writing the verdicts topic, for people (`sigmaray alerts tail`,
`sigmaray alerts verdict`) and notebooks. The correlators write alerts
(cluster/kafka/correlator_loop.py) and read verdicts; this is the other side."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from cluster.config import ClusterConfig
from cluster.kafka import client as kafka
from correlator.records import Verdict
from correlator.summary import AlertRecord, decode_alert


class AlertsTopicError(RuntimeError):
    """A clear, one-line reason the alerts or verdicts topic could not be used."""


class TopicMissing(AlertsTopicError):
    """The topic does not exist (or the broker does not answer)."""


def read_alerts(config: ClusterConfig, from_beginning: bool = False, poll_s: float = 0.2,
                on_problem: Callable[[str], None] | None = None) -> Generator[AlertRecord | None, None, None]:
    """The alerts topic from its end (or start), read_committed, never committing: each alert as it
    arrives, and None after every poll that brought nothing (so a caller can time out). A record
    that is not an alert, or a broker error, goes to `on_problem` with where it was; never raised."""
    topic = config.correlator.alerts_topic
    where = config.kafka.bootstrap_servers
    try:
        found = kafka.partitions(config.kafka, [topic], timeout=10)
    except (KafkaException, RuntimeError) as error:
        raise TopicMissing(f"cannot read the topics of the broker at {where}: {error}") from None
    if not found:
        raise TopicMissing(f"topic {topic} does not exist on {where} (correlator.alerts_topic; the cluster creates it)")
    consumer = kafka.consumer(config.kafka, f"{config.kafka.group_id}.tail-{uuid.uuid4().hex[:8]}",
                              **{"enable.auto.commit": False, "isolation.level": "read_committed"})
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(name, partition, start) for name, partition in found])
    try:
        while True:
            message = consumer.poll(poll_s)
            if message is None:
                yield None
                continue
            problem = message.error()
            if problem is not None:
                if problem.code() != KafkaError._PARTITION_EOF and on_problem is not None:
                    on_problem(problem.str())
                continue
            try:
                yield decode_alert(message.value(), message.headers())
            except ValueError as why:
                if on_problem is not None:
                    on_problem(f"{topic}[{message.partition()}] offset {message.offset()}: not an alert: {why}")
    finally:
        consumer.close()


def write_verdict(config: ClusterConfig, verdict: Verdict, timeout: float = 30) -> tuple[int, int]:
    """Writes the verdict (keyed by alert id) and waits for the broker's acknowledgement:
    (partition, offset). AlertsTopicError (TopicMissing, or the broker's error) otherwise."""
    topic = config.correlator.verdicts_topic
    where = config.kafka.bootstrap_servers
    missing = kafka.missing_topics(config.kafka, [topic], timeout=10)
    if missing is None:
        raise TopicMissing(f"the broker at {where} does not answer")
    if missing:
        raise TopicMissing(f"topic {topic} does not exist on {where} (correlator.verdicts_topic; the cluster creates it)")
    producer = kafka.producer(config.kafka, **{"enable.idempotence": True})
    reports: list[tuple[KafkaError | None, Any]] = []
    def report(error: KafkaError | None, message: Any) -> None:
        reports.append((error, message))

    producer.produce(topic, verdict.to_json(), key=verdict.alert_id.encode(), on_delivery=report)
    producer.flush(timeout)
    if not reports:
        raise AlertsTopicError(f"verdict not written to {topic}: not acknowledged within {timeout:g} s")
    error, message = reports[0]
    if error is not None:
        raise AlertsTopicError(f"verdict not written to {topic}: {error}")
    return int(message.partition()), int(message.offset())
