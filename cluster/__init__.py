"""sigmaray's runtime: the same processing code over files or Kafka, on one machine or on Ray.

The tree tells the architecture:

- `cluster.config`: the cluster YAML, every key with a default, errors that name the key;
- `cluster.build`: the one way to build the rules, engine, detector and entity scorer from it;
- `cluster.processing`: the I/O-free batch core (records in, detections and dead letters out);
- `cluster.sources`: JSON lines and EVTX files as records; `replay_files` runs them through it;
- `cluster.state`: model checkpoints with their offsets, and the attempt log;
- `cluster.kafka`: Kafka's one home (client factory, partition loop, rules feed, dev broker);
- `cluster.ray`: Ray's one home (supervisor and worker actors, connecting to a cluster);
- `cluster.cli`: the `sigmaray` command, which only parses and prints.

Quick start: files through exactly what a PartitionWorker runs, no broker, no Ray.

>>> import json, tempfile
>>> from cluster import config_from_dict, replay_files, shipped_rules_path
>>> event = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "WS-01.corp",
...          "UtcTime": "2026-11-30 10:00:00.000", "Image": "C:\\\\Windows\\\\powershell.exe",
...          "CommandLine": "powershell.exe -NoP -enc " + "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQA" * 2}
>>> path = tempfile.mktemp(suffix=".jsonl")
>>> _ = open(path, "w").write(json.dumps(event) + "\\n")
>>> config = config_from_dict({"rules": {"paths": [str(shipped_rules_path())]}, "models": {"enabled": False}})
>>> outputs = []
>>> result = replay_files(config, [path], lambda output, dead: outputs.append(json.loads(output.value)))
>>> result.counts["events"], sorted({o["rule"]["title"] for o in outputs})[:1]
(1, ['PowerShell Launched With A Base64 Encoded Command'])

Names are imported on first use, so `import cluster` (and the CLI) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClusterConfig": "cluster.config",
    "load_config": "cluster.config",
    "config_from_dict": "cluster.config",
    "build_detector": "cluster.build",
    "build_engine": "cluster.build",
    "build_scorer": "cluster.build",
    "load_rules": "cluster.build",
    "Detector": "cluster.processing.detector",
    "InputRecord": "cluster.processing.detector",
    "OutputRecord": "cluster.processing.detector",
    "read_events": "cluster.sources.files",
    "replay_files": "cluster.sources.replay",
    "shipped_rules_path": "detectors.shipped",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
