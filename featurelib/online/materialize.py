"""Materialization: compute online records with the Polars engine and write them to Redis.

Plain views: the latest row per entity among source rows with start <= event time <= end
(written only if newer than what is stored: the record header carries the row's event and
created times, so the store settles ties exactly as the offline engine does). Aggregation
views: every tile and aligned block touched by events up to `end`, recomputed from all the
events it covers, for the retention of the longest window (a read at `end` needs nothing
older; older blocks are trimmed). `featurelib.online.push` reuses both for pushed rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.compile.polars_expr import TIMESTAMP, to_polars
from featurelib.durations import epoch_micros
from featurelib.offline.engine import aggregation_events
from featurelib.offline.io import cast_keys, frame_columns, read_source
from featurelib.online import layout
from featurelib.online.store import RedisOnlineStore
from featurelib.online.tiles import BLOCK, EVENT_US, LEVEL, block_frames, hop_plans
from featurelib.views import AggregationView, FeatureView

ENTITY = "__entity"
TOUCHED = "__touched_us"  # event times whose blocks a partial recomputation must refresh
TOP = "__top"
EVENT = "__event"
CREATED = "__created"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class MaterializeResult:
    """What one view's materialization wrote."""

    view: str
    rows: int
    records: int
    seconds: float


def _micros(value: datetime) -> int:
    return epoch_micros(value)


def entity_expr(keys: list[str]) -> pl.Expr:
    """The entity part of a key (join key values joined by the layout's separator)."""
    return pl.concat_str(
        [pl.col(k).cast(pl.String) for k in keys], separator=layout.SEPARATOR
    ).alias(ENTITY)


def latest_rows(
    view: FeatureView,
    source: pl.LazyFrame,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """Per entity, the latest row with start <= event time <= end (later event time wins, then
    later created time, then later row): entity, event and created time in microseconds
    (created null when the source has none) and the view's features in definition order.

    `source` is a `read_source`-shaped frame (normalized, keys cast to the entity types)."""
    keys = list(view.join_keys)
    created = view.source.created_timestamp_field
    rows = (
        source.select(
            *keys,
            pl.col(view.source.timestamp_field).alias(EVENT),
            (pl.col(created) if created else pl.lit(None, TIMESTAMP)).alias(CREATED),
            *[to_polars(node).alias(f"{view.name}__{name}") for name, node in view.features],
        )
        .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
        .filter(pl.col(EVENT).is_not_null())
    )
    if start is not None and end is not None:
        rows = rows.filter(pl.col(EVENT).is_between(pl.lit(start), pl.lit(end)))
    names = [f"{view.name}__{n}" for n in view.feature_names()]
    return (
        rows.sort([EVENT, CREATED], nulls_last=False, maintain_order=True)
        .unique(subset=keys, keep="last", maintain_order=True)
        .select(
            entity_expr(keys), pl.col(EVENT).dt.epoch("us"), pl.col(CREATED).dt.epoch("us"), *names
        )
        .collect()
    )


def write_latest(store: RedisOnlineStore, view: FeatureView, latest: pl.DataFrame) -> int:
    """Keep-newest writes of `latest_rows` output; returns the rows sent."""
    payload = (
        (entity, event_us, created_us, values)  # codec.encode_row stores datetimes as micros
        for entity, event_us, created_us, *values in latest.iter_rows()
    )
    return store.write_rows(view.name, view.version, payload)


def materialize_plain(
    store: RedisOnlineStore, view: FeatureView, root: Path, start: datetime, end: datetime
) -> MaterializeResult:
    started = time.perf_counter()
    source = cast_keys(read_source(view.source, root), view.join_key_types)
    view.feature_dtypes(frame_columns(source))
    latest = latest_rows(view, source, start, end)
    sent = write_latest(store, view, latest)
    return MaterializeResult(view.name, latest.height, sent, time.perf_counter() - started)


def _entity_blocks(
    frame: pl.DataFrame, hop_us: int, cols: list[str]
) -> Iterator[tuple[str, list[tuple[bytes, list[Any]]]]]:
    ordered = frame.sort(ENTITY)
    current: str | None = None
    fields: list[tuple[bytes, list[Any]]] = []
    for entity, level, block, *states in ordered.select(ENTITY, LEVEL, BLOCK, *cols).iter_rows():
        if entity != current:
            if current is not None:
                yield current, fields
            current, fields = entity, []
        fields.append((layout.block_field(hop_us, level, block), states))
    if current is not None:
        yield current, fields


def materialize_aggregation(
    store: RedisOnlineStore,
    view: AggregationView,
    root: Path,
    start: datetime,
    end: datetime,
    *,
    entities: pl.DataFrame | None = None,
    now: datetime | None = None,
) -> MaterializeResult:
    """Blocks of events up to `end` from `start` on (whole top-level blocks), kept for the
    longest window before `now` (default: `end`); older blocks are trimmed.

    `entities` (a frame holding the join key columns) limits the work, and the trimming, to
    those entities; with a `TOUCHED` column (event times in microseconds) only the top-level
    blocks holding those times are recomputed (from all their events): what changes when
    those events are added."""
    started = time.perf_counter()
    events, _ = aggregation_events(view, root)
    keys = events.keys
    end_us = _micros(end)
    frame = events.frame.filter(pl.col(EVENT_US) <= end_us)
    touched: pl.DataFrame | None = None
    if entities is not None:
        wanted = cast_keys(entities.lazy().select(keys), view.join_key_types).unique()
        frame = frame.join(wanted, on=keys, how="semi")
        if TOUCHED in entities.columns:
            touched = (
                cast_keys(entities.lazy(), view.join_key_types).select(*keys, TOUCHED).collect()
            )
    sorted_events = frame.sort(
        [*keys, EVENT_US, "__created", "__order"], nulls_last=False
    ).collect()
    anchor_us = end_us if now is None else _micros(now)
    rows = records = 0
    retention = []
    for plan in hop_plans(view):
        keep_from = anchor_us // plan.hop_us - plan.longest_window_hops
        first = max(_micros(start) // plan.hop_us, keep_from)
        first -= first % (1 << plan.max_level)  # recompute whole top-level blocks
        chunk = sorted_events.filter(pl.col(EVENT_US) >= first * plan.hop_us)
        if touched is not None:
            span = plan.hop_us << plan.max_level  # one top-level block
            tops = touched.select(*keys, (pl.col(TOUCHED) // span).alias(TOP)).unique()
            chunk = (
                chunk.with_columns((pl.col(EVENT_US) // span).alias(TOP))
                .join(tops, on=[*keys, TOP], how="semi", maintain_order="left")
                .drop(TOP)
            )
        rows += chunk.height
        blocks = block_frames(chunk, keys, events.states, plan)
        fresh = (pl.col(BLOCK) + 1) * (2 ** pl.col(LEVEL)) > keep_from
        blocks = blocks.filter(fresh).with_columns(entity_expr(keys))
        cols = [c for c in blocks.columns if c not in (*keys, LEVEL, BLOCK, ENTITY)]
        records += store.write_blocks(
            view.name,
            view.version,
            _entity_blocks(blocks, plan.hop_us, cols),
            keep_from=[(plan.hop_us, keep_from)],
        )
        retention.append((plan.hop_us, keep_from))
    if entities is None:
        store.trim_view(view.name, view.version, retention)
    return MaterializeResult(view.name, rows, records, time.perf_counter() - started)


def materialize(
    store: RedisOnlineStore,
    views: list[FeatureView | AggregationView],
    root: Path,
    start: datetime,
    end: datetime,
    progress: Progress | None = None,
) -> list[MaterializeResult]:
    """Materialize `views` for event times in [start, end]; returns per-view figures."""
    results = []
    for view in views:
        if isinstance(view, FeatureView):
            result = materialize_plain(store, view, root, start, end)
        else:
            result = materialize_aggregation(store, view, root, start, end)
        results.append(result)
        if progress:
            rate = result.rows / max(result.seconds, 1e-9)
            progress(
                f"{view.name}: {result.rows:,} rows -> {result.records:,} records in "
                f"{result.seconds:.2f}s ({rate:,.0f} rows/s)"
            )
    return results
