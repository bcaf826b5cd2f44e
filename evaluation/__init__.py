"""`sigmaray eval` as a library: labeled events (or a built-in, seeded scenario) replayed through
the cluster's own code, and the table that compares Sigma-only alerting with fused alerting.

Quick start (a built-in scenario needs ../shared; `EvalOptions.rule_paths` picks the rules):

    from evaluation import evaluate_scenario, evaluate_files
    evaluation = evaluate_scenario("small", seed=1)
    print(evaluation.table.render())                  # one row per mode
    evaluation.table.row("fused").recall              # or .to_dict() for all of it
    evaluate_files(["events.jsonl"], "labels.csv")    # your own labeled data, no code change

- `evaluation.labels`: the labels format (JSON lines or CSV: an incident is a whole file or a line
  range, with ATT&CK techniques) and its reader, which names the line of any error;
- `evaluation.scenarios`: the enterprise generator and the built-in scenarios (`SCENARIOS`);
- `evaluation.run`: the replay through cluster.sources.replay.replay_files and the correlator;
- `evaluation.metrics`, `evaluation.table`: the definitions of the columns, and the table;
- `evaluation.report`: markdown and PNG plots.

>>> from evaluation import parse_labels
>>> parse_labels("incident,file\\nc1,campaign.jsonl", "csv").incident_at("campaign.jsonl", 7)
'c1'
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Incident": "evaluation.labels",
    "LabelError": "evaluation.labels",
    "LabelRange": "evaluation.labels",
    "Labels": "evaluation.labels",
    "parse_labels": "evaluation.labels",
    "read_labels": "evaluation.labels",
    "write_labels": "evaluation.labels",
    "SCENARIOS": "evaluation.scenarios",
    "ScenarioSpec": "evaluation.scenarios",
    "generate": "evaluation.scenarios",
    "EvalOptions": "evaluation.evaluate",
    "Evaluation": "evaluation.evaluate",
    "evaluate_files": "evaluation.evaluate",
    "evaluate_scenario": "evaluation.evaluate",
    "run_files": "evaluation.run",
    "Table": "evaluation.table",
    "write_report": "evaluation.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
