"""Entity anomaly scoring (models/scorer.py) on the generator's realistic Windows stream."""

from __future__ import annotations

import random
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from models import serialization
from models.datasets.generator import generate, generate_labeled
from models.entities import extract_entities
from models.eventtime import event_time_ms
from models.scorer import EntityScorer, EventScores, ScorerConfig
from models.state import EntityTable


def _differences(a: Any, b: Any, path: str = "state") -> list[str]:
    """Where two state dicts differ (types, keys and their order, array dtypes and values)."""
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} != {type(b).__name__}"]
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f"{path}: keys differ"]
        return [d for key in a for d in _differences(a[key], b[key], f"{path}[{key!r}]")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{path}: {len(a)} != {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, np.ndarray):
        same = a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        return [] if same else [f"{path}: arrays differ"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _checkpointed(scorer: EntityScorer) -> EntityScorer:
    """The scorer as a checkpoint brings it back: state dict -> bytes -> state dict -> scorer."""
    return EntityScorer.from_state_dict(scorer.config, serialization.loads(serialization.dumps(scorer.state_dict())),
                                        scorer.features)


def _run(scorer: EntityScorer, events: list[dict[str, Any]], batch: int = 500,
         matched: list[bool] | None = None) -> list[EventScores]:
    out: list[EventScores] = []
    flags = matched or [False] * len(events)
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        out.extend(scorer.score_batch(chunk, [event_time_ms(e) for e in chunk], flags[start:start + batch]))
    return out


def _scores(results: list[EventScores]) -> list[tuple[str, float]]:
    return [(s.entity, s.score) for r in results for s in r.entities]


def _changed_behaviour(host: str, start: datetime, count: int, seed: int) -> list[dict[str, Any]]:
    """One workstation turns into a beacon-and-recon box: odd hours, new tools, encoded command
    lines, fresh destinations, a flood of events."""
    rng = random.Random(seed)
    tools = ["rclone.exe", "adfind.exe", "procdump64.exe", "psexec64.exe", "nltest.exe", "7za.exe", "plink.exe"]
    events = []
    moment = start
    for number in range(count):
        moment += timedelta(milliseconds=rng.randint(20, 200))
        tool = rng.choice(tools)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        if number % 2:
            events.append({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 3, "Computer": host,
                           "TimeCreated_SystemTime": stamp, "UtcTime": stamp, "User": "CORP\\b.schmidt",
                           "Image": f"C:\\ProgramData\\{tool}",
                           "DestinationIp": f"185.{rng.randint(1, 250)}.{rng.randint(1, 250)}.{rng.randint(1, 250)}",
                           "DestinationPort": str(rng.choice([4444, 8443, 53, 6667])), "SourceIp": "10.20.1.12"})
        else:
            blob = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(900))
            events.append({"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": host,
                           "TimeCreated_SystemTime": stamp, "UtcTime": stamp, "User": "CORP\\b.schmidt",
                           "Image": f"C:\\ProgramData\\{tool}", "ParentImage": "C:\\Windows\\System32\\rundll32.exe",
                           "CommandLine": f"{tool} -enc {blob}"})
    return events


def test_an_entity_that_changes_behaviour_scores_above_the_99th_percentile_of_the_baseline() -> None:
    background = list(generate(40_000, seed=4, attack_share=0.0))
    scorer = EntityScorer(ScorerConfig(seed=1))
    warm, normal = background[:30_000], background[30_000:]
    _run(scorer, warm)
    baseline = [s for _, s in _scores(_run(scorer, normal))]
    last = datetime.fromisoformat(normal[-1]["TimeCreated_SystemTime"].replace("Z", "+00:00"))
    # 03:00 the next night: outside the office's hours
    night = (last + timedelta(days=1)).replace(hour=3, minute=0)
    changed = _changed_behaviour("WS-HR-02", night, 200, seed=9)
    results = _run(scorer, changed)
    host_scores = [s.score for r in results for s in r.entities if s.entity == "host:ws-hr-02"]
    p99 = float(np.quantile(baseline, 0.99))
    assert p99 < 1.0
    assert float(np.median(host_scores)) > p99, (np.median(host_scores), p99)
    alerts = [s for r in results for s in r.entities if s.alert and s.entity == "host:ws-hr-02"]
    assert alerts and alerts[0].reasons  # explained: which features were unusual
    assert len(alerts) <= 2  # the cooldown: one detection per burst, not one per event


def test_scores_do_not_depend_on_batching_and_a_restored_checkpoint_continues_identically() -> None:
    events = list(generate(12_000, seed=6, attack_share=0.02))
    whole = _scores(_run(EntityScorer(ScorerConfig(seed=3, calibration_window=500)), events, batch=500))
    assert whole == _scores(_run(EntityScorer(ScorerConfig(seed=3, calibration_window=500)), events, batch=37))
    first = EntityScorer(ScorerConfig(seed=3, calibration_window=500))
    head = _scores(_run(first, events[:7_001], batch=211))
    restored = _checkpointed(first)
    tail = _scores(_run(restored, events[7_001:], batch=499))
    assert head + tail == whole
    assert max(s for _, s in whole) > 0.9  # not a vacuous equality of zeros


def test_events_that_matched_a_sigma_rule_are_not_learned() -> None:
    events = list(generate(3_000, seed=2, attack_share=0.0))
    learning = EntityScorer(ScorerConfig(seed=0, calibration_window=200))
    alerted = EntityScorer(ScorerConfig(seed=0, calibration_window=200))
    _run(learning, events)
    _run(alerted, events, matched=[True] * len(events))
    def state(estimator: Any) -> bytes:
        return serialization.dumps(estimator.state_dict())

    for kind, model in alerted.active.types.items():  # the models learned nothing: still as built
        assert state(model.estimator) == state(model.estimator.clone()), kind
    assert any(state(m.estimator) != state(m.estimator.clone()) for m in learning.active.types.values())


def test_eviction_keeps_the_table_under_its_cap_and_forgets_idle_entities_by_event_time() -> None:
    table = EntityTable(max_entities=1_000, ttl_ms=3_600_000)
    for number in range(50_000):
        table.touch(f"user:u{number}", 1_000 * number)
        assert len(table) <= 1_000
    assert table.stats.capped + table.stats.expired == 49_000
    assert "user:u49999" in table and "user:u0" not in table
    quiet = EntityTable(max_entities=1_000, ttl_ms=60_000)
    for number in range(10):
        quiet.touch(f"host:h{number}", 0)
    quiet.touch("host:late", 120_000)  # two minutes later in event time: the others expire
    assert len(quiet) == 1 and quiet.stats.expired == 10


def test_scorer_memory_stays_under_its_entity_cap_with_many_entities() -> None:
    scorer = EntityScorer(ScorerConfig(max_entities=5_000))
    start = 1_795_000_000_000
    events = [{"Channel": "Security", "EventID": 4624, "Computer": f"WS-{n % 20_000:05d}",
               "TargetUserName": f"user{n}", "LogonType": "3", "IpAddress": f"10.{n % 250}.{n % 7}.{n % 200}",
               "TimeCreated_SystemTime": datetime.fromtimestamp((start + n * 10) / 1000, UTC).isoformat()}
              for n in range(40_000)]
    _run(scorer, events)
    assert len(scorer.table) == 5_000
    assert scorer.table.stats.capped > 0


def test_per_entity_state_is_under_two_kibibytes() -> None:
    events = list(generate(20_000, seed=8, attack_share=0.0))

    def rehosted(prefix: str) -> list[dict[str, Any]]:
        # the generator's realistic activity spread over 2,000 hosts and 2,000 users
        rng = random.Random(1)
        return [dict(e, Computer=f"{prefix}-{rng.randrange(2_000):04d}", User=f"CORP\\{prefix}{rng.randrange(2_000)}")
                for e in events]

    first, second = rehosted("a"), rehosted("b")
    scorer = EntityScorer()
    _run(scorer, first)  # models, sketches and caches exist before measuring
    known = len(scorer.table)
    tracemalloc.start()
    for start in range(0, len(second), 500):  # the same activity by new hosts and users; results dropped
        chunk = second[start:start + 500]
        scorer.score_batch(chunk, [event_time_ms(e) for e in chunk], [False] * len(chunk))
    grown_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    new_entities = len(scorer.table) - known
    assert new_entities > 3_000
    assert grown_bytes / new_entities < 2_048, grown_bytes / new_entities


def test_entities_of_a_flattened_windows_event() -> None:
    event = next(e for e in generate(500, seed=1, attack_share=0.0) if e.get("EventID") == 1)
    kinds = {e.type for e in extract_entities(event)}
    assert {"host", "process"} <= kinds
    assert not [e for e in extract_entities({"Computer": "-", "User": "NT AUTHORITY\\SYSTEM"})]


def test_labeled_attacks_score_higher_than_background_on_average() -> None:
    items = list(generate_labeled(30_000, seed=12, attack_share=0.02))
    scorer = EntityScorer(ScorerConfig(seed=2))
    results = _run(scorer, [i.event for i in items])
    attack = [r.max_score for i, r in zip(items, results, strict=True) if i.attack][200:] or [0.0]
    benign = [r.max_score for i, r in zip(items, results, strict=True) if not i.attack][10_000:]
    assert np.mean(attack) > np.mean(benign) + 0.1, (np.mean(attack), np.mean(benign))


def test_odd_events_score_without_error_and_features_stay_in_the_unit_interval() -> None:
    scorer = EntityScorer()
    odd = [
        {"Computer": "WS-1", "Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1,
         "Image": "C:\\\\x.exe", "CommandLine": "A" * 5_000_000, "TimeCreated_SystemTime": "2026-11-28T10:00:00Z"},
        {"Computer": 42, "User": ["a", "b"], "EventID": None, "TimeCreated_SystemTime": "not a time"},
        {"Computer": "WS-1", "LogonType": {"nested": True}, "Channel": "Security", "EventID": "4624"},
        {},
    ]
    results = scorer.score_batch(odd, [event_time_ms(e) for e in odd], [False] * len(odd))
    assert [len(r.entities) for r in results] == [2, 1, 1, 0]  # host+process; host "42"; host; nobody
    for result in results:
        for scored in result.entities:
            assert all(0.0 <= v <= 1.0 for v in scored.vector), scored.features
    assert results[0].entities[0].features["cmd_length"] == 1.0
    assert scorer.skipped_no_time == 3  # counted, and status reports it as events_without_time


def test_entity_fields_per_sigma_logsource_override_the_windows_defaults() -> None:
    import pytest

    from cluster.build import scorer_config
    from cluster.config import config_from_dict
    from detectors.errors import ConfigError

    config = config_from_dict({"models": {"entities": [
        {"logsource": {"product": "windows", "service": "security"},
         "fields": {"user": ["SubjectUserName"], "src_ip": [], "target": ["TargetUserName"]}}]}})
    scorer = EntityScorer(scorer_config(config.models))
    explicit = {"Channel": "Security", "EventID": 4648, "Computer": "WS-07.corp.local", "SubjectUserName": "alice",
                "TargetUserName": "admin", "IpAddress": "10.1.2.3", "TimeCreated_SystemTime": "2026-11-28T10:00:00Z"}
    sysmon = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 3, "Computer": "WS-07",
              "User": "CORP\\bob", "SourceIp": "10.1.2.3", "Image": "C:\\Windows\\System32\\svchost.exe",
              "UtcTime": "2026-11-28 10:00:01.000"}
    results = scorer.score_batch([explicit, sysmon], [event_time_ms(explicit), event_time_ms(sysmon)], [False, False])
    assert list(results[0].as_dict()) == ["host:ws-07", "user:alice", "target:admin"]  # the rule, for Security
    assert list(results[1].as_dict()) == ["host:ws-07", "user:bob", "src_ip:10.1.2.3", "process:svchost.exe"]
    defaults = EntityScorer().score_batch([explicit], [event_time_ms(explicit)], [False])
    assert list(defaults[0].as_dict()) == ["host:ws-07", "user:admin", "src_ip:10.1.2.3"]
    restored = _checkpointed(scorer)  # the mapping is configuration: it comes back with the config
    assert list(restored.score_batch([explicit], [event_time_ms(explicit)], [False])[0].as_dict()) == \
        ["host:ws-07", "user:alice", "target:admin"]
    for bad, key in (({"entities": {"logsource": {}}}, "models.entities"),
                     ({"entities": [{"logsource": {"produkt": "x"}, "fields": {}}]}, "models.entities[0].logsource"),
                     ({"entities": [{"fields": {"user": [1]}}]}, "models.entities[0].fields.user"),
                     ({"entity_fields": {"host": "Computer", "user": {"a": 1}}}, "models.entity_fields.user")):
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            config_from_dict({"models": bad})


def test_a_model_spec_with_changed_parameters_scores_checkpoints_and_names_itself() -> None:
    import pytest

    from detectors.errors import ConfigError

    events = list(generate(3_000, seed=5, attack_share=0.0))
    scorer = EntityScorer(ScorerConfig(model="hst(n_trees=3, window_size=50)", calibration_window=200))
    assert scorer.start_shadow("sad-rate(feature=rate_10m)") == "sad-rate(feature=rate_10m)@2"
    _run(scorer, events[:2_000])
    trees = scorer.active.for_type("host").estimator
    assert (trees.n_trees, trees.height, trees.window_size) == (3, 8, 50)
    assert scorer.model_label == "hst(n_trees=3, window_size=50)@1"
    restored = _checkpointed(scorer)
    assert (restored.model_label, restored.shadow_label) == (scorer.model_label, scorer.shadow_label)
    assert _scores(_run(restored, events[2_000:])) == _scores(_run(scorer, events[2_000:]))
    assert max(s for s, in [(r.max_score,) for r in _run(scorer, events[:500])]) > 0.0  # warm and scoring
    with pytest.raises(ConfigError, match="no feature 'nope'"):
        scorer.start_shadow("sad-rate(feature=nope)")
    with pytest.raises(ConfigError, match="unknown parameter 'trees'"):
        EntityScorer(ScorerConfig(model="hst(trees=3)"))


# ---------------------------------------------------------------- checkpoints: the versioned state dict


def _registered_with_a_shadow() -> list[tuple[str, str]]:
    from models.registry import MODELS

    names = sorted(MODELS)
    return [(name, names[(i + 1) % len(names)]) for i, name in enumerate(names)]  # each model active once, shadow once


@pytest.mark.parametrize(("active", "shadow"), _registered_with_a_shadow())
def test_every_registered_model_and_its_shadow_continue_exactly_after_a_state_dict_checkpoint(active: str,
                                                                                             shadow: str) -> None:
    events = list(generate(3_000, seed=11, attack_share=0.02))
    config = ScorerConfig(model=active, seed=4, calibration_window=300)
    uninterrupted = EntityScorer(config)
    uninterrupted.start_shadow(shadow)
    _run(uninterrupted, events[:1_800], batch=250)
    restored = _checkpointed(uninterrupted)
    assert (restored.model_label, restored.shadow_label) == (f"{active}@1", f"{shadow}@2")
    # The same batches on both sides: the explanation statistics (not the scores) are sums whose
    # last bits follow the batching.
    want = _run(uninterrupted, events[1_800:], batch=333)
    got = _run(restored, events[1_800:], batch=333)
    assert _scores(got) == _scores(want)
    assert [r.shadow for r in got] == [r.shadow for r in want]
    assert max(s for _, s in _scores(want)) > 0.5 and max(v for r in want for v in r.shadow.values()) > 0.5
    # Not only the scores: all that was learned since is the same, value for value.
    assert _differences(restored.state_dict(), uninterrupted.state_dict()) == []


def test_the_state_dict_is_plain_data_and_shares_no_memory_with_the_restored_scorer() -> None:
    events = list(generate(1_500, seed=3, attack_share=0.0))
    scorer = EntityScorer(ScorerConfig(model="loda", calibration_window=200))
    scorer.start_shadow("sad-rate")
    _run(scorer, events)
    state = scorer.state_dict()

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                assert type(key) in (str, int), path
                walk(item, f"{path}.{key}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]")
        elif isinstance(value, np.ndarray):
            assert value.dtype.kind in "biuf", path
        else:
            assert type(value) in (str, int, float, bool, type(None)), (path, type(value))

    walk(state, "state")
    restored = EntityScorer.from_state_dict(scorer.config, state)
    assert restored.states[0] is not scorer.states[0] and not np.shares_memory(restored.states[0], scorer.states[0])


def test_a_state_of_an_unknown_version_is_refused_naming_both_versions() -> None:
    from models.migrations import STATE_VERSION, UnsupportedStateVersion

    scorer = EntityScorer()
    _run(scorer, list(generate(300, seed=1, attack_share=0.0)))
    for version in (STATE_VERSION + 1, 0, None, "2"):
        with pytest.raises(UnsupportedStateVersion, match=rf"version {version!r}: .* reads version {STATE_VERSION}"):
            EntityScorer.from_state_dict(None, {**scorer.state_dict(), "version": version})


def test_a_version_1_state_is_migrated_not_patched() -> None:
    """Version 1 predates the feature-error counters: the migration adds them, zero."""
    events = list(generate(600, seed=2, attack_share=0.0))
    scorer = EntityScorer(ScorerConfig(calibration_window=100))
    _run(scorer, events[:300])
    old = {key: value for key, value in scorer.state_dict().items() if key not in ("feature_errors", "last_feature_error")}
    restored = EntityScorer.from_state_dict(scorer.config, {**old, "version": 1})
    assert restored.feature_errors == {} and restored.last_feature_error == ""
    assert _scores(_run(restored, events[300:])) == _scores(_run(scorer, events[300:]))


def test_a_state_of_other_features_is_refused_and_leaves_the_scorer_as_it_was() -> None:
    from models.features import DEFAULT_FEATURES

    events = list(generate(300, seed=5, attack_share=0.0))
    scorer = EntityScorer()
    _run(scorer, events)
    fewer = EntityScorer(features=DEFAULT_FEATURES[:-1])
    before = serialization.dumps(fewer.state_dict())
    with pytest.raises(ValueError, match="only fits the features it was built with"):
        fewer.load_state_dict(scorer.state_dict())
    assert serialization.dumps(fewer.state_dict()) == before
