"""Compile expression nodes to `polars.Expr` (the one engine offline and online)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import polars as pl

from featurelib import dtypes
from featurelib.dtypes import DType
from featurelib.errors import ExpressionTypeError
from featurelib.expr import DT_PARTS, Call, Column, FeatureRef, Literal, Node, When

if TYPE_CHECKING:
    from featurelib.views import OnDemandView

TIMESTAMP = pl.Datetime("us", "UTC")


def polars_dtype(dtype: DType) -> pl.DataType:
    """The Polars type featurelib stores values of `dtype` as."""
    if dtype.name == "List":
        assert dtype.inner is not None
        return pl.List(polars_dtype(dtype.inner))
    table: dict[str, pl.DataType] = {
        "Int64": pl.Int64(),
        "Float64": pl.Float64(),
        "Bool": pl.Boolean(),
        "String": pl.String(),
        "Timestamp": TIMESTAMP,
        "Unknown": pl.Null(),
    }
    return table[dtype.name]


def featurelib_dtype(dtype: pl.DataType) -> DType:
    """The featurelib type of a Polars column type (all integer widths are Int64)."""
    if dtype.is_integer():
        return dtypes.Int64
    if dtype.is_float() or dtype.is_decimal():
        return dtypes.Float64
    if dtype == pl.Boolean:
        return dtypes.Bool
    if dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(dtype, pl.Categorical):
        return dtypes.String
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return dtypes.Timestamp
    if isinstance(dtype, pl.List):
        inner = dtype.inner
        return dtypes.List(featurelib_dtype(inner if isinstance(inner, pl.DataType) else inner()))
    return dtypes.Unknown


def cast_declared(expr: pl.Expr, dtype: DType) -> pl.Expr:
    """`expr` cast to a known declared type; left as computed when the type is Unknown."""
    return expr.cast(polars_dtype(dtype), strict=False) if dtype.is_known else expr


def on_demand_exprs(view: OnDemandView, *, qualified: bool = True) -> list[pl.Expr]:
    """The view's features as Polars expressions cast to their declared types: the one
    compilation the offline engine, online reads and the Feast UDF all evaluate. Output names
    are `<view>__<feature>` (`qualified`) or the feature names."""
    return [
        cast_declared(to_polars(node), dtype).alias(f"{view.name}__{n}" if qualified else n)
        for (n, node), dtype in zip(view.features, view.feature_dtypes().values(), strict=True)
    ]


def default_column(node: Column | FeatureRef) -> pl.Expr:
    if isinstance(node, FeatureRef):
        return pl.col(f"{node.view}__{node.name}")
    return pl.col(node.name)


def to_polars(
    node: Node, column: Callable[[Column | FeatureRef], pl.Expr] = default_column
) -> pl.Expr:
    """The Polars expression computing `node`; `column` maps leaves to input columns."""

    def go(n: Node) -> pl.Expr:
        if isinstance(n, Column | FeatureRef):
            return column(n)
        if isinstance(n, Literal):
            if n.value is None:
                return pl.lit(None)
            if isinstance(n.value, datetime):
                return pl.lit(n.value, dtype=TIMESTAMP)
            return pl.lit(n.value, dtype=polars_dtype(n.dtype))
        if isinstance(n, When):
            (cond, value), *rest = n.branches
            chain = pl.when(_typed(cond, go(cond), pl.Boolean())).then(go(value))
            for cond, value in rest:
                chain = chain.when(_typed(cond, go(cond), pl.Boolean())).then(go(value))  # type: ignore[assignment]
            return chain.otherwise(go(n.otherwise))
        if isinstance(n, Call):
            args = [go(a) for a in n.args]
            if n.fn in _OPERAND_TYPE:
                # A null literal has Polars type Null, which most functions reject: give it
                # the type the function works on (the result is null either way).
                args = [_typed(a, x, _OPERAND_TYPE[n.fn]) for a, x in zip(n.args, args)]
            return _call(n, args)
        raise ExpressionTypeError(f"cannot compile expression node {n!r}")

    return go(node)


_OPERAND_TYPE: dict[str, pl.DataType] = {
    **dict.fromkeys(("and", "or", "not"), pl.Boolean()),
    **dict.fromkeys(("lower", "upper", "str_len", "contains", "starts_with"), pl.String()),
    **dict.fromkeys(DT_PARTS, TIMESTAMP),
    **dict.fromkeys(("neg", "abs", "sqrt", "log", "clip", "round"), pl.Float64()),
}


def _is_null_typed(node: Node) -> bool:
    """True when `node` is null whatever the input (so Polars would type it Null)."""
    if isinstance(node, Literal):
        return node.value is None
    if isinstance(node, Call) and node.fn in ("add", "sub", "mul", "floordiv", "mod", "fill_null"):
        return all(_is_null_typed(a) for a in node.args)
    if isinstance(node, When):
        return all(_is_null_typed(v) for _, v in node.branches) and _is_null_typed(node.otherwise)
    return False


def _typed(node: Node, expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    return expr.cast(dtype) if _is_null_typed(node) else expr


def _dt(arg: pl.Expr, call: Call) -> pl.Expr:
    tz = call.option("time_zone")
    return arg.dt.convert_time_zone(str(tz)) if tz else arg


def _call(call: Call, args: list[pl.Expr]) -> pl.Expr:
    fn = call.fn
    a = args[0]
    b = args[1] if len(args) > 1 else None
    binary: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
        "add": lambda x, y: x + y,
        "sub": lambda x, y: x - y,
        "mul": lambda x, y: x * y,
        "eq": lambda x, y: x == y,
        "ne": lambda x, y: x != y,
        "lt": lambda x, y: x < y,
        "le": lambda x, y: x <= y,
        "gt": lambda x, y: x > y,
        "ge": lambda x, y: x >= y,
        "and": lambda x, y: x & y,
        "or": lambda x, y: x | y,
    }
    if fn in binary:
        assert b is not None
        return binary[fn](a, b)
    if fn in ("truediv", "floordiv", "mod"):
        # Division by zero gives null, not inf/NaN: features stay NaN-free (documented in expr).
        assert b is not None
        op = {
            "truediv": lambda: a.cast(pl.Float64) / b,
            "floordiv": lambda: a // b,
            "mod": lambda: a % b,
        }[fn]()
        return pl.when(b != 0).then(op).otherwise(None)
    unary: dict[str, Callable[[], pl.Expr]] = {
        "neg": lambda: -a,
        "not": lambda: ~a,
        "abs": lambda: a.abs(),
        "sqrt": lambda: pl.when(a >= 0).then(a.cast(pl.Float64).sqrt()).otherwise(None),
        "log": lambda: pl.when(a > 0).then(a.cast(pl.Float64).log()).otherwise(None),
        "is_null": lambda: a.is_null(),
        "is_not_null": lambda: a.is_not_null(),
        "lower": lambda: a.str.to_lowercase(),
        "upper": lambda: a.str.to_uppercase(),
        "str_len": lambda: a.str.len_chars().cast(pl.Int64),
        "hour": lambda: _dt(a, call).dt.hour().cast(pl.Int64),
        "weekday": lambda: _dt(a, call).dt.weekday().cast(pl.Int64),
        "day": lambda: _dt(a, call).dt.day().cast(pl.Int64),
        "month": lambda: _dt(a, call).dt.month().cast(pl.Int64),
        "year": lambda: _dt(a, call).dt.year().cast(pl.Int64),
        "contains": lambda: a.str.contains(str(call.option("pattern")), literal=True),
        "starts_with": lambda: a.str.starts_with(str(call.option("prefix"))),
        "round": lambda: a.cast(pl.Float64).round(int(call.option("decimals") or 0)),
    }
    if fn in unary:
        return unary[fn]()
    if fn == "fill_null":
        assert b is not None
        return a.fill_null(b)
    if fn == "clip":
        lower, upper = call.option("lower"), call.option("upper")
        if isinstance(lower, float) or isinstance(upper, float):
            # Polars would truncate a fractional bound to the column's integer type.
            a = a.cast(pl.Float64)
        return a.clip(lower, upper)
    if fn == "cast":
        target = DType.from_spec(str(call.option("dtype")))
        return a.cast(polars_dtype(target), strict=False)
    raise ExpressionTypeError(f"unknown function {fn!r}", hint="see featurelib.expr.ALL_FNS")
