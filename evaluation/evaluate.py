"""`sigmaray eval` as functions: labeled files, or a built-in scenario, to the table.

>>> from evaluation.evaluate import EvalOptions
>>> EvalOptions().k
20
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster.config import ClusterConfig, config_from_dict
from correlator.criticality import Criticality, load_criticality
from evaluation.labels import Labels, read_labels
from evaluation.metrics import MODES, equal_volume, mode_alerts, row
from evaluation.run import RunResult, default_rule_paths, run_files
from evaluation.scenarios import ScenarioFiles, generate, scenario
from evaluation.table import Table

__all__ = ["EvalOptions", "Evaluation", "evaluate_files", "evaluate_scenario"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHIPPED_RULES = ROOT / "rules"


@dataclass(slots=True)
class EvalOptions:
    rule_paths: Sequence[str] = ()  # () = SigmaHQ from ../shared (when there) + the shipped rules
    criticality: str | None = None  # a criticality CSV/YAML (a scenario brings its own)
    config: ClusterConfig | None = None  # its models and correlator.fusion settings are used (default: shipped)
    k: int = 20  # precision@k
    work_dir: str | None = None  # where the merged replay file goes (default: the system temp folder)
    progress: Callable[[int, int], None] | None = None
    placeholders: dict[str, list[str]] = field(default_factory=dict)


@dataclass(slots=True)
class Evaluation:
    table: Table
    result: RunResult
    labels: Labels
    files: list[str]
    scenario: ScenarioFiles | None = None


def _criticality(path: str | None) -> Criticality | None:
    if not path:
        return None
    table, errors = load_criticality(path)
    if errors:
        raise ValueError(f"{path}: {errors[0]}" + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return table


def evaluate_files(events: Sequence[str], labels_path: str, options: EvalOptions | None = None,
                   scenario_files: ScenarioFiles | None = None) -> Evaluation:
    """The table for labeled events files (see evaluation.labels for the labels format)."""
    options = options or EvalOptions()
    files = [str(name) for name in events]
    missing = [name for name in files if not Path(name).is_file()]
    if missing:
        raise FileNotFoundError(f"events file not found: {', '.join(missing)}")
    labels = read_labels(labels_path, files)
    base = options.config or config_from_dict({})
    rule_paths = list(options.rule_paths) or default_rule_paths(SHARED, SHIPPED_RULES)
    placeholders = {**base.rules.placeholders, **options.placeholders}
    config = replace(base, rules=replace(base.rules, paths=tuple(rule_paths), placeholders=placeholders))
    result = run_files(files, labels, criticality=_criticality(options.criticality), config=config,
                       work_dir=options.work_dir, progress=options.progress)
    alerts = mode_alerts(result, labels)
    rows = [row(mode, alerts[mode], alerts["sigma-only"], labels, result, options.k) for mode in MODES]
    merged = result.merged
    meta = {"events": len(merged.origins), "files": files, "labels": str(labels_path), "incidents": len(labels.incidents),
            "incident_events": sum(merged.incident_events.values()),
            "days": round(((merged.last_ms or 0) - (merged.first_ms or 0)) / 86_400_000, 3),
            "rules": rule_paths, "ruleset_version": result.ruleset_version, "model": result.model,
            "criticality": options.criticality, "placeholders": placeholders, "k": options.k,
            "replay_seconds": round(result.seconds, 2),
            "detections": result.counts.get("detections", 0), "anomalies": result.counts.get("anomalies", 0),
            "dead_letters": result.counts.get("dead_letter", 0),
            # the test of the models: with and without them, at the same alert volume
            "equal_volume": equal_volume(alerts, len(labels.incidents), ("fused", "fused without anomaly scores"))}
    if scenario_files is not None:
        meta["scenario"] = scenario_files.spec.name
        meta["seed"] = scenario_files.seed
    return Evaluation(Table(rows, meta), result, labels, files, scenario_files)


def evaluate_scenario(name: str, seed: int = 0, options: EvalOptions | None = None, out_dir: str | None = None,
                      otrf_root: str | Path | None = None) -> Evaluation:
    """Generate the built-in scenario `name` with `seed` (into `out_dir`, else a temporary
    folder) and evaluate it with its own criticality table (unless options name another)."""
    options = options or EvalOptions()
    spec = scenario(name)
    otrf = Path(otrf_root) if otrf_root else SHARED / "datasets" / "otrf"
    if not (otrf / "manifest.json").is_file():
        raise FileNotFoundError(f"scenarios inject the OTRF recordings; not found at {otrf}")

    def run(directory: str) -> Evaluation:
        files = generate(spec, seed, directory, otrf, sigma_root=otrf.parent.parent / "sigma")
        dcs = [str(name) for name in files.summary.get("dcs", [])]
        dcs += [name.split(".")[0] for name in dcs]
        local = EvalOptions(options.rule_paths, options.criticality or files.criticality, options.config, options.k,
                            options.work_dir, options.progress,
                            {"known_cdcs": dcs or ["DC-01"], **options.placeholders})
        evaluation = evaluate_files(files.events, files.labels, local, files)
        if out_dir is None and not options.criticality:
            evaluation.table.meta["criticality"] = "the scenario's own (criticality.csv, generated with it)"
        return evaluation

    if out_dir:
        return run(out_dir)
    with tempfile.TemporaryDirectory(prefix=f"sigmaray-eval-{name}-") as directory:
        return run(directory)
