"""`sigmaray demo` and its event stream."""

from __future__ import annotations

import argparse
import io
from datetime import datetime

from cluster.demo_stream import generate
from cluster.rulefiles import load_rules_from_paths
from detectors.engine import SigmaEngine
from tests.conftest import OTRF, ROOT


def _engine() -> SigmaEngine:
    return SigmaEngine(load_rules_from_paths([ROOT / "rules"]).rules)


def test_stream_is_deterministic_ordered_in_event_time_and_ids_are_unique() -> None:
    first = list(generate(3000, seed=7, otrf_root=OTRF))
    assert first == list(generate(3000, seed=7, otrf_root=OTRF))
    assert len({e["sigmaray_event_id"] for e in first}) == 3000
    times = [datetime.fromisoformat(e["TimeCreated_SystemTime"].replace("Z", "+00:00")) for e in first]
    assert times == sorted(times)


def test_benign_background_raises_nothing_and_the_mixed_in_attacks_are_detected() -> None:
    engine = _engine()
    assert sum(len(engine.match(e)) for e in generate(5000, seed=1, otrf_root=None)) == 0
    hits = {m.title for e in generate(20000, seed=0, otrf_root=OTRF) for m in engine.match(e)}
    assert "LSASS Memory Opened With Dump-Capable Access Rights" in hits
    assert len(hits) >= 5


def test_demo_runs_end_to_end_and_shows_exactly_the_offline_detections() -> None:
    from cluster import kafka_dev
    from cluster.cli_demo import run_demo

    args = argparse.Namespace(events=8000, rate=0, seconds=0, attack_share=0.05, shared=OTRF, seed=3, keep=False)
    out = io.StringIO()
    with kafka_dev.shared_broker():
        summary = run_demo(args, out)
    engine = _engine()
    offline = sorted(f"{e['sigmaray_event_id']}|{m.id}" for e in summary["events_list"] for m in engine.match(e))
    assert offline
    assert summary["detected_event_ids"] == offline
    assert summary["processed"] == 8000
    assert "detections in" in out.getvalue()
