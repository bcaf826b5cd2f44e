"""Files through the workers' processing code (Detector + EntityScorer), in this process.

`sigmaray replay` runs it directly; `sigmaray replay --workers N` runs it in N Ray actors
(cluster/ray/file_workers.py), each over its share of the files. No broker either way. With an
`alerts` callback (`sigmaray replay --alerts`), the detections also go, in order, through the
correlator (`correlator.Correlator`, the same code path as the cluster's correlator actors).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from cluster.build import build_detector, build_scorer, scorer_config
from cluster.config import ClusterConfig
from cluster.processing.detector import OutputRecord
from cluster.sources.records import file_records

if TYPE_CHECKING:
    from correlator.criticality import Criticality
    from correlator.fusion import Alert, FusionConfig


@dataclass(slots=True)
class ReplayResult:
    counts: Counter[str] = field(default_factory=Counter)
    dead: list[str] = field(default_factory=list)  # the first dead letters, "file:line: error"
    seconds: float = 0.0
    ruleset_version: str = ""
    model: str = "off"
    alerts: Counter[str] = field(default_factory=Counter)  # with `alerts`: alerts by priority label (P1..P4)
    correlator: dict[str, Any] = field(default_factory=dict)  # with `alerts`: Correlator.stats() at the end


def replay_files(
    config: ClusterConfig, files: Sequence[str], write: Callable[[OutputRecord, bool], None], *,
    rule_paths: Sequence[str] = (), rate: float = 0, model: str | None = None, models: bool = True,
    per_file: bool = False, alerts: Callable[[Alert], None] | None = None,
    fusion_config: FusionConfig | None = None, criticality: Criticality | None = None,
) -> ReplayResult:
    """Every record of `files`, in order, through a Detector; `write` gets every output record
    (detections, anomaly detections, dead letters) and whether it is a dead letter. With `per_file`, each file has its own
    entity state, as a partition has in the cluster; otherwise the files play one partition.

    With `alerts`, every detection also goes, in order, through one `Correlator` built as the
    cluster's correlators build it (`build_correlator`: the config's `correlator` section; a
    `fusion_config` or `criticality` given here replaces the config's), and `alerts` gets each
    alert it gives; at the end the correlator is flushed (open windows and alerts closed)."""
    detector, ruleset = build_detector(config, paths=rule_paths)
    correlator = None
    if alerts is not None:
        from cluster.build import build_correlator, load_criticality_file

        if criticality is None:
            criticality, _errors = load_criticality_file(config)
        correlator = build_correlator(config, ruleset, criticality, fusion=fusion_config)

    def alerted(found: list[Alert]) -> None:
        assert alerts is not None
        for alert in found:
            result.alerts[alert.label] += 1
            alerts(alert)
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
                if correlator is not None and not dead and output.topic == detector.settings.detections_topic:
                    alerted(correlator.process(orjson.loads(output.value or b"null")))
        if scorer is not None:
            result.model = scorer.model_label  # type: ignore[attr-defined]
    if correlator is not None:
        alerted(correlator.flush())
        result.correlator = correlator.stats()
    result.seconds = time.perf_counter() - started
    return result
