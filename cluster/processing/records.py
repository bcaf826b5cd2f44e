"""The detection record: what the workers produce to the detections topic, one per Sigma match or
entity anomaly, and what the correlator reads. Typed and versioned (`schema_version`), so a
consumer can refuse a record it does not understand instead of misreading it.

The class lives with the correlator's other records, `correlator/records.py` (the correlator
must not import the runtime), and is re-exported here for the workers.

    {"schema_version": 1, "kind": "sigma" | "anomaly", "rule": {"id", "title", "level", "tags"},
     "ruleset_version": str, "entity": host | null, ["anomaly": {...} for kind anomaly,]
     "event_time": str | null, "scores": {"host:ws-01": 0.9, ...}, "model_version": str | null,
     "source": {"topic", "partition", "offset", "timestamp_ms"}, "event": {...},
     ["truncated": {...} when the record was cut to its topic's size limit]}

A record without `schema_version` (written before it existed) reads as version 1.

>>> record = Detection(kind="sigma", rule={"id": "r1", "title": "T", "level": "high", "tags": []},
...                    ruleset_version="v1", entity="ws-01", event_time="2026-11-30T10:00:00Z", scores={},
...                    model_version=None, source={"topic": "t", "partition": 0, "offset": 7}, event={"EventID": 1})
>>> Detection.from_dict(orjson.loads(record.to_json())) == record
True
>>> Detection.from_dict({**record.to_dict(), "schema_version": 99})
Traceback (most recent call last):
...
ValueError: unknown detection schema_version 99 (this version reads 1)
"""

from __future__ import annotations

import orjson  # noqa: F401 - the doctest's

from correlator.records import DETECTION_KINDS, Detection

__all__ = ["DETECTION_KINDS", "Detection"]
