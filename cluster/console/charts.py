"""Charts as inline SVG, made on the server: nothing to download, works offline, no script.

Only numbers computed here and `html.escape`d labels go into the markup, so the result is safe to
mark as such (`Markup`) even though the labels (entity names) come from events.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

from markupsafe import Markup

__all__ = ["bar", "risk_chart"]


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def risk_chart(points: list[tuple[int, float]], label: str, width: int = 320, height: int = 64,
               ceiling: float | None = None, thresholds: tuple[float, float, float] = (100.0, 60.0, 25.0)) -> Markup:
    """An entity's risk over event time: a step line (risk holds until the next contribution), a
    dot per contribution with its time and value as a tooltip, and the P-thresholds as guides."""
    title = html.escape(f"risk of {label} over time", quote=True)
    if not points:
        return Markup(f'<svg class="chart" role="img" aria-label="{title}" width="{width}" height="{height}"></svg>')
    pad = 4
    start, end = points[0][0], points[-1][0]
    span = max(1, end - start)
    top = max(ceiling or 0.0, max(risk for _, risk in points), 1.0)

    def x(ms: int) -> float:
        return pad + (ms - start) / span * (width - 2 * pad) if end > start else width / 2

    def y(risk: float) -> float:
        return height - pad - risk / top * (height - 2 * pad)

    path: list[str] = []
    for index, (ms, risk) in enumerate(points):
        if index:
            path.append(f"H{x(ms):.1f}")
            path.append(f"V{y(risk):.1f}")
        else:
            path.append(f"M{x(ms):.1f},{y(risk):.1f}")
    if len(points) == 1:
        path.append(f"H{x(end) + 1:.1f}")
    dots = "".join(f'<circle cx="{x(ms):.1f}" cy="{y(risk):.1f}" r="2.5"><title>{html.escape(_when(ms))}: '
                   f"risk {risk:.1f}</title></circle>" for ms, risk in points[-60:])
    guides = "".join(f'<line class="guide p{n}" x1="{pad}" x2="{width - pad}" y1="{y(level):.1f}" y2="{y(level):.1f}"/>'
                     for n, level in enumerate(thresholds, 1) if level <= top)
    return Markup(f'<svg class="chart" role="img" aria-label="{title}" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}"><title>{title}</title>{guides}<path class="line" d="{"".join(path)}"/>{dots}</svg>')


def bar(share: float, width: int = 100, height: int = 10, css: str = "") -> Markup:
    """A horizontal bar for a share in [0, 1]."""
    share = min(1.0, max(0.0, share))
    name = html.escape(css, quote=True)
    return Markup(f'<svg class="bar {name}" role="img" aria-label="{share:.0%}" width="{width}" height="{height}">'
                  f'<rect class="track" width="{width}" height="{height}"/>'
                  f'<rect class="fill" width="{share * width:.1f}" height="{height}"/></svg>')
