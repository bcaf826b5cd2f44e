"""The markdown report and plots of `sigmaray models eval --report DIR`.

Written for the person deciding whether a model is good enough: every number comes with its
reference (chance, the IsolationForest baseline) and a sentence saying what it means, the plots
show where attack and benign scores overlap, and the exact command is there to reproduce it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import metrics
from models.evaluation import Evaluation


@dataclass(frozen=True, slots=True)
class ReportContext:
    model: str
    command: str
    dataset: str  # one line: what was evaluated
    spec: Mapping[str, Any] = field(default_factory=dict)  # name, kind, description, params
    details: Mapping[str, Any] = field(default_factory=dict)  # sizes, skips, settings


def write_report(evaluation: Evaluation, out_dir: str | Path, context: ReportContext) -> Path:
    """Writes out_dir/report.md and its PNGs; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(evaluation, out, context.model)
    path = out / "report.md"
    path.write_text(_markdown(evaluation, context, plots), encoding="utf-8")
    return path


# ---------------------------------------------------------------- plots


def _plots(evaluation: Evaluation, out: Path, model: str) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display, also on machines without one
    import matplotlib.pyplot as plt

    data = evaluation.data
    written: dict[str, str] = {}
    if data is None or not len(data.all_scores):
        return written
    labeled = evaluation.metrics is not None

    # Score distributions: log y, because attacks are ~1% and would vanish on a linear axis.
    panels = [(model, data.scores if labeled else data.all_scores)]
    if labeled and data.baseline_scores is not None:
        panels.append((f"{evaluation.baseline_name} (baseline)", data.baseline_scores))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (title, scores) in zip(axes[0], panels, strict=True):
        bins = np.linspace(float(scores.min()), float(scores.max()) or 1.0, 50)
        if labeled:
            ax.hist(scores[data.labels == 0], bins=bins, alpha=0.6, label=f"benign ({int((data.labels == 0).sum()):,})",
                    color="tab:blue")
            ax.hist(scores[data.labels == 1], bins=bins, alpha=0.7, label=f"attack ({int(data.labels.sum()):,})",
                    color="tab:red")
            ax.legend(loc="upper center")
        else:
            ax.hist(scores, bins=bins, color="tab:gray", label="all events (no labels)")
            ax.legend()
        if title == model and evaluation.threshold is not None:
            ax.axvline(evaluation.threshold, color="black", linestyle="--", linewidth=1)
            ax.text(evaluation.threshold, ax.get_ylim()[1], " alert threshold", va="top", ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("event score (max over its entities)")
        ax.set_ylabel("events (log scale)")
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=110)
    plt.close(fig)
    written["scores"] = "scores.png"
    if not labeled:
        return written

    curves = [(model, data.scores, "tab:red")]
    if data.baseline_scores is not None:
        curves.append((evaluation.baseline_name, data.baseline_scores, "tab:blue"))
    prevalence = float(data.labels.mean())

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, scores, color in curves:
        recall, precision = metrics.pr_curve(data.labels, scores)
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="post", color=color,
                label=f"{name} (PR-AUC {metrics.pr_auc(data.labels, scores):.3f})")
    ax.axhline(prevalence, color="gray", linestyle=":", label=f"random ranking ({prevalence:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall (share of attack events found)")
    ax.set_ylabel("precision (share of flagged events that are attacks)")
    ax.set_title("Precision-recall")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "precision_recall.png", dpi=110)
    plt.close(fig)
    written["pr"] = "precision_recall.png"

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, scores, color in curves:
        fpr, tpr = metrics.roc_curve(data.labels, scores)
        ax.plot(fpr, tpr, color=color, label=f"{name} (ROC-AUC {metrics.roc_auc(data.labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance (0.5)")
    ax.set_xlabel("false positive rate (benign events flagged)")
    ax.set_ylabel("true positive rate (attack events flagged)")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=110)
    plt.close(fig)
    written["roc"] = "roc.png"
    return written


# ---------------------------------------------------------------- markdown


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _size(count: int | None) -> str:
    if count is None:
        return "n/a"
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def metric_rows(evaluation: Evaluation, model: str) -> list[tuple[str, str, str, str]]:
    """(metric, our model, baseline, random ranking) rows; shared with the CLI's summary."""
    ours, base = evaluation.metrics, evaluation.baseline
    prevalence = evaluation.prevalence
    rows: list[tuple[str, str, str, str]] = []
    if ours is not None:
        rows.append(("ROC-AUC", _fmt(ours.roc_auc), _fmt(base.roc_auc if base else None), "0.500"))
        rows.append(("PR-AUC (average precision)", _fmt(ours.pr_auc), _fmt(base.pr_auc if base else None),
                     _fmt(prevalence)))
        for name, value in ours.precision_at.items():
            rows.append((f"precision@{name}", _fmt(value), _fmt(base.precision_at[name] if base else None),
                         _fmt(prevalence)))
    rows.append(("latency per event p50 (µs)", _fmt(evaluation.latency_p50_us, 1), "", ""))
    rows.append(("latency per event p99 (µs)", _fmt(evaluation.latency_p99_us, 1), "", ""))
    rows.append(("state size", _size(evaluation.state_bytes), "", ""))
    return rows


def _verdict(evaluation: Evaluation, model: str) -> list[str]:
    ours, base = evaluation.metrics, evaluation.baseline
    if ours is None:
        return ["No labels (or only one class): ranking quality cannot be measured; the score "
                "distribution below shows only how often the model would alert."]
    prevalence = evaluation.prevalence or 0.0
    lines = [
        f"- **ROC-AUC {ours.roc_auc:.3f}**: a random attack event outscores a random benign event "
        f"{ours.roc_auc:.0%} of the time (0.5 is chance, 1.0 is perfect).",
        f"- **PR-AUC {ours.pr_auc:.3f}** against {prevalence:.3f} for a random ranking "
        f"({ours.pr_auc / prevalence:.1f}x lift): the number that matters when attacks are rare, "
        "because it is dominated by the top of the queue an analyst actually reads.",
    ]
    for name, value in ours.precision_at.items():
        k = int(name.split("=")[-1]) if "=" in name else int(name)
        k = min(k, evaluation.labeled)
        lines.append(f"- **precision@{name} {value:.3f}**: of the {k:,} highest-scored events, about "
                     f"{value * k:.0f} are attacks.")
    if evaluation.top_ties > 10:
        top = float(evaluation.data.scores.max()) if evaluation.data is not None else 1.0
        lines.append(f"- **{evaluation.top_ties:,} events tie at the top score {top:.4f}**: the model cannot order "
                     "them, so precision@k for k up to that count is just the attack share among them. "
                     "Calibrated scores saturate at 1.0 when many events score above the calibration reference.")
    if base is not None:
        better = ours.pr_auc >= base.pr_auc
        lines.append(
            f"- Against **{evaluation.baseline_name}** (batch, fitted on the whole stream's feature rows "
            f"with hindsight): ROC-AUC {ours.roc_auc:.3f} vs {base.roc_auc:.3f}, PR-AUC {ours.pr_auc:.3f} vs "
            f"{base.pr_auc:.3f}. {model} is {'at least as good as' if better else 'worse than'} the baseline "
            "on PR-AUC" + (" while learning online, one event at a time." if better else
                           "; an online model may trail a batch one, but a large gap means the features "
                           "carry signal the online model does not use.")
        )
    if ours.roc_auc < 0.6:
        lines.append("- Verdict: **close to chance**; the model does not separate attacks from benign events.")
    elif ours.pr_auc < 2 * prevalence:
        lines.append("- Verdict: **weak**: better than chance overall, but the top of the ranking is "
                     "barely richer in attacks than the stream itself.")
    else:
        lines.append("- Verdict: **useful ranking**: the top of the queue is clearly enriched in attacks; "
                     "check precision@k against the alert volume your analysts can handle.")
    return lines


def _markdown(evaluation: Evaluation, context: ReportContext, plots: Mapping[str, str]) -> str:
    model = context.model
    lines = [f"# Anomaly model evaluation: {model}", ""]
    lines += [f"Data: {context.dataset}", "", "Produced by:", "", "```sh", context.command, "```", ""]
    lines += ["## Is it good?", ""] + _verdict(evaluation, model) + [""]
    for note in evaluation.notes:
        lines.append(f"> Note: {note}")
    if evaluation.notes:
        lines.append("")

    lines += ["## Metrics", "", f"| metric | {model} | {evaluation.baseline_name} | random ranking |",
              "| --- | ---: | ---: | ---: |"]
    for row in metric_rows(evaluation, model):
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Event level: an event's score is the maximum over its entities' scores; its label is 1 when it "
        "belongs to an attack. precision@k counts ties at the cut by expectation. Latency is "
        "time.perf_counter around each scorer call divided by its events (batches of 500 in the "
        f"cluster), p50/p99 over events. State size: {evaluation.state_measure}.",
        "",
    ]

    lines += ["## Data set", "", "| | |", "| --- | ---: |",
              f"| events | {evaluation.events:,} |",
              f"| labeled events | {evaluation.labeled:,} |",
              f"| attack events | {evaluation.positives:,} |",
              f"| prevalence | {_fmt(evaluation.prevalence, 4)} |",
              f"| entity rows scored | {evaluation.rows:,} |"]
    for key, value in context.details.items():
        lines.append(f"| {key} | {value:,} |" if isinstance(value, int) else f"| {key} | {value} |")
    lines.append("")

    stats = [("all events", evaluation.scores), ("attack events", evaluation.attack_scores),
             ("benign events", evaluation.benign_scores)]
    if any(s is not None for _, s in stats):
        lines += ["## Score distribution", "", "| events | count | mean | p50 | p90 | p99 | max | at/above threshold |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, s in stats:
            if s is None:
                continue
            above = "n/a" if s.above_threshold is None else f"{s.above_threshold:,}"
            lines.append(f"| {name} | {s.count:,} | {s.mean:.4f} | {s.p50:.4f} | {s.p90:.4f} | {s.p99:.4f} | "
                         f"{s.max:.4f} | {above} |")
        lines.append("")
    if "scores" in plots:
        lines += [f"![score distributions]({plots['scores']})", "",
                  "Attack (red) and benign (blue) event scores, log scale. A good model puts the red mass to "
                  "the right of nearly all the blue; the dashed line is the alert threshold.", ""]
    if "pr" in plots:
        lines += ["## Curves", "", f"![precision-recall]({plots['pr']})", "",
                  "Precision-recall: the higher the curve stays as recall grows, the fewer benign events an "
                  "analyst wades through per attack found. The dotted line is a random ranking.", "",
                  f"![ROC]({plots['roc']})", ""]

    if evaluation.per_attack:
        lines += ["## Per attack", "", "| attack | events | median score | at/above threshold | in top 1% |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for a in evaluation.per_attack:
            above = "n/a" if a.above_threshold is None else f"{a.above_threshold:,}"
            lines.append(f"| {a.attack} | {a.events:,} | {a.median_score:.4f} | {above} | {a.top_1pct:,} |")
        lines.append("")

    lines += ["## Model", "", "| | |", "| --- | --- |"]
    for key, value in context.spec.items():
        if key == "params" and isinstance(value, Mapping):
            continue
        lines.append(f"| {key} | {value} |")
    params = context.spec.get("params")
    if isinstance(params, Mapping):
        for key, value in params.items():
            lines.append(f"| param `{key}` | `{value}` |")
    lines.append("")
    return "\n".join(lines)


def summary_table(evaluation: Evaluation, model: str) -> list[str]:
    """The stdout table of `models eval`: the same rows as the report's metrics table."""
    rows = [("metric", model, evaluation.baseline_name, "random")] + metric_rows(evaluation, model)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)).rstrip()
            for r in rows]

