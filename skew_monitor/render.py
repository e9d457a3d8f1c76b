"""The report as one self-contained static HTML page: inline CSS and inline SVG, no scripts,
no fonts, no links to anything outside the file.

Every figure of the per-feature table sits in a cell carrying `data-feature`, `data-key` (the
name of the figure in report.json) and `data-value` (the exact JSON value), so the page can be
checked against the JSON and scraped without parsing formatted numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from skew_monitor import plots

TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rows_compared", "rows"),
    ("match_rate", "match rate"),
    ("mismatches", "mismatches"),
    ("online_only_null", "online-only null"),
    ("offline_only_null", "offline-only null"),
    ("smape", "SMAPE"),
    ("diff_p50", "|diff| p50"),
    ("diff_p99", "|diff| p99"),
    ("diff_max", "|diff| max"),
    ("psi", "PSI"),
    ("js_distance", "JS distance"),
    ("ks_statistic", "KS"),
    ("ks_pvalue", "KS p"),
    ("wasserstein_norm", "W1/std"),
    ("linf", "L-inf"),
    ("null_rate_reference", "null ref"),
    ("null_rate_current", "null online"),
    ("expectations_failed", "GX failed"),
)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px}
.status{display:inline-block;padding:3px 10px;border-radius:4px;color:#fff;font-weight:bold}
.status.ok{background:#2ca02c}.status.breach{background:#d62728}
table{border-collapse:collapse;font-size:12px;margin-top:8px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3;position:sticky;top:0}td.name,th.name{text-align:left}
tr.bad td{background:#fdecea}td.flag{color:#d62728;font-weight:bold}
.plots{display:flex;flex-wrap:wrap;gap:16px}.plot-card{border:1px solid #ddd;padding:6px}
.meta td{text-align:left;border:none;padding:1px 8px 1px 0}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto}
code{font-size:12px}
"""


def window_text(window: Mapping[str, Any]) -> str:
    """`start .. end` of a window (logged_at); open ends read "beginning" / "now"."""
    return f"{window.get('start') or 'beginning'} .. {window.get('end') or 'now'}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) < 1e3 else f"{value:,.1f}"
        return f"{value:.3e}"
    return escape(str(value))


def _cell(feature: str, key: str, value: Any, flag: bool = False) -> str:
    raw = escape(json.dumps(value, allow_nan=False))
    cls = ' class="flag"' if flag else ""
    return (
        f'<td{cls} data-feature="{escape(feature)}" data-key="{key}" data-value="{raw}">'
        f"{_fmt(value)}</td>"
    )


def histogram_parts(histogram: dict[str, Any]) -> tuple[list[str], list[float], list[float]]:
    """Bin labels and reference/current proportions of a drift histogram (numeric bins are
    right-closed between the edges, the outer ones open-ended)."""
    reference = [float(x) for x in histogram.get("reference", [])]
    current = [float(x) for x in histogram.get("current", [])]
    categories = histogram.get("categories")
    if categories:
        labels = [str(c) for c in categories]
        other_ref = float(histogram.get("other_reference") or 0.0)
        other_cur = float(histogram.get("other_current") or 0.0)
        if other_ref or other_cur:  # the categories beyond the plotted ones, summed
            return [*labels, "(other)"], [*reference, other_ref], [*current, other_cur]
        return labels, reference, current
    edges = [float(e) for e in histogram.get("edges") or []]
    finite = [e for e in edges if math.isfinite(e)]
    if not finite:
        return ["all"] * len(reference), reference, current
    labels = [f"≤{plots._fmt(finite[0])}"]
    labels += [f"≤{plots._fmt(b)}" for b in finite[1:]]
    labels.append(f">{plots._fmt(finite[-1])}")
    return labels[: len(reference)], reference, current


def _bars(row: dict[str, Any]) -> list[plots.Bar]:
    thresholds = row.get("thresholds") or {}
    breaches = row.get("drift_breaches") or []
    bars = [
        plots.Bar(
            "mismatch rate",
            1.0 - row["match_rate"] if row.get("match_rate") is not None else None,
            1.0 - row.get("min_match_rate", 0.999),
            bool(row.get("replay_breached")),
        )
    ]
    metrics = ["psi", "js_distance"]
    metrics += ["linf"] if row.get("kind") == "categorical" else ["wasserstein_norm"]
    for name in metrics:
        bars.append(
            plots.Bar(
                name,
                row.get(name),
                thresholds.get(name),
                any(b.startswith(name) for b in breaches),
            )
        )
    return bars


def _feature_table(rows: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(label)}</th>" for _, label in TABLE_COLUMNS)
    out = [
        '<table class="features"><thead><tr><th class="name">feature</th><th>kind</th>'
        f"{head}<th>verdict</th></tr></thead><tbody>"
    ]
    for row in rows:
        name = row["feature"]
        bad = row["replay_breached"] or row["drifted"] or row["expectations_failed"]
        flags = {
            "match_rate": row["replay_breached"],
            "mismatches": row["replay_breached"],
            "expectations_failed": bool(row["expectations_failed"]),
        }
        for key in ("psi", "js_distance", "ks_statistic", "wasserstein_norm", "linf"):
            flags[key] = any(b.startswith(key) for b in row.get("drift_breaches") or [])
        verdict = [
            label
            for label, on in (
                ("mismatch", row["replay_breached"]),
                ("drift", row["drifted"]),
                ("expectations", row["expectations_failed"]),
            )
            if on
        ]
        out.append(
            f'<tr class="{"bad" if bad else "ok"}" data-feature="{escape(name)}">'
            f'<td class="name">{escape(name)}</td><td>{escape(str(row.get("kind") or ""))}</td>'
        )
        out += [_cell(name, key, row.get(key), flags.get(key, False)) for key, _ in TABLE_COLUMNS]
        out.append(f"<td>{escape(', '.join(verdict) or 'ok')}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _plots(report: dict[str, Any], cap: int) -> str:
    cards = []
    shown = 0
    for row in report["features"]:
        hist = row.get("histogram")
        flagged = row["replay_breached"] or row["drifted"] or bool(row["expectations_failed"])
        if not hist or (not flagged and shown >= cap):
            continue
        shown += 0 if flagged else 1
        labels, ref, cur = histogram_parts(hist)
        cards.append(
            '<div class="plot-card">'
            + plots.histogram_svg(row["feature"], labels, ref, cur, flagged=flagged)
            + plots.metric_bars_svg(row["feature"], _bars(row))
            + "</div>"
        )
    return f'<div class="plots">{"".join(cards)}</div>' if cards else "<p>No histograms.</p>"


def _trend(history: Sequence[dict[str, Any]], features: Sequence[dict[str, Any]]) -> str:
    if not history:
        return "<p>No previous runs.</p>"
    runs = [h["created_at"][:16].replace("T", " ") for h in history]
    counts: dict[str, list[float | None]] = {"mismatching": [], "drifted": [], "total breaches": []}
    min_match: dict[str, list[float | None]] = {"lowest match rate": []}
    for h in history:
        feats = list(h.get("features", {}).values())
        rates = [f["match_rate"] for f in feats if f.get("match_rate") is not None]
        counts["mismatching"].append(float(sum(1 for rate in rates if rate < 1.0)))
        counts["drifted"].append(float(sum(1 for f in feats if f.get("drifted"))))
        counts["total breaches"].append(float(len(h.get("breaches", []))))
        min_match["lowest match rate"].append(min(rates) if rates else None)
    # PSI over the runs of the features flagged now (the ones a reader will ask about).
    flagged = [r["feature"] for r in features if r["drifted"] or r["replay_breached"]][:6]
    psi = {
        name: [h.get("features", {}).get(name, {}).get("psi") for h in history] for name in flagged
    }
    out = plots.trend_svg("features breaching per run", runs, counts, y_range=(0.0, 1.0))
    out += plots.trend_svg("lowest per-feature match rate", runs, min_match, y_range=(0.0, 1.0))
    if psi:
        out += plots.trend_svg("PSI of the features flagged in this run", runs, psi)
    return out


def render_html(
    report: dict[str, Any], history: Sequence[dict[str, Any]], plot_cap: int = 12
) -> str:
    """The whole page for `report` (report.json's content) with the trend over `history`."""
    status = report["status"]
    window = report["window"]
    meta_rows = [
        ("service", report["service"]),
        ("window (logged_at)", window_text(window)),
        ("rows logged at", f"{window.get('first_logged_at')} .. {window.get('last_logged_at')}"),
        ("rows", f"{report['rows']:,}"),
        ("reference", report["reference"].get("description", report["reference"]["kind"])),
        ("definitions", report["replay"].get("version_note", "")),
        ("run id", report["run_id"]),
    ]
    meta = "".join(
        f"<tr><td><b>{escape(k)}</b></td><td>{escape(str(v))}</td></tr>" for k, v in meta_rows
    )
    breaches = "".join(f"<li>{escape(b)}</li>" for b in report["breaches"]) or "<li>none</li>"
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.get("notes", []))
    samples = []
    for row in report["features"]:
        if row.get("samples"):
            text = json.dumps(row["samples"], indent=1, default=str)
            samples.append(f"<h3>{escape(row['feature'])}</h3><pre>{escape(text)}</pre>")
    gx = report.get("expectations") or {}
    gx_html = ""
    if gx.get("failures"):
        items = "".join(
            f"<li>{escape(str(f.get('description') or f))}</li>" for f in gx["failures"]
        )
        gx_html = f"<h2>Failed expectations</h2><ul>{items}</ul>"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Skew report {escape(report['service'])} {escape(report['run_id'])}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>Skew report: {escape(report['service'])}</h1>"
        f'<p><span class="status {"ok" if status == "ok" else "breach"}">{escape(status)}</span>'
        f" exit code {report['exit_code']}</p>"
        f'<table class="meta">{meta}</table>'
        f"<h2>Breaches</h2><ul>{breaches}</ul>"
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + f"<h2>Per feature</h2>{_feature_table(report['features'])}"
        f"<h2>Distributions (reference vs online)</h2>{_plots(report, plot_cap)}"
        f"<h2>Trend over runs</h2>{_trend(history, report['features'])}"
        + gx_html
        + (f"<h2>Sample mismatching rows</h2>{''.join(samples)}" if samples else "")
        + "</body></html>"
    )
