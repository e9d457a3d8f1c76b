"""Run history for report trends: one JSON line per run in `<out-dir>/history.jsonl`.

A line holds the run id, service, window, status and, per feature, the headline figures (match
rate, mismatches, drift metrics, drifted). Appends take an exclusive lock so a cron run and an
`--every` loop writing to the same directory never interleave lines; a torn last line (a crash
mid-write) is skipped on reading, not fatal.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

HISTORY_FILE = "history.jsonl"
TREND_FIELDS = (
    "match_rate",
    "mismatches",
    "psi",
    "js_distance",
    "ks_statistic",
    "wasserstein_norm",
    "linf",
    "drifted",
)


def history_path(out_dir: Path) -> Path:
    return out_dir / HISTORY_FILE


def entry_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """The history line of a report (report.json): headline figures only."""
    features = {}
    for row in report["features"]:
        features[row["feature"]] = {k: row.get(k) for k in TREND_FIELDS}
    return {
        "run_id": report["run_id"],
        "created_at": report["created_at"],
        "service": report["service"],
        "window": report["window"],
        "status": report["status"],
        "rows": report["rows"],
        "breaches": report["breaches"],
        "features": features,
    }


def append(out_dir: Path, entry: dict[str, Any]) -> None:
    """Append one run (locked, flushed and fsynced: the trend must survive a crash)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True, allow_nan=False) + "\n"
    with history_path(out_dir).open("a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if handle.tell() and not _ends_with_newline(handle.name):
                line = "\n" + line  # a crashed writer's torn line must not swallow this run
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as raw:
        raw.seek(-1, os.SEEK_END)
        return raw.read(1) == b"\n"


def load(out_dir: Path, service: str | None = None, limit: int = 30) -> list[dict[str, Any]]:
    """The last `limit` runs (of `service` when given), oldest first."""
    path = history_path(out_dir)
    if not path.exists():
        return []
    runs = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError:
            continue  # a torn line from a crashed writer
        if isinstance(entry, dict) and (service is None or entry.get("service") == service):
            runs.append(entry)
    return runs[-limit:] if limit else runs
