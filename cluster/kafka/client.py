"""The one way to build a Kafka client: every consumer, producer and admin client of the project
is made here, from the cluster's `kafka` settings (bootstrap servers plus `kafka.client`, which
carries SASL/TLS), so a secured cluster's settings reach every client and no client is built by
hand with half of them.

Clients are created inside the process that uses them: they cannot be pickled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster.config import KafkaConfig
from detectors.errors import SigmaRayError

Kafka = KafkaConfig | str  # the cluster's settings, or a bare bootstrap address (dev broker, tests)


def settings(kafka: Kafka, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings: bootstrap, then `kafka.client`, then `kafka.client_env` (settings read
    from environment variables here, in the process that makes the client, so a password need
    be neither in the config file nor in what Ray ships to its actors), then what this client
    needs."""
    if isinstance(kafka, str):
        return {"bootstrap.servers": kafka, **overrides}
    from_env: dict[str, Any] = {}
    for name, variable in kafka.client_env.items():
        value = os.environ.get(variable)
        if value is None:
            raise KafkaAccessError(f"kafka.client_env: the environment variable {variable} (for {name}) is not set "
                                   "in this process")
        from_env[name] = value
    return {"bootstrap.servers": kafka.bootstrap_servers, **kafka.client, **from_env, **overrides}


def consumer(kafka: Kafka, group: str, **overrides: Any) -> Consumer:
    return Consumer(settings(kafka, **{"group.id": group, **overrides}))


def producer(kafka: Kafka, **overrides: Any) -> Producer:
    return Producer(settings(kafka, **overrides))


def admin(kafka: Kafka, **overrides: Any) -> AdminClient:
    return AdminClient(settings(kafka, **overrides))


class KafkaAccessError(SigmaRayError):
    """The broker answered but refused this client: wrong SASL credentials, or a TLS handshake
    that failed (unknown CA, wrong host name). Retrying does not help, unlike a broker that is down."""


# librdkafka reports these through error_cb and keeps retrying: a client would wait forever.
_REFUSED = {KafkaError._AUTHENTICATION: "Kafka refused the SASL credentials in kafka.client",
            KafkaError.SASL_AUTHENTICATION_FAILED: "Kafka refused the SASL credentials in kafka.client",
            KafkaError._SSL: "the TLS handshake with Kafka failed (kafka.client ssl.* settings)"}


def check_access(kafka: Kafka, timeout: float = 15) -> bool:
    """True when the broker answers this client's metadata request; False when it does not answer
    at all (down or unreachable: a cluster may start before its broker). KafkaAccessError when it
    refuses the client, naming why; librdkafka's reason carries no setting's value."""
    refused: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in _REFUSED:
            refused.append(error)

    quiet = logging.getLogger("sigmaray.kafka.check_access")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # "connection refused" lines while a broker is down: the result says it
    client = admin(kafka, error_cb=on_error, logger=quiet)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            return True
        except KafkaException:
            client.poll(0)  # deliver pending error callbacks
            if refused:
                first = refused[0]
                raise KafkaAccessError(f"{_REFUSED[first.code()]}: {first.str()}") from None
            if time.monotonic() >= deadline:
                return False


def existing_topics(kafka: Kafka, timeout: float = 10) -> dict[str, int]:
    """Topic name -> partition count, for the topics the broker has (KafkaException when down)."""
    metadata = admin(kafka).list_topics(timeout=timeout)
    return {name: len(info.partitions) for name, info in metadata.topics.items() if info.error is None}


def missing_topics(kafka: Kafka, names: Sequence[str], timeout: float = 5) -> list[str] | None:
    """Which of `names` the broker lacks; None when the broker does not answer."""
    try:
        found = existing_topics(kafka, timeout)
    except KafkaException:
        return None
    return [name for name in names if name and name not in found]


def partitions(kafka: Kafka, topics: Sequence[str], timeout: float = 10) -> list[tuple[str, int]]:
    """Every partition of the topics that exist, in a stable order (a missing topic has none yet)."""
    metadata = admin(kafka).list_topics(timeout=timeout)
    found: list[tuple[str, int]] = []
    for topic in topics:
        info = metadata.topics.get(topic)
        if info is None:
            continue  # not created yet: picked up by a later rebalance
        if info.error is not None:
            raise RuntimeError(f"metadata of topic {topic}: {info.error}")
        found.extend((topic, p) for p in sorted(info.partitions))
    return found


def create_topics(kafka: Kafka, topics: Mapping[str, int], config: Mapping[str, str] | None = None,
                  exist_ok: bool = True) -> None:
    """Creates topics with their partition counts and `kafka.replication_factor` (1 for a bare
    address: the dev broker; managed Kafka wants 3)."""
    client = admin(kafka)
    replication = 1 if isinstance(kafka, str) else kafka.replication_factor
    futures = client.create_topics([NewTopic(name, count, replication, config=dict(config or {}))
                                    for name, count in topics.items()])
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException as error:
            if not (exist_ok and "TOPIC_ALREADY_EXISTS" in str(error)):
                raise


def delete_topics(kafka: Kafka, names: Sequence[str]) -> None:
    futures = admin(kafka).delete_topics(list(names))
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException:
            pass  # already gone


def committed_total(kafka: Kafka, group: str, topic: str, count: int, timeout: float = 10) -> int:
    """The group's committed offsets over the first `count` partitions of a topic, summed."""
    client = consumer(kafka, group)
    try:
        offsets = client.committed([TopicPartition(topic, p) for p in range(count)], timeout=timeout)
    finally:
        client.close()
    return sum(max(o.offset, 0) for o in offsets)


def produce_all(client: Producer, topic: str, records: Sequence[tuple[bytes | None, bytes]], timeout: float = 60) -> None:
    """Produces (key, value) records and waits until every one is acknowledged; KafkaException
    when one was not (flush returns 0 after a failed delivery too: the reports are checked)."""
    failed: list[KafkaError] = []

    def report(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failed.append(error)

    for key, value in records:
        while True:
            try:
                client.produce(topic, value, key=key, on_delivery=report)
                break
            except BufferError:
                client.poll(0.1)
    if client.flush(timeout):
        raise KafkaException(f"records to {topic} were not acknowledged within {timeout} s")
    if failed:
        raise KafkaException(f"{len(failed)} record(s) to {topic} were not delivered: {failed[0]}")


def wait_until(check: Any, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return bool(check())


# What a group coordinator answers while it starts (a broker just up, a coordinator moving).
_COORDINATOR_WAIT = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                     KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}


def committed_offsets(client: Consumer, partitions: list[TopicPartition], timeout: float = 30) -> list[TopicPartition]:
    """The group's committed offsets. A broker that has just started answers NOT_COORDINATOR
    (or COORDINATOR_LOAD_IN_PROGRESS) until its offsets topic is ready: retried, not fatal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = list(client.committed(partitions, timeout=max(1.0, deadline - time.monotonic())))
            if not any(tp.error is not None and tp.error.code() in _COORDINATOR_WAIT for tp in found) \
                    or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            waiting = kafka_error is not None and (kafka_error.retriable() or kafka_error.code() in _COORDINATOR_WAIT)
            if not waiting or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def commit_next(client: Consumer, last_offsets: Mapping[tuple[str, int], int], floor: dict[tuple[str, int], int]) -> None:
    """Commits each partition's next offset (last processed + 1), never below what `floor` says
    is committed already (records replayed only to rebuild state commit nothing), and raises
    `floor` to what was committed. Both loops commit through here."""
    offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last_offsets.items() if o + 1 > floor.get((t, p), -1)]
    if not offsets:
        return
    client.commit(offsets=offsets, asynchronous=False)
    for tp in offsets:
        floor[(tp.topic, tp.partition)] = tp.offset


def consumer_lag(client: Consumer, partitions: Sequence[tuple[str, int]]) -> dict[str, int] | None:
    """Records behind the high watermark per partition ("topic[n]"), or None when the broker does
    not answer (the caller keeps the last known lag)."""
    lag: dict[str, int] = {}
    try:
        for tp in client.position([TopicPartition(t, p) for t, p in partitions]):
            # The high watermark the last fetch brought back: no broker round trip on the
            # processing thread (uncached, one per partition took up to a second under load);
            # a partition not fetched yet asks the broker.
            _low, high = client.get_watermark_offsets(tp, cached=True)
            if high < 0:
                _low, high = client.get_watermark_offsets(tp, timeout=2, cached=False)
            lag[f"{tp.topic}[{tp.partition}]"] = max(high - tp.offset, 0) if tp.offset >= 0 else high
    except KafkaException:
        return None
    return lag
