"""The `featurelib` command line: demo data, definitions, training sets."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from featurelib.errors import FeaturelibError


def _default_repo() -> str:
    return "." if Path("feature_store.yaml").exists() else "feature_repo"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from featurelib.demo.flights_data import generate

    out = Path(args.repo) / "data"
    started = time.perf_counter()
    paths = generate(out, progress=_log)
    # Pushed events belong to the data they were pushed onto: a regenerated demo starts clean.
    shutil.rmtree(out / "_push_log", ignore_errors=True)
    for name, path in paths.items():
        print(f"{name}\t{path}")
    _log(f"demo data written to {out} in {time.perf_counter() - started:.1f}s")
    return 0


def _cmd_demo_stream(args: argparse.Namespace) -> int:
    from featurelib.demo.stream import new_flights, run_id, send
    from featurelib.online.connection import connect

    repo = Path(args.repo).resolve()
    flights = new_flights(repo / "data", args.count)
    sent = send(connect(args.redis_url, repo_root=repo), args.stream, flights, run_id())
    last = flights["event_timestamp"].max()
    _log(f"sent {sent} new flights to stream {args.stream!r} (latest event {last!s})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from featurelib.repo import Repo

    repo = Repo.load(args.repo)
    for obj in repo.objects():
        kind = type(obj).__name__
        extra = ""
        if hasattr(obj, "feature_names"):
            extra = f"  features={len(obj.feature_names())}  version={obj.version}"
        print(f"{kind:<16} {obj.name}{extra}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from featurelib.errors import RepoError
    from featurelib.repo import Repo

    repo = Repo.load(args.repo)
    for obj in repo.objects():
        if obj.name == args.name:
            print(json.dumps(obj.to_spec(), indent=2, sort_keys=True))
            return 0
    raise RepoError(
        f"no definition named {args.name!r}",
        hint="`featurelib list` shows every definition",
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from featurelib.offline.io import source_columns
    from featurelib.repo import Repo
    from featurelib.views import AggregationView, FeatureView

    repo = Repo.load(args.repo)
    checked = 0
    views: list[FeatureView | AggregationView] = [
        *repo.feature_views.values(),
        *repo.aggregation_views.values(),
    ]
    for view in views:
        view.feature_dtypes(source_columns(view.source, repo.root))
        checked += 1
    print(f"ok: {len(repo.objects())} definitions, {checked} views checked against their data")
    return 0


def _cmd_training_set(args: argparse.Namespace) -> int:
    from featurelib.offline.engine import training_set
    from featurelib.repo import Repo

    started = time.perf_counter()
    repo = Repo.load(args.repo)
    service = repo.service(args.service)
    _log(f"building training set for {service.name!r} from {args.spine}")
    frame = training_set(
        service,
        args.spine,
        repo=repo,
        timestamp_column=args.timestamp_column,
        full_feature_names=args.full_feature_names,
        progress=_log,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    frame.write_parquet(tmp)
    tmp.replace(out)
    elapsed = time.perf_counter() - started
    _log(
        f"wrote {frame.height:,} rows x {frame.width} columns to {out} in {elapsed:.1f}s "
        f"({frame.height / max(elapsed, 1e-9):,.0f} rows/s)"
    )
    return 0


def since_arg(text: str) -> datetime:
    """A lower time bound: a duration back from now ("1h", "7d") or an ISO 8601 time."""
    from featurelib.durations import parse_duration

    if text and text[0].isdigit() and text[-1].isalpha():
        try:
            return datetime.now(UTC) - parse_duration(text, where="--since")
        except FeaturelibError:
            pass
    return time_arg(text)


def time_arg(text: str) -> datetime:
    """An ISO 8601 time (naive = UTC) or "now": the argparse type of every time option."""
    if text == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read time {text!r}: use ISO 8601 such as 2013-06-01T12:00:00, or now"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _views_arg(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def _cmd_materialize(args: argparse.Namespace) -> int:
    from featurelib.online.api import materialize_incremental, materialize_range, open_store
    from featurelib.online.live import load_serving_repo

    started = time.perf_counter()
    repo = load_serving_repo(Path(args.repo).resolve())
    store = open_store(repo, args.redis_url)
    if args.command == "materialize":
        results = materialize_range(
            store, repo, args.start, args.end, _views_arg(args.views), progress=_log
        )
    else:
        results = materialize_incremental(
            store, repo, args.end, _views_arg(args.views), progress=_log
        )
    rows = sum(r.rows for r in results)
    elapsed = time.perf_counter() - started
    _log(
        f"materialized {len(results)} views: {rows:,} rows in {elapsed:.1f}s "
        f"({rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )
    return 0


def _cmd_get_online(args: argparse.Namespace) -> int:
    from featurelib.online.api import get_features, open_store
    from featurelib.online.live import load_serving_repo

    repo = load_serving_repo(Path(args.repo).resolve())
    store = open_store(repo, args.redis_url)
    try:
        rows = json.loads(args.rows)
    except json.JSONDecodeError as exc:
        from featurelib.errors import SpineError

        raise SpineError(
            f"--rows is not valid JSON: {exc}",
            hint='pass a JSON object or list, e.g. \'[{"carrier": "UA"}]\'',
        ) from None
    rows = rows if isinstance(rows, list) else [rows]
    response = get_features(store, repo, args.service, rows, at=args.at)
    if args.json:
        out = {"features": response.to_dict(), "statuses": response.statuses}
        print(json.dumps(out, default=str))
        return 0
    for name, values in response.to_dict().items():
        cells = "  ".join(f"{v!s} ({s})" for v, s in zip(values, response.statuses[name]))
        print(f"{name:<32} {cells}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurelib",
        description="Define features once; identical values in training and production.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_repo(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--repo",
            default=_default_repo(),
            help="feature repo directory (default: . if it holds feature_store.yaml, "
            "else feature_repo)",
        )
        return p

    p = with_repo(sub.add_parser("demo-data", help="generate the flights demo data into REPO/data"))
    p.set_defaults(func=_cmd_demo_data)
    p = with_repo(sub.add_parser("demo-stream", help="send new demo flights to a Redis Stream"))
    p.add_argument("--stream", default="flights:events")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
    p.set_defaults(func=_cmd_demo_stream)
    p = with_repo(sub.add_parser("list", help="list the repo's definitions"))
    p.set_defaults(func=_cmd_list)
    p = with_repo(sub.add_parser("show", help="print a definition's JSON spec"))
    p.add_argument("name")
    p.set_defaults(func=_cmd_show)
    p = with_repo(sub.add_parser("validate", help="check definitions against their data"))
    p.set_defaults(func=_cmd_validate)
    p = with_repo(sub.add_parser("training-set", help="write a point-in-time training set"))
    p.add_argument("--service", required=True, help="feature service name")
    p.add_argument("--spine", required=True, help="Parquet file: entity keys + timestamps")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--timestamp-column", default="event_timestamp")
    p.add_argument("--full-feature-names", action="store_true", help="name outputs view__feature")
    p.set_defaults(func=_cmd_training_set)

    def online(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
        return with_repo(p)

    p = online(sub.add_parser("materialize", help="write [START, END] to the online store"))
    p.add_argument("start", type=time_arg)
    p.add_argument("end", type=time_arg)
    p.add_argument("--views", help="comma-separated view names (default: all)")
    p.set_defaults(func=_cmd_materialize)
    p = online(
        sub.add_parser("materialize-incremental", help="write from each view's last run up to END")
    )
    p.add_argument("end", type=time_arg)
    p.add_argument("--views", help="comma-separated view names (default: all)")
    p.set_defaults(func=_cmd_materialize)
    p = online(sub.add_parser("get-online", help="read online features as JSON"))
    p.add_argument("--service", required=True)
    p.add_argument("--rows", required=True, help='JSON entity rows, e.g. \'[{"carrier": "UA"}]\'')
    p.add_argument("--at", type=time_arg, default=None, help="read as of this time")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_get_online)
    _add_push_commands(sub, with_repo)
    return parser


# ----------------------------------------------------------------------------- push & stream
# (featurelib.online.push / featurelib.online.stream; kept together in this block)


def _push_store(args: argparse.Namespace) -> tuple[Any, Any]:
    from featurelib.online.api import open_store
    from featurelib.online.live import load_serving_repo

    # The definitions serving reads (registry after `feast apply`), so view versions match.
    repo = load_serving_repo(Path(args.repo).resolve())
    return open_store(repo, args.redis_url), repo


def _read_rows_file(path: Path) -> Any:
    import polars as pl

    if not path.is_file():
        raise FeaturelibError(f"{path} does not exist", hint="pass a .parquet or .json file")
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".jsonl", ".ndjson"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FeaturelibError(
            f"{path} is not valid JSON: {exc}",
            hint="a JSON array of objects (.json) or one object per line (.jsonl)",
        ) from None
    return rows if isinstance(rows, list) else [rows]


def _cmd_push(args: argparse.Namespace) -> int:
    from featurelib.online.push import push

    store, repo = _push_store(args)
    rows = _read_rows_file(Path(args.file))
    result = push(store, repo, args.source, rows, event_id_field=args.event_id_field, now=args.now)
    summary = {
        "source": result.source,
        "received": result.received,
        "appended": result.appended,
        "duplicates": result.duplicates,
        "resumed": result.resumed,
        "log_file": None if result.log_file is None else str(result.log_file),
        "online": result.online,
        "ignored_columns": list(result.ignored_columns),
        "skipped_by_view": result.skipped,
        "seconds": round(result.seconds, 3),
    }
    print(json.dumps(summary))
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from featurelib.online.stream import StreamConsumer

    store, repo = _push_store(args)
    consumer = StreamConsumer(
        store,
        repo,
        args.source,
        args.stream,
        args.group,
        args.consumer,
        batch_size=args.batch_size,
        block_ms=args.block_ms,
        claim_idle_ms=args.claim_idle_ms,
        event_id_field=args.event_id_field,
        log=_log,
        now=None if args.now is None else (lambda: args.now),
    )
    stats = consumer.run(max_messages=args.max_messages, idle_exit_s=args.idle_exit)
    print(json.dumps(asdict(stats)))
    return 0


def _add_push_commands(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--source", required=True, help="source the events belong to")
        p.add_argument(
            "--now",
            type=time_arg,
            default=None,
            help="clock for the online retention (default: the wall clock); set it when "
            "replaying historical events, e.g. the demo's 2013 flights",
        )
        p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
        p.add_argument(
            "--event-id-field", default=None, help="de-duplicate by this column (default: event_id)"
        )
        return with_repo(p)  # type: ignore[no-any-return]

    p = common(sub.add_parser("push", help="push event rows (offline log + online store)"))
    p.add_argument("--file", required=True, help="rows: .parquet, .json (array) or .jsonl")
    p.set_defaults(func=_cmd_push)
    p = common(sub.add_parser("stream", help="consume a Redis Stream of events into a source"))
    p.add_argument("--stream", required=True, help="stream key, e.g. flights:events")
    p.add_argument("--group", default="featurelib", help="consumer group (created if missing)")
    p.add_argument("--consumer", required=True, help="this consumer's name (unique per process)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--block-ms", type=int, default=1000, help="longest wait for new entries")
    p.add_argument(
        "--claim-idle-ms", type=int, default=30000, help="reclaim others' entries idle this long"
    )
    p.add_argument("--max-messages", type=int, default=None, help="stop after N entries")
    p.add_argument("--idle-exit", type=float, default=None, help="stop after S idle seconds")
    p.set_defaults(func=_cmd_stream)
    _register_plugins(sub, with_repo)


def _register_plugins(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Commands of the scoring service and the skew monitor (imported lazily: they depend on
    featurelib, never the reverse)."""
    import importlib

    for module in PLUGIN_COMMANDS:
        importlib.import_module(module).register(sub, with_repo)


PLUGIN_COMMANDS = ("serving.cli", "skew_monitor.cli")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FeaturelibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug or an environment failure: never a bare traceback
        if os.environ.get("FEATURELIB_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc}\n"
            "  hint: rerun with FEATURELIB_DEBUG=1 for the traceback, and report it if it is "
            "a featurelib bug",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
