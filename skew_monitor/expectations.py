"""Great Expectations 1.x suites derived from a model's training data, validated on online logs.

`build_suite` profiles the training frame with Polars (one pass, no GX import) and returns the
suite as GX's own JSON form (`{"name", "expectations": [{"type", "kwargs", "meta"}], "meta"}`),
so it can be stored with the model version (registry attachment `expectations.json`) and loaded
by `great_expectations.ExpectationSuite(**suite)`. Per feature:

- `expect_column_values_to_be_of_type`: "float64" for numeric features, "object" for string,
  categorical and boolean ones -- the pandas dtypes the boundary conversion below produces, so a
  feature that changes kind online (a number served as a string) fails.
- `expect_column_values_to_not_be_null` with `mostly` = training non-null fraction minus
  `null_tolerance` (default 0.05), floored at 0 (omitted when that floor is reached).
- numeric: `expect_column_values_to_be_between` training [min, max] widened by `range_margin`
  (default 10%) of the range on each side, `mostly` = `range_mostly` (default 0.99): a few
  values just outside the training range are normal, a shifted or corrupted column is not.
- string/categorical/boolean with at most `max_categories` (default 50) distinct training
  values: `expect_column_values_to_be_in_set` the training categories, `mostly` =
  `category_mostly` (default 0.99). Higher-cardinality strings (ids) get no set expectation.

GX has no Polars input: `validate_suite` converts once at the boundary (numeric -> Float64,
null/NaN -> NaN; strings, categoricals and booleans -> str / None; booleans become "true" /
"false"), only the columns the suite names, then validates the whole suite on one pandas batch
of an ephemeral context (created once per process). Importing GX takes seconds; it is imported
on first validation only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from featurelib.errors import FeaturelibError
from skew_monitor.drift import feature_kind

NUMERIC_TYPE = "float64"
OBJECT_TYPE = "object"
MAX_UNEXPECTED_VALUES = 5


class ExpectationSuiteError(FeaturelibError):
    """An expectation suite cannot be built or validated."""


@dataclass(frozen=True)
class SuiteOptions:
    """How training statistics become expectations (margins and tolerances)."""

    range_margin: float = 0.1
    range_mostly: float = 0.99
    null_tolerance: float = 0.05
    max_categories: int = 50
    category_mostly: float = 0.99


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation on one feature."""

    feature: str
    expectation_type: str
    success: bool
    expected: dict[str, Any]
    observed_value: Any = None
    unexpected_fraction: float | None = None
    unexpected_count: int | None = None
    element_count: int | None = None
    unexpected_values: tuple[Any, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "expectation_type": self.expectation_type,
            "success": self.success,
            "expected": self.expected,
            "observed_value": self.observed_value,
            "unexpected_fraction": self.unexpected_fraction,
            "unexpected_count": self.unexpected_count,
            "element_count": self.element_count,
            "unexpected_values": list(self.unexpected_values),
            "error": self.error,
        }


@dataclass(frozen=True)
class ValidationSummary:
    """A suite's validation on one frame: overall success and one outcome per expectation."""

    suite_name: str
    success: bool
    results: tuple[ExpectationOutcome, ...]
    rows: int
    seconds: float  # conversion + GX validation (excluding GX's one-time import)

    @property
    def failed(self) -> tuple[ExpectationOutcome, ...]:
        return tuple(r for r in self.results if not r.success)

    @property
    def failed_features(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.feature for r in self.failed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite_name": self.suite_name,
            "success": self.success,
            "rows": self.rows,
            "evaluated": len(self.results),
            "failed": len(self.failed),
            "failed_features": list(self.failed_features),
            "seconds": self.seconds,
            "results": [r.to_dict() for r in self.results],
        }


def build_suite(
    training: pl.DataFrame,
    features: Sequence[str],
    name: str,
    options: SuiteOptions | None = None,
) -> dict[str, Any]:
    """A JSON-serializable GX suite for `features`, profiled from the training frame."""
    options = options or SuiteOptions()
    missing = [f for f in features if f not in training.columns]
    if missing:
        raise ExpectationSuiteError(
            f"features {missing} are not columns of the training frame",
            where=f"build_suite({name!r})",
            hint="pass the model's feature names as they appear in the training set",
        )
    kinds = {f: feature_kind(training.schema[f]) for f in features}
    profile = training.select(_profile_exprs(training.schema, kinds, options)).row(0, named=True)
    rows = training.height
    expectations: list[dict[str, Any]] = []
    described: dict[str, dict[str, Any]] = {}
    for feature in features:
        kind = kinds[feature]
        described[feature] = {"kind": kind, "dtype": str(training.schema[feature])}
        if kind is None:  # lists, timestamps: nothing GX can check element-wise here
            continue
        meta = {"feature": feature}
        expectations.append(
            _expectation(
                "expect_column_values_to_be_of_type",
                feature,
                meta,
                type_=NUMERIC_TYPE if kind == "numeric" else OBJECT_TYPE,
            )
        )
        null_fraction = profile[f"{feature}__nulls"] / rows if rows else 0.0
        mostly = round(1.0 - null_fraction - options.null_tolerance, 6)
        if mostly > 0:
            expectations.append(
                _expectation("expect_column_values_to_not_be_null", feature, meta, mostly=mostly)
            )
        if kind == "numeric":
            low, high = profile[f"{feature}__min"], profile[f"{feature}__max"]
            if low is not None and high is not None:
                margin = options.range_margin * (high - low)
                expectations.append(
                    _expectation(
                        "expect_column_values_to_be_between",
                        feature,
                        meta,
                        min_value=float(low - margin),
                        max_value=float(high + margin),
                        mostly=options.range_mostly,
                    )
                )
        else:
            values = profile.get(f"{feature}__set")
            if values is not None:
                expectations.append(
                    _expectation(
                        "expect_column_values_to_be_in_set",
                        feature,
                        meta,
                        value_set=sorted(values),
                        mostly=options.category_mostly,
                    )
                )
    return {
        "name": name,
        "expectations": expectations,
        "meta": {
            "featurelib": {
                "training_rows": rows,
                "features": described,
                "options": {
                    "range_margin": options.range_margin,
                    "range_mostly": options.range_mostly,
                    "null_tolerance": options.null_tolerance,
                    "max_categories": options.max_categories,
                    "category_mostly": options.category_mostly,
                },
            }
        },
    }


def _expectation(kind: str, column: str, meta: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {"type": kind, "kwargs": {"column": column, **kwargs}, "meta": dict(meta)}


def _profile_exprs(
    schema: pl.Schema, kinds: Mapping[str, str | None], options: SuiteOptions
) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    for feature, kind in kinds.items():
        column = pl.col(feature)
        if kind == "numeric":
            value = column.cast(pl.Float64)
            finite = value.filter(value.is_finite())
            exprs += [
                (value.len() - finite.len()).alias(f"{feature}__nulls"),
                finite.min().alias(f"{feature}__min"),
                finite.max().alias(f"{feature}__max"),
            ]
        elif kind == "categorical":
            text = column.cast(pl.String)
            exprs.append(text.null_count().alias(f"{feature}__nulls"))
            distinct = text.drop_nulls().unique()
            # the set only when small enough; implode keeps one row
            exprs.append(
                pl.when(distinct.len() <= options.max_categories)
                .then(distinct.implode())
                .otherwise(None)
                .alias(f"{feature}__set")
            )
        else:
            exprs.append(column.null_count().alias(f"{feature}__nulls"))
    return exprs


def pandas_boundary(
    frame: pl.DataFrame, columns: Sequence[str], suite_kinds: Mapping[str, str | None] | None = None
) -> Any:
    """`frame[columns]` as pandas, converted the way the suite's type expectations assume.

    An all-null column without a dtype (pl.Null) takes the kind the suite recorded for it, so a
    feature that is entirely missing online fails its null expectation, not its type one.
    """
    exprs = []
    for column in columns:
        dtype = frame.schema[column]
        kind = feature_kind(dtype)
        if dtype == pl.Null and suite_kinds is not None:
            kind = suite_kinds.get(column)  # type: ignore[assignment]
        if kind == "numeric":
            exprs.append(pl.col(column).cast(pl.Float64))
        elif kind == "categorical":
            exprs.append(pl.col(column).cast(pl.String))
        else:
            exprs.append(pl.col(column))
    return frame.select(exprs).to_pandas()


_GX_LOCK = threading.Lock()
_GX_STATE: dict[str, Any] = {}


def _batch_definition() -> Any:
    """The process-wide ephemeral context's whole-dataframe batch definition (made once)."""
    if "batch_definition" not in _GX_STATE:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage-statistics calls
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("featurelib_skew").add_dataframe_asset("frame")
        _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
    return _GX_STATE["batch_definition"]


def validate_suite(
    suite: Mapping[str, Any], frame: pl.DataFrame, features: Sequence[str] | None = None
) -> ValidationSummary:
    """Validate `suite` (from `build_suite`) on `frame`; only `features` if given.

    A feature column missing from `frame` fails every one of its expectations without asking GX.
    """
    name = str(suite.get("name", "suite"))
    wanted = set(features) if features is not None else None
    expectations = [
        e
        for e in suite.get("expectations", [])
        if wanted is None or e["kwargs"]["column"] in wanted
    ]
    present = [e for e in expectations if e["kwargs"]["column"] in frame.columns]
    outcomes = [
        ExpectationOutcome(
            feature=e["kwargs"]["column"],
            expectation_type=e["type"],
            success=False,
            expected=_expected(e["kwargs"]),
            error=f"column {e['kwargs']['column']!r} is missing from the validated frame",
        )
        for e in expectations
        if e["kwargs"]["column"] not in frame.columns
    ]
    if present:
        with _GX_LOCK:
            _batch_definition()  # GX's import and context setup: once, outside the timing
    started = time.perf_counter()
    if present:
        outcomes = _run_gx(name, present, frame, _suite_kinds(suite)) + outcomes
    seconds = time.perf_counter() - started
    return ValidationSummary(
        suite_name=name,
        success=all(o.success for o in outcomes),
        results=tuple(outcomes),
        rows=frame.height,
        seconds=seconds,
    )


def _suite_kinds(suite: Mapping[str, Any]) -> dict[str, str | None]:
    described = suite.get("meta", {}).get("featurelib", {}).get("features", {})
    return {str(k): v.get("kind") for k, v in described.items() if isinstance(v, Mapping)}


def _run_gx(
    name: str,
    expectations: list[dict[str, Any]],
    frame: pl.DataFrame,
    suite_kinds: Mapping[str, str | None],
) -> list[ExpectationOutcome]:
    columns = list(dict.fromkeys(e["kwargs"]["column"] for e in expectations))
    data = pandas_boundary(frame, columns, suite_kinds)
    with _GX_LOCK:
        batch_definition = _batch_definition()
        from great_expectations.core.expectation_suite import ExpectationSuite

        try:
            gx_suite = ExpectationSuite(name=name, expectations=expectations)
        except Exception as exc:  # GX raises its own validation errors for malformed kwargs
            raise ExpectationSuiteError(
                f"the stored suite cannot be loaded by Great Expectations: {exc}",
                where=f"suite {name!r}",
                hint="rebuild it with skew_monitor.expectations.build_suite",
            ) from exc
        batch = batch_definition.get_batch(batch_parameters={"dataframe": data})
        result = batch.validate(
            gx_suite,
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": MAX_UNEXPECTED_VALUES,
            },
        )
    return [_outcome(r) for r in result.results]


def _expected(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k not in ("column", "batch_id")}


def _outcome(result: Any) -> ExpectationOutcome:
    config = result.expectation_config
    details: dict[str, Any] = dict(result.result or {})
    exception = result.exception_info or {}
    error = exception.get("exception_message") if exception.get("raised_exception") else None
    percent = details.get("unexpected_percent")
    unexpected = details.get("partial_unexpected_list") or []
    return ExpectationOutcome(
        feature=str(config.kwargs["column"]),
        expectation_type=str(config.type),
        success=bool(result.success),
        expected=_expected(config.kwargs),
        observed_value=_plain(details.get("observed_value")),
        unexpected_fraction=None if percent is None else float(percent) / 100.0,
        unexpected_count=details.get("unexpected_count"),
        element_count=details.get("element_count"),
        unexpected_values=tuple(_plain(v) for v in unexpected[:MAX_UNEXPECTED_VALUES]),
        error=error,
    )


def _plain(value: Any) -> Any:
    """numpy scalars and NaN to JSON-ready Python values."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value if isinstance(value, str | bool | int | float) else str(value)
