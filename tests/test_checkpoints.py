"""Checkpoint files (cluster/state/checkpoints.py) and the partitions restored from them
(cluster/state/partition_models.py): plain data with two versions, an old or unknown one refused
with a logged error and a fresh start, and a restored partition that scores as if never stopped."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from cluster.config import config_from_dict
from cluster.state.checkpoints import FORMAT, MAGIC, Checkpoint, CheckpointFormatError, CheckpointStore, decode, encode
from cluster.state.partition_models import PartitionModels
from models import serialization
from models.datasets.generator import generate
from models.eventtime import event_time_ms
from models.migrations import STATE_VERSION
from models.scorer import EntityScorer

PARTITION = ("events", 0)
RAN: list[str] = []


class _Planted:
    """What a planted pickle would run on load: it must never run."""

    def __reduce__(self) -> tuple[Any, ...]:
        return RAN.append, ("code from a checkpoint file",)


def _models(tmp_path: Path, **settings: Any) -> PartitionModels:
    config = config_from_dict({"models": {"checkpoint_url": str(tmp_path / "checkpoints"), "calibration_window": 200,
                                          **settings}})
    return PartitionModels(config.models, "group")


def _feed(scorer: EntityScorer, events: list[dict[str, Any]]) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for start in range(0, len(events), 250):
        chunk = events[start:start + 250]
        out.extend(r.as_dict() for r in scorer.score_batch(chunk, [event_time_ms(e) for e in chunk], [False] * len(chunk)))
    return out


def _path(models: PartitionModels) -> Path:
    return Path(models.store._path(*PARTITION))


def test_a_file_is_a_header_line_then_plain_data() -> None:
    scorer = EntityScorer()
    _feed(scorer, list(generate(200, seed=1, attack_share=0.0)))
    data = encode(Checkpoint(1234, scorer.state_dict(), "rules-v7"))
    assert data.startswith(MAGIC + b" %d\n" % FORMAT)
    back = decode(data)
    assert (back.offset, back.ruleset_version, back.state["version"]) == (1234, "rules-v7", STATE_VERSION)
    body = data.partition(b"\n")[2]
    assert b"models.scorer" not in body and b"numpy" not in body  # no class is named anywhere


def test_the_old_pickled_format_is_refused_unread_by_its_number() -> None:
    for old in (1, 2):
        data = pickle.dumps((old, _Planted()), protocol=pickle.HIGHEST_PROTOCOL)
        with pytest.raises(CheckpointFormatError, match=rf"format {old}, a pickled object graph; this version reads "
                                                        rf"format {FORMAT}"):
            decode(data)
    with pytest.raises(CheckpointFormatError, match="no checkpoint header"):
        decode(b"garbage")
    with pytest.raises(CheckpointFormatError, match=f"has format 9; this version reads format {FORMAT}"):
        decode(MAGIC + b" 9\n" + serialization.dumps({}))
    assert RAN == []


def test_a_body_that_names_any_class_is_refused_without_running_it() -> None:
    planted = MAGIC + b" %d\n" % FORMAT + pickle.dumps({"offset": 1, "ruleset_version": "", "state": _Planted()})
    with pytest.raises(pickle.UnpicklingError, match="names builtins.list.append|plain data only"):
        decode(planted)
    assert RAN == []


def test_a_restored_partition_scores_as_if_it_never_stopped(tmp_path: Path) -> None:
    events = list(generate(2_000, seed=4, attack_share=0.02))
    first = _models(tmp_path, shadow="loda")
    assert first.assign(PARTITION, committed=0) == 0
    uninterrupted = first.scorers[PARTITION]
    _feed(uninterrupted, events[:1_200])
    first.processed(PARTITION, 1_199)
    first.save_all()
    assert first.metrics()["checkpoints_saved"] == 1

    second = _models(tmp_path, shadow="loda")
    assert second.assign(PARTITION, committed=1_200) == 1_200
    restored = second.scorers[PARTITION]
    assert second.metrics()["checkpoints_restored"] == 1 and second.errors == []
    assert (restored.model_label, restored.shadow_label) == ("hst@1", "loda@2")
    assert _feed(restored, events[1_200:]) == _feed(uninterrupted, events[1_200:])


@pytest.mark.parametrize("damage", ["old format", "unknown state version", "other features"])
def test_a_checkpoint_that_cannot_be_restored_is_logged_and_the_partition_starts_fresh(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    models = _models(tmp_path)
    models.assign(PARTITION, committed=0)
    _feed(models.scorers[PARTITION], list(generate(300, seed=2, attack_share=0.0)))
    models.processed(PARTITION, 299)
    models.save_all()
    path = _path(models)
    checkpoint = decode(path.read_bytes())
    if damage == "old format":
        path.write_bytes(pickle.dumps((2, _Planted())))
        expected = "format 2, a pickled object graph"
    elif damage == "unknown state version":
        path.write_bytes(encode(Checkpoint(300, {**checkpoint.state, "version": STATE_VERSION + 1})))
        expected = f"state version {STATE_VERSION + 1}: this version of sigmaray reads version {STATE_VERSION}"
    else:
        state = {**checkpoint.state, "features": checkpoint.state["features"][:-1]}
        path.write_bytes(encode(Checkpoint(300, state)))
        expected = "only fits the features it was built with"

    fresh = _models(tmp_path)
    with caplog.at_level(logging.ERROR, logger="sigmaray.checkpoints"):
        start = fresh.assign(PARTITION, committed=300)
    assert start == 300  # from the committed offset, as with no checkpoint at all
    assert fresh.scorers[PARTITION].events_seen == 0 and fresh.metrics()["checkpoints_restored"] == 0
    assert expected in fresh.metrics()["checkpoint_errors"][-1]
    assert any(expected in record.getMessage() and "start fresh" in record.getMessage() for record in caplog.records)
    assert RAN == []


def test_the_store_round_trips_through_its_file_and_deletes_it(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "group")
    assert store.load(*PARTITION) is None
    state = EntityScorer().state_dict()
    size = store.save(*PARTITION, Checkpoint(5, state))
    assert size == len(Path(store._path(*PARTITION)).read_bytes())
    loaded = store.load(*PARTITION)
    assert loaded is not None and loaded.offset == 5 and loaded.state["version"] == STATE_VERSION
    store.delete(*PARTITION)
    assert store.load(*PARTITION) is None
