"""`featurelib skew-report`: replay, drift and expectations over a window of feature logs.

    featurelib skew-report --repo feature_repo --service flight_delay --since 24h
    featurelib skew-report --service flight_delay --start 2026-01-01 --end 2026-01-02
    featurelib skew-report --service flight_delay --since 24h --every 24h   # keeps running

Writes `<out-dir>/<run-id>/report.html|report.json|summary.txt`, appends to
`<out-dir>/history.jsonl`, prints the summary (stdout) and progress (stderr). Exit code: 0 clean,
1 a threshold was breached (a check listed in --fail-on), 2 usage error, 3 unexpected failure.
With --every the exit code is the last run's when the loop is stopped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from featurelib.cli import time_arg
from featurelib.durations import parse_duration
from featurelib.errors import FeaturelibError


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text, where="command line")
    except FeaturelibError as exc:
        raise argparse.ArgumentTypeError(f"{exc.what}: use e.g. 30min, 24h or 7d") from None


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add the skew monitor's commands to the `featurelib` parser."""
    p = with_repo(
        sub.add_parser(
            "skew-report",
            help="row-level replay + drift + expectations report over logged requests",
            description=__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    p.add_argument("--service", required=True, help="feature service whose logs are checked")
    window = p.add_mutually_exclusive_group()
    window.add_argument(
        "--since", type=_duration, help="window = the last DURATION of logged_at (e.g. 24h)"
    )
    window.add_argument("--start", type=time_arg, help="window start (logged_at, inclusive)")
    p.add_argument("--end", type=time_arg, help="window end (logged_at, exclusive; default: now)")
    p.add_argument("--out-dir", type=Path, help="default: REPO/data/skew_reports")
    p.add_argument(
        "--reference",
        help="model (training sample of the serving model version; default), offline (the "
        "replayed offline values of the same rows) or a Parquet file of features",
    )
    p.add_argument("--config", type=Path, help="YAML/JSON with replay, drift, fail_on sections")
    p.add_argument(
        "--registry",
        help="model registry URL (default: FEATURELIB_REGISTRY_URL or "
        "sqlite:///REPO/data/models.db)",
    )
    p.add_argument(
        "--fail-on",
        help="comma-separated checks that make the exit code 1: mismatch, drift, expectations, "
        "no_data (default: all)",
    )
    p.add_argument("--every", type=_duration, help="keep running: one report per DURATION")
    p.add_argument("--max-runs", type=int, help="with --every: stop after N runs")
    p.set_defaults(func=_cmd_skew_report)


def _build_config(args: argparse.Namespace, now: datetime) -> Any:
    from skew_monitor.replay import ReplayConfig
    from skew_monitor.run import RunConfig, SkewRunError, load_config
    from skew_monitor.thresholds import DriftConfig

    raw = load_config(args.config) if args.config else {}
    fail_on = args.fail_on or raw.get("fail_on")
    if isinstance(fail_on, str):
        fail_on = [c.strip() for c in fail_on.split(",") if c.strip()]
    if args.end is not None and args.since is not None:
        raise SkewRunError("--end cannot be combined with --since", hint="use --start/--end")
    start = now - args.since if args.since is not None else args.start
    end = args.end if args.end is not None else (now if args.since is not None else None)
    kwargs: dict[str, Any] = {
        "service": args.service,
        "start": start,
        "end": end,
        "out_dir": args.out_dir.resolve() if args.out_dir else None,
        "reference": args.reference or raw.get("reference") or "model",
        "replay": ReplayConfig.from_dict(raw.get("replay") or {}),
        "drift": DriftConfig.from_dict(raw.get("drift") or {}),
        "registry_url": args.registry,
    }
    if fail_on is not None:
        kwargs["fail_on"] = frozenset(fail_on)
    return RunConfig(**kwargs)


def _one_run(args: argparse.Namespace) -> int:
    from skew_monitor.run import run_once

    now = datetime.now(UTC)
    config = _build_config(args, now)
    outcome = run_once(Path(args.repo), config, now=now, progress=_log)
    print(outcome.summary, end="", flush=True)
    return outcome.exit_code


def _cmd_skew_report(args: argparse.Namespace) -> int:
    if args.every is None:
        return _one_run(args)
    if args.start is not None or args.end is not None:
        _log("note: with --every and --start/--end every run reads the same fixed window")
    from skew_monitor.schedule import run_every

    def job() -> int:
        try:
            return _one_run(args)
        except FeaturelibError as exc:
            _log(f"error: {exc}")
            return 2

    result = run_every(args.every.total_seconds(), job, max_runs=args.max_runs, log=_log)
    _log(f"stopped after {result.runs} run(s)")
    return result.last_exit_code
