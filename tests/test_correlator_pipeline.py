"""`correlator.Correlator`, the one code path from detections to alerts, on real detections of
the shipped rules over OTRF datasets; and `sigmaray replay --alerts`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from cluster.config import config_from_dict
from cluster.sources.replay import replay_files
from correlator import Correlator
from correlator.fusion import Alert
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import OTRF, ROOT
from tests.ocsf_validation import detection_finding_validator, valid

AUDIT_CLEARED = "4321628c-82a4-484f-839a-5960f520b30c"  # Security Audit Log Cleared (shipped, high)
CORRELATION_ID = "0d6b7a52-2f0e-4c51-9a55-1a8f3c1e0b01"
# Six datasets of 2020-10-22 (in event-time order), each with one audit log clearing on workstation5.
INCIDENT = [OTRF / "jsonl" / "defense_evasion" / f"{name}.jsonl" for name in (
    "psh_control_panel_execution", "psh_cmstp_execution_bypassuac", "cmd_mshta_javascript_getobject_sct",
    "cmd_mshta_vbscript_execute_psh", "psh_mshta_html_application_execution", "psh_hh_local_html_payload")]
CORRELATION = f"""\
title: Audit log cleared repeatedly on one host
id: {CORRELATION_ID}
correlation:
    type: event_count
    rules:
        - {AUDIT_CLEARED}
    group-by:
        - Computer
    timespan: 1d
    condition:
        gte: 3
    generate: false
level: high
"""


def _detections(files: Sequence[Path], rule_paths: Sequence[Path] = ()) -> list[dict[str, Any]]:
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]}, "models": {"enabled": False}})
    out: list[dict[str, Any]] = []

    def write(record: Any, dead: bool) -> None:
        if not dead:
            out.append(orjson.loads(record.value))

    paths = [str(ROOT / "rules"), *map(str, rule_paths)] if rule_paths else ()
    replay_files(config, [str(path) for path in files], write, rule_paths=paths)
    return out


@pytest.fixture(scope="module")
def detections() -> list[dict[str, Any]]:
    """Every detection of the shipped rules over all OTRF datasets, in one stream."""
    return _detections(sorted((OTRF / "jsonl").rglob("*.jsonl")))


@pytest.fixture(scope="module")
def rule_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("correlation-rules")
    (directory / "audit_cleared_repeatedly.yml").write_text(CORRELATION)
    return directory


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return detection_finding_validator()


def run(correlator: Correlator, items: Iterable[dict[str, Any]]) -> list[Alert]:
    alerts: list[Alert] = []
    for item in items:
        alerts += correlator.process(item)
    return alerts + correlator.flush()


def test_real_detections_give_fewer_valid_ocsf_alerts(detections, validator) -> None:
    assert len(detections) > 50 and all(item["schema_version"] == 1 for item in detections)
    correlator = Correlator.from_ruleset(load_rules_from_paths([ROOT / "rules"]))
    alerts = valid(validator, run(correlator, detections))
    # fewer alerts than detections (each alert's Create, Updates and Close are findings of one alert;
    # the entity risk alerts add findings, not alerts an analyst would count twice)
    assert 0 < len({alert.alert_id for alert in alerts}) < len(detections)
    assert len({alert.alert_id for alert in alerts}) < len(alerts)  # updated in place, then closed
    stats = correlator.stats()
    assert stats["skipped_total"] == 0 and stats["counts"]["sigma"] == len(detections)
    assert stats["counts"]["alerts"] == len(alerts) and stats["fusion"]["open_alerts"] == 0
    assert {alert.activity for alert in alerts} >= {"Create", "Close"}


def test_a_correlation_rule_alerts_and_suppresses_its_generate_false_base_rule(rule_dir, validator) -> None:
    detections = _detections(INCIDENT, [rule_dir])
    base = [item for item in detections if item["rule"]["id"] == AUDIT_CLEARED]
    assert len(base) == 6 and {item["entity"] for item in base} == {"workstation5"}
    # Without the correlation rule, the base rule raises its own alert.
    plain = run(Correlator.from_ruleset(load_rules_from_paths([ROOT / "rules"])), detections)
    assert any(AUDIT_CLEARED in alert.rule_ids for alert in plain)

    ruleset = load_rules_from_paths([ROOT / "rules", rule_dir])
    assert CORRELATION_ID in [spec.id for spec in ruleset.correlations]  # beside the shipped correlations
    correlator = Correlator.from_ruleset(ruleset)
    alerts = valid(validator, run(correlator, detections))
    assert not any(AUDIT_CLEARED in alert.rule_ids for alert in alerts)
    correlated = [alert for alert in alerts if alert.rule_ids == (f"correlation:{CORRELATION_ID}",)]
    assert [alert.activity for alert in correlated] == ["Create", "Close"]
    assert correlated[0].entity == "workstation5"
    explanation = correlated[0].explanation
    assert explanation["evidence"]["total"] == 3  # the three clearings that met `gte: 3`
    stats = correlator.stats()
    assert stats["counts"]["suppressed_base"] >= 6 and stats["counts"]["correlation_inputs"] >= 6
    assert stats["correlations"]["correlations"][CORRELATION_ID]["fired"] == 1
    assert any(alert.rule_ids != correlated[0].rule_ids for alert in alerts)  # other rules still alert


def test_bad_records_are_counted_skips_with_reasons(detections) -> None:
    correlator = Correlator()
    good = next(item for item in detections if item["event_time"])
    bad: list[Any] = [{**good, "schema_version": 99}, {**good, "rule": "r1"}, {"kind": "sigma"}, [1, 2], None,
                      {**good, "source": None}]
    for item in bad:
        assert correlator.process(item) == []
    assert correlator.process(good)  # the stream goes on
    stats = correlator.stats()
    assert stats["skipped_total"] == len(bad) and stats["counts"]["received"] == len(bad) + 1
    reasons = stats["skipped"]
    assert reasons["unknown detection schema_version 99 (this version reads 1)"] == 1
    assert reasons["detection field 'rule' must be an object, not str"] == 1
    assert reasons["a detection must be a JSON object, not list"] == 1
    assert sum(count for reason, count in reasons.items() if "source" in reason) == 1


def test_a_state_dict_round_trip_mid_stream_gives_the_same_later_alerts(rule_dir) -> None:
    detections = _detections(INCIDENT, [rule_dir])
    ruleset = load_rules_from_paths([ROOT / "rules", rule_dir])
    whole = run(Correlator.from_ruleset(ruleset), detections)
    middle = next(i for i, item in enumerate(detections) if item["rule"]["id"] == AUDIT_CLEARED) + 2
    first = Correlator.from_ruleset(ruleset)
    before = [alert for item in detections[:middle] for alert in first.process(item)]
    state = json.loads(json.dumps(first.state_dict()))
    second = Correlator.from_ruleset(ruleset)
    second.load_state_dict(state)
    after = run(second, detections[middle:])
    assert [alert.ocsf for alert in before + after] == [alert.ocsf for alert in whole]
    assert any(alert.rule_ids == (f"correlation:{CORRELATION_ID}",) for alert in after)  # fired after the resume
    with pytest.raises(ValueError, match="state version"):
        second.load_state_dict({**state, "version": 9})


def test_replay_alerts_prints_ocsf_alerts_and_a_summary(rule_dir, validator) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "replay", "--alerts", "--no-models", "--rules", str(ROOT / "rules"),
         "--rules", str(rule_dir), *map(str, INCIDENT)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    findings = [json.loads(line) for line in done.stdout.splitlines()]
    assert findings and all(item["class_uid"] == 2004 for item in findings)
    for finding in findings:
        assert not list(validator.iter_errors(finding))
    summary = done.stderr.strip().splitlines()[-1]
    assert f"→ 10 detections → {len(findings)} alerts (P1 " in summary and " correlation hits" in summary, summary
    assert any(f"correlation:{CORRELATION_ID}" in json.dumps(item) for item in findings)

    refused = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "replay", "--alerts", "--workers", "2", str(INCIDENT[0])],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert refused.returncode != 0 and "--alerts is not supported with --workers" in refused.stderr


def test_a_real_wmi_lateral_movement_raises_the_chain_alert_but_not_its_generate_false_step() -> None:
    """The shipped lateral-movement chain over the real SharpWMI recording: the chain's alert
    comes out; its step correlation (`generate: false`) and the logon base rule raise none."""
    titles: list[str] = []
    config = config_from_dict({"rules": {"paths": [str(ROOT / "rules")]}, "models": {"enabled": False}})
    replay_files(config, [str(OTRF / "jsonl" / "lateral_movement" / "covenant_sharpwmi_create_dcerpc_wmi.jsonl")],
                 lambda output, dead: None, alerts=lambda alert: titles.append(alert.ocsf["finding_info"]["title"]))
    # Titles read "<rule title> on <entity>".
    assert "Network Logon Followed By Remote Service Or WMI Execution On The Same Host on workstation6" in titles
    assert not [t for t in titles if t.startswith("Remote Execution Service Or WMI Process On A Host")]
    assert not [t for t in titles if t.startswith("Successful Network Or Remote Desktop Logon")]


def test_a_verdict_suppresses_or_only_lowers_the_weight_and_applies_once() -> None:
    from correlator.records import Verdict

    def record(offset: int, time: str) -> dict[str, Any]:
        return {"schema_version": 1, "kind": "sigma", "ruleset_version": "v1", "entity": "ws-01",
                "rule": {"id": "r1", "title": "Noisy admin tool", "level": "medium", "tags": ["attack.execution"]},
                "event_time": time, "scores": {}, "model_version": None,
                "source": {"topic": "t", "partition": 0, "offset": offset}, "event": {"Computer": "ws-01"}}

    def rule_weight(alert: Any) -> float:
        return float(alert.explanation["rules"][0]["weight"])

    for suppress, expected_new_alert in ((True, False), (False, True)):
        correlator = Correlator()
        (first,) = correlator.process(record(1, "2026-11-30T10:00:00Z"))
        verdict = Verdict(first.alert_id, "fp", f"v-{suppress}", reason="admin", suppress=suppress)
        assert correlator.apply_verdict(verdict) == "applied"
        assert correlator.apply_verdict(verdict) == "duplicate"  # read twice, applied once
        later = [a for a in correlator.process(record(2, "2026-11-30T14:00:00Z")) if a.activity == "Create"]
        assert bool(later) is expected_new_alert
        if later:  # weight only: the rule still alerts, its weight halved and shown
            assert rule_weight(later[0]) == 0.5 < rule_weight(first)
    assert Correlator().apply_verdict(Verdict("nope", "fp", "v")) == "unknown alert"
