"""Files through the workers' processing code (Detector + EntityScorer), in this process.

`sigmaray replay` runs it directly; `sigmaray replay --workers N` runs it in N Ray actors
(cluster/ray/file_workers.py), each over its share of the files. No broker either way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from cluster.build import build_detector, build_scorer, scorer_config
from cluster.config import ClusterConfig
from cluster.processing.detector import OutputRecord
from cluster.sources.records import file_records


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
    detector, ruleset = build_detector(config, paths=rule_paths)
    make_scorer: Callable[[], object] | None = None
    if config.models.enabled and models:
        from models.scorer import warm_up

        warm_up(scorer_config(replace(config.models, model=model) if model else config.models, config.rules.mapping))
        make_scorer = lambda: build_scorer(config, model)  # noqa: E731
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
