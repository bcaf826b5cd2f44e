"""Entity anomaly models for Windows event streams: features per entity, online estimators
(Half-Space Trees, LODA, SAD), calibrated scores, and their offline evaluation.

The library the cluster runs (`cluster/` only drives it: Kafka, Ray, checkpoints, CLI). Nothing
here reads the wall clock, a file or the network unless asked to.

Quick start
-----------

A few hundred synthetic Windows events with labeled attacks in them:

>>> import models
>>> from models.datasets.generator import generate_labeled
>>> stream = list(generate_labeled(600, seed=7, attack_share=0.05))
>>> events = [item.event for item in stream]
>>> sum(item.attack is not None for item in stream)
37

Score every entity of every event (each scored before it is learned), as a worker does:

>>> config = models.ScorerConfig(model="hst", seed=0, calibration_window=100)
>>> scorer = models.EntityScorer(config)
>>> times = [models.event_time_ms(event) for event in events]
>>> scores = scorer.score_batch(events, times, matched=[False] * len(events))
>>> scores[-1].as_dict()
{'host:ws-dev-03': 0.5, 'user:b.schmidt': 0.74}

Its state is plain data with a version: what a checkpoint stores, restored exactly:

>>> state = scorer.state_dict()
>>> restored = models.EntityScorer.from_state_dict(config, state)
>>> restored.events_seen, restored.model_label
(600, 'hst@1')

The registered models, by name (parameters can be changed in the name: `hst(n_trees=25)`):

>>> [spec.name for spec in models.registry.list_models()]
['hst', 'loda', 'sad-rate']

Evaluate a model on labeled events: ROC-AUC, PR-AUC, precision@k, latency, state size, against
a batch IsolationForest (`matched` says which events a Sigma rule matched: never learned):

>>> result = models.evaluate(events, [item.attack or False for item in stream], model="hst", seed=0,
...                          config=models.ScorerConfig(calibration_window=100))
>>> result.events, result.labeled, result.positives, result.run.model_label
(600, 600, 37, 'hst@1')
>>> print(f"ROC-AUC {result.metrics.roc_auc:.3f}, IsolationForest {result.baseline.roc_auc:.3f}")
ROC-AUC 0.700, IsolationForest 0.824

Six hundred events barely warm an online model up, while the IsolationForest sees them all at
once (hindsight): run `sigmaray models eval --generate 20000` for numbers that mean something.

`sigmaray models eval` is this function behind a command line (with the cluster's Sigma rules as
`matched`); `models.report.write_report(result, DIR, ...)` writes its markdown report and plots.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models import datasets, registry, report
    from models.datasets.generator import generate, generate_labeled
    from models.evaluation import Evaluation, ScoringRun, evaluate, evaluate_shuttle
    from models.eventtime import event_time_ms
    from models.migrations import UnsupportedStateVersion
    from models.scorer import EntityScorer, ScorerConfig

__all__ = [
    "EntityScorer",
    "Evaluation",
    "ScorerConfig",
    "ScoringRun",
    "UnsupportedStateVersion",
    "datasets",
    "evaluate",
    "evaluate_shuttle",
    "event_time_ms",
    "generate",
    "generate_labeled",
    "registry",
    "report",
]

# Imported on first use: `import models.eventtime` (the Sigma workers' time parsing) must not pay
# for numba, River and scikit-learn, which the scorer and the estimators load.
_WHERE: dict[str, tuple[str, str | None]] = {
    "EntityScorer": ("models.scorer", "EntityScorer"),
    "ScorerConfig": ("models.scorer", "ScorerConfig"),
    "Evaluation": ("models.evaluation", "Evaluation"),
    "ScoringRun": ("models.evaluation", "ScoringRun"),
    "evaluate": ("models.evaluation", "evaluate"),
    "evaluate_shuttle": ("models.evaluation", "evaluate_shuttle"),
    "UnsupportedStateVersion": ("models.migrations", "UnsupportedStateVersion"),
    "event_time_ms": ("models.eventtime", "event_time_ms"),
    "generate": ("models.datasets.generator", "generate"),
    "generate_labeled": ("models.datasets.generator", "generate_labeled"),
    "datasets": ("models.datasets", None),
    "registry": ("models.registry", None),
    "report": ("models.report", None),
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    module = importlib.import_module(where[0])
    value = module if where[1] is None else getattr(module, where[1])
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
