"""One skew-monitor run: read the logs of a window, replay them offline, measure drift against
the reference, validate the expectations, write the report and decide the exit code.

The window is on `logged_at` (the wall-clock time rows were served), so `--since 24h` means
"what was served in the last 24 hours" even when the server replays history under `--now`.

The reference and the expectation suite come from `skew_monitor.references`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.errors import FeaturelibError
from featurelib.repo import Repo
from skew_monitor.drift import compute_drift, feature_kind
from skew_monitor.references import (
    build_reference_suite,
    logged_definitions,
    resolve_reference,
    validate_logs,
)
from skew_monitor.replay import ReplayConfig, replay
from skew_monitor.report import CHECKS, ReportPaths, build_report, summary_text, write_report
from skew_monitor.thresholds import DriftConfig

Progress = Callable[[str], None]


class SkewRunError(FeaturelibError):
    """A skew-monitor run cannot start: bad window, unknown reference, unreadable config."""


@dataclass(frozen=True)
class RunConfig:
    """What one run reads, compares against, and fails on."""

    service: str
    start: datetime | None = None
    end: datetime | None = None
    out_dir: Path | None = None  # default <root>/data/skew_reports
    reference: str = "model"
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    fail_on: frozenset[str] = frozenset(CHECKS)
    registry_url: str | None = None
    plot_cap: int = 12

    def __post_init__(self) -> None:
        unknown = set(self.fail_on) - set(CHECKS)
        if unknown:
            raise SkewRunError(
                f"unknown checks {sorted(unknown)} in fail_on",
                hint=f"use a comma-separated subset of {', '.join(CHECKS)}",
            )
        if self.start and self.end and self.start >= self.end:
            raise SkewRunError(
                f"window start {self.start.isoformat()} is not before end {self.end.isoformat()}",
                hint="pass --start earlier than --end, or use --since 24h",
            )


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its exit code, report document and files."""

    exit_code: int
    report: dict[str, Any]
    paths: ReportPaths
    summary: str


def load_logs(root: Path, config: RunConfig) -> pl.DataFrame:
    """The flushed feature-log rows of the run's window (serving.feature_log.read_logs)."""
    from serving.feature_log import read_logs

    return read_logs(root, config.service, config.start, config.end)


def _drift_features(
    reference: pl.DataFrame, current: pl.DataFrame, names: Sequence[str]
) -> list[str]:
    """Features present on both sides with a kind drift can measure (lists, times are skipped)."""
    out = []
    for name in names:
        if name not in reference.columns or name not in current.columns:
            continue
        dtype = reference.schema[name]
        if dtype == pl.Null:
            dtype = current.schema[name]
        if feature_kind(dtype) is not None:
            out.append(name)
    return out


def _run_id(now: datetime) -> str:
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def run_once(
    root: str | Path,
    config: RunConfig,
    *,
    logs: pl.DataFrame | None = None,
    repo: Repo | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> RunOutcome:
    """Run the whole pipeline once (logs read from the feature log unless given)."""
    started = time.perf_counter()
    root = Path(root).resolve()
    now = now or datetime.now(UTC)
    say = progress or (lambda _msg: None)
    repo = repo or Repo.load(root)
    service = repo.service(config.service)
    window: dict[str, Any] = {
        "start": config.start.isoformat() if config.start else None,
        "end": config.end.isoformat() if config.end else None,
        "on": "logged_at",
    }
    if logs is None:
        say(f"reading feature logs of {config.service!r} ({window['start']} .. {window['end']})")
        logs = load_logs(root, config)
    say(f"{logs.height:,} logged rows")
    if logs.height and "logged_at" in logs.columns:
        window["first_logged_at"] = logs["logged_at"].min()
        window["last_logged_at"] = logs["logged_at"].max()
    notes: list[str] = []
    if "degraded" in logs.columns:
        # Rows served with default values while the online store was down say nothing about
        # skew or drift: count them, leave them out.
        degraded = int(logs["degraded"].fill_null(False).sum())
        if degraded:
            logs = logs.filter(pl.col("degraded").fill_null(False).not_())
            notes.append(
                f"{degraded:,} rows served with default values while the online store was "
                "unavailable are left out of the replay, drift and expectations"
            )
    older = logged_definitions(root, config.registry_url, logs, service, notes)
    replayed = replay(logs, service, repo, config.replay, say, older) if logs.height else None
    outputs = [f for f in service.output_names() if f in logs.columns]
    reference = resolve_reference(
        root, config.reference, config.registry_url, logs, replayed, outputs, notes
    )
    drift_names = _drift_features(reference.frame, logs, outputs)
    say(f"drift of {len(drift_names)} features against the {reference.info['kind']} reference")
    drift = (
        compute_drift(reference.frame, logs, drift_names, config.drift)
        if drift_names and logs.height
        else []
    )
    suite = reference.suite
    if suite is None and reference.frame.height and logs.height:
        suite = build_reference_suite(
            reference.frame, outputs, notes, f"{config.service}-reference"
        )
    gx = validate_logs(suite, logs, notes) if suite and logs.height else None
    report = build_report(
        run_id=_run_id(now),
        created_at=now,
        service=config.service,
        window=window,
        rows=logs.height,
        replay=replayed,
        drift=[_with_thresholds(d.to_dict(), config.drift) for d in drift],
        expectations=gx,
        reference=reference.info,
        fail_on=config.fail_on,
        notes=notes,
        config={
            "replay": _replay_config_dict(config.replay),
            "drift": config.drift.to_dict(),
            "reference": config.reference,
        },
    )
    report["seconds"] = round(time.perf_counter() - started, 3)
    out_dir = config.out_dir or root / "data" / "skew_reports"
    paths = write_report(report, out_dir, config.plot_cap)
    say(f"report written to {paths.run_dir} in {report['seconds']:.1f}s")
    return RunOutcome(report["exit_code"], report, paths, summary_text(report, paths.html))


def _with_thresholds(drift: dict[str, Any], config: DriftConfig) -> dict[str, Any]:
    thresholds = config.thresholds_for(drift["feature"])
    drift["thresholds"] = {
        "psi": thresholds.psi,
        "js_distance": thresholds.js_distance,
        "wasserstein_norm": thresholds.wasserstein_norm,
        "linf": thresholds.linf,
    }
    drift["note"] = "; ".join(drift.get("notes") or []) or None
    return drift


def _replay_config_dict(config: ReplayConfig) -> dict[str, Any]:
    def tol(t: Any) -> dict[str, float]:
        return {
            "rel_tolerance": t.rel_tolerance,
            "abs_tolerance": t.abs_tolerance,
            "min_match_rate": t.min_match_rate,
        }

    return {
        **tol(config.default),
        "samples": config.samples,
        "features": {k: tol(v) for k, v in config.per_feature.items()},
    }


def load_config(path: str | Path) -> dict[str, Any]:
    """A skew config file (YAML or JSON): sections `replay`, `drift`, `fail_on`, `reference`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SkewRunError(f"cannot read config: {exc}", where=str(path)) from exc
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text) or {}
        else:
            raw = json.loads(text)
    except Exception as exc:
        raise SkewRunError(
            f"config is not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}", where=str(path)
        ) from exc
    if not isinstance(raw, Mapping):
        raise SkewRunError("config must be a mapping of sections", where=str(path))
    unknown = set(raw) - {"replay", "drift", "fail_on", "reference"}
    if unknown:
        raise SkewRunError(
            f"unknown config sections {sorted(unknown)}",
            where=str(path),
            hint="sections are replay, drift, fail_on, reference",
        )
    return dict(raw)
