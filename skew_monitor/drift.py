"""Per-feature distribution drift between a reference (training sample) and current (online
log) frame: metrics from `skew_monitor.metrics`, judged with `skew_monitor.thresholds`.

Column kinds: integer, float and decimal columns are numeric (cast to Float64; null, NaN and
+/-inf count as missing); String, Categorical, Enum and Boolean columns are categorical
(booleans become "true"/"false": a binary has no meaningful KS or Wasserstein distance).
Temporal columns (dates, datetimes, durations, times) are skipped: a training window and live
traffic always differ in time, so their drift says nothing; list, array, struct, binary and
object columns are skipped: they have no scalar distribution (derive a scalar feature, e.g. a
length, to monitor them). `skipped_features` gives the reason for each.

The kind comes from the reference column's dtype (the current one's if the reference is all
null); a current column that cannot take that kind raises `DriftInputError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from featurelib.errors import FeaturelibError
from skew_monitor import metrics
from skew_monitor.metrics import FloatArray
from skew_monitor.thresholds import DriftConfig, Evidence, judge

Kind = Literal["numeric", "categorical"]
MAX_NEW_CATEGORIES_LISTED = 10


class DriftInputError(FeaturelibError):
    """The frames given to `compute_drift` cannot be compared (missing or mistyped column)."""


@dataclass(frozen=True)
class Histogram:
    """Reference and current proportions over the bins (numeric) or categories (categorical).

    Numeric: `edges` are the interior edges e1 < ... < ek; bin 0 is (-inf, e1], bin i is
    (e_i, e_(i+1)], the last is (ek, +inf); `lower`/`upper` are the smallest/largest observed
    value on either side (finite ends for plotting). Categorical: `categories` are the most
    frequent categories (at most `DriftConfig.max_histogram_categories`, by max(p, q)); all
    others are summed into `other_reference`/`other_current`. Proportions exclude nulls.
    """

    kind: Kind
    reference: tuple[float, ...]
    current: tuple[float, ...]
    edges: tuple[float, ...] = ()
    lower: float | None = None
    upper: float | None = None
    categories: tuple[str, ...] = ()
    other_reference: float = 0.0
    other_current: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "edges": [_json_float(x) for x in self.edges],
            "lower": _json_float(self.lower),
            "upper": _json_float(self.upper),
            "categories": list(self.categories),
            "reference": [_json_float(x) for x in self.reference],
            "current": [_json_float(x) for x in self.current],
            "other_reference": _json_float(self.other_reference),
            "other_current": _json_float(self.other_current),
        }


@dataclass(frozen=True)
class FeatureDrift:
    """Drift metrics, breaches and verdict of one feature.

    `n_reference`/`n_current` count all rows (nulls included); distribution metrics use the
    non-null values. Metrics that do not apply to the kind (or to an empty side) are None.
    `p_adjusted` is the KS (numeric) or chi-square (categorical) p-value after the
    multiple-testing correction across features; `breaches` read "metric: value >= threshold".
    """

    feature: str
    kind: Kind
    n_reference: int
    n_current: int
    null_rate_reference: float
    null_rate_current: float
    psi: float | None
    js_distance: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    wasserstein_norm: float | None
    linf: float | None
    histogram: Histogram
    breaches: tuple[str, ...]
    drifted: bool
    chi2_pvalue: float | None = None
    p_adjusted: float | None = None
    null_rate_pvalue_adjusted: float | None = None
    new_category_rate: float | None = None
    new_categories: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def null_rate_change(self) -> float:
        """Current null rate minus reference null rate."""
        return self.null_rate_current - self.null_rate_reference

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (NaN and infinities become None)."""
        return {
            "feature": self.feature,
            "kind": self.kind,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "null_rate_reference": _json_float(self.null_rate_reference),
            "null_rate_current": _json_float(self.null_rate_current),
            "null_rate_change": _json_float(self.null_rate_change),
            "psi": _json_float(self.psi),
            "js_distance": _json_float(self.js_distance),
            "ks_statistic": _json_float(self.ks_statistic),
            "ks_pvalue": _json_float(self.ks_pvalue),
            "wasserstein_norm": _json_float(self.wasserstein_norm),
            "linf": _json_float(self.linf),
            "chi2_pvalue": _json_float(self.chi2_pvalue),
            "p_adjusted": _json_float(self.p_adjusted),
            "null_rate_pvalue_adjusted": _json_float(self.null_rate_pvalue_adjusted),
            "new_category_rate": _json_float(self.new_category_rate),
            "new_categories": list(self.new_categories),
            "histogram": self.histogram.to_dict(),
            "breaches": list(self.breaches),
            "drifted": self.drifted,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Measured:
    """One feature's metrics before the cross-feature correction and judgement."""

    feature: str
    kind: Kind
    n_reference: int
    n_current: int
    nulls_reference: int
    nulls_current: int
    valid_reference: int
    valid_current: int
    psi: float | None
    js_distance: float | None
    histogram: Histogram
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    wasserstein_norm: float | None = None
    linf: float | None = None
    chi2_pvalue: float | None = None
    new_category_rate: float | None = None
    new_categories: tuple[str, ...] = ()

    @property
    def test_pvalue(self) -> float:
        value = self.ks_pvalue if self.kind == "numeric" else self.chi2_pvalue
        return float("nan") if value is None else value


def compute_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    features: Sequence[str] | None = None,
    config: DriftConfig | None = None,
) -> list[FeatureDrift]:
    """Drift of each feature from `reference` to `current`, in `features` order.

    `features=None` compares every column present in both frames except the skipped kinds
    (see `skipped_features`). Naming a missing or skipped column raises `DriftInputError`.
    """
    config = config or DriftConfig()
    names = _resolve_features(reference, current, features)
    measured = [
        _measure(name, reference.get_column(name), current.get_column(name), config)
        for name in names
    ]
    judged = [
        m
        for m in measured
        if min(m.valid_reference, m.valid_current) >= config.min_samples
        and config.thresholds_for(m.feature).enabled
    ]
    adjusted = metrics.adjust_pvalues(
        np.array([m.test_pvalue for m in judged], dtype=np.float64), config.correction
    )
    p_adjusted = {m.feature: float(p) for m, p in zip(judged, adjusted, strict=True)}
    null_judged = [
        m
        for m in measured
        if min(m.n_reference, m.n_current) >= config.min_samples
        and config.thresholds_for(m.feature).enabled
    ]
    null_pvalues = np.array(
        [
            metrics.two_proportion_pvalue(
                m.nulls_reference, m.n_reference, m.nulls_current, m.n_current
            )
            for m in null_judged
        ],
        dtype=np.float64,
    )
    null_adjusted = dict(
        zip(
            (m.feature for m in null_judged),
            (float(p) for p in metrics.adjust_pvalues(null_pvalues, config.correction)),
            strict=True,
        )
    )
    return [
        _judge(m, p_adjusted.get(m.feature), null_adjusted.get(m.feature), config) for m in measured
    ]


def skipped_features(
    reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str] | None = None
) -> dict[str, str]:
    """Columns (of `features`, or of both frames) that drift skips, with the reason."""
    names = features if features is not None else _common_columns(reference, current)
    reasons: dict[str, str] = {}
    for name in names:
        if name not in reference.columns or name not in current.columns:
            continue
        reason = _skip_reason(reference.schema[name], current.schema[name])
        if reason is not None:
            reasons[name] = reason
    return reasons


def feature_kind(dtype: pl.DataType) -> Kind | None:
    """ "numeric", "categorical", or None for a dtype drift skips (or an all-null column)."""
    if dtype.is_numeric():
        return "numeric"
    if dtype in (pl.String, pl.Boolean) or isinstance(dtype, pl.Categorical | pl.Enum):
        return "categorical"
    return None


def _skip_reason(ref_dtype: pl.DataType, cur_dtype: pl.DataType) -> str | None:
    dtype = cur_dtype if ref_dtype == pl.Null else ref_dtype
    if feature_kind(dtype) is not None:
        return None
    if dtype.is_temporal():
        return (
            f"temporal column ({dtype}): a training window and live traffic always differ in "
            "time, so its drift is not meaningful"
        )
    if isinstance(dtype, pl.List | pl.Array | pl.Struct):
        return f"{dtype} column has no scalar distribution; monitor a derived scalar (e.g. length)"
    if dtype == pl.Null:
        return "all values are null on both sides"
    return f"unsupported dtype {dtype}"


def _common_columns(reference: pl.DataFrame, current: pl.DataFrame) -> list[str]:
    current_columns = set(current.columns)
    return [c for c in reference.columns if c in current_columns]


def _resolve_features(
    reference: pl.DataFrame, current: pl.DataFrame, features: Sequence[str] | None
) -> list[str]:
    if features is None:
        common = _common_columns(reference, current)
        skipped = skipped_features(reference, current, common)
        return [c for c in common if c not in skipped]
    names = list(dict.fromkeys(features))
    for side, frame in (("reference", reference), ("current", current)):
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DriftInputError(
                f"features {missing} are not columns of the {side} frame",
                where="compute_drift",
                hint=f"{side} columns: {frame.columns[:30]}",
            )
    skipped = skipped_features(reference, current, names)
    if skipped:
        name, reason = next(iter(skipped.items()))
        raise DriftInputError(
            f"feature {name!r} cannot be compared: {reason}",
            where="compute_drift",
            hint="leave it out of `features` (skipped_features() lists such columns)",
        )
    return names


def _measure(name: str, ref: pl.Series, cur: pl.Series, config: DriftConfig) -> _Measured:
    kind = feature_kind(cur.dtype if ref.dtype == pl.Null else ref.dtype)
    if kind == "numeric":
        return _measure_numeric(name, ref, cur, config)
    return _measure_categorical(name, ref, cur, config)


def _finite_sorted(series: pl.Series, name: str, side: str) -> tuple[FloatArray, int]:
    if not (series.dtype.is_numeric() or series.dtype == pl.Null):
        raise DriftInputError(
            f"column {name!r} is numeric in the reference but {series.dtype} in the {side}",
            where="compute_drift",
            hint="cast both frames to the serving dtypes before comparing",
        )
    values = series.cast(pl.Float64)
    finite = values.filter(values.is_finite()).sort()  # polars: parallel sort, nulls dropped
    return finite.to_numpy(), series.len() - finite.len()


def _measure_numeric(name: str, ref: pl.Series, cur: pl.Series, config: DriftConfig) -> _Measured:
    ref_sorted, ref_nulls = _finite_sorted(ref, name, "reference")
    cur_sorted, cur_nulls = _finite_sorted(cur, name, "current")
    edges = metrics.quantile_edges(ref_sorted, config.bins)
    p = metrics.bin_proportions(ref_sorted, edges)
    q = metrics.bin_proportions(cur_sorted, edges)
    both = ref_sorted.shape[0] > 0 and cur_sorted.shape[0] > 0
    ecdf = metrics.compare_ecdfs(ref_sorted, cur_sorted)
    std = float(np.std(ref_sorted, ddof=1)) if ref_sorted.shape[0] > 1 else 0.0
    observed = [a[[0, -1]] for a in (ref_sorted, cur_sorted) if a.shape[0] > 0]
    lower = float(min(a[0] for a in observed)) if observed else None
    upper = float(max(a[1] for a in observed)) if observed else None
    histogram = Histogram("numeric", tuple(p.tolist()), tuple(q.tolist()), tuple(edges.tolist()),
                          lower, upper)  # fmt: skip
    return _Measured(
        feature=name,
        kind="numeric",
        n_reference=ref.len(),
        n_current=cur.len(),
        nulls_reference=ref_nulls,
        nulls_current=cur_nulls,
        valid_reference=ref_sorted.shape[0],
        valid_current=cur_sorted.shape[0],
        psi=metrics.psi(p, q, config.epsilon) if both else None,
        js_distance=metrics.js_distance(p, q) if both else None,
        histogram=histogram,
        ks_statistic=ecdf.ks_statistic if both else None,
        ks_pvalue=ecdf.ks_pvalue if both else None,
        wasserstein_norm=metrics.normalized_wasserstein(ecdf.wasserstein, std) if both else None,
    )


def _category_counts(series: pl.Series, name: str) -> pl.DataFrame:
    strings = series.cast(pl.String)
    return (
        strings.drop_nulls()
        .value_counts(name="count")
        .rename({strings.name: "category"})
        .with_columns(pl.col("count").cast(pl.Float64))
    )


def _measure_categorical(
    name: str, ref: pl.Series, cur: pl.Series, config: DriftConfig
) -> _Measured:
    ref_counts = _category_counts(ref, name)
    cur_counts = _category_counts(cur, name)
    table = (
        ref_counts.join(cur_counts, on="category", how="full", coalesce=True, suffix="_cur")
        .fill_null(0.0)
        .sort(["count", "count_cur", "category"], descending=[True, True, False])
    )
    ref_n = float(ref_counts.get_column("count").sum())
    cur_n = float(cur_counts.get_column("count").sum())
    ref_c = table.get_column("count").to_numpy()
    cur_c = table.get_column("count_cur").to_numpy()
    p = ref_c / ref_n if ref_n > 0 else np.zeros_like(ref_c)
    q = cur_c / cur_n if cur_n > 0 else np.zeros_like(cur_c)
    both = ref_n > 0 and cur_n > 0
    categories = table.get_column("category")
    new_mask = (ref_c == 0) & (cur_c > 0)
    new_rate = float(q[new_mask].sum()) if both else None
    # new categories, most frequent first (the table is sorted by reference count first)
    new_order = np.argsort(-cur_c[new_mask], kind="stable")[:MAX_NEW_CATEGORIES_LISTED]
    new_names = tuple(str(c) for c in categories.filter(pl.Series(new_mask)).gather(new_order))
    return _Measured(
        feature=name,
        kind="categorical",
        n_reference=ref.len(),
        n_current=cur.len(),
        nulls_reference=ref.null_count(),
        nulls_current=cur.null_count(),
        valid_reference=int(ref_n),
        valid_current=int(cur_n),
        psi=metrics.psi(p, q, config.epsilon) if both else None,
        js_distance=metrics.js_distance(p, q) if both else None,
        histogram=_category_histogram(categories, p, q, config.max_histogram_categories),
        linf=metrics.linf_distance(p, q) if both else None,
        chi2_pvalue=metrics.chi2_homogeneity_pvalue(ref_c, cur_c) if both else None,
        new_category_rate=new_rate,
        new_categories=new_names,
    )


def _category_histogram(
    categories: pl.Series, p: FloatArray, q: FloatArray, limit: int
) -> Histogram:
    shown = np.sort(np.argsort(-np.maximum(p, q), kind="stable")[:limit])
    rest = np.ones(p.shape[0], dtype=bool)
    rest[shown] = False
    return Histogram(
        kind="categorical",
        reference=tuple(p[shown].tolist()),
        current=tuple(q[shown].tolist()),
        categories=tuple(str(c) for c in categories.gather(shown)),
        other_reference=float(p[rest].sum()),
        other_current=float(q[rest].sum()),
    )


def _judge(
    m: _Measured, p_adjusted: float | None, null_p_adjusted: float | None, config: DriftConfig
) -> FeatureDrift:
    null_rate_ref = m.nulls_reference / m.n_reference if m.n_reference else math.nan
    null_rate_cur = m.nulls_current / m.n_current if m.n_current else math.nan
    breaches, notes = judge(
        Evidence(
            feature=m.feature,
            kind=m.kind,
            valid_reference=m.valid_reference,
            valid_current=m.valid_current,
            psi=m.psi,
            js_distance=m.js_distance,
            wasserstein_norm=m.wasserstein_norm,
            linf=m.linf,
            new_category_rate=m.new_category_rate,
            new_categories=m.new_categories,
            null_rate_change=null_rate_cur - null_rate_ref,
            p_adjusted=p_adjusted,
            null_p_adjusted=null_p_adjusted,
        ),
        config,
    )
    return FeatureDrift(
        feature=m.feature,
        kind=m.kind,
        n_reference=m.n_reference,
        n_current=m.n_current,
        null_rate_reference=null_rate_ref,
        null_rate_current=null_rate_cur,
        psi=m.psi,
        js_distance=m.js_distance,
        ks_statistic=m.ks_statistic,
        ks_pvalue=m.ks_pvalue,
        wasserstein_norm=m.wasserstein_norm,
        linf=m.linf,
        histogram=m.histogram,
        breaches=breaches,
        drifted=bool(breaches),
        chi2_pvalue=m.chi2_pvalue,
        p_adjusted=p_adjusted,
        null_rate_pvalue_adjusted=null_p_adjusted,
        new_category_rate=m.new_category_rate,
        new_categories=m.new_categories,
        notes=notes,
    )


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
