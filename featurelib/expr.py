"""Row expressions: immutable expression nodes and the Polars-style `Expr` wrapper users write.

Nodes (`Column`, `Literal`, `Call`, `When`, ...) are plain frozen dataclasses: hashable, comparable
and serializable. `Expr` wraps a node and gives it operators, like `polars.Expr`; comparison
operators build new expressions, so compare nodes (`a.node == b.node`) to test equality.

Null semantics follow SQL and Polars: arithmetic and comparisons with a null give null, `&` and `|`
use three-valued logic. Division by zero, `log` of a non-positive number and `sqrt` of a negative
number give null (never NaN or infinity), so features stay NaN-free. `//` and `%` floor, like
Python: `-7 // 2 == -4`, `-7 % 2 == 1`; on floats they are Polars' `floor(a / b)` and
`a - b * floor(a / b)`, which can differ from Python's in the last bit (`1.0 // 0.1` is 10.0).
Literals are finite (NaN and infinity are rejected: write None) and -0.0 is stored as 0.0.
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from featurelib.dtypes import DType
from featurelib.errors import AggregateInRowExpressionError, ExpressionTypeError

Scalar = int | float | str | bool | None | datetime
Option = int | float | str | bool | None

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Node:
    """Base class of expression nodes."""

    __slots__ = ()

    def children(self) -> tuple[Node, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Column(Node):
    """A column of the input rows (a source column, a request field or a feature)."""

    name: str


@dataclass(frozen=True, slots=True)
class FeatureRef(Node):
    """A feature of a named view, used by on-demand features: `view["feature"]`."""

    view: str
    name: str


@dataclass(frozen=True, slots=True)
class Literal(Node):
    """A constant; datetimes are timezone-aware UTC."""

    value: Scalar
    dtype: DType


@dataclass(frozen=True, slots=True)
class Call(Node):
    """A function or operator applied to argument nodes, with scalar options."""

    fn: str
    args: tuple[Node, ...]
    options: tuple[tuple[str, Option], ...] = ()

    def children(self) -> tuple[Node, ...]:
        return self.args

    def option(self, name: str) -> Option:
        return dict(self.options).get(name)


@dataclass(frozen=True, slots=True)
class When(Node):
    """`when(c1).then(v1).when(c2).then(v2).otherwise(v)`: the first true condition wins."""

    branches: tuple[tuple[Node, Node], ...]
    otherwise: Node

    def children(self) -> tuple[Node, ...]:
        flat = [n for pair in self.branches for n in pair]
        return (*flat, self.otherwise)


BINARY_OPS = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "and": "&",
    "or": "|",
}
UNARY_FNS = (
    "neg",
    "not",
    "abs",
    "sqrt",
    "log",
    "is_null",
    "is_not_null",
    "lower",
    "upper",
    "str_len",
    "hour",
    "weekday",
    "day",
    "month",
    "year",
)
OTHER_FNS = ("fill_null", "cast", "clip", "round", "contains", "starts_with")
ALL_FNS = (*BINARY_OPS, *UNARY_FNS, *OTHER_FNS)

#: Number of argument nodes each function takes (the first is the operand).
ARITY = {**dict.fromkeys(BINARY_OPS, 2), **dict.fromkeys(UNARY_FNS, 1), "fill_null": 2}
ARITY |= {"cast": 1, "clip": 1, "round": 1, "contains": 1, "starts_with": 1}

#: The options each function accepts (every other option is an error).
OPTIONS: dict[str, tuple[str, ...]] = dict.fromkeys(ALL_FNS, ())
OPTIONS |= {"cast": ("dtype",), "clip": ("lower", "upper"), "round": ("decimals",)}
OPTIONS |= {"contains": ("pattern",), "starts_with": ("prefix",)}
DT_PARTS = ("hour", "weekday", "day", "month", "year")
OPTIONS |= dict.fromkeys(DT_PARTS, ("time_zone",))

#: Types a value can be cast to; the key is the target, the value the accepted sources.
CASTS = {
    "Int64": ("Int64", "Float64", "Bool", "String", "Timestamp"),
    "Float64": ("Int64", "Float64", "Bool", "String", "Timestamp"),
    "Bool": ("Int64", "Float64", "Bool"),
    "String": ("Int64", "Float64", "Bool", "String", "Timestamp"),
    "Timestamp": ("Int64", "Timestamp"),
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_time_zone(name: object) -> bool:
    if not isinstance(name, str) or not name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def option_problem(fn: str, options: tuple[tuple[str, Option], ...]) -> tuple[str, str] | None:
    """What is wrong with the options of a call to `fn`, as (what, hint); None when all is well.

    Shared by the `Expr` methods, type inference and spec loading, so all three agree.
    """
    given = dict(options)
    allowed = OPTIONS.get(fn, ())
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        return f"{fn}() has unknown options {unknown}", f"it accepts {list(allowed) or 'none'}"
    if fn == "cast":
        target = given.get("dtype")
        if target not in CASTS:
            return (
                f"cannot cast to {target}",
                f"cast to one of {', '.join(CASTS)}, e.g. .cast(fl.Float64)",
            )
    if fn == "clip":
        lower, upper = given.get("lower"), given.get("upper")
        for bound in (lower, upper):
            if bound is not None and (not _is_number(bound) or not math.isfinite(bound)):  # type: ignore[arg-type]
                return f"clip bound {bound!r} is not a finite number", "e.g. .clip(0, 100)"
        if lower is not None and upper is not None and lower > upper:  # type: ignore[operator]
            return f"clip lower bound {lower!r} > upper bound {upper!r}", "swap the bounds"
    if fn == "round":
        decimals = given.get("decimals")
        if not isinstance(decimals, int) or isinstance(decimals, bool) or decimals < 0:
            return f"round() needs decimals >= 0, got {decimals!r}", "e.g. .round(2)"
    if fn in ("contains", "starts_with"):
        key = "pattern" if fn == "contains" else "prefix"
        if not isinstance(given.get(key), str):
            return f".str.{fn}() needs a string, got {given.get(key)!r}", '.str.contains("JFK")'
    if fn in DT_PARTS and given.get("time_zone") is not None:
        tz = given["time_zone"]
        if not _is_time_zone(tz):
            return f"unknown time zone {tz!r}", 'use an IANA name such as "America/New_York"'
    return None


def _to_node(value: object) -> Node:
    if isinstance(value, Expr):
        return value.node
    if isinstance(value, _WhenThen):
        raise ExpressionTypeError(
            "a `when(...).then(...)` chain is used before it is finished",
            hint="end it with `.otherwise(value)` (use `.otherwise(None)` for null)",
        )
    if getattr(value, "is_aggregate", False):
        raise AggregateInRowExpressionError(
            f"aggregate {value!r} used inside a row expression",
            hint="aggregates belong in an AggregationView's `aggregations`; to combine an "
            "aggregate with other values, reference its feature from an OnDemandView",
        )
    return lit(value).node  # type: ignore[arg-type]


def _slug(node: Node) -> str:
    if isinstance(node, Column):
        return node.name
    if isinstance(node, FeatureRef):
        return node.name
    if isinstance(node, Literal):
        if isinstance(node.value, datetime):
            return node.value.strftime("%Y%m%dt%H%M%S")
        text = str(node.value).replace(".", "p").replace("-", "neg").lower()
        return re.sub(r"[^0-9a-z]+", "_", text).strip("_") or "lit"
    if isinstance(node, Call):
        names = {"and": "and", "or": "or", "eq": "eq", "ne": "ne", "lt": "lt", "le": "le"}
        names |= {"gt": "gt", "ge": "ge", "add": "plus", "sub": "minus", "mul": "times"}
        names |= {"truediv": "per", "floordiv": "div", "mod": "mod"}
        if node.fn in names and len(node.args) == 2:
            return f"{_slug(node.args[0])}_{names[node.fn]}_{_slug(node.args[1])}"
        return "_".join([_slug(a) for a in node.args] + [node.fn])
    return "expr"


class Expr:
    """A row expression in the Polars style; wraps an immutable `Node`.

    Examples:
        >>> import featurelib as fl
        >>> e = (fl.col("arr_delay") > 15) & fl.col("dest").is_not_null()
        >>> e.to_spec()["fn"]
        'and'
    """

    __slots__ = ("node",)

    def __init__(self, node: Node) -> None:
        self.node = node

    def __repr__(self) -> str:
        return f"Expr({self.node!r})"

    def __bool__(self) -> bool:
        raise ExpressionTypeError(
            "an expression has no truth value",
            hint="use `&`, `|` and `~` instead of `and`, `or` and `not`, and compare "
            "expressions with `.equals(other)`",
        )

    def __hash__(self) -> int:
        return hash(self.node)

    def equals(self, other: Expr) -> bool:
        """True when both expressions are the same tree."""
        return self.node == other.node

    def slug(self) -> str:
        """A readable snake_case name for this expression, used to name generated features."""
        return _slug(self.node)

    def to_spec(self) -> dict[str, object]:
        from featurelib.spec import node_to_spec

        return node_to_spec(self.node)

    def _binary(self, fn: str, other: object, *, reflected: bool = False) -> Expr:
        left, right = self.node, _to_node(other)
        if reflected:
            left, right = right, left
        return Expr(Call(fn, (left, right)))

    def _call(self, fn: str, *args: object, **options: Option) -> Expr:
        nodes = (self.node, *(_to_node(a) for a in args))
        call = Call(fn, nodes, tuple(sorted(options.items())))
        problem = option_problem(fn, call.options)
        if problem:
            raise ExpressionTypeError(problem[0], hint=problem[1])
        return Expr(call)

    # arithmetic
    def __add__(self, o: object) -> Expr:
        return self._binary("add", o)

    def __radd__(self, o: object) -> Expr:
        return self._binary("add", o, reflected=True)

    def __sub__(self, o: object) -> Expr:
        return self._binary("sub", o)

    def __rsub__(self, o: object) -> Expr:
        return self._binary("sub", o, reflected=True)

    def __mul__(self, o: object) -> Expr:
        return self._binary("mul", o)

    def __rmul__(self, o: object) -> Expr:
        return self._binary("mul", o, reflected=True)

    def __truediv__(self, o: object) -> Expr:
        return self._binary("truediv", o)

    def __rtruediv__(self, o: object) -> Expr:
        return self._binary("truediv", o, reflected=True)

    def __floordiv__(self, o: object) -> Expr:
        return self._binary("floordiv", o)

    def __rfloordiv__(self, o: object) -> Expr:
        return self._binary("floordiv", o, reflected=True)

    def __mod__(self, o: object) -> Expr:
        return self._binary("mod", o)

    def __rmod__(self, o: object) -> Expr:
        return self._binary("mod", o, reflected=True)

    def __neg__(self) -> Expr:
        return self._call("neg")

    # comparisons (they build expressions, like Polars)
    def __eq__(self, o: object) -> Expr:  # type: ignore[override]
        return self._binary("eq", o)

    def __ne__(self, o: object) -> Expr:  # type: ignore[override]
        return self._binary("ne", o)

    def __lt__(self, o: object) -> Expr:
        return self._binary("lt", o)

    def __le__(self, o: object) -> Expr:
        return self._binary("le", o)

    def __gt__(self, o: object) -> Expr:
        return self._binary("gt", o)

    def __ge__(self, o: object) -> Expr:
        return self._binary("ge", o)

    # boolean logic
    def __and__(self, o: object) -> Expr:
        return self._binary("and", o)

    def __rand__(self, o: object) -> Expr:
        return self._binary("and", o, reflected=True)

    def __or__(self, o: object) -> Expr:
        return self._binary("or", o)

    def __ror__(self, o: object) -> Expr:
        return self._binary("or", o, reflected=True)

    def __invert__(self) -> Expr:
        return self._call("not")

    # nulls and types
    def is_null(self) -> Expr:
        """True where the value is null."""
        return self._call("is_null")

    def is_not_null(self) -> Expr:
        """True where the value is not null."""
        return self._call("is_not_null")

    def fill_null(self, value: object) -> Expr:
        """Replace nulls by `value` (a constant or an expression)."""
        return self._call("fill_null", value)

    def cast(self, dtype: DType) -> Expr:
        """Convert to `dtype` (e.g. `fl.Float64`); values that do not convert give null.

        Supported: any of Int64/Float64/Bool/String to Int64/Float64/String, numbers to Bool,
        Int64 (epoch microseconds) to Timestamp and back, Timestamp to String.
        """
        if not isinstance(dtype, DType):
            raise ExpressionTypeError(
                f"cannot cast to {dtype!r}",
                hint="cast to a featurelib type: fl.Int64, fl.Float64, fl.Bool, fl.String "
                "or fl.Timestamp",
            )
        return self._call("cast", dtype=dtype.to_spec())

    # math
    def abs(self) -> Expr:
        return self._call("abs")

    def sqrt(self) -> Expr:
        """Square root; null for negative values."""
        return self._call("sqrt")

    def log(self) -> Expr:
        """Natural logarithm; null for values <= 0."""
        return self._call("log")

    def clip(self, lower: float | None = None, upper: float | None = None) -> Expr:
        """Limit values to [lower, upper]; either bound may be None.

        Whole-number float bounds are stored as ints (so `clip(0.0)` == `clip(0)`); a bound
        with a fraction makes the result Float64.
        """

        def norm(bound: float | None) -> float | None:
            if isinstance(bound, float) and math.isfinite(bound) and bound.is_integer():
                return int(bound)
            return bound

        return self._call("clip", lower=norm(lower), upper=norm(upper))

    def round(self, decimals: int = 0) -> Expr:
        """Round half to even to `decimals` places (Polars' default); returns Float64."""
        return self._call("round", decimals=decimals)

    @property
    def str(self) -> StringNamespace:
        return StringNamespace(self)

    @property
    def dt(self) -> DatetimeNamespace:
        return DatetimeNamespace(self)


class StringNamespace:
    """String functions: `col("x").str.lower()`."""

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def lower(self) -> Expr:
        return self._expr._call("lower")

    def upper(self) -> Expr:
        return self._expr._call("upper")

    def len(self) -> Expr:
        """Number of characters."""
        return self._expr._call("str_len")

    def contains(self, literal: str) -> Expr:
        """True where the string contains `literal` (plain text, not a regex)."""
        return self._expr._call("contains", pattern=literal)

    def starts_with(self, prefix: str) -> Expr:
        return self._expr._call("starts_with", prefix=prefix)


class DatetimeNamespace:
    """Datetime parts, in UTC unless a `time_zone` (IANA name) is given."""

    def __init__(self, expr: Expr) -> None:
        self._expr = expr

    def _part(self, fn: str, time_zone: str | None) -> Expr:
        return self._expr._call(fn, time_zone=time_zone) if time_zone else self._expr._call(fn)

    def hour(self, time_zone: str | None = None) -> Expr:
        return self._part("hour", time_zone)

    def weekday(self, time_zone: str | None = None) -> Expr:
        """ISO weekday: Monday = 1 ... Sunday = 7."""
        return self._part("weekday", time_zone)

    def day(self, time_zone: str | None = None) -> Expr:
        return self._part("day", time_zone)

    def month(self, time_zone: str | None = None) -> Expr:
        return self._part("month", time_zone)

    def year(self, time_zone: str | None = None) -> Expr:
        return self._part("year", time_zone)


def col(name: str) -> Expr:
    """A column of the input rows.

    Examples:
        >>> import featurelib as fl
        >>> fl.col("dep_delay").fill_null(0).slug()
        'dep_delay_0_fill_null'
    """
    return Expr(Column(name))


def lit(value: Scalar) -> Expr:
    """A constant: int, float, str, bool, None or a datetime (naive datetimes are read as UTC).

    Examples:
        >>> import featurelib as fl
        >>> fl.lit(15).node.dtype
        Int64
    """
    from featurelib import dtypes

    if isinstance(value, Expr):
        return value
    if value is None:
        return Expr(Literal(None, dtypes.Unknown))
    if isinstance(value, bool):
        return Expr(Literal(value, dtypes.Bool))
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise ExpressionTypeError(
            f"integer literal {value} does not fit in 64 bits",
            hint="use a float literal for very large numbers",
        )
    if isinstance(value, int):
        return Expr(Literal(value, dtypes.Int64))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionTypeError(
                f"float literal {value!r} is not finite",
                hint="features are NaN-free: write None for a missing value",
            )
        # -0.0 == 0.0, so both are stored as 0.0: equal definitions get byte-equal specs.
        return Expr(Literal(value + 0.0, dtypes.Float64))
    if isinstance(value, str):
        return Expr(Literal(value, dtypes.String))
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return Expr(Literal(aware.astimezone(UTC), dtypes.Timestamp))
    raise ExpressionTypeError(
        f"cannot use {value!r} of type {type(value).__name__} as a literal",
        hint="literals are int, float, str, bool, None or datetime",
    )


class _WhenThen:
    def __init__(self, branches: tuple[tuple[Node, Node], ...], pending: Node | None) -> None:
        self._branches = branches
        self._pending = pending

    def then(self, value: object) -> _WhenThen:
        if self._pending is None:
            raise ExpressionTypeError(
                "`.then()` must follow `.when()`",
                hint="write when(c1).then(v1).when(c2).then(v2).otherwise(v)",
            )
        return _WhenThen((*self._branches, (self._pending, _to_node(value))), None)

    def when(self, condition: object) -> _WhenThen:
        if self._pending is not None:
            raise ExpressionTypeError(
                "`.when()` must be followed by `.then()`",
                hint="write when(c1).then(v1).when(c2).then(v2).otherwise(v)",
            )
        return _WhenThen(self._branches, _to_node(condition))

    def otherwise(self, value: object) -> Expr:
        if self._pending is not None or not self._branches:
            raise ExpressionTypeError(
                "`.otherwise()` must follow `.then()`",
                hint="write when(cond).then(value) before .otherwise(value)",
            )
        return Expr(When(self._branches, _to_node(value)))


def when(condition: object) -> _WhenThen:
    """Start a conditional expression; finish it with `.then(v).otherwise(v)`.

    Examples:
        >>> import featurelib as fl
        >>> e = fl.when(fl.col("arr_delay") > 15).then(1).otherwise(0)
        >>> e.to_spec()["kind"]
        'when'
    """
    return _WhenThen((), _to_node(condition))


def walk(node: Node) -> list[Node]:
    """All nodes of a tree, parents before children."""
    out = [node]
    for child in node.children():
        out.extend(walk(child))
    return out


def columns_of(node: Node) -> list[str]:
    """Names of the plain columns a tree reads, in first-use order."""
    seen: dict[str, None] = {}
    for n in walk(node):
        if isinstance(n, Column):
            seen[n.name] = None
    return list(seen)


def map_columns(node: Node, fn: Callable[[Node], Node]) -> Node:
    """Rebuild a tree with `fn` applied to every `Column` and `FeatureRef` leaf."""
    if isinstance(node, Column | FeatureRef):
        return fn(node)
    if isinstance(node, Call):
        return Call(node.fn, tuple(map_columns(a, fn) for a in node.args), node.options)
    if isinstance(node, When):
        branches = tuple((map_columns(c, fn), map_columns(v, fn)) for c, v in node.branches)
        return When(branches, map_columns(node.otherwise, fn))
    return node
