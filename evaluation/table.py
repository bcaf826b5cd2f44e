"""The evaluation table: one row per mode, as text (for the terminal and markdown) or as data.

>>> table = Table([], {"events": 0})
>>> table.to_dict()["rows"], table.columns[0]
([], 'mode')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evaluation.metrics import Row

COLUMNS = (("mode", "mode"), ("alerts", "alerts"), ("alerts_per_day", "alerts/day"),
           ("alerts_per_incident", "alerts/incident"), ("precision", "precision"), ("recall", "recall"),
           ("recall_p1_p2", "recall P1-P2"), ("median_ttd_minutes", "median TTD"), ("p1_precision", "P1 precision"),
           ("precision_at_k", "precision@k"), ("reduction", "reduction vs Sigma-only at equal recall"))


def duration(minutes: float) -> str:
    """Minutes, as a person reads them.

    >>> duration(0.05), duration(4.5), duration(150), duration(3000)
    ('3s', '4.5 min', '2.5 h', '2.1 d')
    """
    if minutes < 1:
        return f"{minutes * 60:.0f}s"
    if minutes < 60:
        return f"{minutes:.1f} min"
    if minutes < 24 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} d"


@dataclass(slots=True)
class Table:
    rows: list[Row]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in COLUMNS]

    def row(self, mode: str) -> Row:
        return next(item for item in self.rows if item.mode == mode)

    def to_dict(self) -> dict[str, Any]:
        return {"meta": self.meta, "columns": self.columns, "rows": [item.to_dict() for item in self.rows]}

    def cells(self, item: Row) -> list[str]:
        out = []
        for name, _ in COLUMNS:
            value = getattr(item, name)
            if name == "mode":
                out.append(str(value))
            elif value is None:
                out.append("-")
            elif name in ("precision", "recall", "recall_p1_p2", "p1_precision", "precision_at_k"):
                out.append(f"{value:.2f}" + (f" ({item.p1_alerts})" if name == "p1_precision" else ""))
            elif name == "reduction":
                out.append(f"{-value:+.0%}" if round(value, 2) else "0%")  # -85%: 85% fewer alerts than Sigma-only
                out[-1] += f" ({item.alerts_at_recall} vs {item.sigma_alerts_at_recall}, {item.cutoff})"
            elif name == "median_ttd_minutes":
                out.append(duration(value))
            elif name in ("alerts_per_day", "alerts_per_incident"):
                out.append(f"{value:.1f}")
            else:
                out.append(str(value))
        return out

    @property
    def titles(self) -> list[str]:
        k = self.meta.get("k")
        return [f"precision@{k}" if name == "precision_at_k" and k else title for name, title in COLUMNS]

    def render(self) -> str:
        """A fixed-width text table."""
        header = self.titles
        body = [self.cells(item) for item in self.rows]
        widths = [max(len(line[index]) for line in [header, *body]) for index in range(len(header))]
        lines = ["  ".join(cell.ljust(width) if index == 0 else cell.rjust(width)
                           for index, (cell, width) in enumerate(zip(line, widths, strict=True)))
                 for line in [header, *body]]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        header = self.titles
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(self.cells(item)) + " |" for item in self.rows]
        return "\n".join(lines)
