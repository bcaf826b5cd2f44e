"""The largest record each output topic takes, read from the broker rather than assumed.

A topic's `max.message.bytes` (or, for a topic that does not exist yet, the broker's
`message.max.bytes`, which it will be created with) bounds what the broker accepts; the
producer's own `message.max.bytes` (librdkafka: 1,000,000) bounds what it will send. A record
over either fails with MSG_SIZE_TOO_LARGE, so the limit is the smaller of the two, and the
Detector cuts outputs down to it (DetectionSettings.max_message_bytes, cluster/processing/output_size.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

PRODUCER_DEFAULT_MAX_BYTES = 1_000_000  # librdkafka's message.max.bytes


class BrokerUnavailable(ConnectionError):
    """No broker answered, so the limits are unknown (the caller decides what to assume)."""


def message_limits(client_config: Mapping[str, Any], topics: Sequence[str], timeout: float = 10) -> dict[str, int]:
    """{topic: the largest record, in bytes, that both the producer and the broker accept}.

    `client_config` is the producers' librdkafka config (bootstrap.servers, security settings,
    message.max.bytes). A topic whose config cannot be read (it does not exist yet, or
    describing it is not allowed) gets the broker's default. Raises BrokerUnavailable when no
    broker answers within `timeout` seconds."""
    producer_limit = int(client_config.get("message.max.bytes", PRODUCER_DEFAULT_MAX_BYTES))
    # Only librdkafka settings go to the admin client (a producer config may hold callbacks).
    admin = AdminClient({k: v for k, v in client_config.items() if not callable(v)})
    where = client_config.get("bootstrap.servers", "?")
    try:
        brokers = admin.list_topics(timeout=timeout).brokers
    except KafkaException as error:
        raise BrokerUnavailable(f"cannot read topic size limits: no broker answered at {where} "
                                f"within {timeout:g}s ({error.args[0] if error.args else error})") from None
    wanted = list(dict.fromkeys(topics))
    found: dict[str, int] = {}
    if wanted:
        futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in wanted],
                                         request_timeout=timeout)
        for resource, future in futures.items():
            try:
                entry = future.result(timeout).get("max.message.bytes")
            except KafkaException:  # no such topic (yet), or not allowed to describe it
                continue
            if entry is not None and entry.value is not None:
                found[resource.name] = int(entry.value)
    missing = [t for t in wanted if t not in found]
    if missing:
        default = _broker_limit(admin, sorted(brokers), timeout)
        for topic in missing:
            found[topic] = default if default is not None else producer_limit
    return {topic: min(found[topic], producer_limit) for topic in wanted}


def _broker_limit(admin: AdminClient, broker_ids: Sequence[int], timeout: float) -> int | None:
    """The broker's `message.max.bytes`, the default of the topics it creates."""
    for broker_id in broker_ids:
        resource = ConfigResource(ResourceType.BROKER, str(broker_id))
        try:
            entry = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout).get(
                "message.max.bytes")
        except KafkaException:
            continue
        if entry is not None and entry.value is not None:
            return int(entry.value)
    return None
