"""What a scoring request must send, and checking that it did.

A model's inputs are named columns (the MLServer `pd` convention of the Open Inference
Protocol): the entity join keys of its feature service's views, then the request fields its
on-demand features read. Their Open Inference Protocol datatypes:

| featurelib type | OIP datatype | accepted columns |
|---|---|---|
| String | BYTES | strings |
| Int64 | INT64 | any integer type |
| Float64 | FP64 | any integer or float type |
| Bool | BOOL | booleans |
| Timestamp | BYTES (`content_type: datetime`) | ISO 8601 text (naive = UTC), datetimes |

A column of nulls only is accepted for every type (a null key gets null features, status
NOT_FOUND, as offline). Columns the service does not use are ignored, or refused when the
config says `extra_columns: reject`. Every refusal names the column and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from featurelib.compile.polars_expr import polars_dtype
from featurelib.dtypes import DType
from featurelib.online.read import ServingPlan
from featurelib.views import FeatureService
from serving.errors import BadRequestError

OIP_DATATYPES = {"String": "BYTES", "Int64": "INT64", "Float64": "FP64", "Bool": "BOOL"}
DATETIME = "datetime"
SMALL = 64  # up to this many rows, checks and parsing in Python beat per-call Polars overhead
_SIMPLE_ISO = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?([zZ]|[+-]\d\d:\d\d)?")


def oip_datatype(dtype: DType) -> str:
    """The OIP datatype a value of `dtype` travels as (Timestamp: BYTES, ISO 8601 text)."""
    return OIP_DATATYPES.get(dtype.name, "BYTES")


@dataclass(frozen=True)
class InputColumn:
    """One named input column of a model: a join key or a request field."""

    name: str
    dtype: DType
    role: str  # "key" | "request"

    @property
    def datatype(self) -> str:
        return oip_datatype(self.dtype)

    def describe(self) -> str:
        extra = ", ISO 8601 text" if self.dtype.name == "Timestamp" else ""
        return f"{self.dtype} ({self.datatype}{extra})"

    def metadata(self) -> dict[str, object]:
        """The OIP tensor metadata of this column (a variable number of rows)."""
        out: dict[str, object] = {"name": self.name, "datatype": self.datatype, "shape": [-1]}
        if self.dtype.name == "Timestamp":
            out["parameters"] = {"content_type": DATETIME}
        return out


@dataclass(frozen=True)
class Signature:
    """The input columns of a feature service (keys in view order, then request fields) and its
    output feature names."""

    service: str
    service_version: str
    columns: tuple[InputColumn, ...]
    outputs: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.role == "key")

    def validate(self, frame: pl.DataFrame, *, extra: str = "ignore", where: str) -> pl.DataFrame:
        """`frame` reduced to the signature's columns in their declared types, or a
        BadRequestError naming the first problem column(s) and what was expected."""
        expected = ", ".join(f"{c.name}: {c.describe()}" for c in self.columns)
        missing = [c for c in self.columns if c.name not in frame.columns]
        if missing:
            names = ", ".join(f"{c.name!r} ({c.describe()})" for c in missing)
            raise BadRequestError(
                f"missing input column{'s' if len(missing) > 1 else ''} {names}",
                where=where,
                hint=f"send every input column: {expected}",
            )
        if extra == "reject":
            known = {c.name for c in self.columns}
            unknown = [c for c in frame.columns if c not in known]
            if unknown:
                raise BadRequestError(
                    f"unknown input columns {unknown}",
                    where=where,
                    hint=f"the inputs are: {expected}",
                )
        return pl.DataFrame([_convert(frame, c, where) for c in self.columns])


def signature_of(service: FeatureService, plan: ServingPlan | None = None) -> Signature:
    """The inputs a request to `service` must carry (computed once per service version)."""
    plan = plan or ServingPlan(service)
    keys: dict[str, DType] = {}
    for view in plan.stored:
        keys.update(view.join_key_types)
    columns = [InputColumn(name, dtype, "key") for name, dtype in keys.items()]
    columns += [
        InputColumn(name, plan.request_types[name], "request")
        for name in plan.request_fields
        if name not in keys
    ]
    return Signature(service.name, service.version, tuple(columns), tuple(plan.outputs))


def _convert(frame: pl.DataFrame, column: InputColumn, where: str) -> pl.Series:
    series = frame.get_column(column.name)
    dtype = series.dtype
    target = polars_dtype(column.dtype)
    if dtype == pl.Null:
        return series.cast(target)
    kind = column.dtype.name
    accepted = (
        (kind == "String" and dtype in (pl.String, pl.Categorical))
        or (kind == "Int64" and dtype.is_integer())
        or (kind == "Float64" and (dtype.is_integer() or dtype.is_float()))
        or (kind == "Bool" and dtype == pl.Boolean)
        or (kind == "Timestamp" and (dtype == pl.String or isinstance(dtype, pl.Datetime)))
    )
    if not accepted:
        raise BadRequestError(
            f"input column {column.name!r} has type {_oip_name(dtype)}; "
            f"expected {column.describe()}",
            where=where,
            hint=f"send {column.name!r} as {column.datatype} values",
        )
    if kind == "Timestamp":
        return _timestamps(series, column, where)
    if kind == "Float64":
        series = series.cast(pl.Float64)
        if series.len() <= SMALL and not any(v != v for v in series.to_list() if v is not None):
            return series  # no NaN (checked in Python: cheaper than a Polars pass on few rows)
        return series.fill_nan(None)  # NaN is a missing value, as offline
    if dtype == target:
        return series
    cast = series.cast(target, strict=False)
    if cast.null_count() > series.null_count():  # e.g. a UINT64 beyond Int64's range
        row = int((cast.is_null() & series.is_not_null()).arg_max() or 0)
        raise BadRequestError(
            f"input column {column.name!r} row {row}: {series[row]!r} does not fit "
            f"{column.describe()}",
            where=where,
            hint=f"send {column.name!r} values within the range of {column.dtype.name}",
        )
    return cast


def _timestamps(series: pl.Series, column: InputColumn, where: str) -> pl.Series:
    if isinstance(series.dtype, pl.Datetime):
        if series.dtype.time_zone is None:
            series = series.dt.replace_time_zone("UTC")
        return series.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    parsed = _parse_small(series) if series.len() <= SMALL else None
    if parsed is not None:
        return parsed.alias(column.name)
    parsed = _parse_iso(series)
    bad = (series.is_not_null() & parsed.is_null()).arg_true()
    if bad.len():
        row = int(bad[0])
        raise BadRequestError(
            f"input column {column.name!r} row {row}: {series[row]!r} is not an ISO 8601 timestamp",
            where=where,
            hint="send e.g. 2013-06-01T12:00:00Z (a time without offset is read as UTC)",
        )
    return parsed.alias(column.name)


def _parse_small(series: pl.Series) -> pl.Series | None:
    """`_parse_iso` in Python for a few values (a few Polars passes cost more than parsing
    them one by one), when every value has the unambiguous form `_SIMPLE_ISO` (seconds,
    optional fraction of up to 6 digits, optional Z or +hh:mm offset) that both parse alike;
    None (use `_parse_iso`) otherwise."""
    out: list[datetime | None] = []
    for text in series.to_list():
        if text is None:
            out.append(None)
            continue
        text = text.strip()
        if not _SIMPLE_ISO.fullmatch(text):
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None  # e.g. month 13: let the Polars path report it
        out.append(value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))
    return pl.Series(series.name, out, dtype=pl.Datetime("us", "UTC"))


def _parse_iso(series: pl.Series) -> pl.Series:
    """ISO 8601 text -> Datetime(us, UTC); values with an offset are converted, values without
    one are read as UTC (both may appear in one column)."""
    text = series.str.strip_chars().str.replace(r"[zZ]$", "+00:00")
    fast = text.str.to_datetime(  # the common case: every value with an offset
        format="%Y-%m-%dT%H:%M:%S%.f%z", time_unit="us", time_zone="UTC", strict=False
    )
    if fast.null_count() == series.null_count():
        return fast
    with_offset = text.str.contains(r"[+-]\d\d:?\d\d$")
    aware = [
        text.str.to_datetime(format=f, time_unit="us", time_zone="UTC", strict=False)
        for f in ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
    ]
    naive = [
        text.str.to_datetime(format=f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
        for f in ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M")
    ]
    naive.append(text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us", "UTC")))
    return pl.select(
        pl.when(with_offset)
        .then(pl.coalesce([pl.lit(s) for s in aware]))
        .otherwise(pl.coalesce([pl.lit(s) for s in naive]))
    ).to_series()


def _oip_name(dtype: pl.DataType) -> str:
    if dtype in (pl.String, pl.Categorical):
        return "BYTES (text)"
    if dtype == pl.Boolean:
        return "BOOL"
    if dtype.is_integer():
        return "INT64"
    if dtype.is_float():
        return "FP64"
    return str(dtype)
