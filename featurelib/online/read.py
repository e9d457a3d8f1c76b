"""Online reads: every view and entity of a request in one pipelined Redis round trip.

A `ServingPlan` is compiled once per feature service (keys, fields, state layouts, on-demand
Polars expressions); a read then only builds keys, runs one pipeline, merges a handful of
states per aggregation window and evaluates on-demand features on the whole batch at once.
Values come back in request order with a status per value: PRESENT, NOT_FOUND (null or unknown
key, or no record), NULL_VALUE, OUTSIDE_MAX_AGE (the latest row is older than the view's TTL,
enforced at read time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from featurelib.compile.polars_expr import cast_declared, polars_dtype, to_polars
from featurelib.durations import to_micros
from featurelib.offline.windows import dyadic_blocks
from featurelib.online import layout, merge
from featurelib.online.codec import decode_row, decode_states
from featurelib.online.store import RedisOnlineStore
from featurelib.online.tiles import HopPlan, hop_plans
from featurelib.sources import RequestSource
from featurelib.views import AggregationView, FeatureService, FeatureView, OnDemandView

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
NULL_VALUE = "NULL_VALUE"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"


@dataclass(frozen=True)
class OnlineResponse:
    """Feature values (request order), a status per value, and each value's event time."""

    features: pl.DataFrame
    statuses: dict[str, list[str]]
    event_timestamps: dict[str, list[datetime | None]]

    def to_dict(self) -> dict[str, list[Any]]:
        return self.features.to_dict(as_series=False)


@dataclass(frozen=True)
class _AggLayout:
    """Where each aggregation's state sits inside a hop size's stored state list."""

    plan: HopPlan
    offsets: dict[int, tuple[int, int]]  # aggregation index -> (start, width)


class ServingPlan:
    """A feature service compiled for online reads (built once, reused by every request)."""

    def __init__(self, service: FeatureService) -> None:
        self.service = service
        stored: dict[str, FeatureView | AggregationView] = {}
        on_demand: list[OnDemandView] = []
        for proj in service.projections:
            view = proj.view
            if isinstance(view, OnDemandView):
                on_demand.append(view)
                for item in view.inputs:
                    if isinstance(item, FeatureView | AggregationView):
                        stored.setdefault(item.name, item)
            else:
                stored.setdefault(view.name, view)
        self.stored = list(stored.values())
        self.on_demand = on_demand
        self.layouts: dict[str, dict[int, _AggLayout]] = {}
        self._fields_cache: dict[tuple[Any, ...], tuple[list[bytes], list[Any]]] = {}
        for view in self.stored:
            if isinstance(view, AggregationView):
                self.layouts[view.name] = {p.hop_us: self._layout(view, p) for p in hop_plans(view)}
        self.on_demand_exprs = [
            cast_declared(to_polars(node), dtype).alias(f"{od.name}__{n}")
            for od in on_demand
            for (n, node), dtype in zip(od.features, od.feature_dtypes().values(), strict=True)
        ]
        self.outputs = service.output_names()
        self.internal = [f"{p.view.name}__{n}" for p in service.projections for n, _ in p.features]
        self.request_fields = sorted({f for od in on_demand for f in od.request_fields()})
        self.request_types = {
            name: dtype
            for od in on_demand
            for item in od.inputs
            if isinstance(item, RequestSource)
            for name, dtype in item.columns.items()
            if name in self.request_fields
        }

    @staticmethod
    def _layout(view: AggregationView, plan: HopPlan) -> _AggLayout:
        offsets: dict[int, tuple[int, int]] = {}
        start = 0
        for i in plan.aggregations:
            w = merge.width(view.aggregations[i].fn)
            offsets[i] = (start, w)
            start += w
        return _AggLayout(plan, offsets)

    def fields(self, view: AggregationView, now_us: int) -> tuple[list[bytes], list[Any]]:
        """Fields to fetch for a read at `now_us`, and per feature the field positions to merge
        (in time order) with its aggregation index and hop size. They only change when `now`
        enters a new hop, so they are cached per (view, current hop of every hop size)."""
        bucket = (view.name, *(now_us // hop for hop in self.layouts[view.name]))
        cached = self._fields_cache.get(bucket)
        if cached is None:
            if len(self._fields_cache) > 4096:
                self._fields_cache.clear()
            cached = self._fields_cache[bucket] = self._compute_fields(view, now_us)
        return cached

    def _compute_fields(self, view: AggregationView, now_us: int) -> tuple[list[bytes], list[Any]]:
        names: dict[bytes, int] = {}
        per_feature = []
        for i, agg in enumerate(view.aggregations):
            for window in agg.windows:
                hop = to_micros(window.hop)
                qhop = now_us // hop
                layout_ = self.layouts[view.name][hop]
                _, levels, blocks = dyadic_blocks(
                    np.array([qhop - window.hops]), np.array([qhop]), layout_.plan.max_level
                )
                wanted = [layout.block_field(hop, int(lv), int(b)) for lv, b in zip(levels, blocks)]
                wanted.append(layout.block_field(hop, 0, qhop))
                positions = [names.setdefault(f, len(names)) for f in wanted]
                per_feature.append((i, hop, positions))
        return list(names), per_feature


def _keys_frame(rows: pl.DataFrame, view: FeatureView | AggregationView) -> list[str | None]:
    keys = list(view.join_keys)
    missing = [k for k in keys if k not in rows.columns]
    if missing:
        from featurelib.errors import SpineError

        raise SpineError(
            f"entity rows lack join keys {missing} of view {view.name!r}",
            hint=f"pass them in every entity row; rows have {rows.columns}",
        )
    typed = rows.select(
        [
            pl.col(k).cast(polars_dtype(t), strict=False)
            for e in view.entities
            for k, t in e.join_keys
        ]
    )
    tags = typed.select(
        pl.when(pl.all_horizontal(pl.col(k).is_not_null() for k in keys)).then(
            pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator=layout.SEPARATOR)
        )
    ).to_series()
    return tags.to_list()


def get_online_features(
    store: RedisOnlineStore,
    plan: ServingPlan,
    entity_rows: Sequence[Mapping[str, Any]] | pl.DataFrame,
    request_fields: Mapping[str, Sequence[Any]] | None = None,
    at: datetime | None = None,
) -> OnlineResponse:
    """Features of `plan`'s service for each entity row, in request order."""
    rows = entity_rows if isinstance(entity_rows, pl.DataFrame) else pl.DataFrame(entity_rows)
    if request_fields:
        rows = rows.with_columns([pl.Series(k, list(v)) for k, v in request_fields.items()])
    now_us = int((at or datetime.now(UTC)).timestamp() * 1_000_000)
    pipe = store.client.pipeline(transaction=False)
    work: list[tuple[FeatureView | AggregationView, list[str | None], Any]] = []
    for view in plan.stored:
        tags = _keys_frame(rows, view)
        if isinstance(view, FeatureView):
            for tag in tags:
                if tag is not None:
                    pipe.get(layout.plain_key(store.project, view.name, view.version, tag))
            work.append((view, tags, None))
        else:
            fields, per_feature = plan.fields(view, now_us)
            for tag in tags:
                if tag is not None:
                    key = layout.aggregation_key(store.project, view.name, view.version, tag)
                    pipe.hmget(key, fields)
            work.append((view, tags, per_feature))
    replies = iter(pipe.execute())
    columns: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    times: dict[str, list[datetime | None]] = {}
    for view, tags, per_feature in work:
        if isinstance(view, FeatureView):
            _decode_plain(view, tags, replies, now_us, columns, statuses, times)
        else:
            _decode_aggregation(view, tags, replies, per_feature, plan, columns, statuses)
    return _assemble(plan, rows, columns, statuses, times)


def _decode_plain(
    view: FeatureView,
    tags: list[str | None],
    replies: Any,
    now_us: int,
    columns: dict[str, list[Any]],
    statuses: dict[str, list[str]],
    times: dict[str, list[datetime | None]],
) -> None:
    names = [f"{view.name}__{n}" for n in view.feature_names()]
    values: list[list[Any]] = [[] for _ in names]
    status: list[list[str]] = [[] for _ in names]
    stamps: list[datetime | None] = []
    ttl_us = None if view.ttl is None else to_micros(view.ttl)
    for tag in tags:
        raw = next(replies) if tag is not None else None
        event_us, row = decode_row(raw) if raw is not None else (None, None)
        if row is None or event_us is None or event_us > now_us:
            row_status, row = NOT_FOUND, None
        elif ttl_us is not None and event_us <= now_us - ttl_us:
            row_status, row = OUTSIDE_MAX_AGE, None
        else:
            row_status = PRESENT
        stamps.append(
            None
            if row is None or event_us is None
            else datetime.fromtimestamp(event_us / 1_000_000, UTC)
        )
        for j in range(len(names)):
            value = None if row is None else row[j]
            values[j].append(value)
            status[j].append(row_status if value is not None or row is None else NULL_VALUE)
    for j, name in enumerate(names):
        columns[name], statuses[name], times[name] = values[j], status[j], stamps


def _decode_aggregation(
    view: AggregationView,
    tags: list[str | None],
    replies: Any,
    per_feature: list[tuple[int, int, list[int]]],
    plan: ServingPlan,
    columns: dict[str, list[Any]],
    statuses: dict[str, list[str]],
) -> None:
    names = [f"{view.name}__{n}" for n in view.feature_names()]
    values: list[list[Any]] = [[] for _ in names]
    status: list[list[str]] = [[] for _ in names]
    layouts = plan.layouts[view.name]
    for tag in tags:
        raw = next(replies) if tag is not None else None
        decoded = [None if r is None else decode_states(r) for r in raw] if raw else []
        for j, (i, hop, positions) in enumerate(per_feature):
            fn = view.aggregations[i].fn
            start, width = layouts[hop].offsets[i]
            state = None
            for pos in positions:
                record = decoded[pos] if decoded else None
                if record is not None:
                    state = merge.merge(fn, state, record[start : start + width])
            value = merge.finalize(fn, state)
            values[j].append(value)
            if tag is None:
                status[j].append(NOT_FOUND)
            else:
                status[j].append(PRESENT if value is not None else NULL_VALUE)
    for j, name in enumerate(names):
        columns[name], statuses[name] = values[j], status[j]


def _request_frame(plan: ServingPlan, rows: pl.DataFrame) -> pl.DataFrame:
    """The request fields in their declared types (timestamps parsed, naive read as UTC)."""
    from featurelib.errors import SpineError
    from featurelib.offline.io import to_utc

    missing = [f for f in plan.request_fields if f not in rows.columns]
    if missing:
        raise SpineError(
            f"request is missing fields {missing} needed by on-demand features",
            where=f"feature service {plan.service.name!r}",
            hint="send them with each entity row or in request_fields",
        )
    exprs = []
    for name, dtype in plan.request_types.items():
        if dtype.name == "Timestamp":
            exprs.append(to_utc(pl.col(name), rows.schema[name]).alias(name))
        else:
            exprs.append(pl.col(name).cast(polars_dtype(dtype), strict=False))
    return rows.select(exprs)


def _assemble(
    plan: ServingPlan,
    rows: pl.DataFrame,
    columns: dict[str, list[Any]],
    statuses: dict[str, list[str]],
    times: dict[str, list[datetime | None]],
) -> OnlineResponse:
    schema: dict[str, pl.DataType] = {}
    for view in plan.stored:
        for name, dtype in view.feature_dtypes().items():
            if not dtype.is_known:
                continue  # no declared schema: keep the type the values have
            target = polars_dtype(dtype)
            schema[f"{view.name}__{name}"] = pl.Int64() if dtype.name == "Timestamp" else target
    frame = (
        pl.DataFrame(columns, schema_overrides=schema, strict=False) if columns else pl.DataFrame()
    )
    # Timestamp features travel as microseconds.
    stamps = [
        pl.col(f"{v.name}__{n}").cast(pl.Datetime("us", "UTC"))
        for v in plan.stored
        for n, t in v.feature_dtypes().items()
        if t.name == "Timestamp"
    ]
    if stamps:
        frame = frame.with_columns(stamps)
    if plan.on_demand_exprs:
        frame = pl.concat([_request_frame(plan, rows), frame], how="horizontal").with_columns(
            plan.on_demand_exprs
        )
        for od in plan.on_demand:
            for n in od.feature_names():
                col = f"{od.name}__{n}"
                statuses[col] = [PRESENT if v is not None else NULL_VALUE for v in frame[col]]
    out = frame.select(
        [pl.col(i).alias(o) for i, o in zip(plan.internal, plan.outputs, strict=True)]
    )
    return OnlineResponse(
        out,
        {o: statuses[i] for i, o in zip(plan.internal, plan.outputs, strict=True)},
        {
            o: times.get(i, [None] * out.height)
            for i, o in zip(plan.internal, plan.outputs, strict=True)
        },
    )
