"""Windowed aggregates: `fl.mean(col("x")).windows("1h", "7d")` and their sawtooth-window rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, NoReturn

from featurelib import dtypes
from featurelib.dtypes import DType
from featurelib.durations import default_hop, format_duration, parse_duration
from featurelib.entity import check_name
from featurelib.errors import AggregateInRowExpressionError, DefinitionError, WindowError
from featurelib.expr import Column, Expr, Node, _slug

AGG_FUNCTIONS = ("count", "sum", "mean", "min", "max", "stddev", "last", "last_n")


@dataclass(frozen=True, slots=True)
class AggExpr:
    """An aggregate function over an argument row expression (None for `count()`)."""

    fn: str
    arg: Node | None
    k: int | None = None

    is_aggregate: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.fn not in AGG_FUNCTIONS:
            raise DefinitionError(
                f"unknown aggregate function {self.fn!r}",
                hint=f"use one of {', '.join(AGG_FUNCTIONS)}",
            )
        if self.fn == "last_n" and (
            not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1
        ):
            raise DefinitionError(
                f"last_n needs an integer k >= 1, got {self.k!r}",
                hint="e.g. fl.last_n(col('x'), 5)",
            )
        if self.fn != "last_n" and self.k is not None:
            raise DefinitionError(f"{self.fn}() takes no k", hint="only last_n takes k")
        if self.arg is None and self.fn != "count":
            raise DefinitionError(f"{self.fn}() needs an argument", hint=f"{self.fn}(col('x'))")

    def _no_ops(self, *_: object) -> NoReturn:
        raise AggregateInRowExpressionError(
            f"aggregate {self!r} used inside a row expression",
            hint="aggregates cannot be combined with operators; reference the aggregate's "
            "feature from an OnDemandView to combine it with other values",
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _no_ops
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _no_ops
    __lt__ = __le__ = __gt__ = __ge__ = _no_ops
    __and__ = __rand__ = __or__ = __ror__ = __invert__ = __neg__ = __abs__ = _no_ops

    def __getattr__(self, name: str) -> NoReturn:
        # Row-expression methods (`.fill_null`, `.cast`, `.str`, ...) do not apply to aggregates.
        if not name.startswith("_") and hasattr(Expr, name):
            self._no_ops()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        inner = "" if self.arg is None else _slug(self.arg)
        extra = f", {self.k}" if self.k is not None else ""
        return f"{self.fn}({inner}{extra})"

    def default_name(self) -> str:
        """`arr_delay_mean`, `count`, `arr_delay_gt_15_sum`, `dest_last_5`."""
        if self.arg is None:
            return "count"
        base = f"{_slug(self.arg)}_{self.fn}"
        return f"{_slug(self.arg)}_last_{self.k}" if self.fn == "last_n" else base

    def output_dtype(self, arg_dtype: DType) -> DType:
        if self.fn == "count":
            return dtypes.Int64
        if self.fn == "sum":
            if not arg_dtype.is_known:
                return dtypes.Unknown  # Int64 or Float64: only the data can tell
            return dtypes.Float64 if arg_dtype == dtypes.Float64 else dtypes.Int64
        if self.fn in ("mean", "stddev"):
            return dtypes.Float64
        if self.fn == "last_n":
            return dtypes.List(arg_dtype)
        return arg_dtype

    def windows(
        self, *windows: str | timedelta, name: str | None = None, hop: str | timedelta | None = None
    ) -> Aggregation:
        """This aggregate over one or more sawtooth windows.

        Examples:
            >>> import featurelib as fl
            >>> agg = fl.mean(fl.col("arr_delay")).windows("1h", "7d")
            >>> agg.feature_names()
            ['arr_delay_mean_1h', 'arr_delay_mean_7d']
        """
        return Aggregation(self, windows, name=name, hop=hop)


def _arg(value: object, fn: str) -> Node:
    if isinstance(value, Expr):
        return value.node
    if getattr(value, "is_aggregate", False):
        raise AggregateInRowExpressionError(
            f"aggregate {value!r} nested inside {fn}()",
            hint="an aggregate's argument must be a row expression such as col('x') > 0",
        )
    if isinstance(value, str):
        return Column(value)
    raise DefinitionError(
        f"{fn}() needs a row expression, got {value!r}", hint=f"{fn}(fl.col('column'))"
    )


def count(arg: Expr | str | None = None) -> AggExpr:
    """Number of events in the window; `count(x)` counts the non-null values of `x`.

    Examples:
        >>> import featurelib as fl
        >>> fl.count().windows("1d").feature_names()
        ['count_1d']
    """
    return AggExpr("count", None if arg is None else _arg(arg, "count"))


def sum(arg: Expr | str) -> AggExpr:
    """Sum of the non-null values (0 for an empty window); booleans count their trues.

    Examples:
        >>> import featurelib as fl
        >>> fl.sum(fl.col("arr_delay") > 15).windows("7d").feature_names()
        ['arr_delay_gt_15_sum_7d']
    """
    return AggExpr("sum", _arg(arg, "sum"))


def mean(arg: Expr | str) -> AggExpr:
    """Mean of the non-null values (null for an empty window).

    Examples:
        >>> import featurelib as fl
        >>> fl.mean("dep_delay").default_name()
        'dep_delay_mean'
    """
    return AggExpr("mean", _arg(arg, "mean"))


def min(arg: Expr | str) -> AggExpr:
    """Smallest non-null value.

    Examples:
        >>> import featurelib as fl
        >>> fl.min("temp").default_name()
        'temp_min'
    """
    return AggExpr("min", _arg(arg, "min"))


def max(arg: Expr | str) -> AggExpr:
    """Largest non-null value.

    Examples:
        >>> import featurelib as fl
        >>> fl.max("temp").default_name()
        'temp_max'
    """
    return AggExpr("max", _arg(arg, "max"))


def stddev(arg: Expr | str) -> AggExpr:
    """Sample standard deviation (ddof 1) of the non-null values; null below two values.

    Examples:
        >>> import featurelib as fl
        >>> fl.stddev("arr_delay").default_name()
        'arr_delay_stddev'
    """
    return AggExpr("stddev", _arg(arg, "stddev"))


def last(arg: Expr | str) -> AggExpr:
    """The most recent non-null value by event time (ties: later created, then later row).

    Examples:
        >>> import featurelib as fl
        >>> fl.last("dest").default_name()
        'dest_last'
    """
    return AggExpr("last", _arg(arg, "last"))


def last_n(arg: Expr | str, k: int) -> AggExpr:
    """The `k` most recent non-null values as a list, most recent last.

    Examples:
        >>> import featurelib as fl
        >>> fl.last_n("dest", 3).default_name()
        'dest_last_3'
    """
    return AggExpr("last_n", _arg(arg, "last_n"), k)


@dataclass(frozen=True)
class Window:
    """One sawtooth window: length and hop (the window's start moves in steps of `hop`)."""

    length: timedelta
    hop: timedelta

    @property
    def label(self) -> str:
        return format_duration(self.length)

    @property
    def hops(self) -> int:
        return self.length // self.hop


@dataclass(frozen=True, init=False)
class Aggregation:
    """An aggregate over one or more windows; each window yields a feature `{name}_{window}`."""

    fn: AggExpr
    windows: tuple[Window, ...]
    name: str

    is_aggregate: ClassVar[bool] = True

    def __init__(
        self,
        fn: AggExpr,
        windows: tuple[str | timedelta, ...] | list[str | timedelta],
        *,
        name: str | None = None,
        hop: str | timedelta | None = None,
    ) -> None:
        where = f"aggregation {name or fn.default_name()!r}"
        if not isinstance(fn, AggExpr):
            raise DefinitionError(
                f"expected an aggregate such as fl.mean(col('x')), got {fn!r}", where=where
            )
        if name is not None:
            check_name(name, kind="aggregation", where=where)
        if not windows:
            raise WindowError("no windows given", where=where, hint='e.g. .windows("1h", "7d")')
        parsed: list[Window] = []
        for raw in windows:
            length = parse_duration(raw, where=where)
            step = parse_duration(hop, where=where) if hop is not None else default_hop(length)
            if length % step:
                raise WindowError(
                    f"window {format_duration(length)} is not a multiple of its hop "
                    f"{format_duration(step)}",
                    where=where,
                    hint="choose a hop that divides every window, or leave `hop` unset "
                    "for the default (1min up to 1h windows, 5min to 12h, 1h to 12d, else 1d)",
                )
            parsed.append(Window(length, step))
        labels = [w.label for w in parsed]
        if len(set(labels)) != len(labels):
            raise WindowError(
                f"duplicate windows {labels}", where=where, hint="list each window once"
            )
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "windows", tuple(parsed))
        object.__setattr__(self, "name", name or fn.default_name())

    def feature_names(self) -> list[str]:
        return [f"{self.name}_{w.label}" for w in self.windows]

    def features(self) -> list[tuple[str, Window]]:
        return [(f"{self.name}_{w.label}", w) for w in self.windows]
