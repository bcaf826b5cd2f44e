"""The correlation engine's stream semantics: lateness and watermarks, chaining, aliases,
generate, bounded memory, closing conditions (lt/lte/eq/neq) and checkpoint round trips."""

from __future__ import annotations

import json
import random

import pytest

from correlator.correlations import CorrelationEngine, suppressed_rule_ids
from correlator.records import CorrelationHit, Hit
from detectors.correlation import CorrelationSpec
from detectors.loader import RuleSource, load_ruleset

S = 1000


def count_spec(op: str = "gte", count: int = 3, span_s: int = 60, cid: str = "corr", rules: tuple[str, ...] = ("r1",),
               group_by: tuple[str, ...] = ("User",), type_: str = "event_count", field: str | None = None) -> CorrelationSpec:
    return CorrelationSpec(
        id=cid, title=cid, type=type_, rules=rules, group_by=group_by, timespan_seconds=span_s,
        condition={"op": op, "count": count, "field": field}, level="high",
    )


def bob(t_ms: int, rule: str = "r1", partition: int = 0, **fields: object) -> Hit:
    return Hit(rule, t_ms, {"User": "bob", **fields}, partition=partition)


# -- late events and watermarks ----------------------------------------------------------------


def test_out_of_order_hit_within_lateness_counts() -> None:
    engine = CorrelationEngine([count_spec()], allowed_lateness_ms=60 * S)
    assert engine.process_many([bob(0), bob(30 * S)]) == []
    (fired,) = engine.process(bob(10 * S))  # 20 s late
    assert fired.value == 3 and (fired.first_event_ms, fired.last_event_ms) == (0, 30 * S)
    assert engine.stats()["too_late"] == 0


def test_too_late_hit_is_counted_and_reported_not_applied() -> None:
    engine = CorrelationEngine([count_spec(count=2, span_s=120)], allowed_lateness_ms=60 * S)
    assert engine.process(bob(200 * S)) == []
    assert engine.watermark() == 140 * S
    assert engine.process(bob(139 * S)) == []  # older than the watermark: not counted
    stats = engine.stats()
    assert stats["too_late"] == 1 and stats["too_late_by_rule"] == {"r1": 1}
    (fired,) = engine.process(bob(140 * S))  # at the watermark: still in time
    assert fired.value == 2


def test_each_partition_has_its_own_watermark_the_minimum_applies() -> None:
    engine = CorrelationEngine([count_spec(count=2)], allowed_lateness_ms=60 * S)
    engine.process(bob(200 * S, partition=0))
    engine.process(Hit("r1", 50 * S, {"User": "eve"}, partition=1))
    assert engine.watermark() == -10 * S  # min(200 s, 50 s) - 60 s
    assert engine.process(bob(100 * S, partition=0)) == []  # behind partition 0, not behind the minimum
    assert engine.stats()["too_late"] == 0
    engine.process(Hit("r1", 300 * S, {"User": "eve"}, partition=1))
    assert engine.watermark() == 140 * S  # min(200 s, 300 s) - 60 s
    engine.process(bob(100 * S, partition=1))
    assert engine.stats()["too_late"] == 1


# -- firing semantics --------------------------------------------------------------------------


def test_sliding_condition_fires_once_per_timespan_while_it_holds() -> None:
    engine = CorrelationEngine([count_spec(count=3, span_s=60)])
    fired = engine.process_many(bob(i * S) for i in range(200))  # one a second
    assert [f.last_event_ms for f in fired] == [2 * S, 62 * S, 122 * S, 182 * S]


def test_condition_false_then_true_within_the_timespan_does_not_refire() -> None:
    engine = CorrelationEngine([count_spec(count=3, span_s=60)])
    assert len(engine.process_many([bob(0), bob(1 * S), bob(2 * S)])) == 1
    # window empties, then three more hits 40 s after the first hit: still within 60 s of the fire
    assert engine.process_many([bob(40 * S), bob(41 * S), bob(42 * S)]) == []
    (again,) = engine.process(bob(62 * S))  # 60 s after the fire, 4 hits in (2 s, 62 s]
    assert again.value == 4


@pytest.mark.parametrize(
    ("op", "hits", "fires"),
    [("lt", 2, True), ("lt", 3, False), ("lte", 3, True), ("lte", 4, False), ("eq", 3, True), ("eq", 4, False),
     ("neq", 3, False), ("neq", 2, True)],
)
def test_closing_ops_decide_when_the_window_is_over(op: str, hits: int, fires: bool) -> None:
    engine = CorrelationEngine([count_spec(op=op, count=3, span_s=60)], allowed_lateness_ms=10 * S)
    assert engine.process_many(bob(i * S) for i in range(hits)) == []  # never before the window ends
    # another user moves the watermark to 60 s: bob's window [0, 60 s) is over
    out = engine.process(Hit("r1", 70 * S, {"User": "eve"}))
    assert (len(out) == 1) is fires
    if fires:
        assert out[0].value == hits and out[0].group == {"User": "bob"}
    eve = CorrelationHit("corr", "corr", "high", "event_count", None, {"User": "eve"}, 70 * S, 70 * S, 1.0, (), 1)
    assert engine.flush() == ([eve] if op in ("lt", "lte", "neq") else [])  # eve's window: 1 hit


def test_closing_window_is_tumbling_from_the_first_hit_and_flush_closes_it() -> None:
    engine = CorrelationEngine([count_spec(op="lt", count=3, span_s=60)], allowed_lateness_ms=600 * S)
    # window [0, 60 s): 2 hits; the hit at 60 s starts the next window and closes this one
    (first,) = engine.process_many([bob(0), bob(59 * S), bob(60 * S)])
    assert first.value == 2 and (first.first_event_ms, first.last_event_ms) == (0, 59 * S)
    assert engine.process_many([bob(61 * S), bob(62 * S)]) == []
    assert engine.flush() == []  # 3 hits in [60 s, 120 s): not < 3
    assert engine.stats()["groups"] == 0


def test_value_sum_lte_is_decided_at_window_end() -> None:
    spec = count_spec(op="lte", count=100, type_="value_sum", field="n")
    engine = CorrelationEngine([spec])
    assert engine.process_many([bob(0, n=40), bob(1 * S, n=60)]) == []
    (fired,) = engine.flush()
    assert fired.value == 100


def test_value_percentile_with_an_explicit_percentile_is_the_nearest_rank() -> None:
    spec = CorrelationSpec(id="p", title="p", type="value_percentile", rules=("r1",), group_by=("User",),
                           timespan_seconds=3600, condition={"op": "gt", "count": 90, "field": "ms", "percentile": 95})
    engine = CorrelationEngine([spec])
    # 20 values 1..20 -> p95 (rank 19) = 19; scaled by 5 -> 95 > 90 once the 19th value arrives
    assert engine.process_many(bob(i * S, ms=5 * (i + 1)) for i in range(18)) == []  # p95 of 5..90 = 90
    (fired,) = engine.process(bob(18 * S, ms=95))
    assert fired.value == 95


# -- chained correlations, aliases, generate -----------------------------------------------------

CHAINED = """\
title: Correlation - Multiple Failed Logins Followed by Successful Login
id: b180ead8-d58f-40b2-ae54-c8940995b9b6
correlation:
    type: temporal_ordered
    rules:
        - multiple_failed_login
        - successful_login
    group-by:
        - User
    timespan: 10m
level: high
---
title: Multiple failed logons
id: a8418a5a-5fc4-46b5-b23b-6c73beb19d41
name: multiple_failed_login
correlation:
    type: event_count
    rules:
        - failed_login
    group-by:
        - User
    timespan: 10m
    condition:
        gte: 10
---
title: Single failed login
id: 53ba33fd-3a50-4468-a5ef-c583635cfa92
name: failed_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 529
            - 4625
    condition: selection
---
title: Successful login
id: 4d0a2c83-c62c-4ed4-b475-c7e23a9269b8
name: successful_login
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID:
            - 528
            - 4624
    condition: selection
"""
OUTER, INNER = "b180ead8-d58f-40b2-ae54-c8940995b9b6", "a8418a5a-5fc4-46b5-b23b-6c73beb19d41"
FAILED, SUCCESS = "53ba33fd-3a50-4468-a5ef-c583635cfa92", "4d0a2c83-c62c-4ed4-b475-c7e23a9269b8"


def chained_specs(text: str = CHAINED) -> list[CorrelationSpec]:
    ruleset = load_ruleset([RuleSource("chained.yml", text)])
    assert ruleset.rejections == []
    return ruleset.correlations


def test_chained_correlation_many_failures_then_success_fires_both() -> None:
    specs = chained_specs()
    assert {s.id: s.rules for s in specs} == {OUTER: (INNER, SUCCESS), INNER: (FAILED,)}
    engine = CorrelationEngine(specs)
    who = {"User": "bob", "Computer": "WS1"}
    assert engine.process_many(Hit(FAILED, i * S, who, ref=("t", 0, i)) for i in range(9)) == []
    (inner,) = engine.process(Hit(FAILED, 9 * S, who, ref=("t", 0, 9)))
    assert inner.correlation_id == INNER and inner.group == {"User": "bob"} and inner.value == 10
    (outer,) = engine.process(Hit(SUCCESS, 60 * S, who, ref=("t", 0, 10)))
    assert outer.correlation_id == OUTER and outer.level == "high" and outer.group == {"User": "bob"}
    assert (outer.first_event_ms, outer.last_event_ms, outer.value) == (9 * S, 60 * S, 2)
    assert outer.refs == (("t", 0, 10),)  # the inner hit carries no ref of its own
    assert outer.ref_count == 2


def test_chained_correlation_success_before_the_failures_does_not_fire() -> None:
    engine = CorrelationEngine(chained_specs())
    who = {"User": "bob"}
    assert engine.process(Hit(SUCCESS, 0, who)) == []
    fired = engine.process_many(Hit(FAILED, (1 + i) * S, who) for i in range(10))
    assert [f.correlation_id for f in fired] == [INNER]
    assert engine.process(Hit(SUCCESS, 20 * S, {"User": "alice"})) == []  # another user


def test_generate_false_suppresses_every_referenced_rule_and_inner_correlation() -> None:
    assert suppressed_rule_ids(chained_specs()) == {INNER, FAILED, SUCCESS}
    generating = CHAINED.replace("    timespan: 10m\nlevel: high\n", "    timespan: 10m\n    generate: true\nlevel: high\n", 1)
    assert suppressed_rule_ids(chained_specs(generating)) == {FAILED}


ALIASES = """\
title: internal error
id: 11111111-1111-4111-8111-111111111111
name: internal_error
logsource:
    category: webserver
detection:
    selection:
        http.response.status_code: 500
    condition: selection
---
title: new network connection
id: 22222222-2222-4222-8222-222222222222
name: new_network_connection
logsource:
    category: network_connection
detection:
    selection:
        event.category: network
        event.type: connection
        event.outcome: success
    condition: selection
---
title: error then connection back
id: 33333333-3333-4333-8333-333333333333
correlation:
    type: temporal
    rules:
        - internal_error
        - new_network_connection
    group-by:
        - internal_ip
        - remote_ip
    timespan: 10s
    aliases:
        internal_ip:
            internal_error: destination.ip
            new_network_connection: source.ip
        remote_ip:
            internal_error: source.ip
            new_network_connection: destination.ip
"""
ERROR, CONNECTION = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


def test_aliases_map_different_fields_of_each_rule_onto_one_group() -> None:
    ruleset = load_ruleset([RuleSource("aliases.yml", ALIASES)])
    (spec,) = ruleset.correlations
    assert spec.aliases["internal_ip"] == {"internal_error": "destination.ip", "new_network_connection": "source.ip"}
    engine = CorrelationEngine.from_ruleset(ruleset)
    error = Hit(ERROR, 0, {"source.ip": "203.0.113.9", "destination.ip": "10.0.0.5"})
    assert engine.process(error) == []
    # same addresses in the same fields (not swapped): another group
    assert engine.process(Hit(CONNECTION, 1 * S, {"source.ip": "203.0.113.9", "destination.ip": "10.0.0.5"})) == []
    (fired,) = engine.process(Hit(CONNECTION, 2 * S, {"source": {"ip": "10.0.0.5"}, "destination": {"ip": "203.0.113.9"}}))
    assert fired.group == {"internal_ip": "10.0.0.5", "remote_ip": "203.0.113.9"}
    assert engine.process(Hit(CONNECTION, 20 * S, {"source.ip": "10.0.0.5", "destination.ip": "203.0.113.9"})) == []


# -- bounded memory ------------------------------------------------------------------------------


def test_least_recently_updated_group_is_evicted_at_the_cap() -> None:
    engine = CorrelationEngine([count_spec(count=3)], max_groups=2)
    engine.process_many([bob(0), bob(1 * S), Hit("r1", 2 * S, {"User": "a"})])
    engine.process(Hit("r1", 3 * S, {"User": "c"}))  # third group: bob (least recently updated) goes
    stats = engine.stats()
    assert stats["groups"] == 2 and stats["evicted"] == 1
    assert engine.process(bob(4 * S)) == []  # bob starts again from 1 (evicting a)
    assert engine.stats()["evicted"] == 2


def test_groups_expire_after_the_ttl_in_event_time() -> None:
    engine = CorrelationEngine([count_spec(count=3, span_s=60)], allowed_lateness_ms=0)  # ttl = 60 s
    engine.process_many([bob(0), Hit("r1", 30 * S, {"User": "a"})])
    engine.process(Hit("r1", 60 * S, {"User": "a"}))
    assert engine.stats()["groups"] == 1 and engine.stats()["expired"] == 1
    short = CorrelationEngine([count_spec(count=3, span_s=60)], group_ttl_ms=5 * S)
    short.process_many([bob(0), Hit("r1", 10 * S, {"User": "a"})])
    assert short.stats()["expired"] == 1


def test_group_keeps_only_entries_within_timespan_plus_lateness() -> None:
    engine = CorrelationEngine([count_spec(count=10**6, span_s=60)], allowed_lateness_ms=10 * S)
    engine.process_many(bob(i * S) for i in range(1000))
    (saved,) = engine.state_dict()["correlations"]["corr"]["groups"]
    assert len(saved[1]) == 70  # (999 s - 70 s, 999 s]


# -- checkpoints ---------------------------------------------------------------------------------


def _stream(n: int, seed: int) -> list[Hit]:
    rng = random.Random(seed)
    hits = []
    for i in range(n):
        rule = rng.choice([FAILED, FAILED, FAILED, SUCCESS])
        late = rng.randrange(0, 90 * S)  # some beyond the 60 s lateness
        hits.append(Hit(rule, i * 2 * S - late, {"User": f"u{rng.randrange(5)}"}, partition=i % 3, ref=("t", i % 3, i)))
    return hits


def test_state_dict_round_trip_gives_identical_subsequent_hits() -> None:
    specs = chained_specs() + [count_spec(op="lt", count=4, rules=(FAILED,), cid="few"),
                               count_spec(type_="value_count", field="User", rules=(SUCCESS,), group_by=(), cid="vc")]
    hits = _stream(3000, seed=7)
    engine = CorrelationEngine(specs, max_groups=4)
    first = engine.process_many(hits[:1500])
    state = json.loads(json.dumps(engine.state_dict()))
    restored = CorrelationEngine(specs, max_groups=4)
    restored.load_state_dict(state)
    assert restored.stats() == engine.stats()
    rest = engine.process_many(hits[1500:]) + engine.flush()
    assert rest and first
    assert restored.process_many(hits[1500:]) + restored.flush() == rest
    assert restored.stats() == engine.stats()
    assert engine.stats()["too_late"] > 0


def test_declared_partitions_hold_the_watermark_back_until_each_is_seen() -> None:
    engine = CorrelationEngine([count_spec()], allowed_lateness_ms=0, partitions=[0, 1])
    engine.process(bob(500 * S, partition=0))
    assert engine.watermark() is None
    engine.process(bob(10 * S, partition=0))  # partition 1 not seen yet: nothing is late
    engine.process(Hit("r1", 400 * S, {"User": "eve"}, partition=1))
    assert engine.watermark() == 400 * S and engine.stats()["too_late"] == 0


def test_hits_without_a_group_by_field_are_counted_not_grouped_under_none() -> None:
    engine = CorrelationEngine([count_spec(count=2)])
    assert engine.process_many([Hit("r1", 0, {}), Hit("r1", 1, {"Other": 1})]) == []
    assert engine.stats()["missing_field"] == 2 and engine.stats()["groups"] == 0


def test_a_closing_window_evicted_at_the_cap_is_evaluated_before_it_goes() -> None:
    engine = CorrelationEngine([count_spec(op="lt", count=3)], max_groups=1)
    assert engine.process_many([bob(0), bob(1 * S)]) == []
    (fired,) = engine.process(Hit("r1", 2 * S, {"User": "eve"}))
    assert fired.group == {"User": "bob"} and fired.value == 2
    assert engine.stats()["evicted"] == 1


def test_unsupported_specs_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="needs a condition field"):
        CorrelationEngine([count_spec(type_="value_sum")])
    with pytest.raises(ValueError, match="timespan"):
        CorrelationEngine([count_spec(span_s=0)])
    with pytest.raises(ValueError, match="unsupported type"):
        CorrelationEngine([count_spec(type_="value_median")])
