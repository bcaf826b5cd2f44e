"""Outputs larger than their topic takes are cut down to fit, never dropped, never retried.

The four records an independent harness stalled a partition with (input topics allow 20 MB,
output topics ~1 MB), through the Detector with a rule that matches them all; then the limits
read from a real broker, and cut records produced to a topic that only takes 200,000 bytes.
"""

from __future__ import annotations

import doctest
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from cluster.kafka.topic_limits import BrokerUnavailable, message_limits
from cluster.processing import output_size
from cluster.processing.detector import DetectionSettings, Detector, InputRecord, OutputRecord
from cluster.processing.output_size import cut_event, record_bytes, truncate_text
from detectors.engine import SigmaEngine
from models.scorer import EntityScorer, ScorerConfig
from tests.ruletools import load

LIMIT = 1_000_000
SYSMON = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "ws-01.corp.example",
          "UtcTime": "2019-05-14 00:01:02.123", "Image": "C:\\Windows\\System32\\cmd.exe", "User": "CORP\\bob"}
# Matches every process creation: whatever the harness sends, there is a detection to cut.
MATCH_ALL = "selection:\n    EventID: 1\ncondition: selection"
TOPICS = ("sigmaray.detections", "sigmaray.dead-letter", "sigmaray.shadow")


def _detector(limit: int = LIMIT, scorer: Any = None) -> Detector:
    ruleset = load(MATCH_ALL)
    settings = DetectionSettings(shadow_topic="sigmaray.shadow", max_message_bytes={t: limit for t in TOPICS})
    return Detector(SigmaEngine(ruleset.rules), ruleset.version, settings, scorer)


def _harness_values() -> list[bytes]:
    """The harness's four: 2 MB of invalid JSON, a 5 MB event, 100,000 fields, a 1 MB command line."""
    return [
        b"{" + b"x" * 2_000_000,
        orjson.dumps({**SYSMON, "Payload": "A" * 3_000_000, "Extra": "B" * 2_000_000}),
        orjson.dumps({**SYSMON, **{f"Field{i}": f"value {i}" for i in range(100_000)}}),
        orjson.dumps({**SYSMON, "CommandLine": "cmd.exe /c " + "echo x & " * 116_000}),
    ]


def _fits(output: OutputRecord, limit: int = LIMIT) -> bool:
    return record_bytes(output.key, output.value, output.headers) <= limit


def test_the_harness_records_come_out_cut_to_the_limit_with_their_source_and_nothing_dropped() -> None:
    values = _harness_values()
    records = [InputRecord("winlogs", 2, 100 + i, v, timestamp_ms=1_557_792_062_000) for i, v in enumerate(values)]
    assert all(len(v) > LIMIT for v in values)
    result = _detector().process(records)
    assert all(_fits(o) for o in result.outputs), [record_bytes(o.key, o.value, o.headers) for o in result.outputs]
    assert result.counts["events"] == 3 and result.counts["dead_letter"] == 1 and result.counts["detections"] == 3
    assert result.counts["truncated"] == 4

    dead = [o for o in result.outputs if o.topic == "sigmaray.dead-letter"]
    headers = dict(dead[0].headers)
    assert headers["source.offset"] == b"100" and headers["stage"] == b"decode"
    assert headers["truncated"] == b"true" and headers["original.bytes"] == b"2000001"
    assert values[0].startswith(dead[0].value) and len(dead[0].value) > 990_000  # the prefix, as much as fits

    detections = [orjson.loads(o.value) for o in result.outputs if o.topic == "sigmaray.detections"]
    assert [d["source"]["offset"] for d in detections] == [101, 102, 103]
    for detection, value in zip(detections, values[1:], strict=True):
        event = detection["event"]
        assert detection["truncated"]["original_bytes"] >= len(value)
        assert {k: event[k] for k in SYSMON} == SYSMON  # who, where, when and what ran survive every cut
        assert detection["source"] == {"topic": "winlogs", "partition": 2, "offset": detection["source"]["offset"],
                                       "timestamp_ms": 1_557_792_062_000}
    big, many, command = detections
    assert big["truncated"]["fields"] == ["Payload", "Extra"] and big["truncated"]["dropped_fields"] == 0
    assert big["event"]["Payload"].endswith(" bytes]") and "…[truncated " in big["event"]["Payload"]
    assert many["truncated"]["dropped_fields"] > 0 and len(many["event"]) + many["truncated"]["dropped_fields"] == \
        len(SYSMON) + 100_000
    assert command["truncated"]["fields"] == ["CommandLine"]
    assert command["event"]["CommandLine"].startswith("cmd.exe /c echo x & ")


def test_anomaly_detections_and_shadow_scores_of_a_huge_event_are_cut_too() -> None:
    """A 1 MB Image is a 1 MB process entity: in every score dict, the anomaly's title, the
    shadow record. threshold=0 makes every entity anomalous, so each event raises anomalies."""
    scorer = EntityScorer(ScorerConfig(threshold=0.0))
    scorer.start_shadow("hst")
    event = {**SYSMON, "Image": "C:\\" + "p" * 1_000_000 + ".exe", "Computer": "h" * 1_100_000}
    result = _detector(scorer=scorer).process([InputRecord("winlogs", 0, 7, orjson.dumps(event))])
    kinds = sorted(orjson.loads(o.value).get("kind", o.topic) for o in result.outputs)
    assert kinds == ["anomaly", "anomaly", "anomaly", "sigma", "sigmaray.shadow"]
    assert all(_fits(o) for o in result.outputs)
    assert result.counts["truncated"] == len(result.outputs) and result.counts["events"] == 1
    for output in result.outputs:
        assert orjson.loads(output.value)["source"]["offset"] == 7
        assert output.key is not None and len(output.key) <= output_size.KEY_BYTES


def test_an_event_orjson_cannot_write_still_yields_its_detection_with_the_unwritable_values_marked() -> None:
    nested: dict[str, Any] = {}
    inner = nested
    for _ in range(300):  # past orjson's 254 levels
        inner["x"] = {}
        inner = inner["x"]
    event = {**SYSMON, "Deep": nested, "Huge": 2**70}
    result = _detector(limit=0).process([InputRecord("files", 0, 3, None, event=event)])
    assert result.counts["events"] == 1 and result.counts["truncated"] == 1
    detection = orjson.loads(result.outputs[0].value)
    assert detection["event"]["Deep"].startswith("[unserializable: ")
    assert detection["truncated"]["fields"] == ["Deep", "Huge"]
    assert detection["event"]["Image"] == SYSMON["Image"]


def test_a_detection_that_cannot_fit_even_cut_down_is_dead_lettered_with_stage_output() -> None:
    result = _detector(limit=700).process([InputRecord("winlogs", 0, 9, orjson.dumps(SYSMON))])
    assert result.counts["dead_letter.output"] == 1 and result.counts["events"] == 0
    (dead,) = result.outputs
    headers = dict(dead.headers)
    assert dead.topic == "sigmaray.dead-letter" and headers["stage"] == b"output"
    assert headers["error"].startswith(b"DoesNotFit: ") and headers["source.offset"] == b"9"
    assert _fits(dead, 700)


def test_truncated_text_fits_its_json_budget_exactly_and_says_how_much_was_cut() -> None:
    for text in ["a" * 10_000, "é" * 10_000, "\n\"\\" * 5_000, "\x00" * 3_000, "日本" * 4_000]:
        for budget in (64, 256, 1_000, 4_099):
            cut = truncate_text(text, budget)
            assert len(orjson.dumps(cut)) <= budget
            prefix, marker = cut.rsplit("…[truncated ", 1)
            assert text.startswith(prefix)
            assert int(marker.removesuffix(" bytes]")) == len(text.encode()) - len(prefix.encode())
            assert len(orjson.dumps(truncate_text(text, budget + 200))) > budget  # no needless cutting


def test_a_cut_keeps_the_named_fields_and_drops_the_largest_others_first() -> None:
    event = {"EventID": 4688, "Big": "b" * 900, "Mid": "m" * 300, **{f"f{i}": i for i in range(50)}}
    cut = cut_event(event, 400, keep=("EventID", "Mid"))
    assert len(orjson.dumps(cut.event)) <= 400
    assert cut.event["EventID"] == 4688 and "Mid" in cut.event and "Big" not in cut.event
    assert cut.dropped == len(event) - len(cut.event)
    # Under its budget, an event is left alone
    assert cut_event(event, 10_000) == output_size.EventCut(event)


def test_output_size_docstring_examples_hold() -> None:
    result = doctest.testmod(output_size, verbose=False)
    assert result.attempted > 5 and result.failed == 0


# ---------------------------------------------------------------------------------------- broker


@pytest.fixture(scope="module")
def small_topic(broker: str) -> Iterator[str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"small-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker})
    for future in admin.create_topics([NewTopic(name, 1, 1, config={"max.message.bytes": "200000"})]).values():
        future.result(30)
    yield name
    admin.delete_topics([name])


def test_limits_are_read_from_the_broker_and_capped_by_the_producers_own(broker: str, small_topic: str) -> None:
    missing = f"not-created-{uuid.uuid4().hex[:8]}"
    limits = message_limits({"bootstrap.servers": broker}, [small_topic, missing])
    # a topic not created yet gets the broker's default (1048588), under librdkafka's 1,000,000
    assert limits == {small_topic: 200_000, missing: 1_000_000}
    assert message_limits({"bootstrap.servers": broker, "message.max.bytes": 150_000}, [small_topic]) == \
        {small_topic: 150_000}


def test_unreachable_broker_raises_a_clear_error() -> None:
    with pytest.raises(BrokerUnavailable, match=r"no broker answered at 127\.0\.0\.1:1 within 1s"):
        message_limits({"bootstrap.servers": "127.0.0.1:1"}, ["any"], timeout=1)


def test_cut_records_are_accepted_by_a_topic_that_takes_only_200000_bytes(broker: str, small_topic: str) -> None:
    """The proof that the cut is enough: the producer (its own limit lower still) and the
    broker take every output, the four harness records cut down."""
    from confluent_kafka import Producer

    config = {"bootstrap.servers": broker, "message.max.bytes": 150_000}
    limit = message_limits(config, [small_topic])[small_topic]
    assert limit == 150_000
    ruleset = load(MATCH_ALL)
    settings = DetectionSettings(small_topic, small_topic, max_message_bytes={small_topic: limit})
    detector = Detector(SigmaEngine(ruleset.rules), ruleset.version, settings)
    result = detector.process([InputRecord("winlogs", 0, i, v) for i, v in enumerate(_harness_values())])
    assert len(result.outputs) == 4 and result.counts["truncated"] == 4
    errors: list[str] = []
    # librdkafka packs several records in one batch, and the topic's limit holds for the batch:
    # a producer writing to a small topic must not batch past it.
    producer = Producer({**config, "batch.size": limit})
    for output in result.outputs:
        producer.produce(output.topic, output.value, output.key, headers=list(output.headers),
                         on_delivery=lambda error, _: errors.append(str(error)) if error else None)
    assert producer.flush(30) == 0
    assert errors == []
