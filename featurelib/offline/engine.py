"""`training_set`: point-in-time-correct feature frames for a feature service."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.compile.polars_expr import on_demand_exprs, to_polars
from featurelib.errors import SpineError
from featurelib.offline import plain, windows
from featurelib.offline.io import ORDER, cast_keys, frame_columns, read_source, read_spine
from featurelib.offline.states import State
from featurelib.repo import Repo
from featurelib.views import AggregationView, FeatureService, FeatureView

ROW = "__row"
Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_spine(spine: pl.DataFrame, service: FeatureService, ts: str) -> None:
    stored, on_demand = service.required_views()
    needed = {k: v.name for v in stored for k in v.join_keys}
    for od in on_demand:
        needed.update(dict.fromkeys(od.request_fields(), od.name))
    missing = [c for c in needed if c not in spine.columns]
    if missing:
        detail = ", ".join(f"{c!r} (for {needed[c]!r})" for c in missing)
        raise SpineError(
            f"spine is missing columns {detail}",
            where=f"training_set({service.name!r})",
            hint=f"add them to the spine; it has {spine.columns}",
        )
    clash = [c for c in service.output_names() if c in spine.columns and c != ts]
    if clash:
        raise SpineError(
            f"spine columns {clash} have the names of output features",
            where=f"training_set({service.name!r})",
            hint="rename the spine columns or the features (Projection.rename)",
        )


def _plain_features(
    views: list[FeatureView], spine: pl.DataFrame, root: Path, ts: str, progress: Progress | None
) -> pl.DataFrame:
    """All plain views' features, as `ROW` + columns, in spine order."""
    groups = plain.group_views(views)
    started = time.perf_counter()
    rows = []
    for group in groups:
        source = cast_keys(read_source(group.views[0].source, root), group.views[0].join_key_types)
        columns = frame_columns(source)
        for view in group.views:
            view.feature_dtypes(columns)
        rows.append(group.rows(source))
    collected = pl.collect_all(rows)  # sources are read and sorted in parallel
    joined = spine.select(ROW, ts, *{k for g in groups for k in g.keys}).sort(ts).lazy()
    for group, frame in zip(groups, collected, strict=True):
        joined = group.join(joined, frame.lazy(), ts)
    names = [f"{v.name}__{n}" for v in views for n in v.feature_names()]
    out = joined.select(ROW, *names).collect().sort(ROW)
    if progress:
        elapsed = time.perf_counter() - started
        progress(f"plain views {[v.name for v in views]}: {out.height:,} rows in {elapsed:.2f}s")
    return out


def aggregation_events(
    view: AggregationView, root: Path
) -> tuple[windows.EventFrame, dict[str, pl.DataType]]:
    """The view's events (keys, event time, created, source order, one argument column per
    aggregation) with their states, and the argument columns' original types."""
    keys = list(view.join_keys)
    source = cast_keys(read_source(view.source, root), view.join_key_types)
    view.feature_dtypes(frame_columns(source))
    created = view.source.created_timestamp_field
    arg_exprs: list[pl.Expr] = []
    states: list[State] = []
    for i, agg in enumerate(view.aggregations):
        x = pl.lit(1, pl.Int64) if agg.fn.arg is None else to_polars(agg.fn.arg)
        dtype = pl.select(x).dtypes[0] if agg.fn.arg is None else None
        arg_exprs.append(x.alias(f"a{i}_x"))
        states.append(State(agg.fn, f"a{i}", dtype or pl.Null()))
    frame = (
        source.select(
            *keys,
            pl.col(view.source.timestamp_field).dt.epoch("us").alias(windows.EVENT_US),
            (pl.col(created) if created else pl.lit(None, pl.Datetime("us", "UTC"))).alias(
                windows.CREATED
            ),
            pl.col(ORDER),
            *arg_exprs,
        )
        .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
        .filter(pl.col(windows.EVENT_US).is_not_null())
    )
    arg_types = dict(frame.collect_schema())
    fixed: list[State] = []
    casts: list[pl.Expr] = []
    for state in states:
        col = f"{state.prefix}_x"
        dtype = arg_types[col]
        if dtype == pl.Boolean and state.fn.fn in ("sum", "mean", "stddev", "min", "max"):
            casts.append(pl.col(col).cast(pl.Int64))
            dtype = pl.Int64()
        elif dtype.is_float():
            casts.append(pl.col(col).fill_nan(None))
        fixed.append(State(state.fn, state.prefix, dtype))
    if casts:
        frame = frame.with_columns(casts)
    return windows.EventFrame(frame, keys, fixed), arg_types


def _aggregated(
    view: AggregationView, spine: pl.DataFrame, root: Path, ts: str, progress: Progress | None
) -> pl.DataFrame:
    keys = list(view.join_keys)
    events, arg_types = aggregation_events(view, root)
    fixed = events.states
    by_window: dict[Any, list[tuple[str, State]]] = {}
    for (name, _, window), state in zip(
        view.features_with_windows(),
        [fixed[i] for i, a in enumerate(view.aggregations) for _ in a.windows],
        strict=True,
    ):
        by_window.setdefault(window, []).append((f"{view.name}__{name}", state))
    query = spine.select(
        pl.col(ROW).alias(windows.ROW), *keys, pl.col(ts).dt.epoch("us").alias(windows.SPINE_US)
    )
    out = windows.aggregate_windows(events, query, list(by_window.items()), progress)
    casts_back = []
    for i, agg in enumerate(view.aggregations):
        if agg.fn.fn in ("min", "max") and arg_types[f"a{i}_x"] == pl.Boolean:
            casts_back += [
                pl.col(f"{view.name}__{n}").cast(pl.Boolean) for n in agg.feature_names()
            ]
    return out.with_columns(casts_back) if casts_back else out


def training_set(
    service: FeatureService,
    spine: Any,
    *,
    repo: Repo | str | Path | None = None,
    timestamp_column: str = "event_timestamp",
    full_feature_names: bool = False,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Point-in-time-correct features for each spine row, in spine order.

    The spine (Polars/pandas/Arrow frame or Parquet path) holds the entity keys, a timestamp
    column and request fields; every other column (labels, ids) is passed through. A spine row
    with a null or unknown key gets null features. Relative source paths resolve against the
    repo directory (`repo` root, else the current directory).

    Examples:
        >>> import featurelib as fl, polars as pl
        >>> req = fl.RequestSource("req", {"distance": fl.Float64})
        >>> trip = fl.OnDemandView("trip", [req], {"km": fl.col("distance") * 1.609})
        >>> svc = fl.FeatureService("svc", [trip])
        >>> spine = pl.DataFrame({"distance": [100.0], "event_timestamp": ["2013-01-01T00:00:00"]})
        >>> fl.training_set(svc, spine)["km"].to_list()
        [160.9]
    """
    root = repo.root if isinstance(repo, Repo) else Path(repo or Path.cwd()).resolve()
    frame = read_spine(spine, timestamp_column)
    _check_spine(frame, service, timestamp_column)
    stored, on_demand = service.required_views()
    frame = frame.with_row_index(ROW)
    all_keys: dict[str, Any] = {}
    for view in stored:
        all_keys.update(view.join_key_types)
    work = cast_keys(frame.lazy().select(ROW, timestamp_column, *all_keys), all_keys).collect()
    parts = [frame.drop(ROW)]
    plain_views = [v for v in stored if isinstance(v, FeatureView)]
    if plain_views:
        parts.append(_plain_features(plain_views, work, root, timestamp_column, progress).drop(ROW))
    aggregation_views = [v for v in stored if isinstance(v, AggregationView)]
    for step, agg_view in enumerate(aggregation_views, start=1):
        started = time.perf_counter()
        part = _aggregated(agg_view, work, root, timestamp_column, progress)
        parts.append(part.sort(windows.ROW).drop(windows.ROW))
        if progress:
            elapsed = time.perf_counter() - started
            progress(
                f"[{step}/{len(aggregation_views)}] {agg_view.name}: "
                f"{part.height:,} rows in {elapsed:.2f}s"
            )
    joined = pl.concat(parts, how="horizontal")
    for od in on_demand:
        joined = joined.with_columns(on_demand_exprs(od))
    outputs = service.output_names(full_feature_names=full_feature_names)
    internal = [f"{p.view.name}__{n}" for p in service.projections for n, _ in p.features]
    spine_cols = [c for c in frame.columns if c != ROW]
    result = joined.select(
        *spine_cols, *[pl.col(i).alias(o) for i, o in zip(internal, outputs, strict=True)]
    )
    return result
