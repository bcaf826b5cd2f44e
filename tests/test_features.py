"""Entity features (models/features/): the compiled kernels are their Python source, on real
OTRF events, and a feature written outside the project plugs into the scorer unchanged."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models import serialization
from models.eventtime import event_time_ms
from models.features import DEFAULT_FEATURES, Feature, feature_names, kernel
from models.scorer import EntityScorer, ScorerConfig

OTRF = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "otrf" / "jsonl"


def _otrf_events(limit: int | None = None) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted(OTRF.rglob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if line.strip():
                events.append(orjson.loads(line))
    events.sort(key=lambda e: event_time_ms(e) or 0)  # one stream in event time, as a topic would carry it
    return events[:limit]


def _features(scorer: EntityScorer, events: list[dict[str, Any]], batch: int = 500) -> np.ndarray:
    parts = []
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        parts.append(scorer.features_of(chunk, [event_time_ms(e) for e in chunk]).X)
    return np.concatenate(parts)


def test_compiled_feature_kernels_give_their_python_source_values_on_otrf_events() -> None:
    events = _otrf_events()
    compiled = _features(EntityScorer(), events)
    uncompiled = tuple(dataclasses.replace(f, kernel=f.kernel.py_func) for f in DEFAULT_FEATURES)
    reference = _features(EntityScorer(features=uncompiled), events, batch=10_000)
    assert compiled.shape == reference.shape and len(compiled) > 100_000
    # exp/cos in LLVM and in CPython's libm may differ in the last bit, never more
    np.testing.assert_allclose(compiled, reference, rtol=1e-12, atol=1e-15)
    assert ((compiled >= 0.0) & (compiled <= 1.0)).all()
    names = feature_names()
    for name in ("new_process", "new_pair", "new_dest", "process_rarity", "cmd_entropy", "rate_1m", "burst",
                 "hour_deviation"):  # no failed logon in OTRF: the generator tests cover it
        assert compiled[:, names.index(name)].max() > 0.0, f"{name} never fires on real events"


def test_first_seen_and_rarity_follow_the_stream() -> None:
    base = {"Channel": "Microsoft-Windows-Sysmon/Operational", "EventID": 1, "Computer": "WS-01",
            "ParentImage": "C:\\Windows\\explorer.exe"}
    events = [dict(base, Image="C:\\Windows\\System32\\notepad.exe", UtcTime=f"2026-11-28 10:00:{s:02d}.000")
              for s in range(30)]
    events.append(dict(base, Image="C:\\Temp\\mimikatz.exe", UtcTime="2026-11-28 10:00:31.000"))
    X = _features(EntityScorer(), events)
    names = feature_names()
    host_rows = X[0::2]  # host and process entity per event, host first
    new, rare = names.index("new_process"), names.index("process_rarity")
    assert host_rows[0, new] == 1.0 and (host_rows[1:30, new] == 0.0).all()  # notepad: new once
    assert host_rows[0, rare] == 1.0 and host_rows[29, rare] < 0.05  # ever more common
    assert host_rows[30, new] == 1.0 and host_rows[30, rare] == 1.0  # mimikatz: new and never seen


# A feature as a data scientist would add one: plain Python, then listed beside the defaults.
_ADMIN = {"administrator", "admin"}


def _extract_admin(event: dict[str, Any], category: str) -> tuple[float, ...]:
    user = str(event.get("User", "")).rsplit("\\", 1)[-1].lower()
    return (1.0 if user in _ADMIN else 0.0,)


@kernel
def _admin_share(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray,
                 category: np.ndarray, inputs: np.ndarray, state: np.ndarray, world: np.ndarray,
                 out: np.ndarray) -> None:
    for r in range(slot.shape[0]):
        s = state[slot[r]]
        out[r, 0] = s[0]
        s[0] = 0.9 * s[0] + 0.1 * inputs[event[r], 0]


ADMIN_SHARE = Feature("admin_share", ("admin_share",), _admin_share, state=1, inputs=1, extract=_extract_admin,
                      doc="decayed share of the entity's events run as a built-in admin account")


def test_a_feature_written_outside_the_project_plugs_into_the_scorer_and_its_checkpoints() -> None:
    features = (*DEFAULT_FEATURES, ADMIN_SHARE)
    events = [{"Channel": "Security", "EventID": 4688, "Computer": "SRV-9", "User": "CORP\\Administrator",
               "NewProcessName": "C:\\Windows\\System32\\whoami.exe",
               "TimeCreated_SystemTime": f"2026-11-28T10:00:{s:02d}Z"} for s in range(20)]
    scorer = EntityScorer(ScorerConfig(model="hst"), features=features)
    results = list(scorer.score_batch(events[:10], [event_time_ms(e) for e in events[:10]], [False] * 10))
    share = [r.entities[0].features["admin_share"] for r in results]
    assert share[0] == 0.0 and all(b > a for a, b in zip(share, share[1:], strict=False))  # history before each event
    # A checkpoint names the features; the scorer that restores it is given them.
    state = serialization.loads(serialization.dumps(scorer.state_dict()))
    assert [f["name"] for f in state["features"]][-1] == "admin_share"
    restored = EntityScorer.from_state_dict(scorer.config, state, features=features)
    rest = events[10:]
    again = [r.as_dict() for r in restored.score_batch(rest, [event_time_ms(e) for e in rest], [False] * 10)]
    assert again == [r.as_dict() for r in scorer.score_batch(rest, [event_time_ms(e) for e in rest], [False] * 10)]
    assert math.isclose(restored.states[-1][restored.table.slot("host:srv-9"), 0], 1 - 0.9**20)


def _admin_share_in_python(slot: np.ndarray, event: np.ndarray, first: np.ndarray, time_ms: np.ndarray,
                           category: np.ndarray, inputs: np.ndarray, state: np.ndarray, world: np.ndarray,
                           out: np.ndarray) -> None:
    for r in range(len(slot)):  # no @kernel: plain Python, any Python
        out[r, 0] = float(state[slot[r], 0])
        state[slot[r], 0] = 0.9 * state[slot[r], 0] + 0.1 * inputs[event[r], 0]


ADMIN_SHARE_IN_PYTHON = Feature("admin_share_py", ("admin_share",), _admin_share_in_python, state=1, inputs=1,
                                extract=_extract_admin)


def test_an_uncompiled_feature_runs_as_plain_python_and_agrees_with_its_compiled_twin() -> None:
    events = [{"Channel": "Security", "EventID": 4688, "Computer": f"SRV-{n % 3}", "User": "CORP\\Administrator"
               if n % 4 else "CORP\\bob", "TimeCreated_SystemTime": f"2026-11-28T10:00:{n:02d}Z"} for n in range(40)]
    times = [event_time_ms(e) for e in events]
    compiled = EntityScorer(features=(ADMIN_SHARE,)).features_of(events, times).X
    scorer = EntityScorer(features=(ADMIN_SHARE_IN_PYTHON,))
    assert np.array_equal(scorer.features_of(events, times).X, compiled) and compiled.max() > 0.5
    assert pickle.loads(pickle.dumps(scorer)).features == (ADMIN_SHARE_IN_PYTHON,)


def _extract_fragile(event: dict[str, Any], category: str) -> tuple[float, ...]:
    if "boom" in event:
        raise KeyError("boom")
    return (1.0,) if event.get("User") else (0.0, 0.0)  # the second shape is a bug too


FRAGILE = Feature("fragile", ("fragile",), _admin_share, state=1, inputs=1, extract=_extract_fragile)


def test_a_failing_feature_extract_is_counted_and_never_fails_the_batch() -> None:
    base = {"Channel": "Security", "EventID": 4688, "Computer": "WS-1", "TimeCreated_SystemTime": "2026-11-28T10:00:00Z"}
    events = [dict(base, User="CORP\\u"), dict(base, boom=1, User="CORP\\u"), dict(base)]
    scorer = EntityScorer(features=(*DEFAULT_FEATURES, FRAGILE))
    results = scorer.score_batch(events, [event_time_ms(e) for e in events], [False] * 3)
    assert [len(r.entities) for r in results] == [2, 2, 1]  # every event scored
    assert scorer.feature_errors == {"fragile": 2} and "returned 2 values" in scorer.last_feature_error
