"""The cluster with a real broker and a real Ray: every event processed, detections as offline."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import BOOTSTRAP, OTRF, ROOT

DATASETS = sorted((OTRF / "jsonl" / "credential_access").glob("*.jsonl"))[:4]




def _events() -> list[dict[str, Any]]:
    events = []
    for path in DATASETS:
        for record in read_events(path):
            assert record.event is not None
            events.append(dict(record.event, sigmaray_test_id=f"{path.stem}:{record.line}"))
    return events


def _create_topics(admin: AdminClient, names: dict[str, int]) -> None:
    futures = admin.create_topics([NewTopic(n, num_partitions=p, replication_factor=1) for n, p in names.items()])
    for future in futures.values():
        future.result(30)


def _drain(topic: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            if len(out) >= expected and time.monotonic() - quiet_since > 5:
                break
            continue
        quiet_since = time.monotonic()
        out.append(orjson.loads(message.value()))
    consumer.close()
    return out


def _committed(group: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return sum(max(o.offset, 0) for o in offsets)


def test_two_workers_on_three_partitions_process_every_event_and_match_offline_scan(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.config import config_from_dict
    from cluster.ray.actors import Supervisor, config_to_dict

    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}"}
    admin = AdminClient({"bootstrap.servers": broker})
    _create_topics(admin, {topics["in"]: 3, topics["out"]: 3, topics["dlq"]: 1})

    events = _events()
    producer = Producer({"bootstrap.servers": broker})
    for event in events:
        producer.produce(topics["in"], orjson.dumps(event), key=event["sigmaray_test_id"].encode())
    producer.produce(topics["in"], b"{not json", key=b"bad")
    assert producer.flush(30) == 0

    config = config_from_dict({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": f"sigmaray-{run}"},
        "rules": {"paths": [str(ROOT / "rules")]},
        "workers": 2,
        "correlator": {"enabled": False},  # the workers are under test
    })
    supervisor = Supervisor.remote(config_to_dict(config))
    try:
        workers = ray_local.get(supervisor.start.remote(), timeout=120)
        assert len(workers) == 2
        deadline = time.monotonic() + 180
        while _committed(f"sigmaray-{run}", topics["in"], 3) < len(events) + 1 and time.monotonic() < deadline:
            time.sleep(1)
        status = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)

    assert _committed(f"sigmaray-{run}", topics["in"], 3) == len(events) + 1
    assert sum(row["events_in"] for row in status["workers"]) >= len(events) + 1
    owned = [p for row in status["workers"] for p in row["partitions"]]
    assert sorted(owned) == sorted(f"{topics['in']}[{p}]" for p in range(3))

    ruleset = load_rules_from_paths([ROOT / "rules"])
    engine = SigmaEngine(ruleset.rules)
    offline = sorted((e["sigmaray_test_id"], m.id) for e in events for m in engine.match(e))
    assert offline
    detections = [d for d in _drain(topics["out"], len(offline), timeout=60) if d["kind"] == "sigma"]
    got = sorted((d["event"]["sigmaray_test_id"], d["rule"]["id"]) for d in detections)
    assert got == offline
    assert all(d["ruleset_version"] == ruleset.version for d in detections)

    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"dlq-{run}", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topics["dlq"], 0, 0)])
    message = consumer.poll(20)
    consumer.close()
    assert message is not None and message.value() == b"{not json"
    headers = dict(message.headers())
    assert headers["source.topic"] == topics["in"].encode() and b"invalid JSON" in headers["error"]


def _kill_midstream(broker: str, ray_local: Any,
                    guarantee: str) -> tuple[list[tuple[str, str]], set[tuple[str, str]], dict[str, Any]]:
    """Runs 2 workers, kill -9s one after its first commit, returns (detections, offline, status)."""
    import os
    import signal

    from cluster.config import config_from_dict
    from cluster.ray.actors import Supervisor, config_to_dict

    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}"}
    _create_topics(AdminClient({"bootstrap.servers": broker}), {topics["in"]: 3, topics["out"]: 3, topics["dlq"]: 1})
    events = _events()
    half = len(events) // 2
    producer = Producer({"bootstrap.servers": broker})

    def produce(batch: list[dict[str, Any]]) -> None:
        for event in batch:
            producer.produce(topics["in"], orjson.dumps(event), key=event["sigmaray_test_id"].encode())
        assert producer.flush(30) == 0

    group = f"sigmaray-{run}"
    config = config_from_dict({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": group},
        "processing": {"batch_size": 50, "guarantee": guarantee},
        "rules": {"paths": [str(ROOT / "rules")]},
        "workers": 2,
        "correlator": {"enabled": False},  # the workers are under test
    })
    supervisor = Supervisor.remote(config_to_dict(config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=120)
        produce(events[:half])
        deadline = time.monotonic() + 120
        while _committed(group, topics["in"], 3) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        victim = ray_local.get(supervisor.worker_pids.remote(), timeout=30)["worker-1"]
        os.kill(victim, signal.SIGKILL)
        produce(events[half:])
        deadline = time.monotonic() + 180
        while _committed(group, topics["in"], 3) < len(events) and time.monotonic() < deadline:
            time.sleep(1)
        status = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)

    assert _committed(group, topics["in"], 3) == len(events)
    engine = SigmaEngine(load_rules_from_paths([ROOT / "rules"]).rules)
    offline = {(e["sigmaray_test_id"], m.id) for e in events for m in engine.match(e)}
    detections = [d for d in _drain(topics["out"], len(offline), timeout=60) if d["kind"] == "sigma"]
    got = [(d["event"]["sigmaray_test_id"], d["rule"]["id"]) for d in detections]
    return got, offline, status


def test_kill_9_of_a_worker_midstream_loses_no_event_at_least_once(broker: str, ray_local: Any) -> None:
    got, offline, status = _kill_midstream(broker, ray_local, "at_least_once")
    assert status["restarts"] >= 1
    assert set(got) == offline
    print(f"at least once after kill -9: {len(got)} detections, {len(got) - len(set(got))} duplicates")


def test_kill_9_of_a_worker_midstream_loses_and_duplicates_nothing_exactly_once(broker: str, ray_local: Any) -> None:
    got, offline, status = _kill_midstream(broker, ray_local, "exactly_once")
    assert status["restarts"] >= 1
    assert sorted(got) == sorted(offline)  # a read_committed reader sees each detection once


def test_a_rule_pushed_live_starts_matching_without_restart_and_a_deleted_rule_stops(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.config import config_from_dict
    from cluster.kafka.live_rules import push, rule_documents
    from cluster.ray.actors import Supervisor, config_to_dict

    rule_path = ROOT / "rules" / "windows" / "process_access" / "proc_access_win_lsass_full_access.yml"
    ((rule_id, rule_text),) = rule_documents([rule_path])
    dataset = OTRF / "jsonl" / "credential_access" / "cmd_lsass_memory_dumpert_syscalls.jsonl"
    events = [r.event for r in read_events(dataset) if r.event is not None]
    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}", "rules": f"rules-{run}"}
    _create_topics(AdminClient({"bootstrap.servers": broker}), {topics["in"]: 3, topics["out"]: 1, topics["dlq"]: 1})
    empty = tmp_path / "no-file-rules"
    empty.mkdir()
    config = config_from_dict({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": f"sigmaray-{run}"},
        "rules": {"paths": [str(empty)], "topic": topics["rules"]},
        "workers": 2,
        "correlator": {"enabled": False},  # the workers are under test
    })
    producer = Producer({"bootstrap.servers": broker})

    def send(phase: str) -> None:
        for i, event in enumerate(events):
            producer.produce(topics["in"], orjson.dumps(dict(event, sigmaray_test_id=f"{phase}:{i}")))
        assert producer.flush(30) == 0

    def versions(supervisor: Any) -> set[str]:
        return {row["ruleset_version"] for row in ray_local.get(supervisor.status.remote(), timeout=30)["workers"]}

    def wait_for_new_version(supervisor: Any, old: set[str]) -> float:
        started = time.monotonic()
        while time.monotonic() - started < 60:
            now = versions(supervisor)
            if len(now) == 1 and not now & old:
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"workers still on {versions(supervisor)}")

    def processed(count: int) -> None:
        deadline = time.monotonic() + 120
        while _committed(f"sigmaray-{run}", topics["in"], 3) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _committed(f"sigmaray-{run}", topics["in"], 3) == count

    supervisor = Supervisor.remote(config_to_dict(config))
    try:
        ray_local.get(supervisor.start.remote(), timeout=120)
        send("before")
        processed(len(events))
        empty_version = versions(supervisor)
        push(broker, topics["rules"], [(rule_id, rule_text)])
        took = wait_for_new_version(supervisor, empty_version)
        print(f"pushed rule live in all workers after {took:.1f}s")
        assert took < 30
        send("pushed")
        processed(2 * len(events))
        with_rule = versions(supervisor)
        push(broker, topics["rules"], [(rule_id, None)])
        wait_for_new_version(supervisor, with_rule)
        send("deleted")
        processed(3 * len(events))
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)

    detections = [d for d in _drain(topics["out"], 2, timeout=30) if d["kind"] == "sigma"]
    phases = sorted({d["event"]["sigmaray_test_id"].split(":")[0] for d in detections})
    assert {d["rule"]["id"] for d in detections} == {rule_id}
    assert phases == ["pushed"]  # nothing before the push, nothing after the delete
    assert len(detections) == 2  # the two Dumpert LSASS accesses
    assert {d["ruleset_version"] for d in detections} == with_rule


def test_broker_stopped_and_restarted_midstream_the_cluster_resumes_and_loses_nothing(
    ray_local: Any, tmp_path: Path
) -> None:
    from cluster.config import config_from_dict
    from cluster.kafka import dev_broker as kafka_dev
    from cluster.ray.actors import Supervisor, config_to_dict

    # A broker of its own (a free port, its own data folder): other tests share the run's one.
    from tests.broker import _free_port_pair

    port, data = _free_port_pair(), tmp_path / "broker"
    bootstrap = f"127.0.0.1:{port}"
    kafka_dev.up(data_dir=data, port=port)
    try:
        run = uuid.uuid4().hex[:8]
        topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}"}
        _create_topics(AdminClient({"bootstrap.servers": bootstrap}), {topics["in"]: 3, topics["out"]: 1, topics["dlq"]: 1})
        events = _events()
        half = len(events) // 2
        group = f"sigmaray-{run}"

        def committed() -> int:
            consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
            offsets = consumer.committed([TopicPartition(topics["in"], p) for p in range(3)], timeout=10)
            consumer.close()
            return sum(max(o.offset, 0) for o in offsets)

        def produce(batch: list[dict[str, Any]]) -> None:
            producer = Producer({"bootstrap.servers": bootstrap})
            for event in batch:
                producer.produce(topics["in"], orjson.dumps(event))
            assert producer.flush(60) == 0

        config = config_from_dict({
            "kafka": {"bootstrap_servers": bootstrap, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                      "dead_letter_topic": topics["dlq"], "group_id": group},
            "processing": {"batch_size": 100},
            "rules": {"paths": [str(ROOT / "rules")]},
            "workers": 2,
            "correlator": {"enabled": False},  # the workers are under test
        })
        supervisor = Supervisor.remote(config_to_dict(config))
        try:
            ray_local.get(supervisor.start.remote(), timeout=120)
            produce(events[:half])
            deadline = time.monotonic() + 120
            while committed() < half and time.monotonic() < deadline:
                time.sleep(0.5)
            kafka_dev.down(data_dir=data)
            time.sleep(5)  # workers poll a dead broker meanwhile
            kafka_dev.up(data_dir=data, port=port)
            produce(events[half:])
            deadline = time.monotonic() + 180
            while committed() < len(events) and time.monotonic() < deadline:
                time.sleep(1)
            status = ray_local.get(supervisor.status.remote(), timeout=30)
        finally:
            ray_local.get(supervisor.shutdown.remote(), timeout=120)
        assert committed() == len(events), json.dumps(status)
        engine = SigmaEngine(load_rules_from_paths([ROOT / "rules"]).rules)
        offline = {(e["sigmaray_test_id"], m.id) for e in events for m in engine.match(e)}
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{run}", "auto.offset.reset": "earliest"})
        consumer.assign([TopicPartition(topics["out"], 0, 0)])
        got: list[tuple[str, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and set(got) != offline:
            message = consumer.poll(1)
            if message is not None and not message.error():
                detection = orjson.loads(message.value())
                if detection["kind"] == "sigma":
                    got.append((detection["event"]["sigmaray_test_id"], detection["rule"]["id"]))
        consumer.close()
        assert set(got) == offline
        print(f"broker restart: {len(got)} detections, {len(got) - len(set(got))} duplicates, status {status}")
    finally:
        kafka_dev.down(data_dir=data)


def test_scaling_a_running_cluster_moves_partitions_and_keeps_one_owner_each(broker: str, ray_local: Any) -> None:
    from cluster.config import config_from_dict
    from cluster.ray.actors import Supervisor, config_to_dict

    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}"}
    _create_topics(AdminClient({"bootstrap.servers": broker}), {topics["in"]: 3, topics["out"]: 1, topics["dlq"]: 1})
    events = _events()
    producer = Producer({"bootstrap.servers": broker})

    def send(batch: list[dict[str, Any]]) -> None:
        for event in batch:
            producer.produce(topics["in"], orjson.dumps(event))
        assert producer.flush(30) == 0

    group = f"sigmaray-{run}"
    config = config_from_dict({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": group},
        "rules": {"paths": [str(ROOT / "rules")]},
        "workers": 1,
        "correlator": {"enabled": False},  # the workers are under test
    })
    supervisor = Supervisor.remote(config_to_dict(config))
    try:
        assert len(ray_local.get(supervisor.start.remote(), timeout=120)) == 1
        send(events[: len(events) // 2])
        assert len(ray_local.get(supervisor.scale.remote(3), timeout=180)) == 3
        send(events[len(events) // 2 :])
        deadline = time.monotonic() + 120
        while _committed(group, topics["in"], 3) < len(events) and time.monotonic() < deadline:
            time.sleep(0.5)
        grown = ray_local.get(supervisor.status.remote(), timeout=30)
        assert len(ray_local.get(supervisor.scale.remote(2), timeout=180)) == 2
        shrunk = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=120)
    assert _committed(group, topics["in"], 3) == len(events)
    for status, workers in ((grown, 3), (shrunk, 2)):
        owned = [p for row in status["workers"] for p in row["partitions"]]
        assert len(status["workers"]) == workers
        assert sorted(owned) == sorted(f"{topics['in']}[{p}]" for p in range(3))
