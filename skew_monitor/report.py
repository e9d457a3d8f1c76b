"""The skew report: every figure of a run in one JSON document, rendered to HTML and to a short
text summary, written to `<out-dir>/<run-id>/` and appended to the run history.

A run breaches when one of the `fail_on` checks finds something:
- "mismatch": a feature's replay match rate is below its `min_match_rate`;
- "drift": a feature is judged drifted against the reference (skew_monitor.drift);
- "expectations": a Great Expectations expectation of the reference suite fails on the logs;
- "no_data": the window holds no logged rows (logging or traffic stopped; on by default).
Exit code: 0 clean, 1 breached (checks not in `fail_on` are reported but never fail the run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from skew_monitor import history
from skew_monitor.render import render_html, window_text
from skew_monitor.replay import ReplayResult, jsonable

CHECKS = ("mismatch", "drift", "expectations", "no_data")
DRIFT_KEYS = (
    "kind",
    "n_reference",
    "n_current",
    "null_rate_reference",
    "null_rate_current",
    "psi",
    "js_distance",
    "ks_statistic",
    "ks_pvalue",
    "wasserstein_norm",
    "linf",
)


@dataclass(frozen=True)
class ReportPaths:
    """Where a run's files were written."""

    run_dir: Path
    html: Path
    json: Path
    summary: Path


def _feature_row(
    name: str,
    replay: Mapping[str, Any] | None,
    drift: Mapping[str, Any] | None,
    failures: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {"feature": name}
    if replay is not None:
        quantiles = replay.get("diff_quantiles") or {}
        row |= {
            "dtype": replay["dtype"],
            "rows_compared": replay["rows_compared"],
            "matches": replay["matches"],
            "mismatches": replay["mismatches"],
            "match_rate": replay["match_rate"],
            "min_match_rate": replay["min_match_rate"],
            "online_only_null": replay["online_only_null"],
            "offline_only_null": replay["offline_only_null"],
            "both_null": replay["both_null"],
            "smape": replay["smape"],
            **{f"diff_{q}": quantiles.get(q) for q in ("p50", "p90", "p99", "max")},
            "replay_breached": replay["breached"],
            "samples": replay["samples"],
        }
    else:
        row |= {"match_rate": None, "mismatches": None, "replay_breached": False, "samples": []}
    if drift is not None:
        row |= {k: drift.get(k) for k in DRIFT_KEYS}
        row |= {
            "drifted": bool(drift.get("drifted")),
            "drift_breaches": list(drift.get("breaches") or []),
            "thresholds": drift.get("thresholds") or {},
            "drift_note": drift.get("note"),
            "histogram": drift.get("histogram"),
        }
    else:
        row |= dict.fromkeys(DRIFT_KEYS) | {"drifted": False, "drift_breaches": []}
        row |= {"histogram": None}
    row["expectations_failed"] = failures
    return row


def build_report(
    *,
    run_id: str,
    created_at: datetime,
    service: str,
    window: Mapping[str, Any],
    rows: int,
    replay: ReplayResult | None,
    drift: Sequence[Mapping[str, Any]],
    expectations: Mapping[str, Any] | None,
    reference: Mapping[str, Any],
    fail_on: Iterable[str],
    notes: Sequence[str] = (),
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge replay, drift and expectation results into the report document (JSON-ready)."""
    fail_on = sorted(set(fail_on))
    replay_by = {f.feature: f.to_dict() for f in replay.features} if replay else {}
    drift_by = {d["feature"]: d for d in drift}
    failures_by: dict[str, int] = {}
    for failure in (expectations or {}).get("failures", []):
        column = failure.get("column") or ""
        failures_by[column] = failures_by.get(column, 0) + 1
    names = list(replay_by) + [n for n in drift_by if n not in replay_by]
    features = [
        _feature_row(n, replay_by.get(n), drift_by.get(n), failures_by.get(n, 0)) for n in names
    ]
    findings: dict[str, list[str]] = {check: [] for check in CHECKS}
    for row in features:
        if row["replay_breached"]:
            findings["mismatch"].append(
                f"mismatch: {row['feature']} match rate {row['match_rate']:.6f} < "
                f"{row['min_match_rate']} ({row['mismatches']:,} of {row['rows_compared']:,} "
                "rows differ)"
            )
        if row["drifted"]:
            findings["drift"].append(
                f"drift: {row['feature']} ({'; '.join(row['drift_breaches'])})"
            )
    for failure in (expectations or {}).get("failures", []):
        findings["expectations"].append(f"expectations: {failure.get('description', failure)}")
    if rows == 0:
        findings["no_data"].append("no_data: no logged rows in the window")
    breaches = [b for check in CHECKS if check in fail_on for b in findings[check]]
    ignored = [b for check in CHECKS if check not in fail_on for b in findings[check]]
    replay_info: dict[str, Any] = replay.to_dict() if replay else {}
    replay_info.pop("features", None)
    if replay is not None:
        replay_info["version_note"] = version_note(replay)
    if replay is not None and replay.not_replayed:
        notes = [*notes, f"logged features no longer in the service: {list(replay.not_replayed)}"]
    if replay is not None and replay.not_logged:
        notes = [*notes, f"service features missing from the logs: {list(replay.not_logged)}"]
    report = {
        "run_id": run_id,
        "created_at": created_at.isoformat(),
        "service": service,
        "window": dict(window),
        "rows": rows,
        "status": "breach" if breaches else "ok",
        "exit_code": 1 if breaches else 0,
        "fail_on": fail_on,
        "breaches": breaches,
        "ignored_findings": ignored,
        "reference": dict(reference),
        "replay": replay_info,
        "expectations": dict(expectations) if expectations else None,
        "notes": list(notes),
        "config": dict(config or {}),
        "features": features,
    }
    tree: dict[str, Any] = jsonable_tree(report)
    return tree


def version_note(replay: ReplayResult) -> str:
    """Which definitions the logged rows were replayed with."""
    own = sorted(v for v, how in replay.replayed_with.items() if how == "logged version")
    parts = []
    if replay.definitions_changed:
        changed = [
            v
            for v in replay.logged_versions
            if replay.replayed_with.get(v) == "current" and v != replay.current_version
        ]
        parts.append(
            f"rows logged with service versions {changed} "
            f"were replayed with the current definitions ({replay.current_version}); features "
            "compared by name"
        )
    if own:
        parts.append(f"rows of versions {own} were replayed with their own stored definitions")
    if not parts:
        return f"logged and replayed with the same definitions ({replay.current_version})"
    return "; ".join(parts)


def jsonable_tree(value: Any) -> Any:
    """`value` with every leaf JSON-ready (times as ISO 8601, NaN/inf as None)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable_tree(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return jsonable(value)


def summary_text(report: Mapping[str, Any], html: Path | None = None) -> str:
    """A few lines for a terminal, an e-mail or a chat alert."""
    window = report["window"]
    features = report["features"]
    replayed = [f for f in features if f.get("rows_compared")]
    exact = sum(1 for f in replayed if f["mismatches"] == 0)
    lines = [
        f"skew report {report['service']} [{report['status'].upper()}] run {report['run_id']}",
        f"window {window_text(window)}: {report['rows']:,} logged rows",
        f"replay: {exact}/{len(replayed)} features match on every row; "
        f"{sum(1 for f in features if f['replay_breached'])} below their match-rate threshold",
        f"drift vs {report['reference'].get('kind')}: "
        f"{sum(1 for f in features if f['drifted'])} of "
        f"{sum(1 for f in features if f.get('psi') is not None)} features drifted",
    ]
    gx = report.get("expectations")
    if gx:
        lines.append(
            f"expectations: {gx.get('failed', 0)} of {gx.get('evaluated', 0)} failed "
            f"(suite {gx.get('suite', '?')})"
        )
    lines += [f"  {b}" for b in report["breaches"][:20]]
    if len(report["breaches"]) > 20:
        lines.append(f"  ... and {len(report['breaches']) - 20} more (see report.json)")
    lines += [f"note: {n}" for n in report.get("notes", [])]
    if html is not None:
        lines.append(f"html: {html}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: dict[str, Any], out_dir: Path, plot_cap: int = 12) -> ReportPaths:
    """Write report.html, report.json and summary.txt to `<out_dir>/<run-id>/` and append the
    run to `<out_dir>/history.jsonl` (the trend includes this run)."""
    run_dir = out_dir / report["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        run_dir, run_dir / "report.html", run_dir / "report.json", run_dir / "summary.txt"
    )
    past = history.load(out_dir, report["service"])
    entry = history.entry_from_report(report)
    _write_atomic(paths.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
    _write_atomic(paths.html, render_html(report, [*past, entry], plot_cap))
    _write_atomic(paths.summary, summary_text(report, paths.html))
    history.append(out_dir, entry)
    return paths
