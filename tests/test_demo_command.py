"""`sigmaray demo` end to end (the stream itself is tested in test_generator.py)."""

from __future__ import annotations

import io

import pytest

from detectors.engine import SigmaEngine
from detectors.rulefiles import load_rules_from_paths
from tests.conftest import OTRF, ROOT

pytestmark = pytest.mark.ray  # the demo starts a Ray of its own


def _engine() -> SigmaEngine:
    return SigmaEngine(load_rules_from_paths([ROOT / "rules"]).rules)


def test_demo_runs_end_to_end_and_shows_exactly_the_offline_detections(broker: str) -> None:
    from cluster.demo import run_demo
    from tests import broker as test_broker

    out = io.StringIO()
    summary = run_demo(events=8000, rate=0, seconds=0, attack_share=0.05, shared=OTRF, seed=3, keep=False,
                       port=test_broker.PORT, data_dir=str(test_broker.DATA_DIR), out=out, console_port=0)
    engine = _engine()
    offline = sorted(f"{e['sigmaray_event_id']}|{m.id}" for e in summary["events_list"] for m in engine.match(e))
    assert offline
    assert summary["detected_event_ids"] == offline
    assert summary["processed"] == 8000
    assert "detections in" in out.getvalue()
    # The demo shows prioritized alerts, far fewer than raw detections, and ends with the funnel.
    alerts = sum(summary["alerts"].values())
    assert 0 < alerts < len(summary["detected_event_ids"])
    assert f"{summary['detections']} detections → {alerts} alerts" in out.getvalue()
    assert any(f" P{p} " in line for line in out.getvalue().splitlines() for p in (1, 2, 3, 4))
    assert "sigmaray: console at http://127.0.0.1:" in out.getvalue()  # the demo shows where the console is
