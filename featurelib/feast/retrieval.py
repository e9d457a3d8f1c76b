"""`get_historical_features` requests (Feast feature refs) answered by `fl.training_set`.

Feast hands the offline store the feature views of the request, the refs "view:feature"
(including the inputs of requested on-demand views, appended by
`FeatureStore.get_historical_features`) and the entity rows. The refs are mapped back to the
featurelib views registered in the views' `featurelib.spec` tags, grouped into one ad-hoc
featurelib FeatureService, and computed by `training_set`: plain views, windowed aggregations
and on-demand features all come from featurelib's engine, so the frame is exactly
featurelib's point-in-time result (entity rows in their order, their columns passed through).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.errors import RepoError, SpineError
from featurelib.feast.registry import definition_of
from featurelib.offline.engine import Progress, training_set
from featurelib.views import AggregationView, FeatureService, FeatureView, OnDemandView

DEFAULT_TIMESTAMP = "event_timestamp"  # Feast's DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL


@dataclass(frozen=True)
class Requested:
    """One requested feature: Feast's view name (alias or name, maybe `@vN`) and the DSL view."""

    feast_view: str
    view: FeatureView | AggregationView | OnDemandView
    feature: str


def _dsl_view(obj: Any, name: str) -> FeatureView | AggregationView | OnDemandView:
    view = definition_of(obj)
    if not isinstance(view, FeatureView | AggregationView | OnDemandView):
        raise RepoError(
            f"Feast view {name!r} was not registered from a featurelib definition",
            hint="featurelib's offline store serves views defined in the featurelib DSL; "
            "define it there and run `feast apply`",
        )
    return view


def resolve(
    feature_refs: list[str], feature_views: list[Any], registry: Any, project: str
) -> list[Requested]:
    """The requested features, in request order, without repeats."""
    by_alias: dict[str, Any] = {}
    for fv in feature_views:
        if fv.projection.join_key_map:
            raise RepoError(
                f"feature view {fv.name!r} is requested with join_key_map "
                f"{fv.projection.join_key_map}",
                hint="featurelib joins on the entity's own keys; define an entity with the "
                "other key names instead",
            )
        by_alias[fv.projection.name_to_use()] = fv
    out: list[Requested] = []
    seen: set[tuple[str, str]] = set()
    for ref in feature_refs:
        view_name, _, feature = ref.partition(":")
        if (view_name, feature) in seen:
            continue
        seen.add((view_name, feature))
        obj = by_alias.get(view_name)
        if obj is None:
            obj = registry.get_on_demand_feature_view(view_name.split("@")[0], project)
        view = _dsl_view(obj, view_name)
        if feature not in view.feature_names():
            raise RepoError(
                f"view {view.name!r} has no feature {feature!r}",
                where=f"feature ref {ref!r}",
                hint=f"its features are {view.feature_names()}; re-run `feast apply`?",
            )
        out.append(Requested(view_name, view, feature))
    return out


def _service(requested: list[Requested]) -> FeatureService:
    by_view: dict[str, list[Requested]] = {}
    for item in requested:
        by_view.setdefault(item.view.name, []).append(item)
    for name, items in by_view.items():
        aliases = sorted({i.feast_view for i in items})
        if len(aliases) > 1:
            raise RepoError(
                f"view {name!r} is requested under several names {aliases}",
                hint="request each featurelib view under one name",
            )
    return FeatureService(
        "feast_request",
        [items[0].view[[i.feature for i in items]] for items in by_view.values()],
    )


def timestamp_column(columns: list[str], datetime_columns: list[str]) -> str:
    """Feast's rule: `event_timestamp`, else the only datetime column."""
    if DEFAULT_TIMESTAMP in columns:
        return DEFAULT_TIMESTAMP
    if len(datetime_columns) == 1:
        return datetime_columns[0]
    raise SpineError(
        f"cannot tell the entity rows' timestamp column among {datetime_columns or columns}",
        where="get_historical_features(entity_df=...)",
        hint=f"name the timestamp column {DEFAULT_TIMESTAMP!r}",
    )


def check_entity_df(entity_df: Any) -> Any:
    """`entity_df` if it is a pandas DataFrame, else a SpineError saying what to pass."""
    import pandas as pd

    if isinstance(entity_df, str):
        raise SpineError(
            "entity_df is a SQL query; featurelib's offline store takes entity rows as a "
            "pandas DataFrame",
            where="get_historical_features(entity_df=...)",
            hint="run the query yourself (e.g. duckdb.sql(query).df()) and pass the frame",
        )
    if entity_df is None:
        raise SpineError(
            "no entity_df: featurelib computes features for entity rows, not for time ranges",
            where="get_historical_features(start_date=..., end_date=...)",
            hint="pass entity_df with the entity keys and an event_timestamp per row",
        )
    if not isinstance(entity_df, pd.DataFrame):
        raise SpineError(
            f"entity_df is a {type(entity_df).__name__}",
            where="get_historical_features(entity_df=...)",
            hint="pass a pandas DataFrame",
        )
    return entity_df


def historical_features(
    entity_df: Any,
    requested: list[Requested],
    root: Path,
    *,
    full_feature_names: bool,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """featurelib's point-in-time frame with Feast's column names, features in request order."""
    entity_df = check_entity_df(entity_df)
    datetimes = list(entity_df.select_dtypes(include=["datetime", "datetimetz"]).columns)
    ts = timestamp_column(list(entity_df.columns), [str(c) for c in datetimes])
    service = _service(requested)
    frame = training_set(
        service,
        entity_df,
        repo=root,
        timestamp_column=ts,
        full_feature_names=full_feature_names,
        progress=progress,
    )
    spine_cols = [str(c) for c in entity_df.columns]
    outputs = []
    for item in requested:
        if full_feature_names:
            base = f"{item.view.name}__{item.feature}"
            outputs.append(pl.col(base).alias(f"{item.feast_view}__{item.feature}"))
        else:
            outputs.append(pl.col(item.feature))
    return frame.select(*spine_cols, *outputs)
