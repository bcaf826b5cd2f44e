"""The correlator's pure logic: Sigma correlation rules, and rule hits fused with entity anomaly
scores into prioritized, explained alerts (OCSF Detection Finding). No Kafka, no Ray, no wall
clock: (state, detection, event time) in, alerts out, so a test or a notebook runs it on a list.

- `correlator.correlations`: `CorrelationEngine`, all seven Sigma correlation types over `Hit`s;
- `correlator.fusion`: `FusionEngine`, per-entity risk, deduplication, suppressions, priority;
- `correlator.ocsf`: the alert as an OCSF 1.8.0 Detection Finding (class 2004).

Quick start: two detections of one rule on one host become one alert, updated in place. (What
pages is an entity risk alert, once a host's risk and tactics cross the thresholds of
`correlator.priority`; one rule alone stays a recorded P4.)

>>> from correlator import FusionEngine
>>> def detection(offset, minute):
...     return {"kind": "sigma", "entity": "ws-01", "event_time": f"2026-11-30T10:{minute:02d}:00Z",
...             "rule": {"id": "r1", "title": "Encoded PowerShell", "level": "high",
...                      "tags": ["attack.execution", "attack.t1059.001"]},
...             "scores": {}, "source": {"topic": "events", "partition": 0, "offset": offset},
...             "event": {"Computer": "WS-01.corp", "User": "CORP\\\\alice"}}
>>> fusion = FusionEngine()
>>> first = fusion.process(detection(1, 0))
>>> again = fusion.process(detection(2, 5))
>>> first[0].activity, first[0].alert_id == again[0].alert_id, again[0].count
('Create', True, 2)
>>> first[0].ocsf["class_uid"], first[0].label  # a rule's own alert is recorded at P4: a risk contribution
(2004, 'P4')

Names are imported on first use, so importing one module does not load the others (nor pySigma).
"""

from __future__ import annotations

import importlib
from typing import Any

from correlator import native

native.setup()  # compiled modules (scripts/build_native.py) only while their source is unchanged

_EXPORTS = {
    "Detection": "correlator.records",
    "Hit": "correlator.records",
    "CorrelationHit": "correlator.records",
    "CorrelationEngine": "correlator.correlations",
    "suppressed_rule_ids": "correlator.correlations",
    "FusionEngine": "correlator.fusion",
    "FusionConfig": "correlator.fusion",
    "Alert": "correlator.fusion",
    "Criticality": "correlator.criticality",
    "load_criticality": "correlator.criticality",
    "Suppression": "correlator.suppressions",
    "Correlator": "correlator.pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'correlator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
