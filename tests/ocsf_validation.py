"""The OCSF 1.8.0 schema in ../shared, compiled once per test process by ocsf-lib and turned into
a JSON Schema for Detection Finding (class 2004): what every test that produces alerts checks
them against."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

import jsonschema

from correlator.fusion import Alert
from correlator.ocsf import PROFILES
from correlator.ocsf_schema import class_json_schema
from tests.conftest import SHARED

OCSF_SCHEMA = SHARED / "ocsf" / "schema-1.8.0"


@functools.cache
def compiled_schema() -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "ocsf.compile", str(OCSF_SCHEMA)], check=True, capture_output=True,
                         timeout=300).stdout
    data: dict[str, Any] = json.loads(out)
    return data


@functools.cache
def detection_finding_validator() -> jsonschema.Draft202012Validator:
    schema = class_json_schema(compiled_schema(), "detection_finding", PROFILES)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def valid(validator: Any, alerts: Iterable[Alert]) -> list[Alert]:
    """The alerts, each checked against the schema (and JSON-serializable as is)."""
    alerts = list(alerts)
    for alert in alerts:
        errors = sorted(validator.iter_errors(alert.ocsf), key=str)
        assert not errors, f"{alert.alert_id} {alert.activity}: {[e.message for e in errors[:3]]}"
        assert alert.ocsf["type_uid"] == 200400 + alert.activity_id
        json.dumps(alert.ocsf)
    return alerts
