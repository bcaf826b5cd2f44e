"""Bad records in a running cluster (real broker, real Ray), counted as the harness counted them:
every event carries a unique id and a rule matches every event.

- records too large for the output topics are cut down, never stall their partition, never
  repeat the outputs before them;
- odd time strings neither crash nor stall a worker, and the events are still matched;
- a catastrophic-backtracking rule pushed live neither stalls nor restarts a worker.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from models.datasets.generator import generate
from tests.conftest import OTRF
from tests.test_delivery_guarantees import CATCH_ALL_ID, _committed, _read_all, _rules

INPUT_LIMIT = 20 * 1024 * 1024  # the input topic takes 20 MB records, the outputs their default
REDOS_ID = "5f0c1d7e-0000-4000-8000-00000000dead"
REDOS = f"""title: Catastrophic backtracking
id: {REDOS_ID}
status: test
logsource:
  product: windows
  category: process_creation
detection:
  selection:
    CommandLine|re: '(a+)+$'
  condition: selection
level: low
"""
BACKREF_ID = "5f0c1d7e-0000-4000-8000-00000000beef"
BACKREF = REDOS.replace(REDOS_ID, BACKREF_ID).replace("'(a+)+$'", "'(a|aa)+\\1b'").replace(
    "Catastrophic backtracking", "Backreference RE2 cannot run")


def _topics(broker: str, partitions: int = 2) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    topics = {"in": f"events-{run}", "out": f"detections-{run}", "dlq": f"dead-{run}", "group": f"sigmaray-{run}",
              "rules": f"rules-{run}"}
    admin = AdminClient({"bootstrap.servers": broker})
    futures = admin.create_topics([
        NewTopic(topics["in"], partitions, 1, config={"max.message.bytes": str(INPUT_LIMIT)}),
        NewTopic(topics["out"], 1, 1), NewTopic(topics["dlq"], 1, 1)])
    for future in futures.values():
        future.result(30)
    return topics


def _config(broker: str, topics: dict[str, str], tmp_path: Path, **extra: Any) -> dict[str, Any]:
    from cluster.config import config_from_dict
    from cluster.ray.actors import config_to_dict

    data: dict[str, Any] = {
        "kafka": {"bootstrap_servers": broker, "input_topics": [topics["in"]], "detections_topic": topics["out"],
                  "dead_letter_topic": topics["dlq"], "group_id": topics["group"]},
        "processing": {"batch_size": 100},
        "rules": {"paths": [_rules(tmp_path)]},
        "models": {"checkpoint_url": str(tmp_path / "checkpoints"), "calibration_window": 300},
        "workers": 2,
        "correlator": {"enabled": False},  # the workers are under test
    }
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return config_to_dict(config_from_dict(data))


def _send(broker: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 20, "message.max.bytes": INPUT_LIMIT})
    for key, value in values:
        producer.produce(topic, value, key=key.encode())
    assert producer.flush(60) == 0


def _run_until_committed(ray: Any, config: dict[str, Any], broker: str, topics: dict[str, str], count: int,
                         during: Any = None, timeout: float = 300) -> dict[str, Any]:
    from cluster.ray.actors import Supervisor

    supervisor = Supervisor.remote(config)
    try:
        ray.get(supervisor.start.remote(), timeout=180)
        if during is not None:
            during()
        deadline = time.monotonic() + timeout
        while _committed(broker, topics["group"], topics["in"], 2) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        status: dict[str, Any] = ray.get(supervisor.status.remote(), timeout=30)
    finally:
        ray.get(supervisor.shutdown.remote(), timeout=180)
    assert _committed(broker, topics["group"], topics["in"], 2) == count, status
    return status


def _normal(count: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    return [dict(e, test_id=f"{prefix}-{i}") for i, e in enumerate(generate(count, seed=seed, otrf_root=OTRF))]


def _detections(broker: str, topic: str) -> tuple[Counter[str], list[dict[str, Any]], int]:
    """Catch-all hits per test id, every detection, and the largest record size."""
    ids: Counter[str] = Counter()
    detections = []
    largest = 0
    for value, _headers in _read_all(broker, topic):
        largest = max(largest, len(value))
        detection = orjson.loads(value)
        detections.append(detection)
        if detection["kind"] == "sigma" and detection["rule"]["id"] == CATCH_ALL_ID:
            ids[detection["event"]["test_id"]] += 1
    return ids, detections, largest


def _output_limit(broker: str, topic: str) -> int:
    from cluster.kafka.topic_limits import message_limits

    return message_limits({"bootstrap.servers": broker}, [topic])[topic]


def test_records_too_large_for_the_outputs_are_cut_down_and_never_stall_or_repeat_their_partition(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    topics = _topics(broker)
    events = _normal(600, 11, "n")
    base = next(e for e in events if e.get("EventID") == 1)
    big = {
        "big-event": dict(base, test_id="big-event", Description="x" * (5 * 1024 * 1024)),
        "many-fields": dict(base, test_id="many-fields", **{f"f{i}": i for i in range(100_000)}),
        "long-commandline": dict(base, test_id="long-commandline", CommandLine="cmd.exe /c " + "A" * (1024 * 1024)),
    }
    values = [(e["test_id"], orjson.dumps(e)) for e in events]
    # Mid-batch, both partitions: the outputs before them must not be sent again.
    for i, (name, event) in enumerate(big.items()):
        values.insert(100 + 150 * i, (name, orjson.dumps(event)))
    values.insert(300, ("bad-json", b'{"test_id": "bad-json", "x": "' + b"y" * (2 * 1024 * 1024)))
    _send(broker, topics["in"], values)

    status = _run_until_committed(ray_local, _config(broker, topics, tmp_path), broker, topics, len(values))

    assert status["restarts"] == 0
    ids, detections, largest = _detections(broker, topics["out"])
    assert largest <= _output_limit(broker, topics["out"])
    expected = {e["test_id"] for e in events} | set(big)
    assert set(ids) == expected, f"missing {len(expected - set(ids))}"
    assert not {i: n for i, n in ids.items() if n > 1}, "outputs repeated"
    for name in big:
        cut = next(d for d in detections if d["kind"] == "sigma" and d["event"]["test_id"] == name)
        assert cut["truncated"]["original_bytes"] > _output_limit(broker, topics["out"]) / 2
        assert cut["source"]["topic"] == topics["in"] and cut["source"]["offset"] >= 0
    letters = _read_all(broker, topics["dlq"])
    assert len(letters) == 1
    value, headers = letters[0]
    assert headers["stage"] == b"decode" and headers["source.topic"] == topics["in"].encode()
    assert len(value) <= _output_limit(broker, topics["dlq"]) and value.startswith(b'{"test_id": "bad-json"')
    rows = status["workers"]
    assert sum(r["dead_letters_by_stage"].get("decode", 0) for r in rows) == 1
    assert sum(r["truncated"] for r in rows) >= 4


def test_odd_time_strings_neither_crash_nor_stall_a_worker_and_their_events_are_still_matched(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    topics = _topics(broker)
    events = _normal(800, 12, "t")
    odd = ["²ms", "99999999999999999999ms", "-1e400", "NaN", "99999-01-01T00:00:00Z", "", "0ms", "1" * 5000]
    for i, value in enumerate(odd):
        events[50 + 90 * i]["UtcTime"] = value
        events[51 + 90 * i]["TimeCreated_SystemTime"] = value
    events[700]["UtcTime"] = 1e30
    events[701]["UtcTime"] = -(2**70)  # beyond 64 bits: orjson will not write it, json does
    _send(broker, topics["in"], [(e["test_id"], json.dumps(e).encode()) for e in events])

    status = _run_until_committed(ray_local, _config(broker, topics, tmp_path), broker, topics, len(events))

    assert status["restarts"] == 0
    assert all(not r.get("error") for r in status["workers"])
    ids, _detections_, _largest = _detections(broker, topics["out"])
    assert set(ids) == {e["test_id"] for e in events}
    assert not _read_all(broker, topics["dlq"])


def test_a_catastrophic_backtracking_rule_pushed_live_neither_stalls_nor_restarts_a_worker(
    broker: str, ray_local: Any, tmp_path: Path
) -> None:
    from cluster.kafka.live_rules import push

    topics = _topics(broker)
    events = _normal(800, 13, "r")
    template = next(e for e in events if e.get("EventID") == 1)
    # The "b" gets past the index's required-literal prefilter of the backreference rule.
    hostile = [dict(template, test_id=f"hostile-{i}", CommandLine="a" * 40 + "!b") for i in range(4)]
    first, second = events[:400], events[400:]
    values = [(e["test_id"], orjson.dumps(e)) for e in first]

    def push_then_send() -> None:
        push(broker, topics["rules"], [(REDOS_ID, REDOS), (BACKREF_ID, BACKREF)])
        time.sleep(3)  # compiled in the background, swapped between batches
        later = second[:200] + hostile + second[200:]
        _send(broker, topics["in"], [(e["test_id"], orjson.dumps(e)) for e in later])

    _send(broker, topics["in"], values)
    config = _config(broker, topics, tmp_path, rules={"topic": topics["rules"]})
    total = len(events) + len(hostile)
    status = _run_until_committed(ray_local, config, broker, topics, total, during=push_then_send)

    assert status["restarts"] == 0
    ids, detections, _largest = _detections(broker, topics["out"])
    assert set(ids) == {e["test_id"] for e in events + hostile}
    # "aaa…a!b" neither ends in an a nor has "ab": the hostile events must not match the pushed rules.
    pushed = {REDOS_ID, BACKREF_ID}
    assert not [d for d in detections if d["rule"]["id"] in pushed and d["event"]["test_id"].startswith("hostile")]
    # `(a+)+$` runs on RE2 in linear time; the backreference cannot, and its matches time out:
    # that rule is degraded in status, the event went on through every other rule.
    degraded = {rule: why for row in status["workers"] for rule, why in row["degraded_rules"].items()}
    assert set(degraded) == {BACKREF_ID}, degraded
    assert "timed out" in degraded[BACKREF_ID]

