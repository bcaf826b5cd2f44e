"""The correlator runtime on a real broker: correlator loops own partitions of the detections and
repartition topics, a correlation grouped by something other than the host meets its hits through
the repartition topic, alerts land on the alerts topic as valid OCSF, verdicts are applied online,
and a correlator killed mid-stream loses no alert.

The detections are the workers' own records (the cluster's Detector over real events): a password
spray derived from the real OTRF 4624 (see tests/test_shipped_correlations.py), its failed logons
split over two domain controllers, so the hosts' detections live on different partitions and
different correlators."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition

from cluster.build import build_detector
from cluster.config import ClusterConfig, config_from_dict
from cluster.kafka import client as kafka
from cluster.kafka.correlator_loop import CorrelatorLoop
from cluster.processing.detector import InputRecord
from correlator.fusion import Alert
from correlator.records import Verdict
from correlator.settings import PER_RULE_ALERTING
from tests.conftest import OTRF, ROOT
from tests.test_shipped_correlations import OTRF_ACCOUNTS, PSEXEC, REAL_LOGON, SPRAYING, failed_logon, line, read

pytestmark = pytest.mark.skipif(not OTRF.exists(), reason="needs ../shared/datasets/otrf")

T0 = 1_700_000_000_000
S = 1000


def _config(bootstrap: str, tmp_path: Path, **correlator: Any) -> ClusterConfig:
    run = uuid.uuid4().hex[:8]
    return config_from_dict({
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [f"ev-{run}"], "detections_topic": f"det-{run}",
                  "dead_letter_topic": f"dlq-{run}", "group_id": f"g-{run}"},
        "processing": {"batch_size": 200, "batch_timeout_ms": 100},
        "rules": {"paths": [str(ROOT / "rules")]},
        "models": {"enabled": False, "checkpoint_url": str(tmp_path / "checkpoints")},
        "correlator": {"alerts_topic": f"alerts-{run}", "verdicts_topic": f"verdicts-{run}",
                       "repartition_topic": f"rep-{run}", "alerts_dead_letter_topic": f"adlq-{run}",
                       "checkpoint_interval_s": 0, **correlator},
    })


def _create_topics(config: ClusterConfig) -> None:
    c = config.correlator
    kafka.create_topics(config.kafka, {config.kafka.detections_topic: 2, c.repartition_topic: 2, c.alerts_topic: 2,
                                       c.verdicts_topic: 1, config.kafka.dead_letter_topic: 1,
                                       c.alerts_dead_letter_topic: 1})


def _spray_events() -> list[dict[str, Any]]:
    """Ten accounts tried from one address within minutes, half on each of two DCs."""
    success = line(*REAL_LOGON)
    events = []
    for i, account in enumerate(OTRF_ACCOUNTS + ["alice", "bob", "carol"]):
        host = "MORDORDC.theshire.local" if i % 2 == 0 else "DC02.theshire.local"
        events.append(failed_logon(success, T0 + i * 20 * S, TargetUserName=account, Computer=host))
    return events


_OFFSETS = itertools.count()  # each event its own input offset: a repeated source is a duplicate delivery


def _detections(config: ClusterConfig, events: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    """The workers' detection records for `events` (their Detector, as in the cluster)."""
    detector, _ruleset = build_detector(config)
    records = [InputRecord(config.kafka.input_topics[0], 0, next(_OFFSETS), None, None, None, event=event)
               for event in events]
    result = detector.process(records)
    out = [(o.key, o.value) for o in result.outputs if o.topic == config.kafka.detections_topic]
    assert out and all(value is not None for _key, value in out)
    return [(key, value) for key, value in out if value is not None]


def _produce_by_host(config: ClusterConfig, detections: list[tuple[bytes | None, bytes]]) -> None:
    """Each host's detections to its own partition (the workers key by entity; two hosts could
    hash to one partition, and the test is about two owners)."""
    producer = kafka.producer(config.kafka)
    hosts: dict[bytes | None, int] = {}
    for key, value in detections:
        partition = hosts.setdefault(key, len(hosts) % 2)
        producer.produce(config.kafka.detections_topic, value=value, key=key, partition=partition)
    assert producer.flush(30) == 0
    assert len(hosts) == 2


class Running:
    """A CorrelatorLoop in a thread, owning the given partitions."""

    def __init__(self, config: ClusterConfig, name: str, partitions: list[tuple[str, int]]) -> None:
        self.loop = CorrelatorLoop(config, name)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.loop.assign(partitions, wait=60)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    loops: list[Running] = []
    yield loops
    for loop in loops:
        loop.close()


def _alerts(config: ClusterConfig, until: Any, timeout: float = 90) -> list[dict[str, Any]]:
    """Every record of the alerts topic, read until `until(records)` holds (or the timeout)."""
    consumer = kafka.consumer(config.kafka, f"reader-{uuid.uuid4().hex[:6]}", **{"auto.offset.reset": "earliest"})
    consumer.subscribe([config.correlator.alerts_topic])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(out):
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    out.append({"key": message.key(), "ocsf": orjson.loads(message.value() or b"{}"),
                                "headers": dict(message.headers() or [])})
    finally:
        consumer.close()
    return out


def _spraying(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if f"correlation:{SPRAYING}" in str(r["ocsf"]["unmapped"]["sigmaray"]["explanation"])]


def _valid(records: list[dict[str, Any]]) -> None:
    from tests.ocsf_validation import detection_finding_validator, valid

    alerts = [Alert(r["key"].decode(), r["ocsf"]["activity_id"], int(r["headers"]["priority"]), "", (), 0, r["ocsf"])
              for r in records]
    valid(detection_finding_validator(), alerts)


def test_a_spray_across_two_hosts_meets_through_the_repartition_topic_and_alerts_once(
    broker: str, tmp_path: Path, running: list[Running]
) -> None:
    config = _config(broker, tmp_path)
    _create_topics(config)
    det, rep = config.kafka.detections_topic, config.correlator.repartition_topic
    running.append(Running(config, "c1", [(det, 0), (rep, 0)]))
    running.append(Running(config, "c2", [(det, 1), (rep, 1)]))
    _produce_by_host(config, _detections(config, _spray_events()))

    records = _alerts(config, lambda out: bool(_spraying(out)))
    spraying = _spraying(records)
    assert spraying, f"no spraying alert among {len(records)} alerts: {[r.loop.status() for r in running]}"
    assert len({r["key"] for r in spraying}) == 1  # one group (the address), one owner, one alert
    assert spraying[0]["ocsf"]["activity_id"] == 1
    explanation = spraying[0]["ocsf"]["unmapped"]["sigmaray"]["explanation"]
    assert explanation["evidence"]["total"] >= 10  # the ten failed logons, from both hosts
    # Both correlators routed hits; one of them owned the address's group.
    metrics = [r.loop.metrics for r in running]
    assert all(m.hits_out > 0 for m in metrics), [m.to_dict() for m in metrics]
    # Each failed logon feeds two components (spraying by address; repeated failures by user and
    # address, chained into brute force): twenty routed hits, each received once.
    assert sum(m.hits_in for m in metrics) == sum(m.hits_out for m in metrics) == 20
    assert sum(m.correlations_out for m in metrics) >= 1
    time.sleep(1)
    _valid(_alerts(config, lambda out: False, timeout=3))


def test_a_false_positive_verdict_suppresses_the_rule_on_that_entity_online(
    broker: str, tmp_path: Path, running: list[Running]
) -> None:
    config = _config(broker, tmp_path)
    _create_topics(config)
    det, rep = config.kafka.detections_topic, config.correlator.repartition_topic
    running.append(Running(config, "c1", [(det, 0), (rep, 0), (det, 1), (rep, 1)]))
    # A real "Security Audit Log Cleared" (1102) alerts on its own; the same event three hours
    # later would be a new alert of the same rule and entity.
    (cleared,) = [event for event, _ in read(PSEXEC) if event.get("EventID") == 1102]
    first = _detections(config, [dict(cleared, TimeCreated_SystemTime="2026-11-30T10:00:00.000Z")])
    producer = kafka.producer(config.kafka)
    kafka.produce_all(producer, det, first)
    records = _alerts(config, lambda out: len(out) >= 1)
    alert_id = records[0]["key"].decode()
    rule_ids = [r["id"] for r in records[0]["ocsf"]["unmapped"]["sigmaray"]["explanation"]["rules"]]

    verdict = Verdict(alert_id, "fp", uuid.uuid4().hex, reason="admin jump host")
    kafka.produce_all(producer, config.correlator.verdicts_topic, [(alert_id.encode(), verdict.to_json())])
    assert kafka.wait_until(lambda: running[0].loop.metrics.verdicts.get("applied", 0) == 1, 30)

    later = _detections(config, [dict(cleared, TimeCreated_SystemTime="2026-11-30T13:00:00.000Z")])
    kafka.produce_all(producer, det, later)
    assert kafka.wait_until(lambda: running[0].loop.metrics.detections_in >= 2, 30)
    time.sleep(1)
    after = _alerts(config, lambda out: False, timeout=3)
    opened = [r for r in after if r["ocsf"]["activity_id"] == 1
              and [x["id"] for x in r["ocsf"]["unmapped"]["sigmaray"]["explanation"]["rules"]] == rule_ids]
    assert len(opened) == 1, "the suppressed rule opened a new alert on the same entity"
    state = running[0].loop.status()
    assert state["verdicts"] == {"applied": 1}


def test_a_correlator_restarted_mid_stream_resumes_from_its_checkpoint_without_losing_an_alert(
    broker: str, tmp_path: Path, running: list[Running]
) -> None:
    config = _config(broker, tmp_path)
    _create_topics(config)
    det, rep = config.kafka.detections_topic, config.correlator.repartition_topic
    partitions = [(det, 0), (rep, 0), (det, 1), (rep, 1)]
    events = _spray_events()
    detections = _detections(config, events)
    first = Running(config, "c1", partitions)
    _produce_by_host(config, detections[:5])
    assert kafka.wait_until(lambda: first.loop.metrics.hits_in >= 5, 60)
    first.close()  # the state is saved with its offsets (checkpoint_interval_s 0: every batch)
    running.append(Running(config, "c2", partitions))
    _produce_by_host(config, detections[5:])
    records = _alerts(config, lambda out: bool(_spraying(out)))
    assert len({r["key"] for r in _spraying(records)}) == 1
    restored = running[0].loop.status()["state"]
    assert restored["checkpoints_restored"] >= 2, restored


def test_a_malformed_detection_is_dead_lettered_and_counted_never_a_crash(
    broker: str, tmp_path: Path, running: list[Running]
) -> None:
    config = _config(broker, tmp_path)
    _create_topics(config)
    det, rep = config.kafka.detections_topic, config.correlator.repartition_topic
    running.append(Running(config, "c1", [(det, 0), (rep, 0), (det, 1), (rep, 1)]))
    producer = kafka.producer(config.kafka)
    kafka.produce_all(producer, det, [(b"h", b"{not json"), (b"h", orjson.dumps({"schema_version": 99})),
                                      (b"h", orjson.dumps({"schema_version": 1, "kind": "sigma"}))])
    assert kafka.wait_until(lambda: running[0].loop.metrics.batches >= 1 and
                            running[0].loop.metrics.detections_in >= 3, 30)
    status = running[0].loop.status()
    assert status["dead_letters"] == 1 and running[0].thread.is_alive()
    skipped = status["state"]["skipped"]
    assert any("schema_version 99" in reason for reason in skipped), skipped
    assert sum(skipped.values()) == 2
    consumer = kafka.consumer(config.kafka, f"dlq-{uuid.uuid4().hex[:6]}")
    consumer.assign([TopicPartition(config.kafka.dead_letter_topic, 0, 0)])
    messages = [m for m in consumer.consume(10, 10) if m.error() is None]
    consumer.close()
    assert len(messages) == 1 and dict(messages[0].headers() or [])["stage"] == b"correlator"


def test_a_criticality_file_changed_while_running_raises_the_priority_of_later_alerts(
    broker: str, tmp_path: Path, running: list[Running]
) -> None:
    lookup = tmp_path / "criticality.csv"
    lookup.write_text("type,name,criticality,role,owner\n")
    # per-rule alerting: one rule's alert then carries the formula's priority (the default records it
    # at P4 and pages the host's risk alert, which one rule alone does not open)
    config = _config(broker, tmp_path, criticality=str(lookup), fusion=PER_RULE_ALERTING)
    _create_topics(config)
    det, rep = config.kafka.detections_topic, config.correlator.repartition_topic
    running.append(Running(config, "c1", [(det, 0), (rep, 0), (det, 1), (rep, 1)]))
    (cleared,) = [event for event, _ in read(PSEXEC) if event.get("EventID") == 1102]
    producer = kafka.producer(config.kafka)
    kafka.produce_all(producer, det, _detections(config, [dict(cleared, TimeCreated_SystemTime="2026-11-30T10:00:00.000Z")]))
    before = _alerts(config, lambda out: len(out) >= 1)[0]
    host = before["ocsf"]["unmapped"]["sigmaray"]["explanation"]["entity"]["host"]

    # A bad line is reported and skipped; the good one applies, without a restart.
    lookup.write_text(f"type,name,criticality,role,owner\nhost,{host},critical,domain controller,it-ops\nhost,x,extreme,,\n")
    assert kafka.wait_until(lambda: running[0].loop.metrics.criticality_entries == 1, 30)
    assert "extreme" in running[0].loop.status()["criticality_errors"][0]
    kafka.produce_all(producer, det, _detections(config, [dict(cleared, TimeCreated_SystemTime="2026-11-30T13:00:00.000Z")]))
    records = _alerts(config, lambda out: len({r["key"] for r in out}) >= 2)
    after = [r for r in records if r["key"] != before["key"]][0]
    assert int(after["headers"]["priority"]) < int(before["headers"]["priority"]), (before["headers"], after["headers"])
    assert after["ocsf"]["unmapped"]["sigmaray"]["explanation"]["criticality"]["host"]["criticality"] == "critical"


SMALL_SPRAY = """title: Failed Logons For Three Accounts From One Address
id: 5b0f4a5e-8a77-4a3e-9d7e-3c1d2a8f0b11
status: experimental
correlation:
    type: value_count
    rules:
        - sigmaray_failed_logon_from_address
    group-by:
        - IpAddress
    timespan: 30m
    condition:
        gte: 3
        field: TargetUserName
level: high
"""


def test_a_correlation_rule_pushed_to_the_rules_topic_is_evaluated_by_running_correlators(
    broker: str, tmp_path: Path, running: list[Running]
) -> None:
    from cluster.kafka.live_rules import push

    rules_topic = f"rules-{uuid.uuid4().hex[:8]}"
    base = _config(broker, tmp_path)
    config = config_from_dict({**_as_dict(base), "rules": {"paths": [str(ROOT / "rules")], "topic": rules_topic}})
    _create_topics(config)
    det, rep = config.kafka.detections_topic, config.correlator.repartition_topic
    running.append(Running(config, "c1", [(det, 0), (rep, 0), (det, 1), (rep, 1)]))
    before = running[0].loop.metrics.ruleset_version
    push(broker, rules_topic, [("5b0f4a5e-8a77-4a3e-9d7e-3c1d2a8f0b11", SMALL_SPRAY)])
    assert kafka.wait_until(lambda: running[0].loop.metrics.ruleset_version != before, 60)
    _produce_by_host(config, _detections(config, _spray_events()[:4]))
    records = _alerts(config, lambda out: any("5b0f4a5e" in str(r["ocsf"]) for r in out))
    assert any("correlation:5b0f4a5e-8a77-4a3e-9d7e-3c1d2a8f0b11" in str(r["ocsf"]) for r in records)


def _as_dict(config: ClusterConfig) -> dict[str, Any]:
    from cluster.ray.actors import config_to_dict

    return config_to_dict(config)
