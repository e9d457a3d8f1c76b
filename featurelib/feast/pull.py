"""Source reads for Feast (`pull_latest_from_table_or_query`, `pull_all_from_table_or_query`).

Feast asks for "columns" of a data source: join keys, feature names, the event and created
timestamps. For featurelib views a feature is an expression or a windowed aggregate over the
source, so the reader finds the view (in the registry: a view over this source having all the
requested features) and computes the features with featurelib's engine:

- raw source columns: read as is (featurelib's reader: UTC timestamps, NaN read as null);
- plain-view features: the view's row expressions on each source row;
- aggregation-view features: `pull_all` gives each event row the window values as of that
  event's time; `pull_latest` gives one row per entity whose windows may have changed in the
  range, with the values as of `end_date` (event and created timestamps = `end_date`).

Rows with a null join key are dropped (a null key never gets features; Feast cannot store
one). Rows are filtered to `start_date <= event time <= end_date` (Feast's file store is
inclusive on both ends). Rows with the same keys and the same event and created timestamps are
reduced to the last in source order (featurelib's tie rule), so Feast's de-duplication (by event
then created timestamp) keeps the row featurelib would serve.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.compile.polars_expr import TIMESTAMP, to_polars
from featurelib.errors import RepoError
from featurelib.feast.registry import definition_of
from featurelib.feast.sources import from_feast_source
from featurelib.offline.engine import training_set
from featurelib.offline.io import ORDER, read_source
from featurelib.views import AggregationView, FeatureService, FeatureView


def _find_view(
    config: Any, source_name: str, names: list[str]
) -> FeatureView | AggregationView | None:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(config.repo_path), config=config)
    candidates = []
    for fv in store.registry.list_feature_views(config.project, allow_cache=True):
        view = definition_of(fv)
        if (
            isinstance(view, FeatureView | AggregationView)
            and view.source.name == source_name
            and set(names) <= set(view.feature_names())
        ):
            candidates.append(view)
    distinct = {v.name: v for v in candidates}
    if len(distinct) > 1:
        raise RepoError(
            f"features {names} of source {source_name!r} are defined by several views: "
            f"{sorted(distinct)}",
            hint="give features of different views over one source different names",
        )
    return next(iter(distinct.values()), None)


def _utc(value: datetime) -> pl.Expr:
    """A datetime as a UTC timestamp literal (naive values are UTC, as everywhere)."""
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return pl.lit(aware, dtype=TIMESTAMP)


def pull(
    config: Any,
    data_source: Any,
    join_key_columns: list[str],
    feature_name_columns: list[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
    *,
    latest: bool,
) -> pl.DataFrame:
    source = from_feast_source(data_source)
    root = Path(str(config.repo_path or ".")).resolve()
    frame = read_source(source, root)
    columns = frame.collect_schema().names()
    computed = [n for n in feature_name_columns if n not in columns]
    view = _find_view(config, source.name, computed) if computed else None
    if computed and view is None:
        raise RepoError(
            f"columns {computed} are neither columns of source {source.name!r} nor features "
            "of a featurelib view over it",
            where=f"Feast data source {data_source.name!r}",
            hint="run `feast apply` so the registry holds the featurelib views",
        )
    created = created_timestamp_column or None
    keys = list(join_key_columns)
    ts = pl.col(timestamp_field)
    if keys:  # a null key never gets features (and Feast cannot store one)
        frame = frame.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
    if isinstance(view, AggregationView):
        return _aggregated(
            view,
            frame,
            keys,
            feature_name_columns,
            timestamp_field,
            created,
            start_date,
            end_date,
            root,
            latest=latest,
        )
    in_range = pl.lit(True)
    if start_date is not None:
        in_range = in_range & (ts >= _utc(start_date))
    if end_date is not None:
        in_range = in_range & (ts <= _utc(end_date))
    order = [timestamp_field, *([created] if created else []), ORDER]
    rows = frame.filter(in_range).sort(order, nulls_last=False)
    rows = rows.unique([*keys, *order[:-1]], keep="last", maintain_order=True)
    if latest:
        rows = rows.unique(keys, keep="last", maintain_order=True)
    exprs = dict(view.features) if isinstance(view, FeatureView) else {}
    out = rows.select(
        *keys,
        *[
            to_polars(exprs[n]).alias(n) if n in computed else pl.col(n)
            for n in feature_name_columns
        ],
        ts,
        *([pl.col(created)] if created else []),
    )
    return out.collect()


def _aggregated(
    view: AggregationView,
    frame: pl.LazyFrame,
    keys: list[str],
    names: list[str],
    timestamp_field: str,
    created: str | None,
    start_date: datetime | None,
    end_date: datetime | None,
    root: Path,
    *,
    latest: bool,
) -> pl.DataFrame:
    service = FeatureService(f"_pull_{view.name}", [view[names]])
    ts = pl.col(timestamp_field)
    if latest:
        if end_date is None:
            raise RepoError("pull_latest needs an end date", hint="pass end_date")
        reach = max(w.length + w.hop for _, _, w in view.features_with_windows())
        lower = (start_date or end_date) - reach
        events = frame.filter(ts >= _utc(lower), ts <= _utc(end_date))
        spine = (
            events.select(keys)
            .unique(maintain_order=True)
            .with_columns(_utc(end_date).alias(timestamp_field))
            .collect()
        )
    else:
        rows = frame
        if start_date is not None:
            rows = rows.filter(ts >= _utc(start_date))
        if end_date is not None:
            rows = rows.filter(ts <= _utc(end_date))
        spine = rows.select(*keys, timestamp_field, *([created] if created else [])).collect()
    out = training_set(service, spine, repo=root, timestamp_column=timestamp_field)
    if created and created not in out.columns:
        out = out.with_columns(pl.col(timestamp_field).alias(created))
    return out.select(*keys, *names, timestamp_field, *([created] if created else []))
