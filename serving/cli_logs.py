"""`featurelib logs flush|show`, `featurelib score` and `featurelib score-stream`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurelib.cli import since_arg, time_arg
from featurelib.offline.io import write_parquet_atomically


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _store(args: argparse.Namespace) -> Any:
    from featurelib.online.api import open_store

    return open_store(Path(args.repo), args.redis_url)


# ----------------------------------------------------------------------------- logs


def _cmd_logs_flush(args: argparse.Namespace) -> int:
    from serving.feature_log import FeatureLogger

    started = time.perf_counter()
    root = Path(args.repo).resolve()
    logger = FeatureLogger(
        root, _store(args), claim_idle_ms=args.claim_idle_ms, background=False, log=_log
    )
    try:
        replayed = logger.replay()  # spill files of processes that died while Redis was down
        results = logger.flush(args.service or None)
    finally:
        logger.close(final_flush=False)
    for result in results:
        _log(
            f"{result.service}: {result.entries:,} requests, {result.rows:,} rows "
            f"-> {len(result.files)} file(s)" + (f", {result.bad} bad" if result.bad else "")
        )
    summary = {
        "replayed": replayed,
        "services": {
            r.service: {
                "requests": r.entries,
                "rows": r.rows,
                "files": [str(f) for f in r.files],
                "bad": r.bad,
            }
            for r in results
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(summary))
    return 0


def _cmd_logs_show(args: argparse.Namespace) -> int:
    import polars as pl

    from serving.feature_log import read_logs

    logs = read_logs(Path(args.repo).resolve(), args.service, args.since, args.until)
    _log(f"{logs.height:,} logged rows of {args.service!r}")
    shown = logs.tail(args.limit) if args.limit else logs
    if args.json:
        for row in shown.iter_rows(named=True):
            print(json.dumps(row, default=str))
        return 0
    with pl.Config(tbl_rows=args.limit or 20, tbl_cols=args.columns, fmt_str_lengths=40):
        print(shown)
    return 0


# ----------------------------------------------------------------------------- scoring


def _cmd_score(args: argparse.Namespace) -> int:
    from serving.batch import score_batch
    from serving.registry import ModelRegistry

    root = Path(args.repo).resolve()
    spine = Path(args.spine)
    if not spine.exists():
        from serving.errors import ServingError

        raise ServingError(
            f"spine {spine} does not exist",
            where="featurelib score --spine",
            hint="pass a Parquet file with the entity keys, request fields and timestamps",
        )
    with ModelRegistry.open(args.registry, repo_root=root) as registry:
        scores = score_batch(
            root,
            args.model,
            str(spine),
            registry,
            timestamp_column=args.timestamp_column,
            progress=_log,
        )
    out = write_parquet_atomically(scores, Path(args.out), what="scores")
    print(f"{out}\t{scores.height} rows\t{scores['model'][0] if scores.height else ''}")
    return 0


def _cmd_score_stream(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from serving.stream_scoring import open_stream_scorer

    scorer = open_stream_scorer(
        Path(args.repo).resolve(),
        model=args.model,
        source=args.source,
        stream=args.stream,
        output_stream=args.output_stream,
        group=args.group,
        consumer=args.consumer,
        redis_url=args.redis_url,
        registry_url=args.registry,
        now=args.now,
        batch_size=args.batch_size,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        event_id_field=args.event_id_field,
        log_features=not args.no_feature_log,
        config_path=None if args.config is None else Path(args.config),
        log=_log,
    )
    try:
        stats = scorer.run(max_messages=args.max_messages, idle_exit_s=args.idle_exit)
    finally:
        scorer.close()
    print(json.dumps(asdict(stats)))
    return 0


# ----------------------------------------------------------------------------- parser


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add `logs`, `score` and `score-stream` to the `featurelib` parser."""
    logs = sub.add_parser("logs", help="feature log: flush the Redis buffer, show logged rows")
    logs_sub = logs.add_subparsers(dest="logs_command", required=True)
    p = with_repo(logs_sub.add_parser("flush", help="flush buffered log entries to Parquet"))
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
    p.add_argument("--service", action="append", help="only this service (repeatable)")
    p.add_argument(
        "--claim-idle-ms",
        type=int,
        default=60_000,
        help="also flush entries another flusher left unacknowledged this long",
    )
    p.set_defaults(func=_cmd_logs_flush)
    p = with_repo(logs_sub.add_parser("show", help="print flushed log rows"))
    p.add_argument("--service", required=True)
    p.add_argument(
        "--since", type=since_arg, default=None, help="logged_at >= this (ISO 8601, or 1h, 7d)"
    )
    p.add_argument("--until", type=time_arg, default=None, help="logged_at < this (ISO 8601)")
    p.add_argument("--limit", type=int, default=20, help="show the last N rows (0: all)")
    p.add_argument("--columns", type=int, default=12, help="columns to print")
    p.add_argument("--json", action="store_true", help="one JSON object per row")
    p.set_defaults(func=_cmd_logs_show)

    p = with_repo(sub.add_parser("score", help="batch scoring: spine -> predictions (offline)"))
    p.add_argument("--model", required=True, help="NAME, NAME@ALIAS or NAME@VERSION")
    p.add_argument("--spine", required=True, help="Parquet: entity keys, request fields, times")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--registry", default=None, help="model registry URL (default: repo SQLite)")
    p.add_argument("--timestamp-column", default="event_timestamp")
    p.set_defaults(func=_cmd_score)

    p = with_repo(
        sub.add_parser(
            "score-stream",
            help="streaming scoring: push events from a Redis Stream, score, write predictions",
        )
    )
    p.add_argument("--stream", required=True, help="input stream key, e.g. flights:events")
    p.add_argument("--output-stream", required=True, help="stream the predictions are added to")
    p.add_argument("--model", required=True, help="NAME or NAME@ALIAS / NAME@VERSION")
    p.add_argument("--source", required=True, help="source the events are pushed into")
    p.add_argument("--group", default="featurelib-score", help="consumer group")
    p.add_argument("--consumer", required=True, help="this consumer's name (unique per process)")
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
    p.add_argument("--registry", default=None, help="model registry URL (default: repo SQLite)")
    p.add_argument(
        "--now",
        type=time_arg,
        default=None,
        help="feature time (default: the wall clock); it advances in real time from here, "
        "for replays of historical events such as the demo's 2013 flights",
    )
    p.add_argument(
        "--config",
        default=None,
        help="serve YAML (routing split, shadows, log_sample_rate) as for `featurelib serve`",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--block-ms", type=int, default=1000)
    p.add_argument("--claim-idle-ms", type=int, default=30_000)
    p.add_argument("--event-id-field", default=None)
    p.add_argument("--max-messages", type=int, default=None, help="stop after N entries")
    p.add_argument("--idle-exit", type=float, default=None, help="stop after S idle seconds")
    p.add_argument(
        "--no-feature-log",
        action="store_true",
        help="do not write scored requests to the feature log (default: logged, as served ones)",
    )
    p.set_defaults(func=_cmd_score_stream)
