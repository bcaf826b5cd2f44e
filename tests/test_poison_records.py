"""No record's content makes the Detector raise: each record comes out processed or
dead-lettered (with its stage and source), exactly once, and odd times never hide an event
from the rules.

A Detector that raised on a record would crash its worker, which would restart, read the same
record and crash again; `sigmaray replay` would exit 1 on the same file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.processing.detector import STAGES, DetectionSettings, Detector, InputRecord
from cluster.processing.output_size import record_bytes
from cluster.sources.files import read_events
from detectors.engine import SigmaEngine
from detectors.rulefiles import load_rules_from_paths
from models.eventtime import parse_time_ms
from models.scorer import EntityScorer, ScorerConfig
from tests.conftest import OTRF, ROOT
from tests.ruletools import load, rule_yaml

SYSMON = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "ws-01.corp.example",
          "Image": "C:\\Windows\\System32\\cmd.exe", "User": "CORP\\bob", "CommandLine": "cmd.exe /c whoami"}
MATCH_ALL = "selection:\n    EventID: 1\ncondition: selection"
ODD_TIMES: list[Any] = [
    "²ms", "٣ms", "99999999999999999999ms", "-1e400", "NaN", "99999-01-01T00:00:00", "9999-12-31T23:59:59",
    "0001-01-01T00:00:00+05:00", "1e30", "-5ms", "", " ", "2019-05-14T00:01:02Z" + " " * 100, "\x00",
    1e30, -1e30, float("nan"), float("inf"), 2**70, -1, True, None, [], {"t": 1},
]
LIMIT = 1_000_000


def _detector(rules: Any = None, limit: int = 0) -> Detector:
    ruleset = rules or load(MATCH_ALL)
    topics = ("sigmaray.detections", "sigmaray.dead-letter", "sigmaray.shadow")
    return Detector(SigmaEngine(ruleset.rules), ruleset.version,
                    DetectionSettings(shadow_topic="sigmaray.shadow", max_message_bytes={t: limit for t in topics}))


def _check_accounting(records: list[InputRecord], result: Any, limit: int = 0) -> None:
    """Every record once: processed, or one dead letter that says why, at which stage, from where."""
    assert result.counts["events"] + result.counts["dead_letter"] == len(records)
    dead = [o for o in result.outputs if o.topic == "sigmaray.dead-letter"]
    assert len(dead) == result.counts["dead_letter"]
    assert sum(result.counts[f"dead_letter.{stage}"] for stage in STAGES) == result.counts["dead_letter"]
    offsets = {r.offset: r for r in records}
    seen: set[int] = set()
    for letter in dead:
        headers = dict(letter.headers)
        assert headers["stage"].decode() in STAGES and headers["error"] and len(headers["error"]) <= 1000
        offset = int(headers["source.offset"])
        assert offset in offsets and offset not in seen
        seen.add(offset)
        record = offsets[offset]
        assert headers["source.topic"] == record.topic.encode()
        assert headers["source.partition"] == str(record.partition).encode()
        if record.value is None and record.event is None:
            assert letter.value is None  # a tombstone stays a tombstone
    for output in result.outputs:
        assert output.topic == "sigmaray.dead-letter" or orjson.loads(output.value)["source"]["offset"] in offsets
        if limit:
            assert record_bytes(output.key, output.value, output.headers) <= limit


# -------------------------------------------------------------------------------------- times


def _jsonl(event: dict[str, Any]) -> bytes:
    """orjson's JSON, or the standard library's for what orjson will not write (2**70)."""
    try:
        return orjson.dumps(event)
    except TypeError:
        return json.dumps(event).encode()


@pytest.mark.parametrize("odd", ODD_TIMES, ids=repr)
def test_an_event_with_an_odd_time_is_still_matched_and_scored(odd: Any) -> None:
    """The time falls back to the broker timestamp; corrupting UtcTime evades no rule. As a
    Kafka value and as a file source's decoded event (which may hold what JSON cannot)."""
    event = {**SYSMON, "UtcTime": odd, "@timestamp": odd}
    for record in (InputRecord("winlogs", 0, 5, _jsonl(event), timestamp_ms=1_557_792_062_123),
                   InputRecord("winlogs", 0, 5, None, timestamp_ms=1_557_792_062_123, event=event)):
        scorer = EntityScorer()
        result = _detector().process([record], scorer)
        _check_accounting([record], result)
        assert result.counts["events"] == 1 and result.counts["detections"] == 1
        detection = orjson.loads(result.outputs[0].value)
        assert detection["event_time"] == "1557792062123ms"
        assert detection["scores"] and detection["model_version"] == "hst@1"
        assert result.counts["bad_time"] == (1 if isinstance(odd, str) and odd else 0)
        assert scorer.last_time_ms == 1_557_792_062_123


def test_a_5_megabyte_time_string_is_not_a_time() -> None:
    record = InputRecord("winlogs", 0, 0, orjson.dumps({**SYSMON, "UtcTime": "2" * 5_000_000}))
    result = _detector().process([record], EntityScorer())
    assert result.counts["events"] == 1 and result.counts["bad_time"] == 1 and result.counts["detections"] == 1
    assert orjson.loads(result.outputs[0].value)["event_time"] is None


def test_times_outside_1970_to_2500_are_no_time_for_the_scorer() -> None:
    """The scorer's own guard, for callers that hand it times without parse_time_ms."""
    scorer = EntityScorer()
    events = [dict(SYSMON)] * 4
    scores = scorer.score_batch(events, [10**20, -(10**20), 1_557_792_062_123, 2**63], [False] * 4)
    assert len(scores) == 4 and scorer.skipped_no_time == 3 and scorer.last_time_ms == 1_557_792_062_123


def test_a_broker_timestamp_out_of_range_is_no_time_either() -> None:
    record = InputRecord("winlogs", 0, 0, orjson.dumps(SYSMON), timestamp_ms=10**19)
    result = _detector().process([record], EntityScorer())
    assert result.counts["events"] == 1 and result.counts["bad_time"] == 1
    assert orjson.loads(result.outputs[0].value)["event_time"] is None


def test_parse_time_ms_takes_only_ascii_digits_and_sane_years() -> None:
    assert parse_time_ms("1557792062123ms") == 1_557_792_062_123
    assert parse_time_ms("2019-05-14T00:01:02.123Z") == 1_557_792_062_123
    assert parse_time_ms(1_557_792_062) == 1_557_792_062_000
    for odd in ODD_TIMES:
        assert parse_time_ms(odd) is None, odd


def test_sigmaray_replay_of_a_file_with_odd_times_exits_0_and_matches_every_event(tmp_path: Path) -> None:
    rule = tmp_path / "match_all.yml"
    rule.write_text(rule_yaml(MATCH_ALL))
    events = tmp_path / "odd.jsonl"
    lines = [_jsonl({**SYSMON, "UtcTime": t}) for t in ODD_TIMES]
    lines.append(orjson.dumps({**SYSMON, "UtcTime": "2" * 5_000_000}))
    events.write_bytes(b"\n".join(lines) + b"\n")
    done = subprocess.run([str(Path(sys.executable).parent / "sigmaray"), "replay", "--rules", str(rule), str(events)],
                          capture_output=True, timeout=300, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    detections = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert len(detections) == len(lines)
    assert all(d["scores"] for d in detections)  # scored too, by the real models
    assert f"replayed {len(lines)} events" in done.stderr.decode()


# -------------------------------------------------------------------------------- other stages


def test_a_dead_lettered_tombstone_keeps_a_null_value() -> None:
    records = [InputRecord("winlogs", 0, 0, None, key=b"k"), InputRecord("winlogs", 0, 1, orjson.dumps(SYSMON))]
    result = _detector().process(records)
    _check_accounting(records, result)
    (dead,) = [o for o in result.outputs if o.topic == "sigmaray.dead-letter"]
    assert dead.value is None and dead.key == b"k" and dict(dead.headers)["stage"] == b"decode"


class _FailingScorer(EntityScorer):
    """A real EntityScorer that fails on events carrying a `Poison` field, as a scorer bug would."""

    def score_batch(self, events: Any, times_ms: Any, matched: Any) -> Any:
        if any("Poison" in event for event in events):
            raise RuntimeError("feature kernel failed")
        return super().score_batch(events, times_ms, matched)


def test_a_scorer_failure_dead_letters_only_the_culprit_and_keeps_the_others_scores() -> None:
    events = [{**SYSMON, "Computer": f"ws-{i}"} for i in range(5)]
    events[2]["Poison"] = True
    records = [InputRecord("winlogs", 0, i, orjson.dumps(e), timestamp_ms=1_557_792_062_000 + i)
               for i, e in enumerate(events)]
    result = _detector().process(records, _FailingScorer())
    _check_accounting(records, result)
    assert result.counts["events"] == 4 and result.counts["dead_letter.score"] == 1
    (dead,) = [o for o in result.outputs if o.topic == "sigmaray.dead-letter"]
    assert dict(dead.headers)["error"] == b"RuntimeError: feature kernel failed"
    assert dict(dead.headers)["source.offset"] == b"2"
    detections = {d["source"]["offset"]: d for d in
                  (orjson.loads(o.value) for o in result.outputs if o.topic == "sigmaray.detections")}
    # the culprit's Sigma detection still goes out, unscored: a scorer bug must not hide it
    assert sorted(detections) == [0, 1, 2, 3, 4]
    assert detections[2]["scores"] == {} and all(detections[i]["scores"] for i in (0, 1, 3, 4))


class _FailingEngine(SigmaEngine):
    def match(self, event: Any) -> Any:
        if "Poison" in event:
            raise RecursionError("maximum recursion depth exceeded")
        return super().match(event)


def test_an_engine_failure_dead_letters_the_record_with_stage_match() -> None:
    ruleset = load(MATCH_ALL)
    detector = Detector(_FailingEngine(ruleset.rules), ruleset.version)
    records = [InputRecord("winlogs", 1, i, orjson.dumps({**SYSMON, **({"Poison": 1} if i == 1 else {})}))
               for i in range(3)]
    result = detector.process(records, EntityScorer())
    _check_accounting(records, result)
    assert result.counts["events"] == 2 and result.counts["dead_letter.match"] == 1
    (dead,) = [o for o in result.outputs if o.topic == "sigmaray.dead-letter"]
    assert dead.value == records[1].value and dict(dead.headers)["stage"] == b"match"


# -------------------------------------------------------------------------------- property test


SHIPPED = load_rules_from_paths([ROOT / "rules"])
_DUMPERT = OTRF / "jsonl" / "credential_access" / "cmd_lsass_memory_dumpert_syscalls.jsonl"
# Without ../shared the property test mutates synthesized Sysmon events instead (one detected).
_STAGER = dict(SYSMON, Image="C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
               CommandLine="powershell.exe -NoP -enc " + "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA" * 2)
_DATASET = ([r.event for r in read_events(_DUMPERT) if r.event is not None] if _DUMPERT.is_file()
            else [dict(SYSMON), _STAGER])
# Real events to mutate: those the shipped rules detect (so detections get built and cut), and others.
_ENGINE = SigmaEngine(SHIPPED.rules)
SEEDS = [e for e in _DATASET if _ENGINE.match(e)] + _DATASET[::10]
assert len(SEEDS) > len(_DATASET[::10]), "the dataset has events the shipped rules detect"
TIME_FIELDS = ("UtcTime", "TimeCreated_SystemTime", "@timestamp", "timestamp")
ENTITY_FIELDS = ("Computer", "User", "Image", "SourceIp", "DestinationIp", "TargetUserName", "EventID", "Channel")

scalars = st.one_of(
    st.none(), st.booleans(), st.text(max_size=30),
    st.integers(min_value=-(2**80), max_value=2**80),  # past 64 bits: orjson cannot write those
    st.floats(allow_nan=True, allow_infinity=True),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=12)
odd_keys = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(), st.floats(),
                     st.tuples(st.integers()), st.sampled_from(list(TIME_FIELDS + ENTITY_FIELDS)))
times = st.one_of(st.sampled_from(ODD_TIMES), st.text(max_size=40), st.floats(), st.integers(),
                  st.sampled_from(["2019-05-14T00:01:02Z", "2500-01-01T00:00:01Z", "1969-12-31T23:59:59Z"]))


@st.composite
def odd_events(draw: st.DrawFn) -> dict[Any, Any]:
    event = dict(draw(st.sampled_from(SEEDS)))
    for name in draw(st.lists(st.sampled_from(TIME_FIELDS), max_size=2)):
        event[name] = draw(times)
    for name in draw(st.lists(st.sampled_from(ENTITY_FIELDS), max_size=3)):
        event[name] = draw(values)
    event.update(draw(st.dictionaries(odd_keys, values, max_size=4)))
    size = draw(st.sampled_from([0, 0, 0, 2_000, 1_200_000]))
    if size:
        event[draw(st.sampled_from(["CommandLine", "Payload", "Image"]))] = "A" * size
    return event


def _nested(depth: int) -> bytes:
    return b'{"EventID":1,"Channel":"Security","d":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"


@st.composite
def records(draw: st.DrawFn) -> list[InputRecord]:
    out: list[InputRecord] = []
    for offset in range(draw(st.integers(min_value=1, max_value=6))):
        timestamp = draw(st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                                   st.just(1_557_792_062_000)))
        kind = draw(st.sampled_from(["json", "json", "json", "event", "event", "bytes", "tombstone", "nested",
                                     "error"]))
        value: bytes | None = None
        event = None
        if kind == "json":
            value = _json_or_repr(draw(odd_events()))
        elif kind == "event":  # a file source's decoded event: keys and values JSON cannot have
            event = draw(odd_events())
        elif kind == "bytes":
            value = draw(st.binary(max_size=64))
        elif kind == "nested":
            value = _nested(draw(st.sampled_from([200, 260, 1_100])))
        elif kind == "error":
            out.append(InputRecord("file.jsonl", 0, offset, None, error="line longer than 8388608 bytes"))
            continue
        out.append(InputRecord("winlogs", draw(st.integers(0, 3)), offset, value, draw(st.none() | st.binary(max_size=8)),
                               timestamp, event))
    return out


def _json_or_repr(event: dict[Any, Any]) -> bytes:
    """The event as JSON, or (tuple keys, 65-bit integers) as Python's repr: not JSON at all."""
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(event).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=records())
def test_any_batch_comes_out_processed_or_dead_lettered_exactly_once(batch: list[InputRecord]) -> None:
    detector = _detector(SHIPPED, limit=LIMIT)
    result = detector.process(batch, _property_scorer())
    _check_accounting(batch, result, LIMIT)
    for name in sorted(result.counts):  # --hypothesis-show-statistics: which paths the examples took
        if name.startswith("dead_letter.") or name in ("truncated", "bad_time", "detections", "anomalies"):
            hypothesis.event(name)


_SCORER: list[EntityScorer] = []


def _property_scorer() -> EntityScorer:
    """One scorer across examples, as a worker keeps one across batches (state piles up), with
    a shadow model so shadow records are built too."""
    if not _SCORER:
        scorer = EntityScorer(ScorerConfig(calibration_window=50))
        scorer.start_shadow("hst")
        _SCORER.append(scorer)
    return _SCORER[0]


def test_eventtime_docstring_examples_hold() -> None:
    import doctest

    from models import eventtime

    result = doctest.testmod(eventtime, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
