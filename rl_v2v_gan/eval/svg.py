"""Line charts as inline SVG: the report's plots and ``metrics.svg``, without a plotting library.

A chart is a few lines over shared axes with "nice" ticks, a title and a legend. Missing values
(None, NaN, inf) break a line rather than being drawn as zero.
"""

from __future__ import annotations

import math
from html import escape
from typing import Sequence

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
Series = Sequence[tuple[float, float | None]]  # (x, y) points, x ascending


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` (at most count + 2) round ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    if hi <= lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if (hi - lo) / (m * power) <= count + 1)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.5:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.6g}"


def _finite(y) -> bool:
    return y is not None and math.isfinite(y)


def _legend_layout(names: list[str], start: float, end: float) -> list[tuple[float, int]]:
    """(x, row) of each legend entry, placed left to right and wrapped at ``end``."""
    places, x, row = [], start, 0
    for name in names:
        width = 24 + 6 * len(name)  # swatch, gap and about 6 px per character at font-size 10
        if x > start and x + width > end:
            x, row = start, row + 1
        places.append((x, row))
        x += width + 8
    return places


def line_chart(series: dict[str, Series], title: str, x_label: str, width: int = 360, height: int = 230,
               x_integer: bool = False) -> str:
    """One ``<svg class="plot">`` chart of the named series; a legend when there are several."""
    points = [(x, y) for s in series.values() for x, y in s if _finite(y)]
    left, right, top = 58, 12, 26
    legend = _legend_layout(list(series), left, width - right) if len(series) > 1 else []
    bottom = 40 + 14 * (legend[-1][1] + 1 if legend else 0)
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>',
             f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
             f'{escape(title)}</text>']
    if not points:
        parts.append(f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" font-size="12" '
                     f'fill="#888">no values</text></svg>')
        return "".join(parts)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_ticks = nice_ticks(min(xs), max(xs))
    if x_integer:
        x_ticks = sorted({int(round(t)) for t in x_ticks if abs(t - round(t)) < 1e-9}) or [int(min(xs))]
        if len(x_ticks) == 1:
            x_ticks = [x_ticks[0] - 1, x_ticks[0], x_ticks[0] + 1]
    y_ticks = nice_ticks(min(ys), max(ys))
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * plot_h

    for t in y_ticks:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 5}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{_label(t)}</text>')
    for t in x_ticks:
        parts.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
                     f'stroke="#444"/><text x="{px(t):.1f}" y="{top + plot_h + 15}" text-anchor="middle" '
                     f'font-size="10">{_label(t)}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 29}" text-anchor="middle" '
                 f'font-size="11">{escape(x_label)}</text>')
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        runs, current = [], []
        for x, y in s:  # a missing value ends the current line segment
            if _finite(y):
                current.append((px(x), py(y)))
            elif current:
                runs.append(current)
                current = []
        runs.append(current)
        for run in runs:
            if len(run) > 1:
                d = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in run)
                parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"/>')
        if sum(len(r) for r in runs) <= 60:  # markers while few enough to read
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for r in runs for x, y in r)
        if len(series) > 1:
            lx, row = legend[i]
            ly = top + plot_h + 44 + 14 * row
            parts.append(f'<line x1="{lx:.1f}" x2="{lx + 14:.1f}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                         f'stroke-width="2"/><text x="{lx + 18:.1f}" y="{ly}" font-size="10">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def chart_grid(charts: list[str], columns: int = 3, width: int = 360, height: int = 230) -> str:
    """A standalone SVG document laying out ``line_chart`` outputs of one size in a grid."""
    rows = max(1, math.ceil(len(charts) / columns))
    total_w, total_h = width * min(columns, max(len(charts), 1)), height * rows
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
             f'viewBox="0 0 {total_w} {total_h}" font-family="sans-serif">']
    for i, chart in enumerate(charts):
        x, y = (i % columns) * width, (i // columns) * height
        parts.append(f'<g transform="translate({x},{y})">{chart}</g>')
    parts.append("</svg>")
    return "\n".join(parts)
