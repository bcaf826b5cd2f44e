"""`sigmaray eval` on the small built-in scenario: the table, and the same alerts as the cluster's
replay path (cluster.sources.replay.replay_files with a Correlator) on the same events; EVTX input
labeled by record position."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cluster.config import config_from_dict
from cluster.sources.replay import replay_files
from correlator.criticality import load_criticality
from correlator.fusion import Alert
from evaluation import EvalOptions, Evaluation, evaluate_files, evaluate_scenario
from evaluation.metrics import MODES
from evaluation.run import merge_events
from tests.conftest import CORPUS_PLACEHOLDERS, OTRF, RULE_DIRS, SIGMA

ROOT = Path(__file__).resolve().parents[1]
RULES = [*(str(path) for path in RULE_DIRS), str(ROOT / "rules")]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Evaluation:
    out = tmp_path_factory.mktemp("small")
    return evaluate_scenario("small", seed=1, options=EvalOptions(rule_paths=RULES), out_dir=str(out),
                             otrf_root=OTRF)


def test_the_table_on_the_small_scenario(small: Evaluation) -> None:
    table = small.table
    assert [row.mode for row in table.rows] == list(MODES)
    assert table.meta["incidents"] == 3 and table.meta["days"] > 1.9
    sigma, deduplicated, fused = table.row("sigma-only"), table.row("sigma-only deduplicated"), table.row("fused")
    # Every incident is one the SigmaHQ rules see; fused alerting must not lose them.
    assert sigma.recall == 1.0
    assert fused.recall >= 0.99 and fused.recall_p1_p2 >= 0.66
    # The benign noise is real: Sigma-only is mostly false positives, at tens of alerts a day
    # for 16 hosts, and the simple baseline cuts it.
    assert sigma.precision is not None and sigma.precision < 0.5
    assert sigma.alerts_per_day > 50
    assert deduplicated.alerts < sigma.alerts
    assert deduplicated.reduction is not None and deduplicated.reduction >= 0.1
    for item in table.rows:  # the reduction compares equal recall: never more than the mode raised
        assert item.alerts_at_recall is not None and item.alerts_at_recall <= item.alerts
        assert item.sigma_alerts_at_recall is not None and item.sigma_alerts_at_recall <= sigma.alerts
    data = table.to_dict()
    assert [row["mode"] for row in data["rows"]] == list(MODES)
    assert "reduction vs Sigma-only" in table.render()
    # Risk-based alerting (correlator/priority.py): at the priority cutoff that keeps every incident,
    # fused pages at least 80% fewer alerts than Sigma-only, and fewer than the deduplicated baseline
    # (on seed 1: 2 alerts at P1 against 40 and 27).
    assert fused.reduction is not None and fused.reduction >= 0.8
    assert fused.alerts_at_recall is not None and deduplicated.alerts_at_recall is not None
    assert fused.alerts_at_recall < deduplicated.alerts_at_recall


def test_the_fused_defaults_meet_the_issue_targets(small: Evaluation) -> None:
    """Issue 12's targets on the small scenario, seed 1, with the shipped defaults (2 P1 alerts, both
    incidents; seed 3 meets them too, seed 2 raises no P1 at all). Seed 1 was among the seeds the
    defaults were chosen on; the test below checks an unseen one."""
    fused, deduplicated = small.table.row("fused"), small.table.row("sigma-only deduplicated")
    assert fused.recall >= 0.95
    assert fused.reduction is not None and fused.reduction >= 0.8
    assert fused.alerts_at_recall is not None and deduplicated.alerts_at_recall is not None
    assert fused.alerts_at_recall < deduplicated.alerts_at_recall
    assert fused.p1_precision is not None and fused.p1_precision >= 0.9
    # the anomaly models earn their place: without them, P1 is less precise and more alerts are paged
    # at the same recall (4 P1 alerts, 2 of them incidents, on seed 1)
    bare = small.table.row("fused without anomaly scores")
    assert bare.p1_precision is not None and fused.p1_precision > bare.p1_precision
    assert bare.alerts_at_recall is not None and fused.alerts_at_recall < bare.alerts_at_recall


def test_p1_precision_holds_on_an_unseen_seed(tmp_path: Path) -> None:
    """Small seed 4 is not among the seeds the defaults were chosen on (1-3). Before the P1 gates of
    priority.py (novelty, tactics one technique each, criticality backed by tactics, the learning
    day) its P1 precision was 0.25 (1 of 4); now its one P1 alert is its multi-step campaign."""
    unseen = evaluate_scenario("small", seed=4, options=EvalOptions(rule_paths=RULES), out_dir=str(tmp_path),
                               otrf_root=OTRF)
    fused, deduplicated = unseen.table.row("fused"), unseen.table.row("sigma-only deduplicated")
    assert fused.recall >= 0.95 and fused.reduction is not None and fused.reduction >= 0.8
    assert fused.alerts_at_recall is not None and deduplicated.alerts_at_recall is not None
    assert fused.alerts_at_recall < deduplicated.alerts_at_recall
    assert fused.p1_precision is not None and fused.p1_precision >= 0.9


def test_scenarios_are_seeded(tmp_path: Path) -> None:
    from evaluation.scenarios import SCENARIOS, generate

    first = generate(SCENARIOS["small"], 3, tmp_path / "a", OTRF)
    again = generate(SCENARIOS["small"], 3, tmp_path / "b", OTRF)
    other = generate(SCENARIOS["small"], 4, tmp_path / "c", OTRF)
    assert Path(first.events[0]).read_bytes() == Path(again.events[0]).read_bytes()
    assert Path(first.events[0]).read_bytes() != Path(other.events[0]).read_bytes()
    kinds = {item["kind"] for item in first.summary["incidents"]}
    assert kinds == {"multi-step", "admin", "single-technique"}


def _fold(alerts: list[Alert]) -> dict[str, int]:
    """alert id -> the most urgent priority it was emitted with (as evaluation.run folds them)."""
    out: dict[str, int] = {}
    for alert in alerts:
        if alert.activity_id != 3:
            out[alert.alert_id] = min(out.get(alert.alert_id, 5), alert.priority)
    return out


def test_eval_gives_the_alerts_the_cluster_replay_gives(small: Evaluation, tmp_path: Path) -> None:
    """Same events, in the same (event-time) order, through replay_files and a Correlator: the same
    alerts as every fused mode of the evaluation, the ablations included."""
    merged = merge_events(small.files, str(tmp_path / "merged.jsonl"))
    assert merged.origins == small.result.merged.origins
    scenario = small.scenario
    assert scenario is not None
    criticality, errors = load_criticality(scenario.criticality)
    assert not errors
    # The corpus's placeholder, with the scenario's domain controllers as its value.
    placeholders = small.table.meta["placeholders"]
    assert set(placeholders) == set(CORPUS_PLACEHOLDERS)
    config = config_from_dict({"rules": {"paths": RULES, "placeholders": placeholders}})

    def replay(**options: Any) -> dict[str, int]:
        alerts: list[Alert] = []
        replay_files(config, [merged.path], lambda output, dead: None, alerts=alerts.append, **options)
        return _fold(alerts)

    def evaluated(mode: str) -> dict[str, int]:
        return {unit.alert_id: unit.priority for unit in small.result.fused[mode]}

    assert replay(criticality=criticality) == evaluated("fused")
    assert replay(criticality=None) == evaluated("fused without criticality")
    assert replay(criticality=criticality, models=False) == evaluated("fused without anomaly scores")


def test_eval_over_files_reads_its_labels_and_reports(small: Evaluation, tmp_path: Path) -> None:
    scenario = small.scenario
    assert scenario is not None
    # The same labels as CSV, over the same files: the same table.
    from evaluation.labels import read_labels, write_labels

    write_labels(tmp_path / "labels.csv", read_labels(scenario.labels).incidents.values())
    again = evaluate_files(small.files, str(tmp_path / "labels.csv"),
                           replace(EvalOptions(rule_paths=RULES), criticality=scenario.criticality,
                                   placeholders=small.table.meta["placeholders"]))
    assert [row.to_dict() for row in again.table.rows] == [row.to_dict() for row in small.table.rows]
    from evaluation import write_report

    path = write_report(small, tmp_path / "report")
    assert "| fused |" in path.read_text() and (tmp_path / "report" / "alerts-per-day.png").stat().st_size > 1000


def test_evtx_events_are_labeled_by_record_position(tmp_path: Path) -> None:
    manifest = json.loads((SIGMA / "regression" / "manifest.json").read_text())
    sample = next(item for item in manifest if item["rule_id"] == "47e4bab7-c626-47dc-967b-255608c9a920")
    evtx = tmp_path / "findstr.evtx"
    evtx.write_bytes((SIGMA / sample["evtx"]).read_bytes())
    benign = tmp_path / "benign.jsonl"
    benign.write_text('{"TimeCreated_SystemTime": "2026-01-01T00:00:00Z"}\n')
    (tmp_path / "labels.csv").write_text("incident,file,first_line,last_line,techniques\n"
                                         "recon,findstr.evtx,2,3,T1552.006\n")
    evaluation = evaluate_files([str(benign), str(evtx)], str(tmp_path / "labels.csv"),
                                EvalOptions(rule_paths=[str(SIGMA / sample["rule_path"])]))
    sigma = evaluation.table.row("sigma-only")
    assert sigma.alerts == 1 and sigma.recall == 1.0 and sigma.precision == 1.0
    assert [hit.origin for hit in evaluation.result.sigma] == [(str(evtx), 3)]
    assert evaluation.table.row("fused").recall == 1.0
