"""The Sigma specification's correlation examples, loaded through the rule loader and fed hits
whose expected outcome is worked out by hand from each example's description.

Each example references rules by id or name that are not in the example folder; the tests add
minimal detection rules with those ids/names (`_base_rule`) so the loader resolves them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from correlator.correlations import CorrelationEngine, suppressed_rule_ids
from correlator.records import Hit
from detectors.correlation import CorrelationSpec
from detectors.loader import RuleSource, load_ruleset

EXAMPLES = Path("/work/shared/sigma/specification/examples/correlation")
S = 1000  # ms
H = 3600 * S
D = 24 * H


def _base_rule(reference: str) -> str:
    """A detection rule that a correlation can reference as `reference` (an id or a name)."""
    try:
        rule_id = str(uuid.UUID(reference))
        name = ""
    except ValueError:
        rule_id = str(uuid.uuid5(uuid.NAMESPACE_URL, reference))
        name = f"name: {reference}\n"
    return (
        f"title: base {reference}\nid: {rule_id}\n{name}"
        "logsource:\n    product: windows\ndetection:\n    sel:\n        EventID: 1\n    condition: sel\n"
    )


def load_example(filename: str) -> CorrelationSpec:
    path = EXAMPLES / filename
    text = path.read_text(encoding="utf-8")
    references = yaml.safe_load(text)["correlation"]["rules"]
    sources = [RuleSource(str(path), text)] + [RuleSource(f"base/{r}.yml", _base_rule(r)) for r in references]
    ruleset = load_ruleset(sources)
    assert ruleset.rejections == []
    assert len(ruleset.correlations) == 1
    spec = ruleset.correlations[0]
    assert len(spec.rules) == len(references)
    return spec


def test_every_example_loads_and_builds_an_engine() -> None:
    files = sorted(p.name for p in EXAMPLES.glob("*.yml"))
    assert len(files) == 8
    for name in files:
        spec = load_example(name)
        CorrelationEngine([spec])
        # generate is not set in any example: the referenced rules raise no alert of their own
        assert suppressed_rule_ids([spec]) == frozenset(spec.rules)


# -- event_count: >= 100 failed logins per ComputerName in 1h ----------------------------------


def test_event_count_fires_at_the_100th_hit_in_an_hour_not_the_99th() -> None:
    spec = load_example("event_count.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    hits = [Hit(rule, i * 30 * S, {"ComputerName": "WS1"}, ref=("in", 0, i)) for i in range(100)]
    assert engine.process_many(hits[:99]) == []
    (fired,) = engine.process(hits[99])
    assert fired.correlation_id == spec.id and fired.type == "event_count"
    assert fired.value == 100
    assert fired.group == {"ComputerName": "WS1"}
    assert (fired.first_event_ms, fired.last_event_ms) == (0, 99 * 30 * S)
    assert fired.ref_count == 100
    assert fired.refs == tuple(("in", 0, i) for i in range(20))  # capped at max_refs


def test_event_count_hits_exactly_one_hour_apart_are_not_in_one_window() -> None:
    spec = load_example("event_count.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    early = [Hit(rule, i * S, {"ComputerName": "WS1"}) for i in range(99)]  # 0 s .. 98 s
    assert engine.process_many(early) == []
    # at 3600 s the window (0 s, 3600 s] has lost the hit at 0 s: 98 + 1 = 99
    assert engine.process(Hit(rule, H, {"ComputerName": "WS1"})) == []
    # (1 ms, 3600.001 s]: the hits at 1 s .. 98 s and the two last ones = 100
    (fired,) = engine.process(Hit(rule, H + 1, {"ComputerName": "WS1"}))
    assert fired.value == 100 and fired.first_event_ms == 1 * S


def test_event_count_counts_each_computer_apart() -> None:
    spec = load_example("event_count.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    hits = [Hit(rule, i * S, {"ComputerName": f"WS{i % 2}"}) for i in range(198)]
    assert engine.process_many(hits) == []  # 99 each
    (fired,) = engine.process(Hit(rule, 198 * S, {"ComputerName": "WS0"}))
    assert fired.group == {"ComputerName": "WS0"}


def test_event_count_noisy_rule_fires_once_per_timespan_per_group() -> None:
    spec = load_example("event_count.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    # one hit a second for 2.5 hours: the condition holds from the 100th hit on
    fired = engine.process_many(Hit(rule, i * S, {"ComputerName": "WS1"}) for i in range(9000))
    assert [f.last_event_ms for f in fired] == [99 * S, 99 * S + H, 99 * S + 2 * H]


def test_event_count_ecs_groups_by_a_dotted_field_flat_or_nested() -> None:
    spec = load_example("event_count_ecs.yml")
    rule = spec.rules[0]
    assert spec.group_by == ("dns.question.name",)
    engine = CorrelationEngine([spec])
    flat = [Hit(rule, i * S, {"dns.question.name": "evil.example"}) for i in range(50)]
    nested = [Hit(rule, (50 + i) * S, {"dns": {"question": {"name": "evil.example"}}}) for i in range(49)]
    assert engine.process_many(flat + nested) == []
    (fired,) = engine.process(Hit(rule, 99 * S, {"dns": {"question": {"name": "evil.example"}}}))
    assert fired.group == {"dns.question.name": "evil.example"} and fired.value == 100


# -- value_count: >= 100 distinct User per (ComputerName, WorkstationName) in 1 day -------------


def test_value_count_fires_at_the_100th_distinct_user_repeats_do_not_count() -> None:
    spec = load_example("value_count.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    group = {"ComputerName": "DC1", "WorkstationName": "WS7"}
    hits = [Hit(rule, i * 60 * S, {**group, "User": f"user{i % 99}"}) for i in range(300)]  # 99 users, repeated
    assert engine.process_many(hits) == []
    other_station = Hit(rule, 300 * 60 * S, {"ComputerName": "DC1", "WorkstationName": "WS8", "User": "new"})
    assert engine.process(other_station) == []
    (fired,) = engine.process(Hit(rule, 301 * 60 * S, {**group, "User": "user99"}))
    assert fired.value == 100
    assert fired.group == group
    assert fired.ref_count == 301  # hits in the window, not distinct users


def test_value_count_users_a_day_apart_do_not_add_up() -> None:
    spec = load_example("value_count.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    group = {"ComputerName": "DC1", "WorkstationName": "WS7"}
    first = Hit(rule, 0, {**group, "User": "user0"})
    middle = [Hit(rule, i * S, {**group, "User": f"user{i}"}) for i in range(1, 99)]
    assert engine.process_many([first, *middle]) == []
    # exactly one day after user0: user0 has left the window -> 99 distinct
    assert engine.process(Hit(rule, D, {**group, "User": "user99"})) == []
    # a hit without the User field is not a value: counted apart, no effect
    assert engine.process(Hit(rule, D, group)) == []
    assert engine.stats()["missing_field"] == 1


# -- temporal: recon_cmd_a, _b, _c in any order within 5 min, same ComputerName and User ---------


def test_temporal_all_three_commands_in_any_order_within_5_minutes_fire() -> None:
    spec = load_example("temporal.yml")
    a, b, c = spec.rules
    engine = CorrelationEngine([spec])
    who = {"ComputerName": "WS1", "User": "bob"}
    assert engine.process(Hit(c, 0, who)) == []
    assert engine.process(Hit(a, 100 * S, who)) == []
    assert engine.process(Hit(a, 120 * S, {"ComputerName": "WS1", "User": "alice"})) == []
    (fired,) = engine.process(Hit(b, 299 * S, who))
    assert fired.value == 3 and fired.group == who
    assert (fired.first_event_ms, fired.last_event_ms) == (0, 299 * S)


def test_temporal_two_of_three_or_5_minutes_apart_do_not_fire() -> None:
    spec = load_example("temporal.yml")
    a, b, c = spec.rules
    engine = CorrelationEngine([spec])
    who = {"ComputerName": "WS1", "User": "bob"}
    assert engine.process_many([Hit(a, 0, who), Hit(b, 10 * S, who), Hit(b, 20 * S, who)]) == []
    assert engine.process(Hit(c, 300 * S, who)) == []  # a at 0 s is exactly 5 min before
    other = {"ComputerName": "WS2", "User": "bob"}
    assert engine.process_many([Hit(a, 400 * S, other), Hit(b, 401 * S, other)]) == []
    assert engine.process(Hit(c, 402 * S, {"ComputerName": "WS2", "User": "eve"})) == []


# -- temporal_ordered: the same three, in the listed order ------------------------------------


def test_temporal_ordered_fires_only_for_a_then_b_then_c() -> None:
    spec = load_example("temporal_ordered.yml")
    a, b, c = spec.rules
    engine = CorrelationEngine([spec])
    who = {"ComputerName": "WS1", "User": "bob"}
    # c, b, a: all three seen, wrong order
    assert engine.process_many([Hit(c, 0, who), Hit(b, 1 * S, who), Hit(a, 2 * S, who)]) == []
    # then c, b: a(2 s) b(4 s)... c at 3 s precedes b -> a, c, b is not yet in order
    assert engine.process_many([Hit(c, 3 * S, who), Hit(b, 4 * S, who)]) == []
    (fired,) = engine.process(Hit(c, 5 * S, who))  # a(2 s) b(4 s) c(5 s)
    assert fired.value == 3 and fired.type == "temporal_ordered"


def test_temporal_ordered_uses_event_time_not_arrival_order() -> None:
    spec = load_example("temporal_ordered.yml")
    a, b, c = spec.rules
    engine = CorrelationEngine([spec])
    who = {"ComputerName": "WS1", "User": "bob"}
    assert engine.process_many([Hit(b, 20 * S, who), Hit(c, 30 * S, who)]) == []
    (fired,) = engine.process(Hit(a, 10 * S, who))  # late by 20 s, within the 60 s lateness
    assert (fired.first_event_ms, fired.last_event_ms) == (10 * S, 30 * S)


def test_temporal_ordered_sequence_longer_than_5_minutes_does_not_fire() -> None:
    spec = load_example("temporal_ordered.yml")
    a, b, c = spec.rules
    engine = CorrelationEngine([spec])
    who = {"ComputerName": "WS1", "User": "bob"}
    assert engine.process_many([Hit(a, 0, who), Hit(b, 100 * S, who), Hit(c, 300 * S, who)]) == []


# -- value_sum: sum(bytes_sent) > 1,000,000 per (SourceIP, User) in 1h --------------------------


def test_value_sum_fires_above_one_million_bytes_not_at_it() -> None:
    spec = load_example("value_sum.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    who = {"SourceIP": "10.0.0.5", "User": "bob"}
    assert engine.process_many(Hit(rule, i * 60 * S, {**who, "bytes_sent": 100_000}) for i in range(10)) == []
    (fired,) = engine.process(Hit(rule, 10 * 60 * S, {**who, "bytes_sent": "1"}))  # numeric strings count
    assert fired.value == 1_000_001


def test_value_sum_bytes_an_hour_apart_do_not_add_up() -> None:
    spec = load_example("value_sum.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    who = {"SourceIP": "10.0.0.5", "User": "bob"}
    assert engine.process(Hit(rule, 0, {**who, "bytes_sent": 600_000})) == []
    assert engine.process(Hit(rule, H, {**who, "bytes_sent": 500_000})) == []
    assert engine.process(Hit(rule, H, {**who, "bytes_sent": "n/a"})) == []  # not a number: counted apart
    assert engine.stats()["missing_field"] == 1


# -- value_avg: avg(BytesOut) > 500 per (SourceIP, User) in 24h ---------------------------------


def test_value_avg_fires_when_the_average_exceeds_500() -> None:
    spec = load_example("value_avg.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    who = {"SourceIP": "10.0.0.5", "User": "bob"}
    assert engine.process(Hit(rule, 0, {**who, "BytesOut": 400})) == []
    assert engine.process(Hit(rule, H, {**who, "BytesOut": 600})) == []  # avg 500: not > 500
    (fired,) = engine.process(Hit(rule, 2 * H, {**who, "BytesOut": 700}))  # avg 566.67
    assert fired.value == pytest.approx(1700 / 3)


def test_value_avg_old_values_leave_the_24h_window() -> None:
    spec = load_example("value_avg.yml")
    rule = spec.rules[0]
    engine = CorrelationEngine([spec])
    who = {"SourceIP": "10.0.0.5", "User": "bob"}
    assert engine.process(Hit(rule, 0, {**who, "BytesOut": 1000})) != []  # alone: avg 1000
    # a day later the 1000 is gone: avg(100) is not > 500 (and with it, avg would be 550)
    assert engine.process(Hit(rule, D, {**who, "BytesOut": 100})) == []


# -- value_percentile: an Image in at most 1 % of a computer's processes in 24h -----------------


def test_value_percentile_rare_image_at_one_percent_fires_just_above_does_not() -> None:
    spec = load_example("value_percentile.yml")
    rule = spec.rules[0]
    assert spec.condition == {"op": "lte", "count": 1, "field": "Image"}
    common = [Hit(rule, i * S, {"ComputerName": "WS1", "Image": "svchost.exe"}) for i in range(99)]
    engine = CorrelationEngine([spec])
    assert engine.process_many(common[:98]) == []
    assert engine.process(Hit(rule, 200 * S, {"ComputerName": "WS1", "Image": "evil.exe"})) == []  # 1/99 = 1.01 %
    engine = CorrelationEngine([spec])
    assert engine.process_many(common) == []
    (fired,) = engine.process(Hit(rule, 200 * S, {"ComputerName": "WS1", "Image": "evil.exe"}))  # 1/100
    assert fired.value == 1.0 and fired.group == {"ComputerName": "WS1"}
