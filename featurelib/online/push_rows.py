"""Pushed rows converted to a source's column types, with a reason for every value that
does not convert (see `featurelib.online.push` for the rules)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl

from featurelib import dtypes
from featurelib.compile.polars_expr import featurelib_dtype, polars_dtype
from featurelib.dtypes import DType
from featurelib.offline.io import to_utc

Rows = pl.DataFrame | pl.LazyFrame | Sequence[Mapping[str, Any]]


def columns_of(rows: Rows) -> tuple[dict[str, Any], int, dict[int, str]]:
    """Columns as Series (DataFrame input) or value lists (row input), row count, and rows that
    are not objects at all."""
    if isinstance(rows, pl.DataFrame):
        return {name: rows[name] for name in rows.columns}, rows.height, {}
    if isinstance(rows, pl.LazyFrame):
        frame = rows.collect()
        return {name: frame[name] for name in frame.columns}, frame.height, {}
    columns: dict[str, list[Any]] = {}
    errors: dict[int, str] = {}
    n = len(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            errors[i] = f"a row must be an object (mapping), got {type(row).__name__}"
            continue
        for name, value in row.items():
            column = columns.get(str(name))
            if column is None:
                column = columns[str(name)] = [None] * n
            column[i] = value
    return columns, n, errors


def convert_column(
    name: str, values: pl.Series | list[Any] | None, kind: DType, n: int
) -> tuple[pl.Series, list[tuple[int, str]]]:
    """`values` as a Series of the column's log type, and (row, reason) of values that do not
    convert."""
    target = polars_dtype(kind)
    if values is None:
        return pl.Series(name, [None] * n, dtype=target), []
    if isinstance(values, pl.Series):
        fast = _fast_cast(values, kind)
        if fast is not None:
            bad = (values.is_not_null() & fast.is_null()).arg_true().to_list()
            return fast.alias(name), [(i, _reason(name, kind, values[i])) for i in bad]
        values = values.to_list()
    converted: list[Any] = []
    bad_rows: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        try:
            converted.append(_convert(value, kind))
        except (TypeError, ValueError, OverflowError):
            converted.append(None)
            bad_rows.append((i, _reason(name, kind, value)))
    return pl.Series(name, converted, dtype=target), bad_rows


def _fast_cast(series: pl.Series, kind: DType) -> pl.Series | None:
    """Vectorized conversion for column types that map safely, else None."""
    dtype = series.dtype
    if dtype == pl.Null:
        return pl.Series(series.name, [None] * len(series), dtype=polars_dtype(kind))
    if kind == dtypes.Int64 and dtype.is_integer():
        return series.cast(pl.Int64, strict=False)
    if kind == dtypes.Float64 and (dtype.is_numeric() and dtype != pl.Boolean):
        return series.cast(pl.Float64, strict=False)
    if kind == dtypes.Bool and dtype == pl.Boolean:
        return series
    if kind == dtypes.String and featurelib_dtype(dtype) == dtypes.String:
        return series.cast(pl.String)
    if kind == dtypes.Timestamp and (isinstance(dtype, pl.Datetime) or dtype == pl.Date):
        return series.to_frame().select(to_utc(pl.col(series.name), dtype)).to_series()
    return None


_INT_RANGE = (-(1 << 63), (1 << 63) - 1)


def _convert(value: Any, kind: DType) -> Any:
    """One value as the Python value of `kind` (None stays None); raises ValueError/TypeError."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None  # NaN is read as missing everywhere (design §3)
    name = kind.name
    if name == "Int64":
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            value = int(value)
        elif isinstance(value, Decimal):
            if value != value.to_integral_value():
                raise ValueError
            value = int(value)
        elif isinstance(value, str):
            value = int(value.strip())
        if not isinstance(value, int) or not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise ValueError
        return value
    if name == "Float64":
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise TypeError
        result = float(value)
        return None if math.isnan(result) else result
    if name == "Bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise ValueError
    if name == "String":
        if not isinstance(value, str):
            raise TypeError
        return value
    if name == "Timestamp":
        return _timestamp(value)
    raise TypeError


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value.strip())
    else:
        raise TypeError
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _reason(name: str, kind: DType, value: Any) -> str:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if kind == dtypes.Timestamp:
        return (
            f"{name}: cannot read {shown} ({type(value).__name__}) as a timestamp "
            "(use a datetime or ISO 8601 text, e.g. 2024-03-01T12:30:00Z; naive = UTC)"
        )
    return f"{name}: expected {kind}, got {type(value).__name__} {shown}"
