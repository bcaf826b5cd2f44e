"""Files through the workers' processing code (Detector + EntityScorer), in this process.

`sigmaray replay` runs it directly; `sigmaray replay --workers N` runs it in N Ray actors
(cluster/file_workers.py), each over its share of the files. No broker either way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from cluster.config import ClusterConfig
from cluster.detect import DetectionSettings, Detector, OutputRecord
from cluster.file_source import file_records
from cluster.rulefiles import load_rules_from_paths
from detectors.engine import SigmaEngine


@dataclass(slots=True)
class ReplayResult:
    counts: Counter[str] = field(default_factory=Counter)
    dead: list[str] = field(default_factory=list)  # the first dead letters, "file:line: error"
    seconds: float = 0.0
    ruleset_version: str = ""
    model: str = "off"


def replay_files(
    config: ClusterConfig, files: Sequence[str], write: Callable[[OutputRecord, bool], None], *,
    rule_paths: Sequence[str] = (), rate: float = 0, model: str | None = None, models: bool = True,
    per_file: bool = False,
) -> ReplayResult:
    """Every record of `files`, in order, through a Detector; `write` gets every output record
    (detections, anomaly detections, dead letters) and whether it is a dead letter. With `per_file`, each file has its own
    entity state, as a partition has in the cluster; otherwise the files play one partition."""
    ruleset = load_rules_from_paths(list(rule_paths) or list(config.rules.paths), config.rules.pipelines,
                                    config.rules.placeholders)
    make_scorer: Callable[[], object] | None = None
    if config.models.enabled and models:
        from cluster.partition_models import scorer_config
        from models.scorer import EntityScorer, warm_up

        settings = scorer_config(replace(config.models, model=model) if model else config.models)
        warm_up(settings)
        make_scorer = lambda: EntityScorer(settings)  # noqa: E731
    detector = Detector(SigmaEngine(ruleset.rules), ruleset.version, DetectionSettings(), None)
    result = ReplayResult(ruleset_version=ruleset.version)
    started = time.perf_counter()
    groups = [[path] for path in files] if per_file else [list(files)]
    for group in groups:
        scorer = make_scorer() if make_scorer else None
        for batch in file_records(group, rate, config.processing.batch_size):
            processed = detector.process(batch, scorer)  # type: ignore[arg-type]
            result.counts.update(processed.counts)
            for output in processed.outputs:
                dead = output.topic == detector.settings.dead_letter_topic
                if output.value is None:  # a dead letter without a value (files have no tombstones): writers take bytes
                    output = replace(output, value=b"")
                if dead and len(result.dead) < 10:
                    headers = dict(output.headers)
                    result.dead.append(f"{headers['source.topic'].decode()}:{headers['source.offset'].decode()}: "
                                       f"{headers['error'].decode(errors='replace')}")
                write(output, dead)
        if scorer is not None:
            result.model = scorer.model_label  # type: ignore[attr-defined]
    result.seconds = time.perf_counter() - started
    return result
