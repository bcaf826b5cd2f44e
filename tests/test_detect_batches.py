"""The worker's processing middle on plain lists of records, with no broker."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cluster.config import ClusterConfig, config_from_dict
from cluster.processing.detector import DetectionSettings, Detector, InputRecord
from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.errors import ConfigError
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import OTRF, ROOT

DATASET = OTRF / "jsonl" / "credential_access" / "cmd_lsass_memory_dumpert_syscalls.jsonl"


@pytest.fixture(scope="module")
def detector() -> Detector:
    ruleset = load_rules_from_paths([ROOT / "rules"])
    return Detector(SigmaEngine(ruleset.rules), ruleset.version)


def _records(values: list[bytes | None]) -> list[InputRecord]:
    return [InputRecord("events", i % 3, i, v, timestamp_ms=1_600_000_000_000 + i) for i, v in enumerate(values)]


def test_a_batch_yields_the_same_detections_as_the_offline_engine(detector: Detector) -> None:
    events = [r.event for r in read_events(DATASET) if r.event is not None]
    result = detector.process(_records([orjson.dumps(e) for e in events]))
    offline = [(i, m.id) for i, e in enumerate(events) for m in detector.engine.match(e)]
    produced = [orjson.loads(o.value) for o in result.outputs if o.topic == "sigmaray.detections"]
    assert [(d["source"]["offset"], d["rule"]["id"]) for d in produced] == offline
    assert offline, "the dataset has attacks the shipped rules detect"
    first = produced[0]
    assert first["ruleset_version"] == detector.ruleset_version
    assert first["entity"] == "workstation5"
    for detection in produced:  # event time comes from the record, never from the clock
        event = detection["event"]
        expected = event.get("TimeCreated_SystemTime") or event.get("UtcTime")
        offset = detection["source"]["offset"]
        assert detection["event_time"] == (expected or f"{1_600_000_000_000 + offset}ms")
    assert result.counts["events"] == len(events) and result.counts["dead_letter"] == 0


def test_undecodable_records_go_to_the_dead_letter_topic_with_their_origin(detector: Detector) -> None:
    result = detector.process(_records([b"{broken", b"[1, 2]", None, b'{"EventID": 1}']))
    dead = [o for o in result.outputs if o.topic == "sigmaray.dead-letter"]
    assert len(dead) == 3 and result.counts["dead_letter"] == 3 and result.counts["events"] == 1
    headers = dict(dead[0].headers)
    assert headers["source.topic"] == b"events" and headers["source.offset"] == b"0"
    assert headers["error"].startswith(b"invalid JSON") and headers["stage"] == b"decode"
    assert dead[0].value == b"{broken"
    assert dict(dead[1].headers)["error"] == b"JSON list is not an object"
    assert dead[2].value is None  # a tombstone stays a tombstone (null, not b"")
    assert result.counts["dead_letter.decode"] == 3


def test_config_defaults_and_errors_name_the_key() -> None:
    assert config_from_dict({}) == ClusterConfig()
    config = config_from_dict({"kafka": {"input_topics": "winlogs"}, "workers": 3})
    assert config.kafka.input_topics == ("winlogs",) and config.workers == 3
    for bad, key in [
        ({"processing": {"guarantee": "maybe"}}, "processing.guarantee"),
        ({"processing": {"batch_size": "big"}}, "processing.batch_size"),
        ({"kafka": {"bootstrap": "x"}}, "kafka.bootstrap"),
        ({"workers": 0}, "workers"),
        ({"nonsense": 1}, "nonsense"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_dict(bad)


def test_a_worker_with_a_tiny_output_buffer_pauses_fetching_and_still_delivers_everything(broker: str) -> None:
    """Back-pressure with a real broker: max_in_flight=5 forces the pause path on every batch."""
    import time
    import uuid

    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka.admin import AdminClient, NewTopic

    from cluster.kafka.partition_loop import PartitionLoop

    run = uuid.uuid4().hex[:8]
    bootstrap = broker
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive its futures
    for future in admin.create_topics(
        [NewTopic(f"in-{run}", 1, 1), NewTopic(f"out-{run}", 1, 1), NewTopic(f"dlq-{run}", 1, 1)]
    ).values():
        future.result(30)
    producer = KafkaProducer({"bootstrap.servers": bootstrap})
    for i in range(300):  # every record is undecodable, so every one is an output
        producer.produce(f"in-{run}", f"not json {i}".encode())
    assert producer.flush(30) == 0
    config = config_from_dict({
        "kafka": {"bootstrap_servers": bootstrap, "input_topics": [f"in-{run}"], "detections_topic": f"out-{run}",
                  "dead_letter_topic": f"dlq-{run}", "group_id": f"g-{run}"},
        "processing": {"max_in_flight": 5, "batch_size": 100},
        "rules": {"paths": [str(ROOT / "rules")]},
    })
    loop = PartitionLoop(config, "w")
    loop.assign([(f"in-{run}", 0)])
    deadline = time.monotonic() + 60
    while loop.metrics.events_in < 300 and time.monotonic() < deadline:
        loop.run_once()
    loop.checkpoint.flush(10)
    loop.consumer.close()
    assert loop.metrics.events_in == loop.metrics.dead_letters == 300
    assert loop.metrics.pauses > 0
    reader = KafkaConsumer({"bootstrap.servers": bootstrap, "group.id": f"r-{run}", "auto.offset.reset": "earliest"})
    reader.subscribe([f"dlq-{run}"])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < 300 and time.monotonic() < deadline:
        message = reader.poll(0.5)
        if message is not None and not message.error():
            seen += 1
    reader.close()
    assert seen == 300


def test_every_detection_is_a_versioned_record_that_round_trips() -> None:
    """Sigma and anomaly detections (models on, real data) and cut ones all carry schema_version 1
    and read back as the same `Detection`; a bad record is refused with a reason."""
    from cluster.processing.records import Detection
    from cluster.sources.replay import replay_files

    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]},
                               "models": {"enabled": True, "calibration_window": 200}})
    files = [str(path) for path in sorted((OTRF / "jsonl" / "credential_access").glob("*.jsonl"))]
    records: list[dict] = []
    replay_files(config, files, lambda output, dead: dead or records.append(orjson.loads(output.value)),
                 per_file=True)
    kinds = {record["kind"] for record in records}
    assert kinds == {"sigma", "anomaly"}, kinds
    for record in records:
        assert record["schema_version"] == Detection.SCHEMA_VERSION == 1
        detection = Detection.from_dict(record)
        assert detection.to_dict() == record
        assert list(detection.to_dict()) == list(record)  # the key order too
        assert orjson.loads(detection.to_json()) == record
    # A detection cut to its topic's size limit is still a record, with its `truncated` entry.
    ruleset = load_rules_from_paths([ROOT / "rules"])
    engine = SigmaEngine(ruleset.rules)
    event = {**next(r.event for r in read_events(DATASET) if r.event and engine.match(r.event)),
             "Padding": "x" * 20_000}
    small = Detector(engine, ruleset.version, DetectionSettings(max_message_bytes={"sigmaray.detections": 8_000}))
    cut = [orjson.loads(o.value) for o in small.process(_records([orjson.dumps(event)])).outputs]
    assert cut and all(record["truncated"] and record["schema_version"] == 1 for record in cut)
    assert all(Detection.from_dict(record).to_dict() == record for record in cut)
    with pytest.raises(ValueError, match="schema_version 99"):
        Detection.from_dict({**records[0], "schema_version": 99})
    with pytest.raises(ValueError, match="'source' must be an object"):
        Detection.from_dict({**records[0], "source": "nowhere"})
    with pytest.raises(ValueError, match="no id"):
        Detection.from_dict({**records[0], "rule": {"title": "x"}})
    with pytest.raises(ValueError, match="kind"):
        Detection.from_dict({**records[0], "kind": "other"})
    with pytest.raises(ValueError, match="JSON object"):
        Detection.from_dict([1])



class _Flags:
    """Records the `matched` flags a Detector hands its scorer (our own hook, not a mock of a library)."""

    def __init__(self) -> None:
        self.flags: list[bool] = []

    def score_batch(self, events: Any, times_ms: Any, matched: Any) -> list[Any]:
        self.flags += list(matched)
        return [None] * len(events)


def test_models_learn_events_that_only_quiet_base_rules_match_and_not_those_that_alert() -> None:
    """A real network logon matches only the logon base rule of the shipped brute-force and
    lateral-movement correlations (`generate: false`): its detection goes out, and the models
    learn from it, because nothing alerts on it. An event an alerting rule matches is not learned."""
    import json

    from cluster.build import build_detector
    from tests.conftest import OTRF

    path = OTRF / "jsonl" / "lateral_movement" / "covenant_sc_query_dcerpc_smb_svcctl.jsonl"
    if not path.is_file():
        pytest.skip("reference data not found")
    logon = next(e for e in map(json.loads, path.read_text().splitlines())
                 if e.get("EventID") == 4624 and str(e.get("LogonType")) == "3" and not e["TargetUserName"].endswith("$"))
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]}, "models": {"enabled": False}})
    detector, _ruleset = build_detector(config)
    assert detector.quiet_rules
    flags = _Flags()
    stager = {**logon, "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
              "Image": "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
              "CommandLine": "powershell.exe -NoP -enc " + "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA" * 2}
    result = detector.process([InputRecord("t", 0, 0, json.dumps(logon).encode()),
                               InputRecord("t", 0, 1, json.dumps(stager).encode())], flags)
    assert result.counts["detections"] >= 2  # the logon's base-rule detection still goes out
    assert flags.flags == [False, True]
