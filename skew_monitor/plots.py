"""Hand-written inline SVG plots for the report: no scripts, no fonts, no external assets.

Every plot is one `<svg>` element carrying `data-plot` (its kind) and, for per-feature plots,
`data-feature` (the feature's name), so tests and scrapers can find them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

REFERENCE_COLOR = "#1f77b4"
CURRENT_COLOR = "#ff7f0e"
BREACH_COLOR = "#d62728"
OK_COLOR = "#2ca02c"
TREND_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


@dataclass(frozen=True)
class Bar:
    """One metric bar: its value and the threshold it is judged against (None: no threshold)."""

    name: str
    value: float | None
    threshold: float | None
    breached: bool


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.2e}"


def _svg_open(
    kind: str, width: int, height: int, feature: str | None, title: str, extra: str = ""
) -> str:
    data = f' data-feature="{escape(feature)}"' if feature is not None else ""
    data += extra
    return (
        f'<svg class="plot" data-plot="{kind}"{data} width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def histogram_svg(
    feature: str,
    labels: Sequence[str],
    reference: Sequence[float],
    current: Sequence[float],
    *,
    flagged: bool = False,
    width: int = 420,
    height: int = 220,
) -> str:
    """Overlaid reference/current proportions per bin as two semi-transparent bar series."""
    n = max(len(labels), 1)
    left, right, top, bottom = 44, 10, 26, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max([*reference, *current, 1e-12])
    peak = top_value * 1.08  # headroom above the tallest bar
    slot = plot_w / n
    title = f"{feature}: reference vs online distribution"
    # The plotted proportions, exactly as report.json holds them (for checks and scrapers).
    values = (
        f' data-reference="{escape(json.dumps(list(reference)))}"'
        f' data-current="{escape(json.dumps(list(current)))}"'
    )
    parts = [_svg_open("histogram", width, height, feature, title, values)]
    border = BREACH_COLOR if flagged else "#999"
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
        f'stroke="{border}" stroke-width="{2 if flagged else 1}"/>'
    )
    for series, color in ((reference, REFERENCE_COLOR), (current, CURRENT_COLOR)):
        for i, p in enumerate(series):
            h = plot_h * (p / peak)
            x = left + i * slot + slot * 0.08
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.84:.1f}" '
                f'height="{h:.1f}" fill="{color}" fill-opacity="0.5">'
                f"<title>{escape(labels[i] if i < len(labels) else '')}: {p:.4f}</title></rect>"
            )
    step = max(1, math.ceil(n / 8))  # at most ~8 axis labels
    for i in range(0, len(labels), step):
        x = left + (i + 0.5) * slot
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" font-size="9" text-anchor="middle">'
            f"{escape(labels[i][:12])}</text>"
        )
    parts.append(
        f'<text x="{left - 4}" y="{top + plot_h * 0.08 + 8:.1f}" font-size="9" '
        f'text-anchor="end">{top_value:.2f}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="9" text-anchor="end">0</text>'
        f'<text x="{left}" y="16" font-size="12" font-weight="bold">{escape(feature)}</text>'
        f'<rect x="{left}" y="{height - 18}" width="10" height="10" fill="{REFERENCE_COLOR}" '
        f'fill-opacity="0.5"/><text x="{left + 14}" y="{height - 9}" font-size="10">'
        f"reference</text>"
        f'<rect x="{left + 84}" y="{height - 18}" width="10" height="10" fill="{CURRENT_COLOR}" '
        f'fill-opacity="0.5"/><text x="{left + 98}" y="{height - 9}" font-size="10">'
        f"online</text></svg>"
    )
    return "".join(parts)


def metric_bars_svg(feature: str, bars: Sequence[Bar], *, width: int = 420) -> str:
    """Horizontal bars, each metric scaled to its threshold (the dashed line at 100%)."""
    row_h, left, right = 20, 130, 70
    height = 24 + row_h * max(len(bars), 1)
    plot_w = width - left - right
    title = f"{feature}: metrics against thresholds"
    parts = [_svg_open("metrics", width, height, feature, title)]
    limit_x = left + plot_w / 2  # the threshold sits mid-way, so 2x the threshold fills the row
    for i, bar in enumerate(bars):
        y = 16 + i * row_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 12}" font-size="10" text-anchor="end">'
            f"{escape(bar.name)}</text>"
        )
        if bar.value is None:
            parts.append(f'<text x="{left}" y="{y + 12}" font-size="10">n/a</text>')
            continue
        scale = bar.threshold if bar.threshold else max(abs(bar.value), 1e-12) * 2
        frac = min(abs(bar.value) / scale / 2, 1.0) if scale else 0.0
        color = BREACH_COLOR if bar.breached else OK_COLOR
        parts.append(
            f'<rect x="{left}" y="{y + 2}" width="{plot_w * frac:.1f}" height="{row_h - 6}" '
            f'fill="{color}" fill-opacity="0.7"/>'
            f'<text x="{left + plot_w + 4}" y="{y + 12}" font-size="10">{_fmt(bar.value)}</text>'
        )
    parts.append(
        f'<line x1="{limit_x:.1f}" y1="10" x2="{limit_x:.1f}" y2="{height - 4}" stroke="#555" '
        f'stroke-dasharray="3,3"/><text x="{limit_x:.1f}" y="9" font-size="9" '
        f'text-anchor="middle">threshold</text></svg>'
    )
    return "".join(parts)


def trend_svg(
    title: str,
    runs: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    width: int = 640,
    height: int = 240,
    y_range: tuple[float, float] | None = None,
) -> str:
    """One line per series over past runs (x: run order, oldest left); gaps where a run lacks
    it. The y axis spans the values, or `y_range` when given (e.g. (0, 1) for rates)."""
    left, right, top, bottom = 50, 150, 24, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for vs in series.values() for v in vs if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if y_range is not None:
        lo, hi = min(lo, y_range[0]), max(hi, y_range[1])
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    n = max(len(runs), 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        return x, top + plot_h * (1 - (v - lo) / (hi - lo))

    parts = [_svg_open("trend", width, height, None, title)]
    parts.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>'
        f'<text x="{left}" y="16" font-size="12" font-weight="bold">{escape(title)}</text>'
        f'<text x="{left - 4}" y="{top + 8}" font-size="9" text-anchor="end">{_fmt(hi)}</text>'
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="9" text-anchor="end">{_fmt(lo)}</text>'
    )
    for k, (name, vs) in enumerate(series.items()):
        color = TREND_COLORS[k % len(TREND_COLORS)]
        points = [xy(i, v) for i, v in enumerate(vs) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>'
            )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in points]
        ly = top + 10 + 14 * k
        parts.append(
            f'<rect x="{left + plot_w + 8}" y="{ly - 8}" width="10" height="10" fill="{color}"/>'
            f'<text x="{left + plot_w + 22}" y="{ly}" font-size="10">{escape(name[:22])}</text>'
        )
    if runs:
        parts.append(
            f'<text x="{left}" y="{height - 10}" font-size="9">{escape(runs[0])}</text>'
            f'<text x="{left + plot_w}" y="{height - 10}" font-size="9" text-anchor="end">'
            f"{escape(runs[-1])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
