"""Row-level consistency replay: logged online rows recomputed offline at the same (keys, time).

Every logged row becomes a spine row (entity keys, request fields, and `feature_time`, the time the
server read the features at); `training_set` recomputes the service's features at that time, and
each feature is compared row by row (design §3): exact for integers, strings, booleans and nulls;
floats within `rel_tolerance * max(1, |a|, |b|)` (plus `abs_tolerance`, 0 by default); lists
elementwise with the same rule. A float NaN counts as null (as everywhere in featurelib).

Per feature the result holds: rows compared, matches, mismatches, match rate, online-only nulls
(online null, offline not), offline-only nulls, SMAPE = mean over rows where both values are
non-null of |a - b| / ((|a| + |b|) / 2) (0 when both are 0; range [0, 2]), the p50/p90/p99/max of
|a - b| (linear interpolation) and a few mismatching rows with their keys and both values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import polars as pl

from featurelib.errors import FeaturelibError
from featurelib.offline.engine import training_set
from featurelib.repo import Repo
from featurelib.views import AggregationView, FeatureService, FeatureView, OnDemandView
from serving.log_flush import META_SCHEMA

Progress = Callable[[str], None]
LOG_COLUMNS = tuple(META_SCHEMA)  # the feature log's metadata columns (serving/CONTRACT.md)
SPINE_TIME = "feature_time"
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


class ReplayError(FeaturelibError):
    """Logged rows cannot be replayed through the offline path (missing columns, no rows)."""


@dataclass(frozen=True)
class Tolerance:
    """How close an online and an offline value must be to match, and the match rate required."""

    rel_tolerance: float = 1e-9
    abs_tolerance: float = 0.0
    min_match_rate: float = 0.999


@dataclass(frozen=True)
class ReplayConfig:
    """Tolerances (default and per feature) and how many mismatching rows to keep as samples."""

    default: Tolerance = field(default_factory=Tolerance)
    per_feature: Mapping[str, Tolerance] = field(default_factory=dict)
    samples: int = 5

    def tolerance(self, feature: str) -> Tolerance:
        return self.per_feature.get(feature, self.default)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ReplayConfig:
        """From a config section: rel_tolerance, abs_tolerance, min_match_rate, samples and
        `features: {name: {same keys}}` overrides."""
        known = {"rel_tolerance", "abs_tolerance", "min_match_rate"}
        unknown = set(raw) - known - {"samples", "features"}
        if unknown:
            raise ReplayError(
                f"unknown replay settings {sorted(unknown)}",
                where="skew config, section 'replay'",
                hint=f"use {sorted([*known, 'samples', 'features'])}",
            )
        default = Tolerance(**{k: float(v) for k, v in raw.items() if k in known})
        per_feature = {}
        for name, over in (raw.get("features") or {}).items():
            bad = set(over) - known
            if bad:
                raise ReplayError(
                    f"unknown settings {sorted(bad)} for feature {name!r}",
                    where="skew config, section 'replay.features'",
                    hint=f"use {sorted(known)}",
                )
            per_feature[name] = replace(default, **{k: float(v) for k, v in over.items()})
        return cls(default, per_feature, int(raw.get("samples", 5)))


@dataclass(frozen=True)
class FeatureConsistency:
    """Row-level comparison of one feature's online (logged) and offline (replayed) values."""

    feature: str
    dtype: str
    rows_compared: int
    matches: int
    mismatches: int
    match_rate: float
    online_only_null: int
    offline_only_null: int
    both_null: int
    smape: float | None
    diff_quantiles: dict[str, float | None]
    samples: tuple[dict[str, Any], ...]
    min_match_rate: float

    @property
    def breached(self) -> bool:
        return self.rows_compared > 0 and self.match_rate < self.min_match_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "dtype": self.dtype,
            "rows_compared": self.rows_compared,
            "matches": self.matches,
            "mismatches": self.mismatches,
            "match_rate": self.match_rate,
            "online_only_null": self.online_only_null,
            "offline_only_null": self.offline_only_null,
            "both_null": self.both_null,
            "smape": self.smape,
            "diff_quantiles": dict(self.diff_quantiles),
            "min_match_rate": self.min_match_rate,
            "breached": self.breached,
            "samples": [dict(s) for s in self.samples],
        }


@dataclass(frozen=True)
class ReplayResult:
    """Per-feature consistency of a replay, plus what was replayed against which definitions."""

    service: str
    rows: int
    current_version: str
    logged_versions: tuple[str, ...]
    replayed_with: dict[str, str]  # logged version -> "current" or "logged version"
    features: tuple[FeatureConsistency, ...]
    not_replayed: tuple[str, ...]  # logged features the current service no longer has
    not_logged: tuple[str, ...]  # features of the current service the logs do not hold
    offline: pl.DataFrame  # replayed offline values (feature columns), in log order
    seconds: float

    @property
    def definitions_changed(self) -> bool:
        """Some rows were served by another definition and replayed with the current one."""
        return any(
            v != self.current_version and self.replayed_with.get(v) == "current"
            for v in self.logged_versions
        )

    def breached(self) -> list[FeatureConsistency]:
        return [f for f in self.features if f.breached]

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "rows": self.rows,
            "current_version": self.current_version,
            "logged_versions": list(self.logged_versions),
            "replayed_with": dict(self.replayed_with),
            "definitions_changed": self.definitions_changed,
            "not_replayed": list(self.not_replayed),
            "not_logged": list(self.not_logged),
            "seconds": self.seconds,
            "features": [f.to_dict() for f in self.features],
        }


def spine_columns(service: FeatureService) -> tuple[list[str], list[str]]:
    """The entity key columns and request fields a spine for `service` needs."""
    keys: dict[str, None] = {}
    fields: dict[str, None] = {}
    for proj in service.projections:
        view = proj.view
        inputs = view.inputs if isinstance(view, OnDemandView) else (view,)
        for item in inputs:
            if isinstance(item, FeatureView | AggregationView):
                keys.update(dict.fromkeys(item.join_keys))
        if isinstance(view, OnDemandView):
            fields.update(dict.fromkeys(view.request_fields()))
    return list(keys), [f for f in fields if f not in keys]


def _group_definitions(
    logs: pl.DataFrame, service: FeatureService, definitions: Mapping[str, FeatureService]
) -> list[tuple[str | None, FeatureService, pl.Series]]:
    """(logged version, definition to replay with, row mask) per logged service version: the
    logged version's own definition when known, else the current one."""
    if "service_version" not in logs.columns:
        return [(None, service, pl.Series([True] * logs.height))]
    versions = logs["service_version"].unique(maintain_order=True).to_list()
    known = {service.version: service, **definitions}
    return [
        (
            v,
            known.get(v, service) if v is not None else service,
            logs["service_version"].eq_missing(v),
        )
        for v in versions
    ]


def _offline_group(
    logs: pl.DataFrame,
    definition: FeatureService,
    repo: Repo,
    progress: Progress | None,
) -> pl.DataFrame:
    keys, fields = spine_columns(definition)
    needed = ["request_id", "row", SPINE_TIME, *keys, *fields]
    missing = [c for c in needed if c not in logs.columns]
    if missing:
        raise ReplayError(
            f"logged rows lack columns {missing}",
            where=f"replay of service {definition.name!r} (version {definition.version})",
            hint="replay reads the feature log layout of serving/CONTRACT.md "
            "(serving.feature_log.read_logs)",
        )
    spine = logs.select(*keys, *fields, SPINE_TIME)
    return training_set(
        definition, spine, repo=repo, timestamp_column=SPINE_TIME, progress=progress
    ).select(definition.output_names())


def replay(
    logs: pl.DataFrame,
    service: FeatureService,
    repo: Repo,
    config: ReplayConfig | None = None,
    progress: Progress | None = None,
    definitions: Mapping[str, FeatureService] | None = None,
) -> ReplayResult:
    """Recompute `logs` (feature-log rows, contract columns) offline and compare per feature.

    Rows are replayed with the definition of the service version that served them when
    `definitions` (service version -> FeatureService) has it, else with `service` (the current
    definition); features are compared by name.
    """
    config = config or ReplayConfig()
    started = time.perf_counter()
    groups = _group_definitions(logs, service, definitions or {})
    outputs = list(dict.fromkeys(f for _, d, _ in groups for f in d.output_names()))
    outputs = [*service.output_names(), *(f for f in outputs if f not in service.output_names())]
    meta = {"request_id", "row", SPINE_TIME, *LOG_COLUMNS}
    for _, definition, _ in groups:
        keys, fields = spine_columns(definition)
        meta.update(keys, fields)
    logged = [c for c in logs.columns if c not in meta and not c.startswith("status__")]
    compared = [f for f in outputs if f in logs.columns]
    if progress:
        progress(
            f"replaying {logs.height:,} logged rows of {service.name!r} through the offline path"
        )
    order = "__replay_order"
    parts = []
    covered: dict[str, pl.Series] = {}
    for _, definition, mask in groups:
        part = logs.with_row_index(order).filter(mask)
        offline = _offline_group(part, definition, repo, progress)
        parts.append(offline.with_columns(part[order]))
        for f in compared:
            has = f in definition.output_names()
            covered[f] = (covered[f] if f in covered else pl.Series([False] * logs.height)) | (
                mask & has
            )
    offline = pl.concat(parts, how="diagonal_relaxed").sort(order).drop(order)
    offline = offline.select(
        [offline[f] if f in offline.columns else pl.lit(None).alias(f) for f in outputs]
    )
    if progress:
        progress(f"offline recomputation done in {time.perf_counter() - started:.1f}s; comparing")
    keys = list(dict.fromkeys(k for _, d, _ in groups for k in spine_columns(d)[0]))
    ident = logs.select("request_id", "row", SPINE_TIME, *keys)
    results = []
    for f in compared:
        rows = covered[f]
        if rows.all():
            results.append(
                compare_feature(ident, logs[f], offline[f], f, config.tolerance(f), config.samples)
            )
        else:  # rows served by a definition without this feature are not compared
            results.append(
                compare_feature(
                    ident.filter(rows),
                    logs[f].filter(rows),
                    offline[f].filter(rows),
                    f,
                    config.tolerance(f),
                    config.samples,
                )
            )
    replayed_with = {
        str(v): ("current" if d is service else "logged version") for v, d, _ in groups
    }
    return ReplayResult(
        service=service.name,
        rows=logs.height,
        current_version=service.version,
        logged_versions=tuple(sorted(str(v) for v, _, _ in groups if v is not None)),
        replayed_with=replayed_with,
        features=tuple(results),
        not_replayed=tuple(f for f in logged if f not in outputs),
        not_logged=tuple(f for f in service.output_names() if f not in logs.columns),
        offline=offline,
        seconds=time.perf_counter() - started,
    )


def _common(online: pl.Series, offline: pl.Series) -> tuple[pl.Series, pl.Series, str]:
    """Both sides cast to one comparable type; the kind is "float", "int", "list" or "exact"."""
    a, b = online.dtype, offline.dtype
    if isinstance(a, pl.List) or isinstance(b, pl.List):
        return online, offline, "list"
    if a == pl.Null and b != pl.Null:
        online = online.cast(b)
        a = b
    elif b == pl.Null and a != pl.Null:
        offline = offline.cast(a)
        b = a
    if a.is_numeric() and b.is_numeric():
        if a.is_float() or b.is_float():
            return (
                online.cast(pl.Float64).fill_nan(None),
                offline.cast(pl.Float64).fill_nan(None),
                "float",
            )
        return online.cast(pl.Int64), offline.cast(pl.Int64), "int"
    if a != b:  # e.g. Categorical vs String, Boolean vs String: compare their text
        return online.cast(pl.String), offline.cast(pl.String), "exact"
    return online, offline, "exact"


def _close(a: pl.Expr, b: pl.Expr, tol: Tolerance) -> pl.Expr:
    scale = pl.max_horizontal(pl.lit(1.0), a.abs(), b.abs())
    # Equal values match before the tolerance test (inf - inf is NaN); otherwise both must be
    # finite, or an infinite scale would call inf "close" to any number.
    within = (a - b).abs() <= tol.rel_tolerance * scale + tol.abs_tolerance
    return (a == b) | (a.is_finite() & b.is_finite() & within)


def _list_equal(frame: pl.DataFrame, tol: Tolerance) -> pl.Series:
    """Row-wise equality of two list columns `a`, `b`: same length and elementwise equal."""
    types = [frame.schema[c] for c in ("a", "b")]
    lists = [t for t in types if isinstance(t, pl.List)]
    floats = any(t.inner.is_float() for t in lists)
    target = pl.List(pl.Float64) if floats else lists[0]
    work = frame.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("i"),
        pl.col("a").cast(target),
        pl.col("b").cast(target),
    )
    same_len = work.select(
        (pl.col("a").list.len() == pl.col("b").list.len()).fill_null(False)
    ).to_series()
    pairs = work.filter(same_len).explode("a", "b")
    if floats:
        pairs = pairs.with_columns(pl.col("a").fill_nan(None), pl.col("b").fill_nan(None))
        elem = _close(pl.col("a"), pl.col("b"), tol)
    else:
        elem = pl.col("a") == pl.col("b")
    both_null = pl.col("a").is_null() & pl.col("b").is_null()
    per_row = (
        pairs.drop_nulls("i")
        .group_by("i")
        .agg((both_null | elem.fill_null(False)).all().alias("eq"))
    )
    eq = work.select("i").join(per_row, on="i", how="left").sort("i")["eq"]
    # Rows with no exploded pair (both lists empty) have no differing element: equal.
    return (same_len & eq.fill_null(True)).alias("eq")


def compare_feature(
    ident: pl.DataFrame,
    online: pl.Series,
    offline: pl.Series,
    feature: str,
    tol: Tolerance,
    samples: int = 5,
) -> FeatureConsistency:
    """Compare one feature's online and offline values row by row (vectorized)."""
    a, b, kind = _common(online, offline)
    frame = pl.DataFrame([a.alias("a"), b.alias("b")])
    a_null, b_null = pl.col("a").is_null(), pl.col("b").is_null()
    both = a_null.not_() & b_null.not_()
    if kind == "list":
        equal = _list_equal(frame, tol)
        frame = frame.with_columns(equal)
        value_eq = pl.col("eq")
    elif kind == "float":
        value_eq = _close(pl.col("a"), pl.col("b"), tol)
    else:
        value_eq = pl.col("a") == pl.col("b")
    match = (a_null & b_null) | (both & value_eq.fill_null(False))
    frame = frame.with_columns(match.alias("match"))
    numeric = kind in ("float", "int")
    stats = frame.select(
        pl.len().alias("rows"),
        pl.col("match").sum().alias("matches"),
        (a_null & b_null.not_()).sum().alias("online_only_null"),
        (b_null & a_null.not_()).sum().alias("offline_only_null"),
        (a_null & b_null).sum().alias("both_null"),
    ).row(0, named=True)
    smape: float | None = None
    quantiles: dict[str, float | None] = dict.fromkeys([*(n for n, _ in QUANTILES), "max"])
    if numeric:
        equal_or_finite = (pl.col("a") == pl.col("b")) | (
            pl.col("a").cast(pl.Float64).is_finite() & pl.col("b").cast(pl.Float64).is_finite()
        )
        diffs = frame.filter(both & equal_or_finite).select(
            pl.when(pl.col("a") == pl.col("b"))  # equal infinities differ by 0, not NaN
            .then(0.0)
            .otherwise((pl.col("a").cast(pl.Float64) - pl.col("b").cast(pl.Float64)).abs())
            .alias("d"),
            pl.when(pl.col("a") == pl.col("b"))
            .then(0.0)
            .otherwise(pl.col("a").cast(pl.Float64).abs() + pl.col("b").cast(pl.Float64).abs())
            .alias("s"),
        )
        if diffs.height:
            row = diffs.select(
                pl.when(pl.col("s") == 0)
                .then(0.0)
                .otherwise(pl.col("d") / (pl.col("s") / 2))
                .mean()
                .alias("smape"),
                *[
                    pl.col("d").quantile(q, interpolation="linear").alias(name)
                    for name, q in QUANTILES
                ],
                pl.col("d").max().alias("max"),
            ).row(0, named=True)
            smape = float(row.pop("smape"))
            quantiles = {k: float(v) for k, v in row.items()}
    rows, matches = int(stats["rows"]), int(stats["matches"])
    bad = ident.with_columns(
        online.alias("online_value"), offline.alias("offline_value"), frame["match"]
    )
    sample_rows = bad.filter(pl.col("match").not_()).head(samples).drop("match")
    return FeatureConsistency(
        feature=feature,
        dtype=str(online.dtype),
        rows_compared=rows,
        matches=matches,
        mismatches=rows - matches,
        match_rate=matches / rows if rows else 1.0,
        online_only_null=int(stats["online_only_null"]),
        offline_only_null=int(stats["offline_only_null"]),
        both_null=int(stats["both_null"]),
        smape=smape,
        diff_quantiles=quantiles,
        samples=tuple(_jsonable_row(r) for r in sample_rows.iter_rows(named=True)),
        min_match_rate=tol.min_match_rate,
    )


def jsonable(value: Any) -> Any:
    """A value as JSON can hold it: times as ISO 8601, lists recursively, NaN as None."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def _jsonable_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in row.items()}
