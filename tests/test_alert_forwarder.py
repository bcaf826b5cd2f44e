"""AlertForwarder on the test run's broker and a real HTTP endpoint (http.server in a thread): alerts
made by the real correlator from real OTRF events, signed deliveries in order, offsets committed
only after delivery, dead letters, restarts and the priority filter."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from cluster.config import ClusterConfig, config_from_dict
from cluster.kafka import client as kafka
from cluster.kafka.alert_forwarder import AlertForwarder, webhook_secret
from cluster.sinks.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from cluster.sources.replay import replay_files
from correlator import Correlator
from correlator.fusion import Alert
from correlator.settings import PER_RULE_ALERTING, fusion_config_from_dict
from correlator.summary import decode_alert, header_values
from detectors.errors import ConfigError
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import OTRF, ROOT

SECRET = "test-webhook-secret"
DEFENSE_EVASION = sorted((OTRF / "jsonl" / "defense_evasion").glob("*.jsonl"))


# -- real alerts --------------------------------------------------------------------------------------

def real_alerts(files: Sequence[Path]) -> list[Alert]:
    """The shipped rules over real events (replay, as the workers run them), then the correlator."""
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]}, "models": {"enabled": False}})
    detections: list[dict[str, Any]] = []

    def write(record: Any, dead: bool) -> None:
        if not dead:
            detections.append(orjson.loads(record.value))

    replay_files(config, [str(path) for path in files], write)
    # per-rule alerting (correlator/settings.py): these recordings give alerts of every priority,
    # which the forwarder's priority filters need; the defaults page entity risk alerts instead
    correlator = Correlator.from_ruleset(load_rules_from_paths([ROOT / "rules"]),
                                         fusion_config_from_dict(PER_RULE_ALERTING))
    alerts: list[Alert] = []
    for detection in detections:
        alerts += correlator.process(detection)
    return alerts + correlator.flush()


Record = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]  # key, value, headers


def record_of(alert: Alert) -> Record:
    """An alert as the correlators write it to the alerts topic: (key, value, headers)."""
    return (alert.alert_id.encode(), orjson.dumps(alert.ocsf),
            [("activity", alert.activity.encode()), ("priority", str(alert.priority).encode())])


def produce(bootstrap: str, topic: str, records: Sequence[Record]) -> None:
    producer = kafka.producer(bootstrap)
    for key, value, headers in records:
        producer.produce(topic, value, key=key, headers=headers)
    assert producer.flush(30) == 0


def idempotency_key(alert: Alert) -> str:
    return f"{alert.alert_id}:{alert.activity}:{alert.count}"


@pytest.fixture(scope="module")
def alerts() -> list[Alert]:
    found = real_alerts(DEFENSE_EVASION)
    assert len(found) >= 20 and {alert.priority for alert in found} >= {1, 2, 3, 4}
    assert len({idempotency_key(alert) for alert in found}) == len(found)
    return found


# -- a real webhook endpoint -------------------------------------------------------------------------

@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1: answers every POST with `status` after `delay_s`."""

    status: int = 200
    delay_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name for it
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                status = receiver.status
                with receiver.lock:
                    receiver.requests.append(Request(dict(self.headers.items()), body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/sigmaray?token=abc"

    def delivered(self) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if 200 <= request.status < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.close()


# -- running a forwarder ----------------------------------------------------------------------------

def prepare(broker: str, url: str, partitions: int = 1, **webhook: Any) -> ClusterConfig:
    """Fresh alerts and dead-letter topics and a config whose webhook retries fast."""
    run = uuid.uuid4().hex[:8]
    alerts_topic, dead_topic = f"alerts-{run}", f"alerts-dead-{run}"
    kafka.create_topics(broker, {alerts_topic: partitions, dead_topic: 1})
    settings = {"url": url, "min_priority": 4, "timeout_s": 5, "max_attempts": 1000, "backoff_initial_s": 0.02,
                "backoff_max_s": 0.1, **webhook}
    return config_from_dict({
        "kafka": {"bootstrap_servers": broker, "group_id": f"sigmaray-{run}"},
        "models": {"enabled": False},
        "correlator": {"alerts_topic": alerts_topic, "alerts_dead_letter_topic": dead_topic, "webhook": settings},
    })


@contextlib.contextmanager
def running(forwarder: AlertForwarder) -> Iterator[dict[str, Any]]:
    """Runs the forwarder in a thread; at the end stops it and yields its final stats in the dict."""
    stop = threading.Event()
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result.update(forwarder.run(stop))
        except BaseException as error:  # surfaced in the test, not lost in the thread
            result["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the forwarder did not stop"
    assert "error" not in result, result.get("error")


def committed(config: ClusterConfig, partitions: int = 1) -> int:
    return kafka.committed_total(config.kafka, f"{config.kafka.group_id}.webhook", config.correlator.alerts_topic,
                                 partitions)


def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30) -> list[Message]:
    consumer = kafka.consumer(bootstrap, f"reader-{uuid.uuid4().hex[:8]}", **{"enable.auto.commit": False})
    consumer.assign([TopicPartition(name, partition, OFFSET_BEGINNING) for name, partition in
                     kafka.partitions(bootstrap, [topic])])
    found: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            found.append(message)
    consumer.close()
    return found


# -- tests --------------------------------------------------------------------------------------------

def test_an_endpoint_down_for_a_while_gets_every_alert_in_order_signed_and_offsets_wait_for_delivery(
    broker: str, receiver: Receiver, alerts: list[Alert]
) -> None:
    receiver.status = 503
    config = prepare(broker, receiver.url, max_queue=4)  # a small queue: the forwarder must pause fetching
    produce(broker, config.correlator.alerts_topic, [record_of(alert) for alert in alerts])
    forwarder = AlertForwarder(config, SECRET, commit_interval_s=0.1, batch_size=5)
    with running(forwarder):
        assert kafka.wait_until(lambda: len(receiver.requests) >= 5 and forwarder.stats()["paused"], 30, every=0.05)
        during = forwarder.stats()
        assert during["backlog"] > 0 and during["uncommitted"] >= 5 and during["consumed"] < len(alerts)
        assert committed(config) == 0  # nothing delivered: nothing committed
        receiver.status = 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            offset = committed(config)
            assert offset <= len(receiver.delivered())  # a commit never runs ahead of delivery
            if offset == len(alerts):
                break
            time.sleep(0.05)
    stats = forwarder.stats()

    delivered = receiver.delivered()
    assert [request.headers[IDEMPOTENCY_HEADER] for request in delivered] == [idempotency_key(a) for a in alerts]
    assert [orjson.loads(request.body) for request in delivered] == [alert.ocsf for alert in alerts]
    assert all(verify_signature(SECRET, r.headers[TIMESTAMP_HEADER], r.body, r.headers[SIGNATURE_HEADER])
               for r in delivered)
    assert not verify_signature("another secret", delivered[0].headers[TIMESTAMP_HEADER], delivered[0].body,
                                delivered[0].headers[SIGNATURE_HEADER])
    first = receiver.requests[0]
    assert first.status == 503 and first.headers[IDEMPOTENCY_HEADER] == idempotency_key(alerts[0])
    assert committed(config) == len(alerts)
    assert stats["pauses"] >= 1 and stats["dead_letters"] == 0 and stats["webhook"]["retried"] >= 4
    assert stats["webhook"]["sent"] == len(alerts) and stats["uncommitted"] == 0
    assert SECRET not in repr(stats) and SECRET not in repr(forwarder)


def test_refused_alerts_and_records_that_are_not_alerts_go_to_the_dead_letter_topic_and_are_committed(
    broker: str, receiver: Receiver, alerts: list[Alert]
) -> None:
    receiver.status = 400
    config = prepare(broker, receiver.url)
    chosen = alerts[:6]
    records: list[Record] = [record_of(alert) for alert in chosen[:3]]
    records += [(b"bad-1", b"{not json", []), (b"bad-2", b"[1, 2]", []), (b"gone", None, [])]
    records += [record_of(alert) for alert in chosen[3:]]
    produce(broker, config.correlator.alerts_topic, records)
    forwarder = AlertForwarder(config, SECRET, commit_interval_s=0.1)
    with running(forwarder):
        assert kafka.wait_until(lambda: committed(config) == len(records), 30, every=0.1)
    stats = forwarder.stats()

    dead = read_topic(broker, config.correlator.alerts_dead_letter_topic, len(records))
    assert len(dead) == len(records)
    headers = [header_values(message.headers()) for message in dead]
    refused = [(message, named) for message, named in zip(dead, headers, strict=True) if named["stage"] == "webhook"]
    assert [named["alert.id"] for _, named in refused] == [alert.alert_id for alert in chosen]
    assert all(named["reason"] == "http 400" for _, named in refused)
    assert [named["idempotency.key"] for _, named in refused] == [idempotency_key(alert) for alert in chosen]
    assert [orjson.loads(message.value() or b"") for message, _ in refused] == [alert.ocsf for alert in chosen]
    assert len(receiver.requests) == len(chosen)  # a 400 is not retried
    undecodable = [(message, named) for message, named in zip(dead, headers, strict=True) if named["stage"] == "decode"]
    assert [(message.key(), message.value()) for message, _ in undecodable] == \
        [(b"bad-1", b"{not json"), (b"bad-2", b"[1, 2]"), (b"gone", None)]
    errors = [named["error"] for _, named in undecodable]
    assert errors[0].startswith("invalid JSON") and "not a JSON object" in errors[1] and "tombstone" in errors[2]
    assert undecodable[0][1]["source.offset"] == "3" and undecodable[0][1]["source.topic"] == config.correlator.alerts_topic
    assert stats["bad_records"] == 3 and stats["dead_letters"] == len(records)
    assert stats["dead_letter_reasons"] == {"http 400": len(chosen), "not an alert": 3}


def test_a_forwarder_stopped_midstream_and_restarted_delivers_every_alert(
    broker: str, receiver: Receiver, alerts: list[Alert]
) -> None:
    receiver.delay_s = 0.04
    config = prepare(broker, receiver.url, partitions=3, max_queue=4)
    produce(broker, config.correlator.alerts_topic, [record_of(alert) for alert in alerts])
    first = AlertForwarder(config, SECRET, drain_s=0)  # stop at once: queued alerts stay uncommitted
    with running(first):
        assert kafka.wait_until(lambda: len(receiver.delivered()) >= 5, 30, every=0.02)
    before = len(receiver.delivered())
    offset = committed(config, 3)
    assert 0 < offset <= before < len(alerts)

    second = AlertForwarder(config, SECRET, commit_interval_s=0.1)
    with running(second):
        assert kafka.wait_until(lambda: committed(config, 3) == len(alerts), 60, every=0.1)
    keys = [request.headers[IDEMPOTENCY_HEADER] for request in receiver.delivered()]
    assert set(keys) == {idempotency_key(alert) for alert in alerts}  # nothing lost
    assert len(keys) - len(set(keys)) <= before - offset + 1  # only what was delivered but not committed, again
    by_key: dict[str, bytes] = {}
    for request in receiver.delivered():  # a duplicate is the same alert state: the receiver drops it by key
        assert by_key.setdefault(request.headers[IDEMPOTENCY_HEADER], request.body) == request.body


def test_alerts_below_the_minimum_priority_are_skipped_and_committed(
    broker: str, receiver: Receiver, alerts: list[Alert]
) -> None:
    config = prepare(broker, receiver.url, min_priority=2)
    produce(broker, config.correlator.alerts_topic, [record_of(alert) for alert in alerts])
    forwarder = AlertForwarder(config, SECRET, commit_interval_s=0.1)
    with running(forwarder):
        assert kafka.wait_until(lambda: committed(config) == len(alerts), 30, every=0.1)
    urgent = [alert for alert in alerts if alert.priority <= 2]
    assert 0 < len(urgent) < len(alerts)
    assert [request.headers[IDEMPOTENCY_HEADER] for request in receiver.delivered()] == [idempotency_key(a) for a in urgent]
    assert {request.headers["X-Sigmaray-Priority"] for request in receiver.requests} <= {"1", "2"}
    stats = forwarder.stats()
    assert stats["skipped"] == len(alerts) - len(urgent) == stats["webhook"]["skipped"]


def test_decode_alert_reads_what_the_correlator_writes(alerts: list[Alert]) -> None:
    for alert in alerts:
        key, value, headers = record_of(alert)
        decoded = decode_alert(value, headers)
        assert (decoded.alert_id, decoded.activity, decoded.priority, decoded.count, decoded.ocsf) == \
            (alert.alert_id, alert.activity, alert.priority, alert.count, alert.ocsf)


def test_the_secret_comes_from_the_named_environment_variable_and_a_missing_one_is_named() -> None:
    config = config_from_dict({"correlator": {"webhook": {"url": "http://127.0.0.1:9/x", "secret_env": "HOOK_KEY"}},
                               "models": {"enabled": False}})
    assert webhook_secret(config, {"HOOK_KEY": "s3cret"}) == "s3cret"
    with pytest.raises(ConfigError, match="HOOK_KEY"):
        webhook_secret(config, {})
    with pytest.raises(ConfigError, match="webhook.url"):
        AlertForwarder(config_from_dict({"models": {"enabled": False}}), "s3cret")
