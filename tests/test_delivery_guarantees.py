"""What the independent harness found, as tests with the real broker and Ray: every event carries
a unique id and a rule matches every event, so missing and duplicated outputs are counted.

- a worker killed while its successor replays a partition to rebuild model state: under exactly
  once no detection appears twice (the replay used to commit offsets backwards);
- the supervisor shut down while it replaces a dead worker: no error;
- a record that kills its worker process: a few restarts, then it is dead-lettered (stage
  `crash`) and the partition moves on; every other record is processed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from models.datasets.generator import generate
from tests.conftest import OTRF

CATCH_ALL_ID = "5f0c1d7e-0000-4000-8000-000000000001"
CATCH_ALL = f"""title: Every test event
id: {CATCH_ALL_ID}
status: test
description: matches every event of the harness, so outputs can be counted per input
logsource:
  product: windows
detection:
  selection:
    test_id|exists: true
  condition: selection
level: low
"""


def _rules(tmp_path: Path) -> str:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    (folder / "catch_all.yml").write_text(CATCH_ALL)
    return str(folder)


def _topics(broker: str, partitions: int = 1) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}", "group": f"sigmaray-{run}"}
    admin = AdminClient({"bootstrap.servers": broker})
    futures = admin.create_topics([NewTopic(topics["in"], partitions, 1), NewTopic(topics["out"], 1, 1),
                                   NewTopic(topics["dlq"], 1, 1)])
    for future in futures.values():
        future.result(30)
    return topics


def _produce(broker: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20})
    for event in events:
        producer.produce(topic, orjson.dumps(event), key=event["test_id"].encode())
    assert producer.flush(60) == 0


def _committed(broker: str, group: str, topic: str, partitions: int = 1) -> int:
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return sum(max(o.offset, 0) for o in offsets)


def _wait_committed(broker: str, group: str, topic: str, count: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while _committed(broker, group, topic) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _committed(broker, group, topic) == count


def _read_all(broker: str, topic: str) -> list[Any]:
    """Every committed record of a one-partition topic (read_committed), as (value, headers)."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": f"reader-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    tp = TopicPartition(topic, 0, 0)
    consumer.assign([tp])
    _low, high = consumer.get_watermark_offsets(tp, timeout=10)
    out: list[Any] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        message = consumer.poll(1)
        if message is None:
            position = consumer.position([tp])[0].offset
            if position >= high:  # transaction markers take offsets too: stop at the end, not a count
                break
            continue
        if not message.error():
            out.append((message.value(), dict(message.headers() or [])))
    consumer.close()
    return out


def _events(count: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    return [dict(event, test_id=f"{prefix}-{i}") for i, event in enumerate(generate(count, seed=seed, otrf_root=OTRF))]


def _sigma_ids(broker: str, topic: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    for value, _headers in _read_all(broker, topic):
        detection = orjson.loads(value)
        if detection["kind"] == "sigma" and detection["rule"]["id"] == CATCH_ALL_ID:
            ids[detection["event"]["test_id"]] += 1
    return ids


def test_a_worker_killed_while_its_successor_replays_model_state_duplicates_nothing_exactly_once(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.config import config_from_dict
    from cluster.ray.actors import Supervisor, config_to_dict

    topics = _topics(broker)

    def config(interval: int) -> dict[str, Any]:
        return config_to_dict(config_from_dict({
            "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                      "dead_letter_topic": topics["dlq"], "group_id": topics["group"]},
            "processing": {"guarantee": "exactly_once", "batch_size": 200},
            "rules": {"paths": [_rules(tmp_path)]},
            "models": {"checkpoint_url": str(tmp_path / "checkpoints"), "checkpoint_interval_s": interval,
                       "calibration_window": 300},
            "workers": 1,
            "correlator": {"enabled": False},  # the workers are under test
        }))

    first, bulk, last = _events(2000, 1, "a"), _events(30000, 2, "b"), _events(1000, 3, "c")
    # A checkpoint at 2,000 and a clean stop.
    supervisor = Supervisor.remote(config(0))
    ray_local.get(supervisor.start.remote(), timeout=180)
    _produce(broker, topics["in"], first)
    _wait_committed(broker, topics["group"], topics["in"], len(first))
    ray_local.get(supervisor.shutdown.remote(), timeout=180)
    ray_local.kill(supervisor)

    # No checkpoint for an hour: after a kill the state must be rebuilt from 2,000.
    supervisor = Supervisor.remote(config(3600))
    killed_during_replay = False
    try:
        ray_local.get(supervisor.start.remote(), timeout=180)
        _produce(broker, topics["in"], bulk)
        _wait_committed(broker, topics["group"], topics["in"], len(first) + len(bulk))
        os.kill(ray_local.get(supervisor.worker_pids.remote(), timeout=30)["worker-1"], signal.SIGKILL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not killed_during_replay:
            rows = ray_local.get(supervisor.status.remote(), timeout=30)["workers"]
            for row in rows:
                models = row.get("models", {})
                # Some replayed batches have gone through (they used to commit), more are to come.
                if row.get("worker") != "worker-1" and models.get("replaying") and models.get("replayed_for_state", 0) >= 2000:
                    pid = ray_local.get(supervisor.worker_pids.remote(), timeout=30)[row["worker"]]
                    os.kill(pid, signal.SIGKILL)
                    killed_during_replay = True
            time.sleep(0.05)
        assert killed_during_replay, "the successor was never seen replaying"
        # While a successor replays, the committed offset must not have moved backwards.
        assert _committed(broker, topics["group"], topics["in"]) == len(first) + len(bulk)
        _produce(broker, topics["in"], last)
        _wait_committed(broker, topics["group"], topics["in"], len(first) + len(bulk) + len(last), timeout=300)
        status = ray_local.get(supervisor.status.remote(), timeout=30)
    finally:
        ray_local.get(supervisor.shutdown.remote(), timeout=180)

    assert status["restarts"] >= 2
    ids = _sigma_ids(broker, topics["out"])
    expected = {e["test_id"] for e in first + bulk + last}
    missing = expected - set(ids)
    duplicated = {i: n for i, n in ids.items() if n > 1}
    assert not missing, f"{len(missing)} missing"
    assert not duplicated, f"{len(duplicated)} duplicated under read_committed"


def test_shutting_down_while_a_dead_worker_is_being_replaced_ends_cleanly(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from ray.util import list_named_actors

    from cluster.config import config_from_dict
    from cluster.ray.actors import NAMESPACE, Supervisor, config_to_dict

    topics = _topics(broker, partitions=2)
    config = config_to_dict(config_from_dict({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": topics["group"]},
        "rules": {"paths": [_rules(tmp_path)]},
        "models": {"enabled": False},
        "workers": 2,
        "correlator": {"enabled": False},  # the workers are under test
    }))
    for pause in (2.5, 4.0):  # the watch notices within 2 s, then starts a worker and rebalances
        supervisor = Supervisor.remote(config)
        ray_local.get(supervisor.start.remote(), timeout=180)
        os.kill(ray_local.get(supervisor.worker_pids.remote(), timeout=30)["worker-1"], signal.SIGKILL)
        time.sleep(pause)
        assert ray_local.get(supervisor.shutdown.remote(), timeout=300) is None
        names = [a["name"] for a in list_named_actors(all_namespaces=True) if a.get("namespace") == NAMESPACE]
        assert not [n for n in names if n.startswith("sigmaray-worker")], names
        ray_local.kill(supervisor)


def _loop_process(config: dict[str, Any], partition: tuple[str, int]) -> None:
    """A worker's loop in a process of its own that dies (os._exit, as a native crash would)
    when it processes a record carrying `"crash_here": true`."""
    from cluster.config import config_from_dict
    from cluster.kafka.partition_loop import PartitionLoop
    from cluster.processing.detector import Detector

    original = Detector.process

    def process(self: Detector, records: Any, scorer: Any = None) -> Any:
        for record in records:
            if record.error is None and record.value is not None and b'"crash_here":true' in record.value:
                os._exit(3)
        return original(self, records, scorer)

    Detector.process = process  # type: ignore[method-assign]
    loop = PartitionLoop(config_from_dict(config), "crashy")
    loop.assign([partition])
    loop.run(threading.Event())


def test_a_record_that_kills_its_worker_is_dead_lettered_after_a_few_restarts_and_the_partition_moves_on(
    broker: str, tmp_path: Path
) -> None:
    from cluster.config import config_from_dict
    from cluster.ray.actors import config_to_dict

    topics = _topics(broker)
    events = _events(400, 5, "p")
    poison = 137
    events[poison]["crash_here"] = True
    _produce(broker, topics["in"], events)
    config = config_to_dict(config_from_dict({
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": topics["group"]},
        "processing": {"batch_size": 50},
        "rules": {"paths": [_rules(tmp_path)]},
        "models": {"enabled": False, "checkpoint_url": str(tmp_path / "checkpoints")},
    }))
    context = multiprocessing.get_context("spawn")
    deaths = 0
    deadline = time.monotonic() + 300
    while _committed(broker, topics["group"], topics["in"]) < len(events) and time.monotonic() < deadline:
        process = context.Process(target=_loop_process, args=(config, (topics["in"], 0)))
        process.start()
        while process.is_alive() and _committed(broker, topics["group"], topics["in"]) < len(events):
            process.join(0.5)
        if process.is_alive():
            process.terminate()
            process.join(30)
        else:
            deaths += 1
            assert deaths <= 4, "the poison record was retried forever"
    assert _committed(broker, topics["group"], topics["in"]) == len(events)
    assert 2 <= deaths <= 4

    letters = _read_all(broker, topics["dlq"])
    assert len(letters) == 1
    value, headers = letters[0]
    assert headers["stage"] == b"crash"
    assert headers["source.offset"] == str(poison).encode()
    assert orjson.loads(value)["test_id"] == f"p-{poison}"
    ids = _sigma_ids(broker, topics["out"])
    assert set(ids) == {e["test_id"] for i, e in enumerate(events) if i != poison}


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Any:
    yield
    for child in multiprocessing.active_children():
        child.kill()
