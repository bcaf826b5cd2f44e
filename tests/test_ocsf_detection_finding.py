"""The OCSF 1.8.0 Detection Finding (class 2004) that the fusion correlator emits, checked against
the schema in ../shared/ocsf/schema-1.8.0, compiled by ocsf-lib and turned into a JSON Schema."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from correlator.fusion import FusionEngine
from correlator.ocsf import PROFILES
from correlator.ocsf_schema import class_json_schema
from tests.ocsf_validation import compiled_schema, detection_finding_validator


@pytest.fixture(scope="module")
def compiled() -> dict[str, Any]:
    return compiled_schema()


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    return detection_finding_validator()


def finding() -> dict[str, Any]:
    engine = FusionEngine()
    detection = {"kind": "sigma", "rule": {"id": "r-1", "title": "Encoded PowerShell", "level": "high",
                                           "tags": ["attack.execution", "attack.t1059.001", "attack.stealth"]},
                 "ruleset_version": "v1", "entity": "WS-01.corp.local", "event_time": "2026-11-30T10:00:00Z",
                 "scores": {"host:ws-01": 0.97}, "model_version": "hst@1",
                 "source": {"topic": "events", "partition": 3, "offset": 42, "timestamp_ms": None},
                 "event": {"TargetUserName": "CORP\\alice", "Image": "C:\\powershell.exe"}}
    alerts = engine.process(detection)
    # the rule's own alert (recorded), then the host's risk alert it opens (a high rule, 2 tactics)
    assert [alert.activity for alert in alerts] == ["Create", "Create"]
    assert alerts[1].rule_ids == ("risk:entity",) and alerts[1].ocsf["finding_info"]["types"] == ["risk"]
    return alerts[0].ocsf


def test_class_2004_required_attributes_are_all_filled(compiled, validator):
    item = compiled["classes"]["detection_finding"]
    assert item["uid"] == 2004 and compiled["version"] == "1.8.0"
    required = {name for name, attr in item["attributes"].items()
                if attr["requirement"] == "required" and attr.get("profile") is None}
    assert required == {"activity_id", "category_uid", "class_uid", "finding_info", "metadata", "severity_id", "time",
                        "type_uid"}
    made = finding()
    assert required <= set(made)
    recommended = {name for name, attr in item["attributes"].items()
                   if attr["requirement"] == "recommended" and attr.get("profile") in (None, *PROFILES)}
    assert {"evidences", "resources", "is_alert", "status_id", "priority_id", "message"} <= recommended & set(made)
    assert not list(validator.iter_errors(made))
    assert made["class_uid"] == 2004 and made["category_uid"] == 2 and made["type_uid"] == 200401
    assert made["time"] == 1796032800000 and made["severity_id"] in (2, 3, 4, 5)
    assert made["metadata"]["product"]["name"] == "sigmaray" and made["metadata"]["version"] == "1.8.0"
    assert made["metadata"]["profiles"] == PROFILES and made["attacks"] == made["finding_info"]["attacks"]
    info = made["finding_info"]
    assert info["analytic"] == {"uid": "r-1", "name": "Encoded PowerShell", "type_id": 1, "type": "Rule"}
    assert {"tactic": {"name": "Execution", "uid": "TA0002"}} in info["attacks"]
    assert {"technique": {"uid": "T1059"}, "sub_technique": {"uid": "T1059.001"}} in info["attacks"]
    assert {"tactic": {"name": "Stealth"}} in info["attacks"]
    assert [r["name"] for r in made["resources"]] == ["ws-01", "alice"]
    assert made["evidences"][0]["data"] == {"topic": "events", "partition": 3, "offset": 42}


@pytest.mark.parametrize("change", [
    lambda f: f.pop("finding_info"),
    lambda f: f.pop("metadata"),
    lambda f: f.update(class_uid=2003),
    lambda f: f.update(activity_id=7),
    lambda f: f.update(time="2026-11-30"),
    lambda f: f.update(severity_id=9),
    lambda f: f.update(not_an_ocsf_attribute=1),
    lambda f: f["finding_info"].pop("uid"),
    lambda f: f["finding_info"]["analytic"].pop("type_id"),
    lambda f: f["finding_info"].update(attacks=[{"version": "v18"}]),  # at_least_one of tactic/technique
    lambda f: f["metadata"].pop("product"),
    lambda f: f["resources"].append({"type": "host"}),  # at_least_one of name/uid
    lambda f: f["evidences"].append({"name": "x"}),  # at_least_one evidence artifact
])
def test_the_generated_schema_rejects_broken_findings(validator, change):
    broken = copy.deepcopy(finding())
    change(broken)
    assert list(validator.iter_errors(broken))


def test_profile_attributes_need_their_profile(compiled):
    bare = jsonschema.Draft202012Validator(class_json_schema(compiled, "detection_finding"))
    errors = [error.message for error in bare.iter_errors(finding())]
    assert any("is_alert" in message for message in errors) and any("priority_id" in message for message in errors)
