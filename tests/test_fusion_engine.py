"""The fusion correlator (correlator/): per-entity risk, deduplicated alerts, suppressions and
feedback, priorities with explanations, OCSF 1.8.0 Detection Findings, fed with real detections:
the shipped rules (and the default entity models) over the OTRF datasets."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import orjson
import pytest

from correlator.alerts import AlertConfig, alert_id
from correlator.criticality import Criticality, load_criticality
from correlator.fusion import Alert, FusionConfig, FusionEngine, event_time_ms
from correlator.priority import PriorityConfig, prioritize, priority_of
from correlator.risk import Contribution, RiskConfig, RiskTable, attack_tags, contribution_dict
from correlator.settings import PER_RULE_ALERTING, fusion_config_from_dict
from correlator.suppressions import Suppression, SuppressionError, Suppressions
from tests.conftest import OTRF, ROOT
from tests.ocsf_validation import OCSF_SCHEMA, detection_finding_validator, valid

MINUTE = 60_000
# Per-rule alerting, as before entity risk alerts (correlator/settings.py): the tests of the formula's
# terms on each rule's own alert run with it; the defaults page entity risk alerts instead.
PER_RULE = PER_RULE_ALERTING
AUDIT_CLEARED = "4321628c-82a4-484f-839a-5960f520b30c"  # Security Audit Log Cleared, high


@pytest.fixture(scope="module")
def detections() -> list[dict[str, Any]]:
    """Every detection (sigma and anomaly) of the shipped rules over all OTRF datasets."""
    from cluster.config import config_from_dict
    from cluster.sources.replay import replay_files

    files = [str(path) for path in sorted((OTRF / "jsonl").rglob("*.jsonl"))]
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]},
                               "models": {"enabled": True, "calibration_window": 200}})
    out: list[dict[str, Any]] = []

    def write(record: Any, dead: bool) -> None:
        if not dead and record.value:
            out.append(orjson.loads(record.value))

    replay_files(config, files, write, per_file=True)
    assert sum(1 for item in out if item["kind"] == "sigma") > 50
    return out


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return detection_finding_validator()


def run(engine: FusionEngine, items: Iterable[dict[str, Any]], validator: Any, close: bool = True) -> list[Alert]:
    alerts: list[Alert] = []
    for item in items:
        alerts += engine.process(item)
    if close:
        alerts += engine.close_all()
    return valid(validator, alerts)


def retimed(items: Iterable[dict[str, Any]], start_ms: int = 1_790_000_000_000, step_ms: int = MINUTE,
            offset: int = 1_000_000, **changes: Any) -> list[dict[str, Any]]:
    """Real detections, re-timed into one incident (a minute apart) and given unique offsets."""
    out = []
    for index, item in enumerate(items):
        item = copy.deepcopy(item)
        item["event_time"] = start_ms + index * step_ms
        item["source"] = {**item["source"], "offset": offset + index}
        item.update(changes)
        out.append(item)
    return out


def audit_cleared(detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = [item for item in detections if item["rule"]["id"] == AUDIT_CLEARED and item["entity"] == "workstation5"]
    assert len(found) >= 20
    return found


def last(alerts: list[Alert], activity: str | None = None) -> Alert:
    return [alert for alert in alerts if activity is None or alert.activity == activity][-1]


def test_real_stream_gives_valid_ocsf_alerts_with_lifecycle(detections, validator):
    engine = FusionEngine()
    alerts = run(engine, detections, validator)
    stats = engine.stats()
    assert stats["counts"]["processed"] + stats["skipped_total"] == len(detections)
    by_id: dict[str, list[str]] = {}
    for alert in alerts:
        by_id.setdefault(alert.alert_id, []).append(alert.activity)
    assert by_id and all(acts[0] == "Create" and acts[-1] == "Close" and acts.count("Create") == 1
                         for acts in by_id.values())
    assert stats["counts"]["alerts_create"] == stats["counts"]["alerts_close"] == len(by_id)
    assert {alert.priority for alert in alerts} <= {1, 2, 3, 4}
    # fewer alerts than detections: repeats collapse
    assert len(by_id) < stats["counts"]["processed"] / 3
    sigma = [a for a in alerts if a.ocsf["finding_info"]["types"] == ["sigma"]]
    assert any(a.ocsf["finding_info"].get("attacks") for a in sigma)


def test_repeats_become_one_alert_with_counts_and_duplicates_are_idempotent(detections, validator):
    hits = retimed(audit_cleared(detections))
    engine = FusionEngine()
    alerts = run(engine, hits + copy.deepcopy(hits), validator)  # every upstream record delivered twice
    assert len({alert.alert_id for alert in alerts}) == 1
    closed = last(alerts, "Close")
    assert closed.count == len(hits)
    assert engine.stats()["counts"]["duplicates"] == len(hits)
    finding = closed.ocsf
    assert finding["count"] == len(hits) and finding["activity_id"] == 3 and finding["status_id"] == 5
    assert finding["start_time"] == hits[0]["event_time"] and finding["end_time"] == hits[-1]["event_time"]
    assert finding["finding_info"]["first_seen_time"] == hits[0]["event_time"]
    rules = closed.explanation["rules"]
    assert [(r["id"], r["title"], r["count"]) for r in rules] == [(AUDIT_CLEARED, "Security Audit Log Cleared", len(hits))]
    # Create first, a few Updates (priority changes, counts 2, 4, 8, 16), not one per hit
    activities = Counter(alert.activity for alert in alerts)
    assert activities["Create"] == 1 and activities["Close"] == 1 and activities["Update"] < len(hits) // 2
    # the id is the documented hash, the same on a replay
    bucket = hits[0]["event_time"] - hits[0]["event_time"] % AlertConfig().inactivity_ms
    assert closed.alert_id == alert_id([AUDIT_CLEARED], "workstation5", bucket)
    assert {a.alert_id for a in run(FusionEngine(), hits, validator)} == {closed.alert_id}


def test_inactivity_closes_and_a_new_incident_gets_a_new_id(detections, validator):
    hits = retimed(audit_cleared(detections)[:4])
    later = retimed(audit_cleared(detections)[4:6], start_ms=hits[-1]["event_time"] + 2 * AlertConfig().inactivity_ms,
                    offset=2_000_000)
    engine = FusionEngine()
    alerts = run(engine, hits + later, validator)
    activities = [a.activity for a in alerts]
    assert activities[0] == "Create" and activities.count("Create") == 2 and activities.count("Close") == 2
    ids = list(dict.fromkeys(a.alert_id for a in alerts))
    assert len(ids) == 2
    first_close = next(a for a in alerts if a.activity == "Close")
    assert first_close.alert_id == ids[0] and first_close.count == 4
    assert alerts[-1].count == 2


def per_rule(**priority: Any) -> FusionConfig:
    return fusion_config_from_dict({**PER_RULE, "priority": {**PER_RULE["priority"], **priority}})


def test_criticality_entry_raises_priority(detections, validator):
    hits = retimed(audit_cleared(detections)[:2])
    plain = run(FusionEngine(per_rule()), hits, validator)
    table, errors = Criticality.from_text("type,name,criticality,role,owner\nhost,WORKSTATION5.corp.local,critical,"
                                          "domain admin workstation,alice\n")
    assert errors == [] and len(table) == 1
    critical = run(FusionEngine(per_rule(), criticality=table), hits, validator)
    assert last(critical).priority < last(plain).priority
    assert last(critical).priority == 1
    explanation = last(critical, "Update").explanation
    assert explanation["criticality"]["host"] == {"type": "host", "name": "workstation5", "criticality": "critical",
                                                  "role": "domain admin workstation", "owner": "alice"}
    assert "high rule on critical asset" in explanation["priority"]["p1_gates"]
    assert explanation["last_contribution"][0]["criticality_factor"] == 2.0
    resource = last(critical).ocsf["resources"][0]
    assert resource["criticality"] == "critical" and resource["owner"] == {"name": "alice"}


def test_criticality_reload_and_bad_lines_are_reported():
    text = ("type,name,criticality,role,owner\n"
            "host,dc01,critical,domain controller,it\n"
            "printer,p1,low,,\n"
            "host,,high,,\n"
            "user,alice,extreme,,\n"
            "user,CORP\\Bob,high,admin,sec,extra\n"
            "user,carol@corp.local,medium,,\n")
    table, errors = Criticality.from_text(text)
    assert len(table) == 2 and table.get("user", "Carol").criticality == "medium"  # type: ignore[union-attr]
    assert [error.split(":")[0] for error in errors] == ["line 3", "line 4", "line 5", "line 6"]
    assert "type must be" in errors[0] and "empty name" in errors[1] and "criticality must be" in errors[2]
    yaml_table, yaml_errors = Criticality.from_text("- {type: host, name: WS-01, criticality: high}\n- nope\n", "yaml")
    assert len(yaml_table) == 1 and yaml_errors == ["entry 2: not a mapping"]
    assert Criticality.from_text("a: [", "yaml")[1][0].startswith("yaml:")
    assert Criticality.from_text("name,criticality\n")[1] == ["line 1: header lacks type"]
    missing, missing_errors = load_criticality("/nonexistent/criticality.csv")
    assert len(missing) == 0 and missing_errors
    engine = FusionEngine()
    engine.set_criticality(table)
    assert engine.criticality.get("host", "DC01.corp") is not None


def test_false_positive_verdict_suppresses_and_lowers_weight(detections, validator):
    hits = retimed(audit_cleared(detections)[:6], step_ms=10 * MINUTE)
    baseline = run(FusionEngine(), hits, validator)
    engine = FusionEngine()
    first = run(engine, hits[:2], validator, close=False)
    suppression = engine.false_positive(AUDIT_CLEARED, "WORKSTATION5")
    assert suppression.entity == "workstation5" and suppression.expires_ms == hits[1]["event_time"] + 7 * 86_400_000
    assert engine.suppressions.weight(AUDIT_CLEARED, "workstation5") == 0.5
    during = run(engine, hits[2:4], validator, close=False)
    assert during == [] and engine.stats()["counts"]["suppressed"] == 2
    # after the suppression expires (event time), the rule counts again, at half weight, visibly
    after = retimed(hits[4:], start_ms=hits[1]["event_time"] + 8 * 86_400_000, step_ms=10 * MINUTE, offset=3_000_000)
    alerts = first + run(engine, after, validator)
    update = next(a for a in alerts if a.activity == "Create" and a.alert_id != first[0].alert_id)
    contribution = update.explanation["last_contribution"][0]
    assert contribution["weight"] == 0.5
    assert update.explanation["rules"][0]["weight"] == 0.5
    base_points = next(a for a in baseline if a.activity == "Create").explanation["last_contribution"][0]["points"]
    assert contribution["points"] < base_points
    # scoped: another host is not suppressed
    other = retimed(hits[:1], start_ms=after[-1]["event_time"] + MINUTE, offset=2_000_000, entity="workstation6")
    assert [a.activity for a in run(engine, other, validator, close=False)] == ["Create"]


def test_false_positive_with_conditions_and_lower_priority(detections, validator):
    hits = retimed(audit_cleared(detections)[:8], step_ms=5 * MINUTE)
    for index, item in enumerate(hits):
        item["event"] = {**item["event"], "SubjectUserName": "backup-svc" if index % 2 else "wardog"}
    baseline = run(FusionEngine(), hits, validator)
    engine = FusionEngine()
    run(engine, hits[:2], validator, close=False)
    engine.suppressions.false_positive(AUDIT_CLEARED, "workstation5", engine.watermark, "backup job",
                                       conditions={"SubjectUserName|startswith": "backup"})
    alerts = run(engine, hits[2:], validator)
    assert engine.stats()["counts"]["suppressed"] == 3
    assert last(alerts).explanation["rules"][0]["weight"] == 0.5
    assert last(alerts).explanation["risk"]["used"] < last(baseline).explanation["risk"]["used"]
    assert last(alerts).priority > last(baseline).priority or \
        last(alerts).ocsf["risk_score"] < last(baseline).ocsf["risk_score"]


def test_noisy_rule_on_a_normal_entity_is_demoted(detections, validator):
    hits = retimed(audit_cleared(detections)[:6])
    config = per_rule(noisy_hits=4)
    normal = run(FusionEngine(config), retimed(hits, scores={"host:workstation5": 0.1}), validator)
    unusual = run(FusionEngine(config), retimed(hits, scores={"host:workstation5": 0.9}), validator)
    demoted = last(normal, "Update").explanation["priority"]
    assert demoted["demoted"] is True and demoted["priority"] != demoted["base_priority"]
    assert any("demoted one step" in reason for reason in demoted["reasons"])
    assert last(unusual, "Update").explanation["priority"]["demoted"] is False
    assert last(normal).priority > last(unusual).priority
    assert last(normal, "Update").explanation["anomaly"]["host:workstation5"]["score"] == 0.1


def test_explanation_lists_every_term(detections, validator):
    sigma = [item for item in detections if item["kind"] == "sigma" and item["entity"] == "workstation5"]
    anomalies = [item for item in detections if item["kind"] == "anomaly" and item["entity"] == "workstation5"
                 and item["anomaly"]["entity_type"] == "host"][:3]
    config = per_rule()
    config.alerts.max_refs = 5
    engine = FusionEngine(config)
    alerts = run(engine, retimed(anomalies + sigma), validator, close=False)
    snapshot = valid(validator, engine.open_alerts())
    busiest = max(snapshot, key=lambda a: a.count)
    explanation = busiest.explanation
    assert explanation["evidence"]["total"] == busiest.count > 5 and len(explanation["evidence"]["refs"]) == 5
    assert all(len(ref) == 3 for ref in explanation["evidence"]["refs"])
    assert {"rules", "tactics", "techniques", "anomaly", "criticality", "risk", "formula", "priority",
            "contributions", "last_contribution"} <= set(explanation)
    terms = explanation["last_contribution"][0]
    assert {"level_points", "repeat_factor", "new_tactics", "tactic_points", "new_techniques", "technique_points",
            "weight", "anomaly", "anomaly_multiplier", "criticality_factor", "points", "risk_before",
            "risk_after"} <= set(terms)
    anomaly_alert = next(a for a in alerts if a.ocsf["finding_info"]["types"] == ["anomaly"])
    assert anomaly_alert.explanation["anomaly"]["host:workstation5"]["reasons"]
    with_attacks = [a for a in snapshot if a.explanation["tactics"]]
    assert with_attacks and all(a.ocsf["finding_info"]["attacks"] for a in with_attacks)
    spread = max(snapshot, key=lambda a: a.explanation["distinct_tactics_in_window"])
    assert spread.explanation["distinct_tactics_in_window"] >= 3


def test_malformed_records_and_unknown_versions_are_counted_skips(detections):
    good = retimed(detections[:1])[0]
    bad: list[Any] = [None, "text", [], {**good, "schema_version": 2}, {**good, "kind": "weird"}, {**good, "rule": None},
           {**good, "rule": {"id": 7}}, {**good, "entity": None}, {**good, "entity": "  "},
           {**good, "event_time": "yesterday", "source": {"topic": "t", "partition": 0, "offset": 1}},
           {**good, "scores": "broken", "event": "broken", "rule": {**good["rule"], "tags": "x"}}]
    engine = FusionEngine()
    for item in bad:
        assert isinstance(engine.process(item), list)
    skipped = engine.stats()["skipped"]
    assert skipped == {"not a mapping": 3, "unknown schema_version": 1, "unknown kind": 1, "bad rule": 2,
                       "no entity": 2, "no event time": 1}
    assert engine.stats()["counts"]["processed"] == 1  # the last one is usable, its broken parts ignored
    assert engine.process_correlation(SimpleNamespace(id=None)) == []
    assert engine.stats()["skipped"]["correlation without id"] == 1


def test_correlation_hit_makes_the_entity_p1_eligible(detections, validator):
    hits = retimed(audit_cleared(detections)[:3])
    engine = FusionEngine(per_rule())
    run(engine, hits[:1], validator, close=False)
    hit = SimpleNamespace(id="corr-1", title="Log cleared after credential dumping", level="critical",
                          group_key={"host": "WorkStation5"}, first_time=hits[0]["event_time"],
                          last_time=hits[1]["event_time"], refs=[{"topic": "t", "partition": 0, "offset": 5}, ("t", 0, 6)],
                          tags=["attack.credential-access", "attack.t1003.001"])
    made = valid(validator, engine.process_correlation(hit))
    assert made[0].activity == "Create" and made[0].rule_ids == ("correlation:corr-1",)
    assert made[0].ocsf["finding_info"]["types"] == ["correlation"] and made[0].explanation["evidence"]["total"] == 2
    assert "correlation hit" in made[0].explanation["priority"]["p1_gates"]
    alerts = run(engine, hits[2:], validator)
    update = [a for a in alerts if a.rule_ids == (AUDIT_CLEARED,) and a.activity != "Close"]
    assert update and "correlation hit" in update[-1].explanation["priority"]["p1_gates"]


def test_state_dict_round_trip_resumes_exactly(detections, validator):
    items = retimed(detections[:400], step_ms=20_000)
    whole = run(FusionEngine(), items, validator)
    first = FusionEngine()
    alerts = run(first, items[:200], validator, close=False)
    state = json.loads(json.dumps(first.state_dict()))
    second = FusionEngine()
    second.load_state_dict(state)
    alerts += run(second, items[200:], validator)
    key = [(a.alert_id, a.activity, a.count, a.priority) for a in whole]
    assert [(a.alert_id, a.activity, a.count, a.priority) for a in alerts] == key
    assert second.process(items[10]) == [] and second.stats()["counts"]["duplicates"] == 1


def test_risk_formula_spread_and_bounds():
    assert attack_tags(["attack.execution", "attack.t1059.001", "attack.g0016", "attack.T1059.001", "cve.2021"]) == \
        (("execution",), ("T1059.001",))
    config = RiskConfig()
    table = RiskTable("host", config)
    c = table.add("ws", 0, "high", "r1", ("execution", "persistence"), ("T1059",), 0.5, "high")
    assert c.points == pytest.approx((35 + 2 * 10 + 3) * 1.5 * 1.5)
    repeat = table.add("ws", 0, "high", "r1", ("execution", "persistence"), ("T1059",), 0.5, "high")
    assert repeat.points == pytest.approx(35 * 0.5 * 1.5 * 1.5) and repeat.new_tactics == ()
    # decay: one half-life later, half the risk
    assert table.risk("ws", config.half_life_ms) == pytest.approx((c.points + repeat.points) / 2)
    # spread beats repetition
    spread, same = RiskTable("host", config), RiskTable("host", config)
    for index, tactic in enumerate(("execution", "persistence", "discovery")):
        spread.add("a", index, "medium", f"r{index}", (tactic,), (), 0.0, None)
        same.add("a", index, "medium", "r0", ("execution",), (), 0.0, None)
    assert spread.risk("a", 3) > same.risk("a", 3) * 1.5
    # bounded: cap and event-time TTL
    small = RiskTable("host", RiskConfig(max_entities=10, ttl_ms=1000))
    for index in range(100):
        small.add(f"h{index}", index, "low", "r", (), (), 0.0, None)
    assert len(small) == 10 and small.evicted == 90
    small.add("late", 5000, "low", "r", (), (), 0.0, None)
    assert len(small) == 1 and small.expired == 10


def test_suppression_filter_syntax_and_expiry():
    rule = Suppression("r", {"Image|endswith": ["\\backup.exe", "\\robocopy.exe"], "CommandLine|contains": "/mir",
                             "User": "CORP\\svc"}, expires_ms=1000, reason="backup")
    event = {"Image": "C:\\Tools\\Robocopy.exe", "CommandLine": "robocopy a b /MIR", "User": "corp\\SVC"}
    assert rule.matches("r", "ws", event, 0)
    assert not rule.matches("r", "ws", event, 1000)  # expired
    assert not rule.matches("other", "ws", event, 0)
    assert not rule.matches("r", "ws", {**event, "CommandLine": "copy"}, 0)
    assert not rule.matches("r", "ws", {"Image": "x\\backup.exe"}, 0)  # a missing field fails its key
    assert Suppression("r", {"ProcessId": 42}).matches("r", None, {"ProcessId": "42"}, 0)
    assert Suppression("r", {"Data|startswith": "abc"}).matches("r", None, {"Data": ["x", "ABCD"]}, 0)
    with pytest.raises(SuppressionError):
        Suppression("r", {"Image|re": ".*"})
    store = Suppressions()
    store.add(rule)
    assert store.match("r", "ws", event, 0) is rule and store.expire(2000) == 1 and len(store) == 0
    restored = Suppressions()
    store.false_positive("r", "ws", 0)
    restored.load_state_dict(json.loads(json.dumps(store.state_dict())))
    assert restored.weight("r", "ws") == 0.5 and len(restored) == 1


def test_event_time_parsing():
    assert event_time_ms("2026-11-30T10:00:00Z") == 1796032800000
    assert event_time_ms("2026-11-30T10:00:00.123Z") == 1796032800123
    assert event_time_ms("2026-11-30 10:00:00.1234567") == 1796032800123
    assert event_time_ms("2026-11-30T11:00:00+01:00") == 1796032800000
    assert event_time_ms(1796032800000) == 1796032800000
    assert event_time_ms("nope") is None and event_time_ms(None) is None and event_time_ms(True) is None


def test_sample_paths_exist():
    assert Path(OCSF_SCHEMA, "events", "findings", "detection_finding.json").is_file()


def test_correlation_engine_hits_are_accepted(detections, validator):
    from correlator.records import CorrelationHit

    hits = retimed(audit_cleared(detections)[:1])
    engine = FusionEngine()
    run(engine, hits, validator, close=False)
    hit = CorrelationHit("c-9", "Many log clears", "high", "event_count", None, {"Computer": "WORKSTATION5.lab"},
                         hits[0]["event_time"], hits[0]["event_time"] + MINUTE, 12.0, (("events", 0, 1), ("events", 0, 2)),
                         12)
    made = valid(validator, engine.process_correlation(hit))
    assert made[0].entity == "workstation5" and made[0].rule_ids == ("correlation:c-9",)
    assert made[0].ocsf["time"] == hits[0]["event_time"] + MINUTE
    closed = run(engine, [], validator)
    corr = next(a for a in closed if a.rule_ids == ("correlation:c-9",))
    assert corr.explanation["evidence"]["total"] == 12 and len(corr.explanation["evidence"]["refs"]) == 2


# -- the hot path's shortcuts give what the plain computations give ----------------------------------


def test_priority_of_decides_as_prioritize():
    configs = [PriorityConfig(), PriorityConfig(noisy_hits=2, p1_min_tactics=1, demote_below=0.9),
               PriorityConfig(p1_criticality_tactics=0)]
    for config in configs:
        for risk in (0.0, 24.9, 25.0, 59.0, 60.0, 99.9, 100.0, 500.0):
            for tactics in (0, 1, 2, 3):
                for level in ("low", "high", None):
                    for criticality in (None, "medium", "critical"):
                        for correlation in (False, True):
                            for anomaly in (None, 0.1, 0.95):
                                for noisy in (False, True):
                                    for novelty in (1.0, 0.25):
                                        args = (config, risk, tactics, level, criticality, correlation, anomaly,
                                                noisy, novelty)
                                        result = prioritize(*args)
                                        assert priority_of(*args) == (result.priority, result.demoted), args


def test_contribute_is_add_and_tactic_count_is_a_scan():
    """`RiskTable.contribute` (the engine's) and `add` agree, late and out-of-window hits included,
    and the counted tactics (a lower bound shortcut) match a scan of the entity's tactics."""
    config = RiskConfig(window_ms=10_000, half_life_ms=5_000)
    fast, plain = RiskTable("host", config), RiskTable("host", config)
    tactic_names = ["execution", "persistence", "discovery", "collection", "impact"]
    clock = 0
    for step in range(400):
        clock += (step * 7919) % 3_000
        now = clock - ((step * 104_729) % 8_000 if step % 5 == 0 else 0)  # some late
        tactics = tuple(tactic_names[(step + k) % 5] for k in range(step % 3))
        args = ("ws", now, ("low", "high")[step % 2], f"r{step % 4}", tactics, ("T1059",) if step % 3 else (), 0.3,
                "high", 1.0, None)
        state, values = fast.contribute(*args)
        assert Contribution(*values) == plain.add(*args)
        assert contribution_dict(values) == Contribution(*values).to_dict()
        for probe in (now, clock, clock + 6_000, clock + 20_000):
            scan = sum(1 for seen in state.tactics.values() if seen >= probe - config.window_ms)
            assert state.tactic_count(probe, config.window_ms) == scan
    assert fast.state_dict() == plain.state_dict() == json.loads(json.dumps(fast.state_dict()))


def test_emitted_alerts_do_not_change_afterwards(detections, validator):
    """Later hits update an alert's state in place (a host's anomaly score, its kept contributions):
    what was emitted before stays as it was emitted, and the checkpoint is plain JSON data."""
    items = retimed(detections[:300], step_ms=30_000)
    engine = FusionEngine(FusionConfig(alerts=AlertConfig(max_contributions=3)))
    emitted: list[tuple[Alert, bytes]] = []
    for index, item in enumerate(items):
        item["scores"] = {f"host:{normalize_host(item['entity'])}": (index % 10) / 10}
        emitted += [(alert, orjson.dumps(alert.ocsf)) for alert in engine.process(item)]
        if index == 150:
            state = engine.state_dict()
            assert state == json.loads(json.dumps(state))  # no tuples or objects left in it
    emitted += [(alert, orjson.dumps(alert.ocsf)) for alert in engine.close_all()]
    assert len(emitted) > 20
    valid(validator, [alert for alert, _ in emitted])
    assert all(orjson.dumps(alert.ocsf) == text for alert, text in emitted)
    updates = [alert for alert, _ in emitted if alert.activity == "Update"]
    assert len({json.dumps(a.explanation["anomaly"], sort_keys=True) for a in updates}) > 1


def normalize_host(name: str) -> str:
    return name.strip().lower().split(".", 1)[0]


def test_a_reloaded_criticality_applies_to_the_next_hit(detections, validator):
    hits = retimed(audit_cleared(detections)[:4], step_ms=5 * MINUTE)
    engine = FusionEngine()
    run(engine, hits[:1], validator, close=False)
    table, _ = Criticality.from_text("type,name,criticality\nhost,workstation5,critical\n")
    engine.set_criticality(table)
    update = run(engine, hits[1:2], validator, close=False)[-1]
    assert update.explanation["criticality"]["host"]["criticality"] == "critical"
    assert update.explanation["last_contribution"][0]["criticality_factor"] == 2.0
    assert update.ocsf["resources"][0]["criticality"] == "critical"
    engine.criticality = Criticality()  # assigned directly, not through set_criticality: applies too
    update = last(run(engine, hits[2:], validator, close=False), "Update")
    assert update.count == 4 and update.explanation["criticality"]["host"] is None
    assert update.explanation["last_contribution"][0]["criticality_factor"] == 1.0
    assert "criticality" not in update.ocsf["resources"][0]


# --- risk-based alerting: entity risk alerts page, per-rule and anomaly detections contribute ---------

START = 1_790_000_000_000


def detection(rule_id: str, level: str, tags: list[str], offset: int, minutes: float = 0, entity: str = "ws-01",
              scores: dict[str, float] | None = None, kind: str = "sigma",
              anomaly: dict[str, Any] | None = None) -> dict[str, Any]:
    item = {"schema_version": 1, "kind": kind, "rule": {"id": rule_id, "title": rule_id, "level": level, "tags": tags},
            "ruleset_version": "v", "entity": entity, "event_time": START + int(minutes * MINUTE),
            "scores": scores or {}, "model_version": None, "source": {"topic": "t", "partition": 0, "offset": offset},
            "event": {}}
    if anomaly is not None:
        item["anomaly"] = anomaly
    return item


STEPS = [("dump", "high", ["attack.credential-access", "attack.t1003.001"]),
         ("persist", "high", ["attack.persistence", "attack.t1547.001"]),
         ("discover", "medium", ["attack.discovery", "attack.t1087.001"])]
ANOMALOUS = {"host:ws-01": 1.0, "user:mallory": 0.999, "process:evil.exe": 1.0, "dst_ip:203.0.113.9": 0.998}
DAY = 24 * 60  # minutes


def learned() -> FusionEngine:
    """An engine past its learning period (PriorityConfig.learning_ms, a day of event time): it saw
    a routine hit on another host a day before START."""
    engine = FusionEngine()
    engine.process(detection("routine", "low", [], 999_999, minutes=-DAY - 1, entity="srv-00"))
    return engine


def test_an_entity_risk_alert_pages_the_case_and_rule_alerts_are_recorded(validator):
    hits = [detection(rule, level, tags, offset, minutes=10 * offset, scores=ANOMALOUS)
            for offset, (rule, level, tags) in enumerate(STEPS, 1)]
    alerts = run(learned(), hits, validator)
    entity = [a for a in alerts if a.rule_ids == ("risk:entity",)]
    rules = [a for a in alerts if a.rule_ids != ("risk:entity",)]
    assert {a.priority for a in rules} == {4}  # recorded risk contributions, not paged
    assert any(a.explanation["priority"].get("recorded") for a in rules)  # their own formula said more
    assert entity and min(a.priority for a in entity) == 1
    case = entity[-1]
    assert case.ocsf["finding_info"]["types"] == ["risk"]
    # the case starts with the contributions that built the risk: every step is its evidence
    assert case.explanation["evidence"]["total"] == 3 and {r["id"] for r in case.explanation["rules"]} == \
        {"dump", "persist", "discover"}
    assert case.explanation["priority"]["entity_alert"] is True
    assert case.explanation["priority"]["corroborated_tactics"] == 3
    assert case.explanation["priority"]["corroborated_steps"] == {"credential-access": "T1003", "persistence": "T1547",
                                                                  "discovery": "T1087"}
    # the same case in the engine's first day of event time: its baselines have not seen a day yet
    first_day = [a for a in run(FusionEngine(), hits, validator) if a.rule_ids == ("risk:entity",)]
    assert min(a.priority for a in first_day) == 2
    assert any("learning period" in reason for reason in first_day[-1].explanation["priority"]["reasons"])


def test_without_the_models_corroboration_a_case_is_p2(validator):
    quiet = {"host:ws-01": 0.4, "process:evil.exe": 0.2}  # scores known, nothing anomalous
    steps = [*STEPS, ("exfil", "medium", ["attack.exfiltration", "attack.t1041"])]  # 4 hits: an emitted update
    hits = [detection(rule, level, tags, offset, minutes=10 * offset, scores=quiet)
            for offset, (rule, level, tags) in enumerate(steps, 1)]
    entity = [a for a in run(learned(), hits, validator) if a.rule_ids == ("risk:entity",)]
    assert entity and min(a.priority for a in entity) == 2
    assert any("do not corroborate" in reason for reason in entity[-1].explanation["priority"]["reasons"])
    # no scores at all (models off): the tactic gate alone decides, as before
    bare = [detection(rule, level, tags, offset, minutes=10 * offset) for offset, (rule, level, tags) in
            enumerate(STEPS, 1)]
    assert min(a.priority for a in run(learned(), bare, validator) if a.rule_ids == ("risk:entity",)) == 1


def test_one_technique_is_one_step_whatever_its_tactics(validator):
    """A scheduled task (T1053.005) is tagged execution, persistence and privilege escalation: two
    rules of it are one step of an intrusion, not three tactics, and make no P1."""
    tags = ["attack.execution", "attack.persistence", "attack.privilege-escalation", "attack.t1053.005"]
    hits = [detection(rule, "high", tags, offset, minutes=10 * offset, scores=ANOMALOUS)
            for offset, rule in enumerate(("schtasks", "schtasks-env"), 1)]
    entity = [a for a in run(learned(), hits, validator) if a.rule_ids == ("risk:entity",)]
    assert entity and min(a.priority for a in entity) == 2
    assert entity[-1].explanation["priority"]["corroborated_tactics"] == 1
    # counted per tactic instead (p1_distinct_techniques off), the same hits are three tactics: P1
    engine = FusionEngine(FusionConfig(priority=PriorityConfig(p1_distinct_techniques=False)))
    engine.process(detection("routine", "low", [], 999_999, minutes=-DAY - 1, entity="srv-00"))
    assert min(a.priority for a in run(engine, hits, validator) if a.rule_ids == ("risk:entity",)) == 1


def test_routine_detections_make_no_p1(validator):
    """Rules that fired on the host before (twice: repeat factor 0.25 < p1_novelty 0.5), or across
    the fleet, are routine there: their tactics do not count toward P1 (their risk still counts)."""
    def case(config: PriorityConfig) -> list[Alert]:
        engine = FusionEngine(FusionConfig(priority=config))
        engine.process(detection("routine", "low", [], 999_999, minutes=-3 * DAY, entity="srv-00"))
        days_before = [detection(rule, level, tags, 100 + offset, minutes=10 * offset - 2 * DAY,
                                 scores={"host:ws-01": 0.4})  # the models know it
                       for offset, (rule, level, tags) in enumerate(STEPS + STEPS, 1)]
        today = [detection(rule, level, tags, offset, minutes=10 * offset, scores=ANOMALOUS)
                 for offset, (rule, level, tags) in enumerate([*STEPS, ("payload", "critical", [])], 1)]
        return [a for a in run(engine, [*days_before, *today], validator) if a.rule_ids == ("risk:entity",)]

    routine = case(PriorityConfig())
    assert routine and min(a.priority for a in routine) == 2
    assert routine[-1].explanation["priority"]["corroborated_tactics"] == 0
    assert min(a.priority for a in case(PriorityConfig(p1_novelty=0))) == 1  # every repeat counted: P1


def test_criticality_backs_tactics_but_makes_no_p1_alone(validator):
    """A new high rule on a critical host is P1 with a second corroborated tactic, P2 without."""
    table = Criticality.from_text("type,name,criticality\nhost,dc-01,critical\n")[0]
    anomalous = {"host:dc-01": 1.0, "user:mallory": 0.999, "process:evil.exe": 1.0, "dst_ip:203.0.113.9": 1.0}

    def case(recon_scores: dict[str, float]) -> list[Alert]:
        engine = FusionEngine(criticality=table)
        engine.process(detection("routine", "low", [], 999_999, minutes=-DAY - 1, entity="srv-00"))
        hits = [detection("recon", "medium", ["attack.discovery", "attack.t1087.002"], 1, entity="dc-01",
                          scores=recon_scores),
                detection("dcsync", "high", ["attack.credential-access", "attack.t1003.006"], 2, entity="dc-01",
                          minutes=5, scores=anomalous)]
        return [a for a in run(engine, hits, validator) if a.rule_ids == ("risk:entity",)]

    alone = case({"host:dc-01": 0.4})  # the recon is routine to the models: one corroborated tactic
    assert alone and min(a.priority for a in alone) == 2
    assert any("criticality alone makes no P1" in reason for reason in alone[-1].explanation["priority"]["reasons"])
    backed = case(anomalous)
    assert min(a.priority for a in backed) == 1
    assert "high rule on critical asset" in backed[-1].explanation["priority"]["p1_gates"]


def test_a_checkpoint_of_before_tactic_steps_loads(validator):
    """A state written before tactic_steps (tactic -> last ms per host) loads: each tactic is a step
    of its own, as it was counted then."""
    engine = learned()
    hits = [detection(rule, level, tags, offset, minutes=10 * offset, scores=ANOMALOUS)
            for offset, (rule, level, tags) in enumerate(STEPS, 1)]
    run(engine, hits, validator, close=False)
    state = json.loads(json.dumps(engine.state_dict()))
    assert state["corroborated"] == [["ws-01", {"credential-access": {"T1003": START + 10 * MINUTE},
                                                "persistence": {"T1547": START + 20 * MINUTE},
                                                "discovery": {"T1087": START + 30 * MINUTE}}]]
    state["corroborated"] = [["ws-01", {"credential-access": START, "persistence": START}]]
    restored = FusionEngine()
    restored.load_state_dict(state)
    assert restored.state_dict()["corroborated"] == [["ws-01", {"credential-access": {"tactic:credential-access": START},
                                                                "persistence": {"tactic:persistence": START}}]]
