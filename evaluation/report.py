"""`sigmaray eval --report DIR`: the table as markdown, the definitions beside it, and two plots:
alerts per day by mode, and the risk timeline of an incident's host against benign hosts."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.metrics import DAY_MS, MODES, mode_alerts
from evaluation.table import duration

if TYPE_CHECKING:
    from evaluation.evaluate import Evaluation

__all__ = ["write_report"]


def write_report(evaluation: Evaluation, out_dir: str | Path, command: str = "sigmaray eval") -> Path:
    """Writes out_dir/report.md and its PNGs; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(evaluation, out)
    meta = evaluation.table.meta
    lines = ["# sigmaray eval", "", f"Command: `{command}`", "",
             f"{meta['events']:,} events over {meta['days']:.2f} days, {meta['incidents']} labeled incidents "
             f"({meta['incident_events']:,} events); {meta['detections']:,} detections and {meta['anomalies']:,} anomaly "
             f"detections; ruleset {meta['ruleset_version']}, model {meta['model']}, criticality "
             f"{meta.get('criticality') or 'none'}.", "", evaluation.table.markdown(), "",
             "How to read it: an alert is a true positive when any of its evidence refs (file, line) lies in a "
             "labeled incident. Reduction compares the fewest alerts the mode needs, at a priority cutoff, to reach "
             "its own incident recall with the fewest Sigma-only alerts (cut by rule level) that reach the same "
             "recall; negative is fewer alerts. Definitions: `evaluation/metrics.py`.", ""]
    same = meta.get("equal_volume") or {}
    if same:
        cells = []
        for mode in ("fused", "fused without anomaly scores"):
            item = same.get(mode) or {}
            precision = item.get("precision")
            cells.append(f"{mode}: recall {item.get('recall', 0):.2f}, precision "
                         f"{'-' if precision is None else f'{precision:.2f}'}")
        lines += [f"At equal volume (the {same['alerts']} most urgent alerts of each): " + "; ".join(cells) + ".", ""]
    incidents = evaluation.labels.incidents
    if incidents:
        alerts = mode_alerts(evaluation.result, evaluation.labels)
        merged = evaluation.result.merged
        lines += ["## Incidents", "",
                  "Per incident: its events, the Sigma-only alerts that carry its evidence, and the fused alerts "
                  "that do, with the most urgent priority among them and the minutes from its first event to the "
                  "first fused finding showing it (TTD).", "",
                  "| incident | techniques | events | Sigma-only alerts | fused alerts | fused best priority | "
                  "fused TTD | title |", "|---|---|---:|---:|---:|---:|---:|---|"]
        for ident, item in incidents.items():
            sigma = [alert for alert in alerts["sigma-only"] if ident in alert.incident_ms]
            fused = [alert for alert in alerts["fused"] if ident in alert.incident_ms]
            best = f"P{min(alert.priority for alert in fused)}" if fused else "missed"
            first = merged.incident_first_ms.get(ident)
            ttd = duration(max(min(alert.incident_ms[ident] for alert in fused) - first, 0) / 60_000) \
                if fused and first is not None else "-"
            lines.append(f"| {ident} | {', '.join(item.techniques) or '-'} | {merged.incident_events.get(ident, 0)} | "
                         f"{len(sigma)} | {len(fused)} | {best} | {ttd} | {item.title or '-'} |")
        lines.append("")
    for title, name in plots:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _plots(evaluation: Evaluation, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display
    import matplotlib.pyplot as plt

    result = evaluation.result
    start = result.merged.first_ms or 0
    written: list[tuple[str, str]] = []
    alerts = mode_alerts(result, evaluation.labels)
    days = max(int(((result.merged.last_ms or start) - start) // DAY_MS) + 1, 1)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(MODES)
    for index, mode in enumerate(MODES):
        counts = Counter(int((alert.first_ms - start) // DAY_MS) for alert in alerts[mode])
        ax.bar([day + index * width for day in range(days)], [counts.get(day, 0) for day in range(days)], width,
               label=mode)
    ax.set_xlabel("day of the scenario")
    ax.set_ylabel("alerts")
    ax.set_xticks([day + 0.4 - width / 2 for day in range(days)], [str(day + 1) for day in range(days)])
    ax.set_title("Alerts per day by mode")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "alerts-per-day.png", dpi=110)
    plt.close(fig)
    written.append(("Alerts per day by mode", "alerts-per-day.png"))

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for time, entity, risk in result.risk_points:
        series[entity].append((time, risk))
    incident_hosts = Counter(unit.entity for unit in result.fused["fused"] if unit.incident_ms)
    if series and incident_hosts:
        target = incident_hosts.most_common(1)[0][0]
        benign = sorted((entity for entity in series if entity not in incident_hosts),
                        key=lambda entity: -max(risk for _, risk in series[entity]))[:6]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for entity in benign:
            points = sorted(series[entity])
            ax.step([(t - start) / 3_600_000 for t, _ in points], [r for _, r in points], where="post", color="grey",
                    alpha=0.6, linewidth=1)
        points = sorted(series[target])
        ax.step([(t - start) / 3_600_000 for t, _ in points], [r for _, r in points], where="post", color="crimson",
                linewidth=2, label=f"{target} (incident)")
        ax.plot([], [], color="grey", label="the riskiest benign hosts")
        for first in result.merged.incident_first_ms.values():
            ax.axvline((first - start) / 3_600_000, color="crimson", linestyle=":", linewidth=0.8)
        ax.set_xlabel("hours since the first event (dotted: an incident starts)")
        ax.set_ylabel("host risk at each alert finding")
        ax.set_title("Risk timeline: an incident's host against benign hosts (fused)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "risk-timeline.png", dpi=110)
        plt.close(fig)
        written.append(("Risk timeline", "risk-timeline.png"))
    return written
