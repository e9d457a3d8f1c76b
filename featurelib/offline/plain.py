"""Point-in-time join of a plain feature view: latest visible row per entity, within TTL."""

from __future__ import annotations

import polars as pl

from featurelib.compile.polars_expr import to_polars
from featurelib.views import FeatureView

EVENT = "__event_ts"
CREATED = "__created"
ORDER = "__order"


def view_rows(view: FeatureView, source: pl.LazyFrame, keys: list[str]) -> pl.LazyFrame:
    """One row per (entity, event time): the winner of ties (later created, then later row)."""
    created = view.source.created_timestamp_field
    features = [to_polars(node).alias(f"{view.name}__{name}") for name, node in view.features]
    return (
        source.select(
            *keys,
            pl.col(view.source.timestamp_field).alias(EVENT),
            (pl.col(created) if created else pl.lit(None, pl.Datetime("us", "UTC"))).alias(CREATED),
            pl.col(ORDER),
            *features,
        )
        .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
        .filter(pl.col(EVENT).is_not_null())
        .sort([EVENT, CREATED, ORDER], nulls_last=False)
        .unique(subset=[*keys, EVENT], keep="last", maintain_order=True)
        .drop(CREATED, ORDER)
    )


def join_plain(
    spine: pl.LazyFrame, view: FeatureView, rows: pl.LazyFrame, keys: list[str], ts: str
) -> pl.LazyFrame:
    """Attach the view's features to a spine sorted by `ts` (visibility: event time <= ts)."""
    joined = spine.join_asof(
        rows,
        left_on=ts,
        right_on=EVENT,
        by=keys,
        strategy="backward",
        check_sortedness=False,
    )
    names = [f"{view.name}__{n}" for n in view.feature_names()]
    if view.ttl is not None:
        # Visible and fresh iff ts - ttl < event time <= ts (exactly ttl old is expired).
        fresh = pl.col(EVENT) > pl.col(ts) - pl.lit(view.ttl)
        joined = joined.with_columns([pl.when(fresh).then(pl.col(n)).alias(n) for n in names])
    return joined.drop(EVENT)
