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
import redis

from featurelib.compile.polars_expr import on_demand_exprs, polars_dtype
from featurelib.durations import epoch_micros, to_micros
from featurelib.offline.windows import dyadic_blocks
from featurelib.online import layout, merge
from featurelib.online.codec import decode_row, decode_states
from featurelib.online.store import RedisOnlineStore
from featurelib.online.tiles import HopPlan, hop_plans
from featurelib.sources import RequestSource
from featurelib.views import AggregationView, FeatureService, FeatureView

_TEXT_KEY_TYPES = (pl.String(), pl.Int64())
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
        self.stored, on_demand = service.required_views()
        self.on_demand = on_demand
        self.layouts: dict[str, dict[int, _AggLayout]] = {}
        self._fields_cache: dict[tuple[Any, ...], tuple[list[bytes], list[Any]]] = {}
        for view in self.stored:
            if isinstance(view, AggregationView):
                self.layouts[view.name] = {p.hop_us: self._layout(view, p) for p in hop_plans(view)}
        self.on_demand_exprs = [e for od in on_demand for e in on_demand_exprs(od)]
        self.outputs = service.output_names()
        self.internal = [f"{p.view.name}__{n}" for p in service.projections for n, _ in p.features]
        # On-demand values: status NULL_VALUE where null, else PRESENT.
        self.on_demand_names = [f"{od.name}__{n}" for od in on_demand for n in od.feature_names()]
        # Stored columns the on-demand expressions read (the rest never enters their frame).
        stored_names = {f"{v.name}__{n}" for v in self.stored for n in v.feature_names()}
        self.on_demand_inputs = sorted(
            {n for e in self.on_demand_exprs for n in e.meta.root_names() if n in stored_names}
        )
        self.names = {v.name: [f"{v.name}__{n}" for n in v.feature_names()] for v in self.stored}
        self.ttl_us = {
            v.name: to_micros(v.ttl)
            for v in self.stored
            if isinstance(v, FeatureView) and v.ttl is not None
        }
        self.schema, self.stamp_exprs = _stored_schema(self.stored)
        # Stored columns are built under their output names (when that is unambiguous and no
        # timestamp cast needs the internal ones): the response needs no renaming pass.
        rename = dict(zip(self.internal, self.outputs, strict=True))
        renamed = [rename.get(n, n) for v in self.stored for n in self.names[v.name]]
        unique = len(set(renamed)) == len(renamed)
        self.stored_names = rename if unique and not self.stamp_exprs else {}
        self.key_sets, self.tag_exprs = _tag_exprs(self.stored)
        declared = {(k, polars_dtype(t)) for v in self.stored for k, t in v.join_key_types.items()}
        self.key_polars: dict[str, pl.DataType] | None = dict(declared)
        if len(self.key_polars) < len(declared) or any(
            t not in _TEXT_KEY_TYPES for t in self.key_polars.values()
        ):
            self.key_polars = None  # keys declared with two types, or other types: Polars path
        self.request_fields = sorted({f for od in on_demand for f in od.request_fields()})
        self.request_types = {
            name: dtype
            for od in on_demand
            for item in od.inputs
            if isinstance(item, RequestSource)
            for name, dtype in item.columns.items()
            if name in self.request_fields
        }
        # The Polars type each request field is served as (Timestamp: UTC microseconds).
        self.request_polars = {
            name: pl.Datetime("us", "UTC") if t.name == "Timestamp" else polars_dtype(t)
            for name, t in self.request_types.items()
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


def _stored_schema(
    stored: Sequence[FeatureView | AggregationView],
) -> tuple[dict[str, pl.DataType], list[pl.Expr]]:
    """Polars types of the stored features as decoded (timestamps travel as microseconds), and
    the casts that turn those microseconds back into timestamps."""
    schema: dict[str, pl.DataType] = {}
    stamps: list[pl.Expr] = []
    for view in stored:
        for name, dtype in view.feature_dtypes().items():
            if not dtype.is_known:
                continue  # no declared schema: keep the type the values have
            column = f"{view.name}__{name}"
            if dtype.name == "Timestamp":
                schema[column] = pl.Int64()
                stamps.append(pl.col(column).cast(pl.Datetime("us", "UTC")))
            else:
                schema[column] = polars_dtype(dtype)
    return schema, stamps


def _tag_exprs(
    stored: Sequence[FeatureView | AggregationView],
) -> tuple[dict[tuple[str, ...], str], list[pl.Expr]]:
    """One hash-tag expression per distinct join-key set (views sharing keys share it)."""
    key_sets: dict[tuple[str, ...], str] = {}
    exprs: list[pl.Expr] = []
    for view in stored:
        keys = tuple(view.join_keys)
        if keys in key_sets:
            continue
        alias = key_sets[keys] = f"__tag{len(key_sets)}"
        typed = {
            k: pl.col(k).cast(polars_dtype(t), strict=False) for k, t in view.join_key_types.items()
        }
        exprs.append(
            pl.when(pl.all_horizontal(typed[k].is_not_null() for k in keys))
            .then(
                pl.concat_str([typed[k].cast(pl.String) for k in keys], separator=layout.SEPARATOR)
            )
            .alias(alias)
        )
    return key_sets, exprs


def _tags(plan: ServingPlan, rows: pl.DataFrame) -> dict[tuple[str, ...], list[str | None]]:
    """Each key set's hash tags, per request row (None where a key is null)."""
    missing = sorted({k for keys in plan.key_sets for k in keys} - set(rows.columns))
    if missing:
        from featurelib.errors import SpineError

        needing = sorted(v.name for v in plan.stored if set(v.join_keys) & set(missing))
        raise SpineError(
            f"entity rows lack join keys {missing} (needed by views {needing})",
            hint=f"pass them in every entity row; rows have {rows.columns}",
        )
    if rows.height <= ROW_BUILD_LIMIT:
        fast = _tags_small(plan, rows)
        if fast is not None:
            return fast
    tags = rows.select(plan.tag_exprs).to_dict(as_series=False)
    return {keys: tags[alias] for keys, alias in plan.key_sets.items()}


def _tags_small(
    plan: ServingPlan, rows: pl.DataFrame
) -> dict[tuple[str, ...], list[str | None]] | None:
    """`_tags` in Python for a few rows whose keys already have their declared type, String
    or Int64 (Python's text of those equals Polars' cast to String), or None for the Polars
    path."""
    schema = rows.schema
    if plan.key_polars is None or any(
        schema[k] != plan.key_polars[k] for keys in plan.key_sets for k in keys
    ):
        return None
    values = {k: rows.get_column(k).to_list() for keys in plan.key_sets for k in keys}
    out: dict[tuple[str, ...], list[str | None]] = {}
    for keys in plan.key_sets:
        columns = [values[k] for k in keys]
        out[keys] = [
            None if None in row else layout.SEPARATOR.join(map(str, row))
            for row in zip(*columns, strict=True)
        ]
    return out


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
    now_us = epoch_micros(at or datetime.now(UTC))
    single = not isinstance(store.client, redis.RedisCluster)  # MGET spans slots only there
    pipe = store.client.pipeline(transaction=False)
    work: list[tuple[FeatureView | AggregationView, list[str | None], list[str], Any]] = []
    all_tags = _tags(plan, rows)
    for view in plan.stored:
        tags = all_tags[tuple(view.join_keys)]
        unique = list(dict.fromkeys(t for t in tags if t is not None))  # each entity read once
        if isinstance(view, FeatureView):
            keys = [layout.plain_key(store.project, view.name, view.version, t) for t in unique]
            if single and keys:
                pipe.mget(keys)
            else:
                for key in keys:
                    pipe.get(key)
            work.append((view, tags, unique, None))
        else:
            fields, per_feature = plan.fields(view, now_us)
            for tag in unique:
                key = layout.aggregation_key(store.project, view.name, view.version, tag)
                pipe.hmget(key, fields)
            work.append((view, tags, unique, per_feature))
    replies = iter(pipe.execute())
    columns: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    times: dict[str, list[datetime | None]] = {}
    for view, tags, unique, per_feature in work:
        if isinstance(view, FeatureView):
            raw = next(replies) if single and unique else [next(replies) for _ in unique]
            records = dict(zip(unique, raw, strict=True))
            _decode_plain(plan, view, tags, records, now_us, columns, statuses, times)
        else:
            records = {tag: next(replies) for tag in unique}
            _decode_aggregation(view, tags, records, per_feature, plan, columns, statuses)
    return _assemble(plan, rows, columns, statuses, times)


def _decode_plain(
    plan: ServingPlan,
    view: FeatureView,
    tags: list[str | None],
    records: dict[str, bytes | None],
    now_us: int,
    columns: dict[str, list[Any]],
    statuses: dict[str, list[str]],
    times: dict[str, list[datetime | None]],
) -> None:
    names = plan.names[view.name]
    ttl_us = plan.ttl_us.get(view.name)
    decoded: dict[str | None, tuple[str, list[Any] | None, datetime | None]] = {
        None: (NOT_FOUND, None, None)
    }
    for tag, raw in records.items():
        event_us, row = decode_row(raw) if raw is not None else (None, None)
        if row is None or event_us is None or event_us > now_us:
            decoded[tag] = (NOT_FOUND, None, None)
        elif ttl_us is not None and event_us <= now_us - ttl_us:
            decoded[tag] = (OUTSIDE_MAX_AGE, None, None)
        else:
            decoded[tag] = (PRESENT, row, datetime.fromtimestamp(event_us / 1_000_000, UTC))
    per_row = [decoded[tag] for tag in tags]
    stamps = [stamp for _, _, stamp in per_row]
    for j, name in enumerate(names):
        values = [None if row is None else row[j] for _, row, _ in per_row]
        columns[name] = values
        statuses[name] = [
            status if row is None or value is not None else NULL_VALUE
            for (status, row, _), value in zip(per_row, values, strict=True)
        ]
        times[name] = stamps


def _decode_aggregation(
    view: AggregationView,
    tags: list[str | None],
    records: dict[str, list[bytes | None]],
    per_feature: list[tuple[int, int, list[int]]],
    plan: ServingPlan,
    columns: dict[str, list[Any]],
    statuses: dict[str, list[str]],
) -> None:
    names = plan.names[view.name]
    layouts = plan.layouts[view.name]
    merged: dict[str | None, list[Any]] = {}
    # A null key reads as an empty window (count 0, like offline), with status NOT_FOUND.
    for tag, raw in [(None, None), *records.items()]:
        decoded = [None if r is None else decode_states(r) for r in raw] if raw else []
        values = []
        for i, hop, positions in per_feature:
            fn = view.aggregations[i].fn
            start, width = layouts[hop].offsets[i]
            state = None
            for pos in positions:
                record = decoded[pos] if decoded else None
                if record is not None:
                    state = merge.merge(fn, state, record[start : start + width])
            values.append(merge.finalize(fn, state))
        merged[tag] = values
    per_row = [merged[tag] for tag in tags]
    for j, name in enumerate(names):
        values = [row[j] for row in per_row]
        columns[name] = values
        statuses[name] = [
            NOT_FOUND if tag is None else PRESENT if value is not None else NULL_VALUE
            for tag, value in zip(tags, values, strict=True)
        ]


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
    schema = rows.schema
    if all(schema[n] == plan.request_polars[n] for n in plan.request_types):
        return pl.DataFrame([rows.get_column(n) for n in plan.request_types])  # already typed
    exprs = []
    for name, dtype in plan.request_types.items():
        if dtype.name == "Timestamp":
            exprs.append(to_utc(pl.col(name), rows.schema[name]).alias(name))
        else:
            exprs.append(pl.col(name).cast(polars_dtype(dtype), strict=False))
    return rows.select(exprs)


ROW_BUILD_LIMIT = 64  # below this many rows, building the frame row-wise is ~3x cheaper


def _stored_frame(plan: ServingPlan, columns: dict[str, list[Any]]) -> pl.DataFrame:
    """The decoded stored values as a frame, columns named by `plan.stored_names` (the output
    name of each served column: no renaming afterwards)."""
    if not columns:
        return pl.DataFrame()
    names = plan.stored_names
    height = len(next(iter(columns.values())))
    if height <= ROW_BUILD_LIMIT and set(columns) <= set(plan.schema):
        schema = {names.get(n, n): plan.schema[n] for n in columns}
        return pl.DataFrame(list(zip(*columns.values())), schema=schema, orient="row")
    overrides = {names.get(n, n): t for n, t in plan.schema.items()}
    renamed = {names.get(n, n): v for n, v in columns.items()}
    return pl.DataFrame(renamed, schema_overrides=overrides, strict=False)


def _assemble(
    plan: ServingPlan,
    rows: pl.DataFrame,
    columns: dict[str, list[Any]],
    statuses: dict[str, list[str]],
    times: dict[str, list[datetime | None]],
) -> OnlineResponse:
    # Per-request cost matters here (a 1-row read is mostly fixed overhead): eager Polars
    # operations each cost tens of microseconds whatever the height, and every expression
    # adds more, so the on-demand expressions run on a frame of only their inputs and the
    # output frame is put together from the columns instead of a select.
    stored = _stored_frame(plan, columns)
    if plan.stamp_exprs:
        stored = stored.with_columns(plan.stamp_exprs)
    by_name = dict(zip(stored.columns, stored.get_columns(), strict=True))
    names = plan.stored_names
    derived: dict[str, pl.Series] = {}
    if plan.on_demand_exprs:
        request = _request_frame(plan, rows)
        inputs = [by_name[names.get(c, c)].alias(c) for c in plan.on_demand_inputs]
        base = [*request.get_columns(), *inputs]
        source = pl.DataFrame(base) if base else stored  # no inputs: constants, one per row
        derived = {s.name: s for s in source.select(plan.on_demand_exprs).get_columns()}
        for internal in plan.on_demand_names:
            statuses[internal] = [
                NULL_VALUE if v is None else PRESENT for v in derived[internal].to_list()
            ]
    served = []
    for internal, output in zip(plan.internal, plan.outputs, strict=True):
        series = (
            derived[internal] if internal in derived else by_name[names.get(internal, internal)]
        )
        served.append(series if series.name == output else series.alias(output))
    out = pl.DataFrame(served)
    return OnlineResponse(
        out,
        {o: statuses[i] for i, o in zip(plan.internal, plan.outputs, strict=True)},
        {
            o: times.get(i, [None] * out.height)
            for i, o in zip(plan.internal, plan.outputs, strict=True)
        },
    )
