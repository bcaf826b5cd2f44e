"""Entity anomaly scoring: the hook a PartitionWorker calls once per batch.

Per event: its entities (models.entities), each entity's features from its history
(models.features, scored before they learn), then one shared model per entity type scores the
feature vector, a calibrator maps the raw score to [0, 1], and only then does the model learn,
and only from events that neither matched a Sigma rule nor scored as anomalous: a model that
learns the attacks it alerts on soon stops alerting on them.

Scores do not depend on how the stream is cut into batches (estimators and the calibrator swap
their reference windows at exact row counts; see models/estimators/base.py), so a replay, a
restored checkpoint and the live run give the same scores.

A checkpoint holds `EntityScorer.state_dict()`: plain data (models/serialization.py) with a
`"version"` (models/migrations.py), never the scorer object itself. `from_state_dict(config,
state)` restores it: the state brings what was learned and which model versions run (active and
shadow, as promoted); the config brings the rest (threshold, entity fields, cooldown, caps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.errors import ConfigError
from detectors.routing import LogsourceMapping
from models.calibration import QuantileCalibrator
from models.entities import DEFAULT_ENTITY_FIELDS, Entity, EntityMapping, EntityRule, extract_entities
from models.estimators.base import Estimator
from models.estimators.sad import sad_score_learn_slots
from models.eventtime import MAX_TIME_MS, MIN_TIME_MS, sane_time_ms
from models.features import DEFAULT_FEATURES, Feature, feature_names
from models.features.categories import CATEGORY_INDEX, event_category
from models.migrations import STATE_VERSION, upgrade
from models.registry import estimator_from_state_dict, get_model
from models.state import EntityTable


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    model: str = "hst"
    seed: int = 0
    threshold: float = 0.995  # calibrated score at which an entity is anomalous
    calibration_window: int = 2000
    max_entities: int = 200_000
    ttl_ms: int = 7 * 24 * 3600 * 1000
    entity_fields: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_ENTITY_FIELDS))
    entity_rules: tuple[EntityRule, ...] = ()  # per Sigma logsource, over entity_fields
    logsource_mapping: str = ""  # the engine's logsource mapping YAML, for entity_rules; "" = built-in Windows
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
        return dict(zip(self.names, self.vector, strict=True))


class BatchScores(Sequence["EventScores"]):
    """The scores of a batch, one EventScores per event, kept as arrays over the batch's entity
    rows (rows of one event are contiguous, in extraction order) and read out on demand: a
    worker reads every event's score dict but builds EntityScore objects only for alerts."""

    __slots__ = ("offsets", "entities", "types", "scores", "raws", "X", "names", "anomalous", "alerts",
                 "reasons", "shadow")

    def __init__(self, offsets: list[int], entities: list[Entity], scores: np.ndarray, raws: np.ndarray,
                 X: np.ndarray, names: tuple[str, ...], anomalous: np.ndarray, alerts: dict[int, tuple[str, ...]],
                 shadow: np.ndarray | None) -> None:
        self.offsets = offsets  # event i's rows: offsets[i]:offsets[i + 1]
        self.entities = entities
        self.scores = scores
        self.raws = raws
        self.X = X
        self.names = names
        self.anomalous = anomalous
        self.alerts = alerts  # row -> reasons, for rows that raise an anomaly detection
        self.shadow = shadow

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> EventScores:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return EventScores(self, self.offsets[index], self.offsets[index + 1])

    def entity_score(self, row: int) -> EntityScore:
        entity = self.entities[row]
        alert = row in self.alerts
        return EntityScore(entity.id, entity.type, float(self.scores[row]), float(self.raws[row]),
                           self.X[row].tolist(), self.names, bool(self.anomalous[row]), alert,
                           self.alerts[row] if alert else ())


class EventScores:
    """One event's entity scores (a view into its batch's BatchScores)."""

    __slots__ = ("_batch", "_start", "_end")

    def __init__(self, batch: BatchScores, start: int, end: int) -> None:
        self._batch, self._start, self._end = batch, start, end

    @property
    def entities(self) -> list[EntityScore]:
        return [self._batch.entity_score(row) for row in range(self._start, self._end)]

    def alerts(self) -> list[EntityScore]:
        """The entities of this event that raise an anomaly detection."""
        alerts = self._batch.alerts
        return [self._batch.entity_score(r) for r in range(self._start, self._end) if r in alerts] if alerts else []

    @property
    def shadow(self) -> dict[str, float]:
        """entity -> the shadow model's score ({} without a shadow model)."""
        batch = self._batch
        if batch.shadow is None:
            return {}
        return {batch.entities[r].id: round(float(batch.shadow[r]), 6) for r in range(self._start, self._end)}

    @property
    def max_score(self) -> float:
        return float(self._batch.scores[self._start:self._end].max()) if self._end > self._start else 0.0

    def as_dict(self) -> dict[str, float]:
        batch = self._batch
        return {batch.entities[r].id: round(float(batch.scores[r]), 6) for r in range(self._start, self._end)}


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

    def state_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator.state_dict(), "calibrator": self.calibrator.state_dict(),
                "mean": self.mean.copy(), "std": self.std.copy(), "sum": self._sum.copy(), "sum_sq": self._sum_sq.copy(),
                "n": self._n}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> _TypeModel:
        model = cls.__new__(cls)
        model.estimator = estimator_from_state_dict(state["estimator"])
        model.calibrator = QuantileCalibrator.from_state_dict(state["calibrator"])
        width = len(model.estimator.feature_names)
        model.mean, model.std, model._sum, model._sum_sq = (np.array(state[k], dtype=np.float64).reshape(width)
                                                            for k in ("mean", "std", "sum", "sum_sq"))
        model._n = int(state["n"])
        return model


class ModelSlot:
    """A model version: the spec it was built from and its per-entity-type state."""

    def __init__(self, spec_name: str, version: int, seed: int, calibration_window: int, names: tuple[str, ...]) -> None:
        self.spec_name = spec_name
        self.version = version
        self.seed = seed
        self.calibration_window = calibration_window
        self.names = names
        self.spec = get_model(spec_name)
        if self.spec.kind == "univariate" and self.spec.params.get("feature") not in names:
            raise ConfigError(f"model {spec_name!r}: no feature {self.spec.params.get('feature')!r} "
                              f"(features: {', '.join(names)})")
        self.types: dict[str, _TypeModel] = {}

    @property
    def label(self) -> str:
        return f"{self.spec_name}@{self.version}"

    def for_type(self, entity_type: str) -> _TypeModel:
        model = self.types.get(entity_type)
        if model is None:
            # One seed per entity type, derived deterministically (str hash is salted per process).
            offset = sum(entity_type.encode())
            model = _TypeModel(self.spec.build(self.names, self.seed + offset), self.calibration_window)
            self.types[entity_type] = model
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"spec": self.spec_name, "model_version": self.version, "seed": self.seed,
                "calibration_window": self.calibration_window,
                "types": {entity_type: model.state_dict() for entity_type, model in self.types.items()}}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], names: tuple[str, ...]) -> ModelSlot:
        slot = cls(state["spec"], int(state["model_version"]), int(state["seed"]), int(state["calibration_window"]), names)
        for entity_type, model in state["types"].items():
            restored = _TypeModel.from_state_dict(model)
            if restored.estimator.feature_names != names:
                raise ValueError(f"model {slot.label} for {entity_type} reads features "
                                 f"{', '.join(restored.estimator.feature_names)}, the scorer has {', '.join(names)}")
            slot.types[entity_type] = restored
        return slot


@dataclass(slots=True)
class Rows:
    """A batch's entity rows, in stream order (an event's entities together, in extraction order)."""

    offsets: list[int]  # event i's rows: offsets[i]:offsets[i + 1]
    entities: list[Entity]
    slot: np.ndarray  # int64: the entity's row in the state arrays
    event: np.ndarray  # int64: the event's index in the batch
    entity_type: np.ndarray  # int64: index into EntityScorer.types
    X: np.ndarray  # (rows, features): each entity's features before this event
    times_ms: list[int]


class EntityScorer:
    """Scores every entity of every event, then learns; see the module docstring.

    Examples
    --------

    >>> from models.datasets.generator import generate
    >>> from models.eventtime import event_time_ms
    >>> events = list(generate(300, seed=1, attack_share=0.0))
    >>> times = [event_time_ms(e) for e in events]
    >>> config = ScorerConfig(model="hst", calibration_window=50)
    >>> scorer = EntityScorer(config)
    >>> _ = scorer.score_batch(events[:200], times[:200], [False] * 200)

    A checkpoint is the state dict; restoring it and going on gives the uninterrupted scores:

    >>> state = scorer.state_dict()
    >>> state["version"], sorted(state["active"]["types"])
    (2, ['dst_ip', 'host', 'process', 'src_ip', 'user'])
    >>> restored = EntityScorer.from_state_dict(config, state)
    >>> tail = [r.as_dict() for r in restored.score_batch(events[200:], times[200:], [False] * 100)]
    >>> tail == [r.as_dict() for r in scorer.score_batch(events[200:], times[200:], [False] * 100)]
    True
    """

    def __init__(self, config: ScorerConfig | None = None, features: tuple[Feature, ...] = DEFAULT_FEATURES) -> None:
        self.config = config or ScorerConfig()
        self.features = features
        self.names = feature_names(features)
        routing = LogsourceMapping.from_yaml(self.config.logsource_mapping) if self.config.logsource_mapping else None
        self.entity_mapping = EntityMapping(self.config.entity_fields, self.config.entity_rules, routing)
        self.types = self.entity_mapping.types
        self._type_index = {name: i for i, name in enumerate(self.types)}
        self.table = EntityTable(self.config.max_entities, self.config.ttl_ms)
        # Per feature: its per-entity state (one row per table slot) and its shared world state.
        self.states = [np.zeros((0, f.state), dtype=f.state_dtype) for f in features]
        self.worlds = [np.zeros(f.world, dtype=f.world_dtype) for f in features]
        self.model_states: dict[str, np.ndarray] = {}  # per-entity model state (univariate specs), by label
        self.active = ModelSlot(self.config.model, 1, self.config.seed, self.config.calibration_window, self.names)
        self.shadow: ModelSlot | None = None
        self.last_alert_ms: dict[str, int] = {}
        self.last_time_ms = 0
        self.events_seen = 0
        self.skipped_no_time = 0
        self.feature_errors: dict[str, int] = {}  # feature -> events whose `extract` failed (inputs 0.0)
        self.last_feature_error = ""

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
        if self.shadow is not None:
            self.model_states.pop(self.shadow.label, None)
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

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything the scorer has learned, as plain data (models/serialization.py), with the
        layout's `"version"` (models/migrations.py).

        The per-entity arrays are views of the scorer's own (a checkpoint of 200,000 entities
        should not be copied once more before it is written): serialize the dict before the
        scorer scores again, or deep-copy it to keep it.
        """
        size = self.table.size
        return {
            "version": STATE_VERSION,
            "features": [{"name": f.name, "outputs": list(f.outputs), "state": state[:size], "world": world}
                         for f, state, world in zip(self.features, self.states, self.worlds, strict=True)],
            "table": self.table.state_dict(),
            "model_states": {label: array[:size] for label, array in self.model_states.items()},
            "active": self.active.state_dict(),
            "shadow": self.shadow.state_dict() if self.shadow is not None else None,
            "last_alert_ms": dict(self.last_alert_ms),
            "last_time_ms": self.last_time_ms,
            "events_seen": self.events_seen,
            "skipped_no_time": self.skipped_no_time,
            "feature_errors": dict(self.feature_errors),
            "last_feature_error": self.last_feature_error,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replaces what this scorer has learned with `state` (copied: the two never share
        memory). An older layout is migrated; one this version does not know is refused
        (models.migrations.UnsupportedStateVersion), as is a state of other features."""
        state = upgrade(dict(state))
        saved = [(f["name"], tuple(f["outputs"])) for f in state["features"]]
        ours = [(f.name, f.outputs) for f in self.features]
        if saved != ours:
            raise ValueError(f"the state was learned with features {', '.join(n for n, _ in saved)}; this scorer "
                             f"computes {', '.join(n for n, _ in ours)}: a state only fits the features it was built with")
        table = EntityTable(self.config.max_entities, self.config.ttl_ms)
        table.load_state_dict(state["table"])
        states, worlds = [], []
        for feature, saved_feature in zip(self.features, state["features"], strict=True):
            array = np.array(saved_feature["state"], dtype=feature.state_dtype)
            world = np.array(saved_feature["world"], dtype=feature.world_dtype)
            if array.shape != (table.size, feature.state) or world.shape != tuple(feature.world):
                raise ValueError(f"feature {feature.name}: state of shape {array.shape} and {world.shape} "
                                 f"for {table.size} entity slots")
            states.append(array)
            worlds.append(world)
        model_states = {label: np.array(array, dtype=np.float64) for label, array in state["model_states"].items()}
        if any(array.shape != (table.size, 3) for array in model_states.values()):
            raise ValueError(f"per-entity model state not of shape ({table.size}, 3)")
        active = ModelSlot.from_state_dict(state["active"], self.names)
        shadow = ModelSlot.from_state_dict(state["shadow"], self.names) if state["shadow"] is not None else None
        # All checked: only now does the scorer change (a refused state leaves it as it was).
        self.table, self.states, self.worlds, self.model_states = table, states, worlds, model_states
        self.active, self.shadow = active, shadow
        self.last_alert_ms = {str(k): int(v) for k, v in state["last_alert_ms"].items()}
        self.last_time_ms = int(state["last_time_ms"])
        self.events_seen = int(state["events_seen"])
        self.skipped_no_time = int(state["skipped_no_time"])
        self.feature_errors = {str(k): int(v) for k, v in state["feature_errors"].items()}
        self.last_feature_error = str(state["last_feature_error"])

    @classmethod
    def from_state_dict(cls, config: ScorerConfig | None, state: Mapping[str, Any],
                        features: tuple[Feature, ...] = DEFAULT_FEATURES) -> EntityScorer:
        """A scorer with `config` and `features` that has learned what `state` holds."""
        scorer = cls(config, features)
        scorer.load_state_dict(state)
        return scorer

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling goes through the state dict too: one description of the state, not two.
        return _unpickle, (type(self), self.config, self.features, self.state_dict())

    # ---------------------------------------------------------------- features

    def features_of(self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None]) -> Rows:
        """Entities and their features (each feature scored, then learned), in stream order.

        Plain Python once per event (entities, category, each feature's `extract`), then each
        feature's compiled kernel once over all the batch's entity rows."""
        if len(events) != len(times_ms):  # checked first: a mismatch found mid-batch would leave half a batch learned
            raise ValueError(f"{len(events)} events but {len(times_ms)} times")
        table = self.table
        touch = table.touch
        fields_for = self.entity_mapping.fields_for
        type_index = self._type_index
        extracts: list[tuple[Feature, list[tuple[float, ...]], tuple[float, ...]]] = [
            (f, [], (0.0,) * f.inputs) for f in self.features if f.extract is not None]
        offsets = [0]
        entities: list[Entity] = []
        slots: list[int] = []
        rows_event: list[int] = []
        firsts: list[bool] = []
        rows_type: list[int] = []
        categories: list[int] = []
        times: list[int] = []
        for index, (event, time_ms) in enumerate(zip(events, times_ms, strict=False)):  # lengths checked above
            if time_ms is not None and (time_ms.__class__ is not int or not MIN_TIME_MS <= time_ms <= MAX_TIME_MS):
                # A time outside 1970..2500 (or not an integer) is no time: it would overflow the
                # int64 arrays below, or move the stream's clock (and every TTL) to year 99999.
                time_ms = sane_time_ms(time_ms)
            if time_ms is None:
                # No event time: features would need the wall clock. Counted, carried on with the
                # stream's last time so the entity still counts.
                self.skipped_no_time += 1
                time_ms = self.last_time_ms
            elif time_ms > self.last_time_ms:
                self.last_time_ms = time_ms
            times.append(time_ms)
            category = event_category(event)
            categories.append(CATEGORY_INDEX[category])
            found = extract_entities(event, fields_for(event))
            if found:
                first = True
                for entity in found:
                    entities.append(entity)
                    slots.append(touch(entity.id, time_ms))
                    rows_event.append(index)
                    firsts.append(first)
                    rows_type.append(type_index[entity.type])
                    first = False
                for feature, values, nothing in extracts:
                    try:
                        got = feature.extract(event, category)  # type: ignore[misc]
                        if len(got) != feature.inputs:
                            raise ValueError(f"returned {len(got)} values, declares {feature.inputs}")
                    except Exception as error:  # a feature's bug skips its inputs (counted), not the batch
                        errors = self.feature_errors
                        errors[feature.name] = errors.get(feature.name, 0) + 1
                        self.last_feature_error = f"{feature.name}: {type(error).__name__}: {error}"
                        got = nothing
                    values.append(got)
            else:
                for _, values, nothing in extracts:
                    values.append(nothing)
            offsets.append(len(entities))
        self.events_seen += len(times)
        slot = np.asarray(slots, dtype=np.int64)
        event_of_row = np.asarray(rows_event, dtype=np.int64)
        X = np.zeros((len(slots), len(self.names)))
        if slots:
            self._grow(table.size)
            if table.fresh:
                fresh = np.asarray(table.fresh, dtype=np.int64)
                for array in (*self.states, *self.model_states.values()):
                    array[fresh] = 0
            first_arr = np.asarray(firsts, dtype=np.bool_)
            time_arr = np.asarray(times, dtype=np.int64)
            category_arr = np.asarray(categories, dtype=np.int64)
            inputs = iter([np.asarray(values, dtype=np.float64) for _, values, _ in extracts])
            no_inputs = np.zeros((len(times), 0))
            column = 0
            for feature, state, world in zip(self.features, self.states, self.worlds, strict=True):
                width = len(feature.outputs)
                feature.kernel(slot, event_of_row, first_arr, time_arr, category_arr,
                               next(inputs) if feature.extract is not None else no_inputs, state, world,
                               X[:, column:column + width])
                column += width
        table.end_batch()
        return Rows(offsets, entities, slot, event_of_row, np.asarray(rows_type, dtype=np.int64), X, times)

    def _grow(self, size: int) -> None:
        """State arrays with at least `size` rows."""
        ceiling = self.table.max_entities + 4_096
        self.states = [_grown(array, size, ceiling) for array in self.states]
        self.model_states = {label: _grown(array, size, ceiling) for label, array in self.model_states.items()}

    # ---------------------------------------------------------------- scoring

    def score_batch(
        self, events: Sequence[Mapping[str, Any]], times_ms: Sequence[int | None], matched: Sequence[bool]
    ) -> BatchScores:
        if len(matched) != len(events):
            raise ValueError(f"{len(events)} events but {len(matched)} matched flags")
        rows = self.features_of(events, times_ms)
        n = len(rows.entities)
        scores = np.zeros(n)
        raws = np.zeros(n)
        anomalous = np.zeros(n, dtype=bool)
        shadow = np.zeros(n) if self.shadow is not None else None
        alerts: dict[int, tuple[str, ...]] = {}
        if n:
            allowed = np.asarray([not m for m in matched], dtype=bool)[rows.event]
            for type_id in np.unique(rows.entity_type).tolist():
                entity_type = self.types[type_id]
                idx = np.flatnonzero(rows.entity_type == type_id)
                X = rows.X[idx]
                allow = allowed[idx]
                slots = rows.slot[idx]
                score, raw, flag = self._run(self.active, entity_type, X, allow, slots)
                scores[idx], raws[idx], anomalous[idx] = score, raw, flag
                if shadow is not None:
                    shadow[idx] = self._run(self.shadow, entity_type, X, allow, slots)[0]  # type: ignore[arg-type]
                if flag.any():
                    model = self.active.for_type(entity_type)
                    for i in np.flatnonzero(flag).tolist():
                        row = int(idx[i])
                        if self._first_in_cooldown(rows.entities[row].id, rows.times_ms[rows.event[row]]):
                            alerts[row] = self._reasons(model, X[i])
        return BatchScores(rows.offsets, rows.entities, scores, raws, rows.X, self.names, anomalous, alerts, shadow)

    def _run(self, slot: ModelSlot, entity_type: str, X: np.ndarray, allow: np.ndarray,
             slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
                raw, learned = self._per_entity(slot, X[start:end], allow[start:end], slots[start:end],
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

    def _per_entity(self, slot: ModelSlot, X: np.ndarray, allow: np.ndarray, slots: np.ndarray,
                    cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """A univariate spec (SAD): three floats per entity, in a state array beside the features'."""
        states = self.model_states.get(slot.label)
        if states is None:
            states = self.model_states[slot.label] = np.zeros((max(self.table.size, 64), 3))
        column = self.names.index(slot.spec.params["feature"])
        raw = np.empty(len(X))
        learned = np.empty(len(X), dtype=np.bool_)
        # Too little history says nothing yet: score 0 until 3 values are learned.
        sad_score_learn_slots(slots, np.ascontiguousarray(X[:, column]), np.ascontiguousarray(allow), cutoff,
                              3.0, states, raw, learned)
        return raw, learned

    def _first_in_cooldown(self, entity: str, time_ms: int) -> bool:
        alerted = self.last_alert_ms
        last = alerted.get(entity)
        if last is not None and 0 <= time_ms - last < self.config.alert_cooldown_ms:
            return False
        if len(alerted) >= 10_000:  # forget cooldowns that are over: bounded whatever the stream
            for key in [k for k, t in alerted.items() if not 0 <= time_ms - t < self.config.alert_cooldown_ms]:
                del alerted[key]
        alerted[entity] = time_ms
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


def _unpickle(cls: type[EntityScorer], config: ScorerConfig, features: tuple[Feature, ...],
              state: Mapping[str, Any]) -> EntityScorer:
    return cls.from_state_dict(config, state, features)


def _grown(array: np.ndarray, size: int, ceiling: int) -> np.ndarray:
    """`array` with at least `size` rows: grown by half (amortized copies, at most a third of
    the rows unused), never much past the table's cap."""
    if len(array) >= size:
        return array
    grown = np.zeros((max(size, min(len(array) + len(array) // 2, ceiling), 1_024), *array.shape[1:]),
                     dtype=array.dtype)
    grown[:len(array)] = array
    return grown


def check_model(name: str, names: tuple[str, ...] | None = None) -> None:
    """Raises ConfigError unless `name` is a registered spec whose parameters (and, for a
    univariate spec, whose feature among `names`, the default features by default) exist."""
    ModelSlot(name, 0, 0, 1, names if names is not None else feature_names())


_WARM_UP_EVENTS = (
    {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "warm-up", "User": "W\\warm",
     "Image": "C:\\w.exe", "ParentImage": "C:\\p.exe", "CommandLine": "w.exe /warm"},
    {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 3, "Computer": "warm-up",
     "DestinationIp": "10.0.0.1", "DestinationPort": 443, "Image": "C:\\w.exe"},
    {"Channel": "Security", "EventID": 4625, "Computer": "warm-up", "TargetUserName": "warm", "LogonType": 3,
     "IpAddress": "10.0.0.2"},
)


def warm_up(config: ScorerConfig, models: Sequence[str] = ()) -> None:
    """Loads every compiled loop (features, and the models named) before the first real batch:
    a worker pays it at start, not as a latency spike on live events."""
    for name in dict.fromkeys((config.model, *models)):
        scorer = EntityScorer(ScorerConfig(model=name, calibration_window=2, entity_fields=config.entity_fields,
                                           entity_rules=config.entity_rules))
        events = list(_WARM_UP_EVENTS) * 4
        scorer.score_batch(events, [1_000 * i for i in range(len(events))], [False] * len(events))
