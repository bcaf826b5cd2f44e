"""Offline evaluation of an anomaly model: ranking quality, cost, and a batch baseline.

No file I/O. `evaluate(events, labels, model=..., matched=...)` scores events with the workers'
own EntityScorer, in batches as a worker scores them, and returns an `Evaluation`;
`evaluate_rows` computes the same numbers from rows scored elsewhere, and `evaluate_shuttle` runs
an estimator on River's Shuttle benchmark. `sigmaray models eval` (cluster/cli/models.py) only
reads files, matches the Sigma rules and prints; `models/report.py` turns an Evaluation into
markdown and plots.

Definitions, so the numbers mean the same everywhere:
- Event level. An event's score is the max of its entities' calibrated scores (an event with no
  entity scores 0.0, as in the cluster); an event's label is 1 when it belongs to an attack.
  Unlabeled events are scored (they shape the model) but left out of the metrics.
- precision@k for k = 10, 100 and 1% of the labeled events (at least 1).
- Latency: time.perf_counter around each scorer call, divided by the events of that call (the
  workers score a batch at a time, so this is the amortized cost per event); p50/p99 over events.
- Memory: the size of the scorer's serialized state dict, which is what a checkpoint stores
  (tracemalloc would slow the scorer down and distort the latency measured in the same run).
- Baseline: scikit-learn's IsolationForest, fitted in batch on the same feature rows with a
  fixed random_state and scored on them; event score = max over its rows, like ours. It sees
  the whole stream at once (hindsight), which an online model never does, so it is a demanding
  reference rather than a strawman.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.errors import ConfigError
from models import metrics, serialization

if TYPE_CHECKING:
    from models.scorer import ScorerConfig

TOP_KS: tuple[int, ...] = (10, 100)
BASELINE_NAME = "IsolationForest"


@dataclass(frozen=True, slots=True)
class ScoredRow:
    event: int  # position of the event in the stream
    label: int | None  # 1 attack, 0 benign, None unlabeled
    score: float  # the model's score: calibrated [0, 1] in the cluster, raw for Shuttle
    features: tuple[float, ...] | None  # None: an event without entities (kept for its label)
    group: str = ""  # entity type
    attack: str | None = None  # which attack, when known


@dataclass(frozen=True, slots=True)
class Timing:
    events: int
    seconds: float


@dataclass(frozen=True, slots=True)
class RankMetrics:
    roc_auc: float
    pr_auc: float
    precision_at: dict[str, float]  # "10", "100", "1%=200" -> precision

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray, ks: Sequence[tuple[str, int]]) -> RankMetrics:
        return cls(metrics.roc_auc(labels, scores), metrics.pr_auc(labels, scores),
                   {name: metrics.precision_at_k(labels, scores, k) for name, k in ks})


@dataclass(frozen=True, slots=True)
class ScoreStats:
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    above_threshold: int | None  # events at or above the alert threshold (None: no threshold)

    @classmethod
    def of(cls, scores: np.ndarray, threshold: float | None) -> ScoreStats | None:
        if not len(scores):
            return None
        p50, p90, p99 = (float(v) for v in np.quantile(scores, (0.5, 0.9, 0.99)))
        above = int((scores >= threshold).sum()) if threshold is not None else None
        return cls(len(scores), float(scores.mean()), p50, p90, p99, float(scores.max()), above)


@dataclass(frozen=True, slots=True)
class AttackSummary:
    attack: str
    events: int
    median_score: float
    above_threshold: int | None
    top_1pct: int  # its events among the top 1% of labeled events by score


@dataclass(slots=True)
class EvaluationData:
    """Per-event arrays behind the numbers, for plots; not part of the JSON."""

    labels: np.ndarray  # labeled events only
    scores: np.ndarray
    baseline_scores: np.ndarray | None
    all_scores: np.ndarray  # every event, labeled or not


@dataclass(slots=True)
class ScoringRun:
    """How `evaluate` scored the events: the settings it ran with and what happened on the way."""

    model: str  # the spec, as named ("hst(n_trees=25)")
    model_label: str  # the spec and its version in the scorer ("hst@1")
    seed: int
    threshold: float  # calibrated score at which an entity is anomalous
    calibration_window: int
    batch_size: int  # events per scorer call, as in a worker
    features: tuple[str, ...]
    events: int = 0
    matched: int = 0  # events a Sigma rule matched: scored, never learned
    anomalies: int = 0  # anomaly detections the cluster would emit (alerts, after the cooldown)
    unlabeled: int = 0  # events without a label: scored, left out of the metrics
    label_field_seen: bool = False  # some event carried `label_field`
    seconds: float = 0.0


@dataclass(slots=True)
class Evaluation:
    events: int
    labeled: int
    positives: int
    rows: int  # entity rows (feature vectors) scored
    metrics: RankMetrics | None  # the model's; None without both classes among the labeled events
    baseline: RankMetrics | None
    baseline_name: str
    scores: ScoreStats | None  # all events
    attack_scores: ScoreStats | None
    benign_scores: ScoreStats | None
    per_attack: list[AttackSummary]
    top_ties: int  # labeled events tied at the highest score: the model cannot order them
    threshold: float | None
    latency_p50_us: float | None
    latency_p99_us: float | None
    latency_mean_us: float | None
    state_bytes: int | None
    state_measure: str
    notes: list[str] = field(default_factory=list)
    data: EvaluationData | None = field(default=None, repr=False)
    run: ScoringRun | None = field(default=None, repr=False)  # how `evaluate` scored (None from evaluate_rows)

    @property
    def prevalence(self) -> float | None:
        return self.positives / self.labeled if self.labeled else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("data")
        out.pop("run")
        out["prevalence"] = self.prevalence
        return out


def evaluate_rows(
    rows: Iterable[ScoredRow],
    *,
    events: int | None = None,
    timings: Sequence[Timing] = (),
    state_bytes: int | None = None,
    state_measure: str = "size of the scorer's serialized state dict",
    threshold: float | None = None,
    baseline: bool = True,
    seed: int = 0,
) -> Evaluation:
    """Event-level metrics of the rows, the IsolationForest baseline on the same rows, and the
    cost of producing them. `events` counts events that produced no row at all (default: the
    highest event index seen + 1)."""
    event_idx: list[int] = []
    row_scores: list[float] = []
    vectors: list[tuple[float, ...]] = []
    vector_events: list[int] = []
    labels: dict[int, int] = {}
    attacks: dict[int, str] = {}
    for row in rows:
        event_idx.append(row.event)
        row_scores.append(row.score)
        if row.features is not None:
            vectors.append(row.features)
            vector_events.append(row.event)
        if row.label is not None:
            labels[row.event] = int(row.label)
        if row.attack:
            attacks[row.event] = row.attack
    n_events = max(events or 0, (max(event_idx) + 1) if event_idx else 0)
    notes: list[str] = []

    # Event score = max over its rows; an event without rows scores 0, as in the cluster.
    event_scores = np.zeros(n_events)
    if event_idx:
        np.maximum.at(event_scores, np.asarray(event_idx), np.asarray(row_scores, dtype=np.float64))
    labeled = np.asarray(sorted(labels), dtype=np.int64)
    y = np.asarray([labels[i] for i in labeled], dtype=np.int8)
    s = event_scores[labeled] if len(labeled) else np.zeros(0)
    positives = int(y.sum()) if len(y) else 0

    ks = _ks(len(labeled))
    both = 0 < positives < len(labeled)
    ranking = RankMetrics.of(y, s, ks) if both else None
    if not len(labeled):
        notes.append("no labels: score statistics only")
    elif not both:
        notes.append(f"only one class among the {len(labeled)} labeled events: no ROC-AUC, PR-AUC or precision@k")

    base_metrics: RankMetrics | None = None
    base_scores: np.ndarray | None = None
    if baseline and both and len(vectors) >= 2:
        base_event = _isolation_forest(np.asarray(vectors, dtype=np.float64), np.asarray(vector_events), n_events, seed)
        base_scores = base_event[labeled]
        base_metrics = RankMetrics.of(y, base_scores, ks)

    per_event_us = _per_event_us(timings)
    return Evaluation(
        events=n_events,
        labeled=len(labeled),
        positives=positives,
        rows=len(event_idx),
        metrics=ranking,
        baseline=base_metrics,
        baseline_name=BASELINE_NAME,
        scores=ScoreStats.of(event_scores, threshold),
        attack_scores=ScoreStats.of(s[y == 1], threshold) if len(y) else None,
        benign_scores=ScoreStats.of(s[y == 0], threshold) if len(y) else None,
        per_attack=_per_attack(labeled, s, attacks, threshold),
        top_ties=int((s == s.max()).sum()) if len(s) else 0,
        threshold=threshold,
        latency_p50_us=float(np.quantile(per_event_us, 0.5)) if len(per_event_us) else None,
        latency_p99_us=float(np.quantile(per_event_us, 0.99)) if len(per_event_us) else None,
        latency_mean_us=float(per_event_us.mean()) if len(per_event_us) else None,
        state_bytes=state_bytes,
        state_measure=state_measure,
        notes=notes,
        data=EvaluationData(y, s, base_scores, event_scores),
    )


def _ks(labeled: int) -> list[tuple[str, int]]:
    one_pct = max(1, round(labeled * 0.01))
    return [(str(k), k) for k in TOP_KS] + [(f"1%={one_pct}", one_pct)]


def _isolation_forest(X: np.ndarray, owners: np.ndarray, n_events: int, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=100, random_state=seed)
    forest.fit(X)
    # score_samples: higher = more normal; negate so higher = more anomalous, like ours.
    row_scores = -forest.score_samples(X)
    # Events without rows get the lowest score: nothing to be anomalous about.
    out = np.full(n_events, float(row_scores.min()))
    np.maximum.at(out, owners, row_scores)
    return out


def _per_event_us(timings: Sequence[Timing]) -> np.ndarray:
    timed = [t for t in timings if t.events > 0]
    if not timed:
        return np.zeros(0)
    # Each event of a call gets that call's amortized cost, so p50/p99 are over events.
    return np.repeat([t.seconds * 1e6 / t.events for t in timed], [t.events for t in timed])


def _per_attack(labeled: np.ndarray, scores: np.ndarray, attacks: Mapping[int, str],
                threshold: float | None) -> list[AttackSummary]:
    if not attacks or not len(labeled):
        return []
    k = max(1, round(len(labeled) * 0.01))
    top = set(labeled[np.argsort(-scores, kind="mergesort")[:k]].tolist())
    by_attack: dict[str, list[int]] = {}
    for position, event in enumerate(labeled.tolist()):
        name = attacks.get(event)
        if name:
            by_attack.setdefault(name, []).append(position)
    out = []
    for name, positions in sorted(by_attack.items()):
        values = scores[positions]
        out.append(AttackSummary(
            name, len(positions), float(np.median(values)),
            int((values >= threshold).sum()) if threshold is not None else None,
            sum(1 for p in positions if int(labeled[p]) in top),
        ))
    return out


# ---------------------------------------------------------------- driving the cluster's scorer


Label = tuple[int, str | None]  # (1 attack / 0 benign, attack name)


class RecordingScorer:
    """Stands in for the EntityScorer where the cluster's processing code calls it (the
    Detector's `score_batch` hook): passes every call through, times it, and keeps one
    ScoredRow per entity with the label the caller queued for that event.

    Call `expect(labels)` before each batch with one label (or None) per decodable event, in
    order: the Detector hands the scorer exactly those events, in that order."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.rows: list[ScoredRow] = []
        self.timings: list[Timing] = []
        self.events = 0
        self.state_bytes = 0
        self._pending: list[Label | None] = []
        self._sample_every = 10_000
        self._next_sample = self._sample_every

    @property
    def model_label(self) -> str | None:
        return getattr(self.scorer, "model_label", None)

    @property
    def shadow_label(self) -> str | None:
        return getattr(self.scorer, "shadow_label", None)

    def expect(self, labels: Sequence[Label | None]) -> None:
        self._pending = list(labels)

    def score_batch(self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None],
                    matched: Sequence[bool]) -> list[Any]:
        if len(events) != len(self._pending):
            raise ValueError(f"{len(events)} events scored but {len(self._pending)} labels queued")
        started = time.perf_counter()
        results = self.scorer.score_batch(events, times_ms, matched)
        self.timings.append(Timing(len(events), time.perf_counter() - started))
        for offset, (scored, label) in enumerate(zip(results, self._pending, strict=True)):
            index = self.events + offset
            value, attack = label if label is not None else (None, None)
            if not scored.entities:
                self.rows.append(ScoredRow(index, value, 0.0, None, "", attack))
            for entity in scored.entities:
                self.rows.append(ScoredRow(index, value, entity.score, tuple(entity.vector),
                                           entity.entity_type, attack))
        self.events += len(events)
        self._pending = []
        if self.events >= self._next_sample:
            # Sampled, not per batch: serializing the whole state every batch would dominate the run.
            self.measure_state()
            self._next_sample = self.events + self._sample_every
        return results

    def measure_state(self) -> int:
        """The state's size as a checkpoint stores it (the serialized state dict); a scorer
        without `state_dict` is measured pickled."""
        state_dict = getattr(self.scorer, "state_dict", None)
        size = (len(serialization.dumps(state_dict())) if state_dict is not None
                else len(pickle.dumps(self.scorer, protocol=pickle.HIGHEST_PROTOCOL)))
        self.state_bytes = max(self.state_bytes, size)
        return self.state_bytes


# ---------------------------------------------------------------- evaluate: events in, numbers out


LabelValue = bool | int | str | None  # True/1 attack, False/0 benign, "name" an attack so named, None unlabeled
Matcher = Callable[[Mapping[str, Any]], bool]
TimeOf = Callable[[Mapping[str, Any]], int | None]


def evaluate(
    events: Iterable[Mapping[str, Any]],
    labels: Iterable[LabelValue] | Mapping[str, LabelValue] | None = None,
    *,
    model: str | None = None,
    seed: int | None = None,
    matched: Iterable[bool] | Matcher | None = None,
    times: Iterable[int | None] | TimeOf | None = None,
    config: ScorerConfig | None = None,
    label_field: str | None = None,
    id_field: str = "sigmaray_event_id",
    unlabeled_as_benign: bool = False,
    batch_size: int = 500,
    baseline: bool = True,
) -> Evaluation:
    """Scores `events` in order with a fresh EntityScorer, as a worker does (batches of
    `batch_size`, each event scored before it is learned), and measures the ranking against the
    labels, the cost, and an IsolationForest baseline on the same feature rows.

    events: dicts (flattened Windows events, say), in stream order. Any argument given per event
    (labels, matched, times) may be a list or an iterator: all are consumed in step, so a stream
    of millions need not sit in memory.
    labels: one per event (True/1 attack, False/0 benign, a string naming the attack, None
    unlabeled), or a mapping from the event's `id_field` value to one. Events the mapping lacks
    are unlabeled, or benign with `unlabeled_as_benign`. Unlabeled events are scored (they shape
    the model) but left out of the metrics. Without labels: the event field `label_field`
    marks attacks (present and not null/false/0/"" is an attack, its value names it; absent is
    benign; no event with the field: no labels at all), else there are no labels and only score
    statistics are reported. `label_field` is removed from every event before anything reads
    it, so the label cannot leak into the features.
    model, seed: the registered spec (`models.registry`) and its seed; they override `config`
    (a ScorerConfig: threshold, calibration window, entity fields, ...; the defaults otherwise).
    matched: which events a Sigma rule matched, one bool per event, or a function of the event.
    The scorer scores those but never learns them, as in the cluster. `models` knows no Sigma:
    the caller brings the matcher (`sigmaray models eval` brings the cluster's rules).
    times: each event's time in ms, or a function of the event; by default the first time field
    that reads as a time (models.eventtime.event_time_ms).

    The result's `run` says how it was scored (model version, features, events matched,
    anomaly detections the cluster would emit, unlabeled events). See models/__init__.py for an
    example.
    """
    from models.eventtime import event_time_ms
    from models.registry import get_model
    from models.scorer import EntityScorer, ScorerConfig, warm_up

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    settings = config if config is not None else ScorerConfig()
    if model is not None:
        settings = replace(settings, model=model)
    if seed is not None:
        settings = replace(settings, seed=seed)
    get_model(settings.model)  # an unknown model or parameter: a clear ConfigError before any work
    started = time.perf_counter()
    warm_up(settings)  # as a worker does at start: latency figures are the steady state's
    recorder = RecordingScorer(EntityScorer(settings))
    run = ScoringRun(settings.model, recorder.scorer.model_label, settings.seed, settings.threshold,
                     settings.calibration_window, batch_size, recorder.scorer.names)
    labeler = _Labeler(labels, label_field, id_field, unlabeled_as_benign, run)
    match_of = _InStep(matched, "matched", lambda event: False)
    time_of = _InStep(times, "times", event_time_ms)
    batch: list[Mapping[str, Any]] = []
    batch_labels: list[Label | None] = []
    batch_times: list[int | None] = []
    batch_matched: list[bool] = []

    def flush() -> None:
        recorder.expect(batch_labels)
        scored = recorder.score_batch(batch, batch_times, batch_matched)
        run.anomalies += sum(len(event.alerts()) for event in scored)
        for part in (batch, batch_labels, batch_times, batch_matched):
            part.clear()

    for event in events:
        label, event = labeler(event)
        batch.append(event)
        batch_labels.append(label)
        batch_times.append(time_of(event))
        flag = bool(match_of(event))
        batch_matched.append(flag)
        run.matched += flag
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    match_of.finish(recorder.events)
    time_of.finish(recorder.events)
    labeler.finish(recorder.events)
    recorder.measure_state()
    rows: list[ScoredRow] = recorder.rows
    if labeler.none_at_all():  # no labels at all: say so, not "all benign"
        rows = [replace(row, label=None, attack=None) for row in rows]
    evaluation = evaluate_rows(rows, events=recorder.events, timings=recorder.timings, state_bytes=recorder.state_bytes,
                               state_measure="size of the EntityScorer's serialized state dict (what a checkpoint "
                               "stores), max of samples every 10,000 events and at the end",
                               threshold=settings.threshold, baseline=baseline, seed=settings.seed)
    run.events = recorder.events
    if run.unlabeled:
        evaluation.notes.append(f"{run.unlabeled} events had no label and are left out of the metrics")
    run.seconds = time.perf_counter() - started
    evaluation.run = run
    return evaluation


class _InStep:
    """A per-event argument: a function of the event, or an iterable consumed one item per event."""

    def __init__(self, given: Any, name: str, default: Callable[[Mapping[str, Any]], Any]) -> None:
        self.name = name
        self._items: Iterator[Any] | None = None
        if given is None:
            self._function = default
        elif callable(given):
            self._function = given
        else:
            self._items = iter(given)
            self._function = self._next

    def __call__(self, event: Mapping[str, Any]) -> Any:
        return self._function(event)

    def _next(self, event: Mapping[str, Any]) -> Any:
        assert self._items is not None
        try:
            return next(self._items)
        except StopIteration:
            raise ValueError(f"{self.name} ran out before the events did: one item per event") from None

    def finish(self, events: int) -> None:
        if self._items is not None and next(self._items, _END) is not _END:
            raise ValueError(f"{self.name} has more items than the {events} events: one item per event")


_END = object()


class _Labeler:
    """Each event's label (see `evaluate`), and the event without `label_field`."""

    def __init__(self, labels: Any, label_field: str | None, id_field: str, unlabeled_as_benign: bool,
                 run: ScoringRun) -> None:
        self.field = label_field
        self.id_field = id_field
        self.unlabeled_as_benign = unlabeled_as_benign
        self.run = run
        self.mapping: Mapping[str, LabelValue] | None = labels if isinstance(labels, Mapping) else None
        self.given = labels is not None
        self.in_step = _InStep(labels, "labels", lambda event: None) if self.given and self.mapping is None else None

    def __call__(self, event: Mapping[str, Any]) -> tuple[Label | None, Mapping[str, Any]]:
        from_field: Any = None
        if self.field is not None and self.field in event:
            from_field = event[self.field]
            event = {key: value for key, value in event.items() if key != self.field}  # never reaches the features
            self.run.label_field_seen = True
        if self.in_step is not None:
            label = _label(self.in_step(event))
        elif self.mapping is not None:
            key = event.get(self.id_field)
            value = self.mapping.get(str(key)) if key is not None else None
            label = _label(value) if value is not None else ((0, None) if self.unlabeled_as_benign else None)
        elif self.field is not None:
            # Absent is benign (and every label is dropped at the end if no event has the field).
            return _field_label(from_field), event
        else:
            return None, event
        if label is None:
            self.run.unlabeled += 1
        return label, event

    def none_at_all(self) -> bool:
        return not self.given and not self.run.label_field_seen

    def finish(self, events: int) -> None:
        if self.in_step is not None:
            self.in_step.finish(events)


def _label(value: Any) -> Label | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (1, value) if value else (0, None)
    if isinstance(value, (bool, int, np.bool_, np.integer)) and int(value) in (0, 1):
        return (int(value), None)
    raise ValueError(f"label {value!r}: expected True/False, 1/0, an attack's name or None (unlabeled)")


def _field_label(value: Any) -> Label:
    if value in (None, False, 0, "", "0", "false", "False"):
        return (0, None)
    return (1, value if isinstance(value, str) else str(value))


# ---------------------------------------------------------------- Shuttle


def evaluate_shuttle(model_name: str, limit: int | None = None, seed: int = 0, baseline: bool = True,
                     batch: int = 500) -> Evaluation:
    """Prequential (score, then learn, every row) run of the registry's estimator on River's
    bundled Shuttle data set (49,097 rows, 7% anomalies; no download), min-max scaled online.
    Scores are raw: ROC-AUC and PR-AUC only need their order.

    Rows go through the estimator's batch form `score_learn_many`, which by contract gives
    exactly the one-row-at-a-time scores (models/estimators/base.py), `batch` rows per call as
    in the cluster; latency is per call divided by its rows."""
    from river import datasets

    from models.registry import get_model

    spec = get_model(model_name)
    names = tuple(f"f{i}" for i in range(1, 10))
    estimator = _build_scaled(spec, names, seed)
    data = datasets.Shuttle()
    pairs = list(data.take(limit) if limit is not None else data)
    X = np.array([[float(x[n]) for n in names] for x, _ in pairs], dtype=np.float64)
    y = [int(label) for _, label in pairs]
    scores: list[np.ndarray] = []
    timings: list[Timing] = []
    done = 0
    while done < len(X):
        chunk = X[done:done + batch]
        started = time.perf_counter()
        # cutoff inf, max_learn huge: learn every row (River's prequential protocol); the call
        # may stop early at a window swap, so resume where it stopped.
        raw, _ = estimator.score_learn_many(chunk, np.ones(len(chunk), dtype=bool), math.inf, len(chunk))
        timings.append(Timing(len(raw), time.perf_counter() - started))
        scores.append(raw)
        done += len(raw)
    flat = np.concatenate(scores) if scores else np.zeros(0)
    rows = [ScoredRow(i, y[i], float(flat[i]), tuple(X[i].tolist())) for i in range(len(X))]
    state = len(serialization.dumps(estimator.state_dict()))
    return evaluate_rows(rows, events=len(rows), timings=timings, state_bytes=state,
                         state_measure="size of the estimator's serialized state dict", baseline=baseline, seed=seed)


def _build_scaled(spec: Any, names: tuple[str, ...], seed: int) -> Any:
    """Shuttle's raw sensor values span hundreds while the models assume [0, 1] features: the
    estimators take `scale=True` (River's online MinMaxScaler in front, as in River's own
    Shuttle example)."""
    if spec.kind != "shared":
        raise ConfigError(f"model {spec.name!r} is {spec.kind} (one feature of the cluster's entity rows); "
                          "Shuttle needs a model over all features, such as hst or loda")
    try:
        return replace(spec, params={**spec.params, "scale": True}).build(names, seed)
    except TypeError:
        raise ConfigError(f"model {spec.name!r} has no scale option; Shuttle needs min-max scaling") from None
