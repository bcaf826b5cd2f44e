"""Entity anomaly scoring: the hook a PartitionWorker calls once per batch.

Per event: its entities (models.entities), each entity's features from its history
(models.features, scored before they learn), then one shared model per entity type scores the
feature vector, a calibrator maps the raw score to [0, 1], and only then does the model learn,
and only from events that neither matched a Sigma rule nor scored as anomalous: a model that
learns the attacks it alerts on soon stops alerting on them.

Scores do not depend on how the stream is cut into batches (estimators and the calibrator swap
their reference windows at exact row counts; see models/estimators/base.py), so a replay, a
restored checkpoint and the live run give the same scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.calibration import QuantileCalibrator
from models.entities import DEFAULT_ENTITY_FIELDS, Entity, extract_entities
from models.estimators.base import Estimator
from models.features import DEFAULT_FEATURES, Feature, View, World, feature_names
from models.features.categories import event_category
from models.registry import get_model
from models.estimators.sad import sad_learn, sad_score
from models.state import EntityState, EntityTable


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    model: str = "hst"
    seed: int = 0
    threshold: float = 0.995  # calibrated score at which an entity is anomalous
    calibration_window: int = 2000
    max_entities: int = 200_000
    ttl_ms: int = 7 * 24 * 3600 * 1000
    entity_fields: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ENTITY_FIELDS))
    explain_top: int = 3
    # An entity that stays anomalous raises one anomaly detection per cooldown (event time), not
    # one per event: the correlator dedups further, but a burst should not flood the topic.
    alert_cooldown_ms: int = 300_000


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a setattr per field, per entity
class EntityScore:
    entity: str  # "type:key"
    entity_type: str
    score: float  # calibrated, [0, 1]
    raw: float
    vector: list[float]  # the feature values, in the order of `names`
    names: tuple[str, ...]
    anomalous: bool
    alert: bool = False  # anomalous, and the first time within the cooldown: emit a detection
    reasons: tuple[str, ...] = ()  # the features furthest from this entity type's usual values

    @property
    def features(self) -> dict[str, float]:
        return dict(zip(self.names, self.vector))


@dataclass(frozen=True, slots=True)
class EventScores:
    entities: list[EntityScore]
    shadow: dict[str, float] = field(default_factory=dict)  # entity -> the shadow model's score

    @property
    def max_score(self) -> float:
        return max((e.score for e in self.entities), default=0.0)

    def as_dict(self) -> dict[str, float]:
        return {e.entity: round(e.score, 6) for e in self.entities}


class _TypeModel:
    """One entity type's estimator, calibrator and the reference statistics for explanations."""

    def __init__(self, estimator: Estimator, calibration_window: int) -> None:
        self.estimator = estimator
        self.calibrator = QuantileCalibrator(window=calibration_window)
        names = len(estimator.feature_names)
        # Feature means/stds of the last completed calibration window: frozen between swaps, so
        # explanations, like scores, do not depend on batching.
        self.mean = np.zeros(names)
        self.std = np.ones(names)
        self._sum = np.zeros(names)
        self._sum_sq = np.zeros(names)
        self._n = 0


class ModelSlot:
    """A model version: the spec it was built from and its per-entity-type state."""

    def __init__(self, spec_name: str, version: int, seed: int, calibration_window: int, names: tuple[str, ...]) -> None:
        self.spec_name = spec_name
        self.version = version
        self.seed = seed
        self.calibration_window = calibration_window
        self.names = names
        self.spec = get_model(spec_name)
        self.types: dict[str, _TypeModel] = {}

    @property
    def label(self) -> str:
        return f"{self.spec_name}@{self.version}"

    @property
    def state_keys(self) -> tuple[str, str, str]:
        keys = self.__dict__.get("_keys")
        if keys is None:
            keys = self.__dict__["_keys"] = (f"{self.label}:n", f"{self.label}:mean", f"{self.label}:m2")
        return keys

    def for_type(self, entity_type: str) -> _TypeModel:
        model = self.types.get(entity_type)
        if model is None:
            # One seed per entity type, derived deterministically (str hash is salted per process).
            offset = sum(entity_type.encode())
            model = _TypeModel(self.spec.build(self.names, self.seed + offset), self.calibration_window)
            self.types[entity_type] = model
        return model


@dataclass(slots=True)
class _Row:
    event: int
    position: int  # the entity's place in the event (results keep extraction order)
    entity: Entity
    features: list[float]
    state: EntityState


class EntityScorer:
    """Scores every entity of every event, then learns; see the module docstring."""

    def __init__(self, config: ScorerConfig | None = None, features: tuple[Feature, ...] = DEFAULT_FEATURES) -> None:
        self.config = config or ScorerConfig()
        self.features = features
        self.names = feature_names(features)
        self.table = EntityTable(self.config.max_entities, self.config.ttl_ms)
        self.world = World()
        self.active = ModelSlot(self.config.model, 1, self.config.seed, self.config.calibration_window, self.names)
        self.shadow: ModelSlot | None = None
        self.last_time_ms = 0
        self.events_seen = 0
        self.skipped_no_time = 0

    # ---------------------------------------------------------------- model versions

    @property
    def model_label(self) -> str:
        return self.active.label

    @property
    def shadow_label(self) -> str | None:
        return self.shadow.label if self.shadow else None

    def start_shadow(self, spec_name: str) -> str:
        """A candidate that scores and learns beside the active model; its scores go to the
        shadow topic only. Promote it once it looks better."""
        version = max(self.active.version, self.shadow.version if self.shadow else 0) + 1
        self.shadow = ModelSlot(spec_name, version, self.config.seed, self.config.calibration_window, self.names)
        return self.shadow.label

    def promote(self) -> str:
        """The shadow becomes active; the old active keeps learning as the shadow (rollback)."""
        if self.shadow is None:
            raise ValueError("no shadow model to promote")
        self.active, self.shadow = self.shadow, self.active
        return self.active.label

    def rollback(self) -> str:
        return self.promote()

    # ---------------------------------------------------------------- scoring

    def features_of(
        self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None]
    ) -> tuple[dict[str, list[_Row]], list[int]]:
        """Entities and their features (each feature scored, then learned), grouped by entity type."""
        rows_by_type: dict[str, list[_Row]] = {}
        times: list[int] = []
        for index, (event, time_ms) in enumerate(zip(events, times_ms)):
            if time_ms is None:
                # No event time: features would need the wall clock. Counted, carried on with the
                # stream's last time so the entity still counts.
                self.skipped_no_time += 1
                time_ms = self.last_time_ms
            elif time_ms > self.last_time_ms:
                self.last_time_ms = time_ms
            self.events_seen += 1
            times.append(time_ms)
            category = event_category(event)
            shared: dict[str, Any] = {}
            view = View(event, time_ms, None, None, self.world, category, True, shared)  # type: ignore[arg-type]
            for position, entity in enumerate(extract_entities(event, self.config.entity_fields)):
                state = self.table.touch(entity.id, time_ms)
                view.entity, view.state, view.first = entity, state, position == 0
                values: list[float] = []
                for feature in self.features:
                    values += feature.step(view)
                state.count += 1
                if time_ms > state.last_ms:
                    state.last_ms = time_ms
                rows_by_type.setdefault(entity.type, []).append(_Row(index, position, entity, values, state))
        return rows_by_type, times

    def score_batch(
        self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None], matched: Sequence[bool]
    ) -> list[EventScores]:
        rows_by_type, times = self.features_of(events, times_ms)
        allowed = np.asarray([not m for m in matched], dtype=bool)
        results: list[list[EntityScore]] = [[] for _ in events]
        for rows in rows_by_type.values():
            for row in rows:
                results[row.event].append(None)  # type: ignore[arg-type]  # a slot per entity, filled below
        shadows: list[dict[str, float]] = [{} for _ in events]
        for entity_type, rows in rows_by_type.items():
            X = np.array([r.features for r in rows], dtype=np.float64)
            allow = allowed[[r.event for r in rows]]
            scores, raws, anomalous = self._run(self.active, entity_type, X, allow, rows)
            if self.shadow is not None:
                shadow_scores, _, _ = self._run(self.shadow, entity_type, X, allow, rows)
                for row, score in zip(rows, shadow_scores):
                    shadows[row.event][row.entity.id] = round(float(score), 6)
            model = self.active.for_type(entity_type)
            names = self.names
            for i, (row, score, raw, flag) in enumerate(zip(rows, scores.tolist(), raws.tolist(), anomalous.tolist())):
                if flag:
                    alert = self._first_in_cooldown(row.entity.id, times[row.event])
                    reasons = self._reasons(model, X[i])
                else:
                    alert, reasons = False, ()
                results[row.event][row.position] = EntityScore(row.entity.id, entity_type, score, raw, row.features,
                                                               names, flag, alert, reasons)
        return [EventScores(r, s) for r, s in zip(results, shadows)]

    def _run(self, slot: ModelSlot, entity_type: str, X: np.ndarray, allow: np.ndarray,
             rows: list[_Row]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores then learns the rows in order, cut where the calibrator's window swaps.

        The calibrator sees every score, alerts included: it estimates the score distribution,
        and if it skipped the top scores its reference would shrink window after window (each
        threshold cutting the next reference short). Only the model skips what is alerted on."""
        threshold = self.config.threshold
        model = slot.for_type(entity_type)
        calibrated: list[np.ndarray] = []
        raws: list[np.ndarray] = []
        start = 0
        while start < len(X):
            calibrator = model.calibrator
            end = start + calibrator.remaining()
            if slot.spec.kind == "univariate":
                raw, learned = self._per_entity(slot, X[start:end], allow[start:end], rows[start:end],
                                                calibrator.cutoff(threshold))
            else:
                raw, learned = model.estimator.score_learn_many(X[start:end], allow[start:end],
                                                                 calibrator.cutoff(threshold), len(X))
            done = len(raw)
            calibrated.append(calibrator.calibrate_many(raw))
            raws.append(raw)
            kept = X[start:start + done][learned]
            if len(kept):
                model._sum += kept.sum(axis=0)
                model._sum_sq += (kept * kept).sum(axis=0)
                model._n += len(kept)
            swaps = done >= calibrator.remaining()
            calibrator.learn_many(raw)
            if swaps:  # the calibrator's reference changed just now: explanations follow it
                self._freeze_stats(model)
            start += done
        score = np.concatenate(calibrated) if calibrated else np.zeros(0)
        raw_all = np.concatenate(raws) if raws else np.zeros(0)
        return score, raw_all, score >= threshold

    def _per_entity(self, slot: ModelSlot, X: np.ndarray, allow: np.ndarray, rows: list[_Row],
                    cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """A univariate spec (SAD): one tiny state per entity, kept in the entity's own values."""
        column = self.names.index(slot.spec.params["feature"])
        keys = slot.state_keys  # shared key strings: an entity's dict holds no copy of them
        raw = np.empty(len(X))
        learned = np.zeros(len(X), dtype=bool)
        for i, (row, value) in enumerate(zip(rows, X[:, column].tolist())):
            values = row.state.values
            state = (values.get(keys[0], 0.0), values.get(keys[1], 0.0), values.get(keys[2], 0.0))
            # Too little history says nothing yet: score 0 until a few values are learned.
            raw[i] = sad_score(state, value) if state[0] >= 3 else 0.0
            if allow[i] and raw[i] < cutoff:
                values[keys[0]], values[keys[1]], values[keys[2]] = sad_learn(state, value)
                learned[i] = True
        return raw, learned

    def _first_in_cooldown(self, entity: str, time_ms: int) -> bool:
        state = self.table.get(entity)
        if state is None:
            return True
        last = state.values.get("alert_ms")
        if last is not None and 0 <= time_ms - last < self.config.alert_cooldown_ms:
            return False
        state.values["alert_ms"] = float(time_ms)
        return True

    @staticmethod
    def _freeze_stats(model: _TypeModel) -> None:
        if model._n:
            mean = model._sum / model._n
            model.mean = mean
            model.std = np.sqrt(np.maximum(model._sum_sq / model._n - mean * mean, 1e-6))
        model._sum[:] = 0
        model._sum_sq[:] = 0
        model._n = 0

    def _reasons(self, model: _TypeModel, vector: np.ndarray) -> tuple[str, ...]:
        z = (vector - model.mean) / model.std
        top = np.argsort(-np.abs(z))[: self.config.explain_top]
        return tuple(f"{self.names[i]}={vector[i]:.2f} (usually {model.mean[i]:.2f}"
                     + (f" ± {model.std[i]:.2f})" if model.std[i] >= 0.005 else ")")
                     for i in top if abs(z[i]) >= 1.0)
