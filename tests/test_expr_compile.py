"""The expression compiler: every operator and function, null semantics, static types, errors.

Each expression is compiled with `to_polars` and evaluated on a small frame with nulls; the
runtime Polars type of every result is also checked against `infer_dtype` (static == runtime).

Float `//` and `%` follow Polars: `floor(a / b)` and `a - b * floor(a / b)`, which can differ
from Python's in the last bits (e.g. `1.0 // 0.1` is 10.0, not 9.0); integer `//` and `%`
follow Python (floor division, the remainder takes the sign of the divisor).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import featurelib as fl
from featurelib import dtypes
from featurelib.compile.polars_expr import featurelib_dtype, polars_dtype, to_polars
from featurelib.expr import Call, Column, Expr, Literal
from featurelib.typecheck import infer_dtype

N = None


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


FRAME = pl.DataFrame(
    {
        "i": [6, -7, N, 0, 3],
        "j": [4, 2, 5, N, 0],
        "f": [1.5, -2.0, N, 0.0, 4.0],
        "z": [0.0, -0.0, N, 0.0, 0.0],
        "g": [2.5, -0.5, 1.25, N, 0.125],
        "p": [True, False, N, True, False],
        "s": ["Ab", "a.b", N, "", "JFK-Zürich"],
        "num": ["1", "x", N, "2.5", " 7"],
        "t": [
            utc(2024, 3, 10, 6, 30),  # a Sunday; 01:30 in New York, before DST starts
            utc(2024, 7, 1, 23, 59),  # a Monday
            N,
            utc(2024, 12, 31, 23, 0),  # a Tuesday
            utc(2024, 1, 1, 0, 0),  # a Monday in UTC, still Sunday in New York
        ],
    },
    schema_overrides={"t": pl.Datetime("us", "UTC")},
)
SCHEMA = {name: featurelib_dtype(t) for name, t in FRAME.schema.items()}

# The full truth table of two nullable booleans.
TRUTH = pl.DataFrame(
    {
        "p": [True, True, True, False, False, False, N, N, N],
        "q": [True, False, N, True, False, N, True, False, N],
    }
)


def evaluate(expr: Expr, frame: pl.DataFrame = FRAME) -> list[Any]:
    """Values of `expr` on `frame`; also checks the runtime type against `infer_dtype`."""
    schema = {name: featurelib_dtype(t) for name, t in frame.schema.items()}
    out = frame.with_columns(to_polars(expr.node).alias("__out"))["__out"]
    static = infer_dtype(expr.node, schema, where="test")
    if static.is_known:
        assert out.dtype == polars_dtype(static), (expr, out.dtype, static)
    return out.to_list()


def same(actual: list[Any], expected: list[Any]) -> bool:
    """Element-wise equality that also requires equal Python types (1 is not 1.0 here)."""
    return len(actual) == len(expected) and all(
        (a is None and e is None)
        or (a is not None and e is not None and type(a) is type(e) and a == e)
        for a, e in zip(actual, expected, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# Arithmetic, comparisons, logic


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("i") + fl.col("j"), [10, -5, N, N, 3]),
        (fl.col("i") - fl.col("j"), [2, -9, N, N, 3]),
        (fl.col("i") * fl.col("j"), [24, -14, N, N, 0]),
        (fl.col("i") / fl.col("j"), [1.5, -3.5, N, N, N]),  # 3 / 0 -> null
        (fl.col("i") // fl.col("j"), [1, -4, N, N, N]),  # floor division
        (fl.col("i") % fl.col("j"), [2, 1, N, N, N]),  # sign of the divisor
        (fl.col("i") % -4, [-2, -3, N, 0, -1]),
        (fl.col("i") + fl.col("f"), [7.5, -9.0, N, 0.0, 7.0]),
        (fl.col("f") * 2, [3.0, -4.0, N, 0.0, 8.0]),
        (fl.col("f") / fl.col("i"), [0.25, 2.0 / 7.0, N, N, 4.0 / 3.0]),
        (fl.col("f") // 1.5, [1.0, -2.0, N, 0.0, 2.0]),
        (fl.col("f") % 1.5, [0.0, 1.0, N, 0.0, 1.0]),
        (fl.col("i") + 0.5, [6.5, -6.5, N, 0.5, 3.5]),
        (fl.col("i") + fl.lit(None), [N, N, N, N, N]),
        (-fl.col("i"), [-6, 7, N, 0, -3]),
        (-fl.col("f"), [-1.5, 2.0, N, -0.0, -4.0]),
    ],
    ids=str,
)
def test_arithmetic(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (1 - fl.col("i"), [-5, 8, N, 1, -2]),
        (1 + fl.col("i"), [7, -6, N, 1, 4]),
        (3 * fl.col("i"), [18, -21, N, 0, 9]),
        (10 / fl.col("j"), [2.5, 5.0, 2.0, N, N]),
        (7 // fl.col("j"), [1, 3, 1, N, N]),
        (7 % fl.col("j"), [3, 1, 2, N, N]),
        (2.5 - fl.col("f"), [1.0, 4.5, N, 2.5, -1.5]),
        (True & fl.col("p"), [True, False, N, True, False]),
        (False | fl.col("p"), [True, False, N, True, False]),
    ],
    ids=str,
)
def test_reflected_operators_keep_operand_order(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


def test_reflected_operator_builds_literal_on_the_left() -> None:
    assert (1 - fl.col("x")).node == Call("sub", (Literal(1, dtypes.Int64), Column("x")))
    assert (2.0 / fl.col("x")).node == Call("truediv", (Literal(2.0, dtypes.Float64), Column("x")))


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("i") == fl.col("j"), [False, False, N, N, False]),
        (fl.col("i") != fl.col("j"), [True, True, N, N, True]),
        (fl.col("i") < fl.col("j"), [False, True, N, N, False]),
        (fl.col("i") <= fl.col("j"), [False, True, N, N, False]),
        (fl.col("i") > fl.col("j"), [True, False, N, N, True]),
        (fl.col("i") >= fl.col("j"), [True, False, N, N, True]),
        (fl.col("i") == 0, [False, False, N, True, False]),
        (fl.col("i") >= fl.col("f"), [True, False, N, True, False]),  # Int vs Float
        (fl.col("s") == "Ab", [True, False, N, False, False]),
        (fl.col("s") < "B", [True, False, N, True, False]),
        (fl.col("p") == True, [True, False, N, True, False]),  # noqa: E712
        (fl.col("i") == None, [N, N, N, N, N]),  # noqa: E711 - SQL: comparing with null is null
        (fl.col("t") > datetime(2024, 6, 1), [False, True, N, True, False]),
        (fl.col("t") == utc(2024, 1, 1), [False, False, N, False, True]),
    ],
    ids=str,
)
def test_comparisons(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # null & False = False and null | True = True; otherwise null wins (Kleene logic).
        (fl.col("p") & fl.col("q"), [True, False, N, False, False, False, N, False, N]),
        (fl.col("p") | fl.col("q"), [True, True, True, True, False, N, True, N, N]),
        (~fl.col("p"), [False, False, False, True, True, True, N, N, N]),
        (fl.col("p") & None, [N, N, N, False, False, False, N, N, N]),
        (fl.col("p") | None, [True, True, True, N, N, N, N, N, N]),
        (fl.col("p") & False, [False] * 9),
        (fl.col("p") | True, [True] * 9),
        (~(fl.col("p") & fl.col("q")), [False, True, N, True, True, True, N, True, N]),
    ],
    ids=str,
)
def test_three_valued_logic(expr: Expr, expected: list[Any]) -> None:
    assert evaluate(expr, TRUTH) == expected


# ---------------------------------------------------------------------------------------------
# Division by zero, log and sqrt outside their domain: null, never inf or NaN


@pytest.mark.parametrize(
    "expr",
    [
        fl.col("i") / 0,
        fl.col("i") / 0.0,
        fl.col("i") // 0,
        fl.col("i") % 0,
        fl.col("f") / 0,
        fl.col("f") / fl.col("z"),  # includes -0.0
        fl.col("f") // fl.col("z"),
        fl.col("f") % fl.col("z"),
        fl.lit(0) / fl.lit(0),
        fl.lit(1.0) / fl.lit(-0.0),
    ],
    ids=str,
)
def test_division_by_zero_is_null(expr: Expr) -> None:
    assert evaluate(expr) == [N] * 5


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("f").sqrt(), [math.sqrt(1.5), N, N, 0.0, 2.0]),
        (fl.col("f").log(), [math.log(1.5), N, N, N, math.log(4.0)]),  # log(0), log(<0) null
        (fl.col("i").sqrt(), [math.sqrt(6), N, N, 0.0, math.sqrt(3)]),
        (fl.col("i").log(), [math.log(6), N, N, N, math.log(3)]),
        (fl.col("i").abs(), [6, 7, N, 0, 3]),
        (fl.col("f").abs(), [1.5, 2.0, N, 0.0, 4.0]),
    ],
    ids=str,
)
def test_math_functions(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("i").clip(0, 5), [5, 0, N, 0, 3]),
        (fl.col("i").clip(lower=-1), [6, -1, N, 0, 3]),
        (fl.col("i").clip(upper=0), [0, -7, N, 0, 0]),
        (fl.col("i").clip(0.0, 5.0), [5, 0, N, 0, 3]),  # whole floats are ints: stays Int64
        (fl.col("i").clip(0.5, 5.5), [5.5, 0.5, N, 0.5, 3.0]),  # not truncated to 0..5
        (fl.col("f").clip(-1, 1), [1.0, -1.0, N, 0.0, 1.0]),
        (fl.col("f").clip(), [1.5, -2.0, N, 0.0, 4.0]),
    ],
    ids=str,
)
def test_clip(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("g").round(), [2.0, -0.0, 1.0, N, 0.0]),  # half to even
        (fl.col("g").round(1), [2.5, -0.5, 1.2, N, 0.1]),
        (fl.col("g").round(3), [2.5, -0.5, 1.25, N, 0.125]),
        (fl.col("i").round(), [6.0, -7.0, N, 0.0, 3.0]),  # Float64 even for integers
    ],
    ids=str,
)
def test_round(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


# ---------------------------------------------------------------------------------------------
# Nulls and casts


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("i").is_null(), [False, False, True, False, False]),
        (fl.col("s").is_not_null(), [True, True, False, True, True]),
        (fl.lit(None).is_null(), [True] * 5),
        (fl.col("i").fill_null(0), [6, -7, 0, 0, 3]),
        (fl.col("i").fill_null(fl.col("j")), [6, -7, 5, 0, 3]),
        (fl.col("i").fill_null(0.5), [6.0, -7.0, 0.5, 0.0, 3.0]),
        (fl.col("f").fill_null(-1), [1.5, -2.0, -1.0, 0.0, 4.0]),
        (fl.col("s").fill_null("?"), ["Ab", "a.b", "?", "", "JFK-Zürich"]),
        (fl.col("p").fill_null(False), [True, False, False, True, False]),
        (fl.col("t").fill_null(datetime(2000, 1, 1)).dt.day(), [10, 1, 1, 31, 1]),
        (fl.col("i").fill_null(None), [6, -7, N, 0, 3]),
    ],
    ids=str,
)
def test_null_functions(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("i").cast(fl.Float64), [6.0, -7.0, N, 0.0, 3.0]),
        (fl.col("i").cast(fl.String), ["6", "-7", N, "0", "3"]),
        (fl.col("i").cast(fl.Bool), [True, True, N, False, True]),
        (fl.col("f").cast(fl.Int64), [1, -2, N, 0, 4]),  # truncates toward zero
        (fl.col("p").cast(fl.Int64), [1, 0, N, 1, 0]),
        (fl.col("p").cast(fl.String), ["true", "false", N, "true", "false"]),
        (fl.col("num").cast(fl.Int64), [1, N, N, N, N]),  # unparsable -> null, not an error
        (fl.col("num").cast(fl.Float64), [1.0, N, N, 2.5, N]),
        (
            fl.col("t").cast(fl.Int64),  # epoch microseconds
            [None if t is None else int(t.timestamp()) * 10**6 for t in FRAME["t"].to_list()],
        ),
        (fl.lit(1_000_000).cast(fl.Timestamp), [utc(1970, 1, 1, 0, 0, 1)] * 5),
        (fl.lit(None).cast(fl.Int64), [N] * 5),
    ],
    ids=str,
)
def test_cast(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # A null literal is typed by the function applied to it (Polars rejects type Null).
        (~fl.lit(None), [N] * 5),
        (-fl.lit(None), [N] * 5),
        (fl.lit(None).abs(), [N] * 5),
        (fl.lit(None).sqrt(), [N] * 5),
        (fl.lit(None).round(), [N] * 5),
        (fl.lit(None).clip(0, 1), [N] * 5),
        (fl.lit(None).str.lower(), [N] * 5),
        (fl.lit(None).str.contains("a"), [N] * 5),
        (fl.lit(None).dt.hour(), [N] * 5),
        (fl.lit(None).dt.year(time_zone="Asia/Kolkata"), [N] * 5),
        ((fl.lit(None) + fl.lit(None)).str.len(), [N] * 5),
        (fl.lit(None) & fl.col("p"), [N, False, N, N, False]),
        (fl.lit(None) | fl.lit(None), [N] * 5),
        (fl.when(fl.lit(None)).then(1).otherwise(2), [2] * 5),
        (fl.lit(None) / fl.col("i"), [N] * 5),
        (fl.lit(None).fill_null(fl.col("i")), [6, -7, N, 0, 3]),
    ],
    ids=str,
)
def test_null_literal_operands(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


# ---------------------------------------------------------------------------------------------
# when / then / otherwise


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            fl.when(fl.col("i") > 5).then("big").when(fl.col("i") > 0).then("pos").otherwise("-"),
            ["big", "-", "-", "-", "pos"],  # a null condition is not true: falls through
        ),
        (
            fl.when(fl.col("i") > 0).then(1).when(fl.col("i") > 5).then(2).otherwise(0),
            [1, 0, 0, 0, 1],  # the first true condition wins
        ),
        (
            fl.when(fl.col("p")).then(fl.col("f")).otherwise(fl.col("i")),
            [1.5, -7.0, N, 0.0, 3.0],  # Float64 and Int64 branches give Float64
        ),
        (fl.when(fl.col("i").is_null()).then(None).otherwise(fl.col("i")), [6, -7, N, 0, 3]),
        (fl.when(fl.col("i") < 0).then(fl.col("s")).otherwise(None), [N, "a.b", N, N, N]),
        (
            fl.when(fl.col("t").dt.month() == 12).then(fl.lit(True)).otherwise(False),
            [False, False, False, True, False],
        ),
    ],
    ids=str,
)
def test_when_then_otherwise(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


def test_when_chain_misuse_is_an_error_with_a_hint() -> None:
    cond = fl.col("i") > 0
    with pytest.raises(fl.ExpressionTypeError) as info:
        fl.when(cond).otherwise(1)  # type: ignore[attr-defined]
    assert info.value.hint
    with pytest.raises(fl.ExpressionTypeError):
        fl.when(cond).then(1).then(2)
    with pytest.raises(fl.ExpressionTypeError):
        fl.when(cond).when(cond)
    with pytest.raises(fl.ExpressionTypeError) as info:
        fl.col("i") + fl.when(cond).then(1)  # unfinished chain used as a value
    assert "otherwise" in (info.value.hint or "")


# ---------------------------------------------------------------------------------------------
# Strings and datetimes


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("s").str.lower(), ["ab", "a.b", N, "", "jfk-zürich"]),
        (fl.col("s").str.upper(), ["AB", "A.B", N, "", "JFK-ZÜRICH"]),
        (fl.col("s").str.len(), [2, 3, N, 0, 10]),  # characters, not bytes
        (fl.col("s").str.contains("."), [False, True, N, False, False]),  # literal, not regex
        (fl.col("s").str.contains(""), [True, True, N, True, True]),
        (fl.col("s").str.contains("ZÜ"), [False, False, N, False, False]),  # case-sensitive
        (fl.col("s").str.starts_with("JFK"), [False, False, N, False, True]),
        (fl.col("s").str.starts_with("a."), [False, True, N, False, False]),
        (fl.col("s").str.lower().str.contains("zü"), [False, False, N, False, True]),
    ],
    ids=str,
)
def test_string_functions(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("t").dt.hour(), [6, 23, N, 23, 0]),
        (fl.col("t").dt.weekday(), [7, 1, N, 2, 1]),  # ISO: Monday = 1 ... Sunday = 7
        (fl.col("t").dt.day(), [10, 1, N, 31, 1]),
        (fl.col("t").dt.month(), [3, 7, N, 12, 1]),
        (fl.col("t").dt.year(), [2024, 2024, N, 2024, 2024]),
        (fl.col("t").dt.hour(time_zone="America/New_York"), [1, 19, N, 18, 19]),
        (fl.col("t").dt.weekday(time_zone="America/New_York"), [7, 1, N, 2, 7]),
        (fl.col("t").dt.day(time_zone="America/New_York"), [10, 1, N, 31, 31]),
        (fl.col("t").dt.month(time_zone="America/New_York"), [3, 7, N, 12, 12]),
        (fl.col("t").dt.year(time_zone="America/New_York"), [2024, 2024, N, 2024, 2023]),
        (fl.col("t").dt.year(time_zone="Asia/Kolkata"), [2024, 2024, N, 2025, 2024]),
        (fl.col("t").dt.hour(time_zone="Asia/Kolkata"), [12, 5, N, 4, 5]),
        (fl.col("t").dt.day(time_zone="Asia/Kolkata"), [10, 2, N, 1, 1]),
        (fl.col("t").dt.hour(time_zone="UTC"), [6, 23, N, 23, 0]),
    ],
    ids=str,
)
def test_datetime_parts(expr: Expr, expected: list[Any]) -> None:
    assert same(evaluate(expr), expected)


def test_naive_datetime_literal_is_read_as_utc() -> None:
    naive = fl.lit(datetime(2024, 1, 1, 12, 30))
    assert naive.node == Literal(utc(2024, 1, 1, 12, 30), dtypes.Timestamp)
    plus5 = timezone(timedelta(hours=5))
    assert fl.lit(datetime(2024, 1, 1, 17, 30, tzinfo=plus5)).node == naive.node
    assert evaluate(naive) == [utc(2024, 1, 1, 12, 30)] * 5
    assert evaluate(naive.dt.hour()) == [12] * 5
    assert evaluate(fl.col("t") < datetime(2024, 1, 1, 0, 0, 1)) == [False, False, N, False, True]


# ---------------------------------------------------------------------------------------------
# Property tests against a Python reference

INTS = st.none() | st.integers(-(2**31), 2**31)
# Magnitudes in [1e-6, 1e6] (or 0): quotients stay finite. Overflow to +-inf (e.g. 1 / 1e-308)
# is IEEE behaviour that featurelib does not turn into null.
FLOATS = st.none() | st.sampled_from([0.0, -0.0]) | st.floats(1e-6, 1e6) | st.floats(-1e6, -1e-6)
OPS = ["add", "sub", "mul", "truediv", "floordiv", "mod"]


def reference(op: str, a: float | None, b: float | None) -> float | None:
    """Python's value of `a op b`; null for null operands and division by zero."""
    if a is None or b is None or (op in ("truediv", "floordiv", "mod") and b == 0):
        return None
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "truediv":
        return a / b
    both_int = isinstance(a, int) and isinstance(b, int)
    if op == "floordiv":
        return a // b if both_int else float(math.floor(a / b))
    return a % b if both_int else a - b * math.floor(a / b)


def build(op: str, a: Expr, b: Expr) -> Expr:
    return {
        "add": a + b,
        "sub": a - b,
        "mul": a * b,
        "truediv": a / b,
        "floordiv": a // b,
        "mod": a % b,
    }[op]


@settings(max_examples=60, deadline=None)
@given(
    op=st.sampled_from(OPS),
    rows=st.lists(st.tuples(INTS | FLOATS, INTS | FLOATS), min_size=1, max_size=20),
)
def test_arithmetic_matches_python(op: str, rows: list[tuple[Any, Any]]) -> None:
    # Each column gets one type: all ints stay Int64, any float makes the column Float64.
    def column(values: list[Any]) -> pl.Series:
        is_float = any(isinstance(v, float) for v in values)
        return pl.Series(values, dtype=pl.Float64 if is_float else pl.Int64)

    a = column([x for x, _ in rows])
    b = column([y for _, y in rows])
    frame = pl.DataFrame({"a": a, "b": b})
    got = evaluate(build(op, fl.col("a"), fl.col("b")), frame)
    expected = [reference(op, x, y) for x, y in zip(a.to_list(), b.to_list(), strict=True)]
    assert got == expected


@settings(max_examples=40, deadline=None)
@given(values=st.lists(INTS | FLOATS, max_size=20), zero=st.sampled_from([0, 0.0, -0.0]))
def test_anything_divided_by_zero_is_null(values: list[Any], zero: float) -> None:
    frame = pl.DataFrame({"x": pl.Series(values, dtype=pl.Float64)})
    for expr in (fl.col("x") / zero, fl.col("x") // zero, fl.col("x") % zero):
        assert evaluate(expr, frame) == [None] * len(values)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.none() | st.booleans(), st.none() | st.booleans()), max_size=9))
def test_logic_is_kleene(rows: list[tuple[bool | None, bool | None]]) -> None:
    def k_and(a: bool | None, b: bool | None) -> bool | None:
        if a is False or b is False:
            return False
        return None if a is None or b is None else True

    def k_or(a: bool | None, b: bool | None) -> bool | None:
        if a is True or b is True:
            return True
        return None if a is None or b is None else False

    frame = pl.DataFrame(
        {"p": [a for a, _ in rows], "q": [b for _, b in rows]},
        schema={"p": pl.Boolean, "q": pl.Boolean},
    )
    assert evaluate(fl.col("p") & fl.col("q"), frame) == [k_and(a, b) for a, b in rows]
    assert evaluate(fl.col("p") | fl.col("q"), frame) == [k_or(a, b) for a, b in rows]


# ---------------------------------------------------------------------------------------------
# Static types


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (fl.col("i") + fl.col("j"), fl.Int64),
        (fl.col("i") - 1, fl.Int64),
        (fl.col("i") * fl.col("f"), fl.Float64),
        (fl.col("i") / fl.col("j"), fl.Float64),
        (fl.col("i") // fl.col("j"), fl.Int64),
        (fl.col("f") // 2, fl.Float64),
        (fl.col("i") % 2, fl.Int64),
        (fl.col("i") + None, fl.Int64),
        (fl.lit(None) + None, dtypes.Unknown),
        (fl.col("i") > fl.col("f"), fl.Bool),
        (fl.col("s") == "x", fl.Bool),
        (fl.col("t") >= datetime(2024, 1, 1), fl.Bool),
        (fl.col("p") & (fl.col("i") > 0), fl.Bool),
        (~fl.col("p"), fl.Bool),
        (-fl.col("i"), fl.Int64),
        (fl.col("f").abs(), fl.Float64),
        (fl.col("i").sqrt(), fl.Float64),
        (fl.col("i").log(), fl.Float64),
        (fl.col("i").round(), fl.Float64),
        (fl.col("i").clip(0, 1), fl.Int64),
        (fl.col("i").clip(0.5), fl.Float64),
        (fl.col("i").is_null(), fl.Bool),
        (fl.col("i").fill_null(0), fl.Int64),
        (fl.col("i").fill_null(0.5), fl.Float64),
        (fl.col("s").fill_null(None), fl.String),
        (fl.col("i").cast(fl.String), fl.String),
        (fl.col("num").cast(fl.Float64), fl.Float64),
        (fl.when(fl.col("p")).then(1).otherwise(2.0), fl.Float64),
        (fl.when(fl.col("p")).then(None).otherwise(1), fl.Int64),
        (fl.when(fl.col("p")).then("a").when(fl.col("p")).then(None).otherwise("b"), fl.String),
        (fl.col("s").str.len(), fl.Int64),
        (fl.col("s").str.contains("a"), fl.Bool),
        (fl.col("s").str.upper(), fl.String),
        (fl.col("t").dt.weekday(), fl.Int64),
        (fl.col("t").dt.year(), fl.Int64),
        (fl.lit(datetime(2024, 1, 1)), fl.Timestamp),
    ],
    ids=str,
)
def test_infer_dtype(expr: Expr, expected: fl.DType) -> None:
    assert infer_dtype(expr.node, SCHEMA, where="test") == expected


@pytest.mark.parametrize(
    ("expr", "rendered"),
    [
        (fl.col("s") + 1, '(col("s") + 1)'),
        (1 - fl.col("p"), '(1 - col("p"))'),
        (fl.col("s") + fl.lit(None), '(col("s") + None)'),
        (fl.col("i") & fl.col("j"), '(col("i") & col("j"))'),
        (fl.col("i") | True, '(col("i") | True)'),
        (~fl.col("i"), '~col("i")'),
        (-fl.col("s"), '-col("s")'),
        (fl.col("s").abs(), 'col("s").abs()'),
        (fl.col("p").sqrt(), 'col("p").sqrt()'),
        (fl.col("s").round(2), 'col("s").round(decimals=2)'),
        (fl.col("i").str.lower(), 'col("i").str.lower()'),
        (fl.col("f").str.len(), 'col("f").str.len()'),
        (fl.col("i").str.contains("x"), "col(\"i\").str.contains(pattern='x')"),
        (fl.col("s").dt.hour(), 'col("s").dt.hour()'),
        (fl.col("i").dt.day(time_zone="UTC"), "col(\"i\").dt.day(time_zone='UTC')"),
        (fl.col("p").dt.year(), 'col("p").dt.year()'),
        (fl.col("s") > 1, '(col("s") > 1)'),
        (fl.col("t") == "2024-01-01", "(col(\"t\") == '2024-01-01')"),
        (fl.col("i").fill_null("x"), "col(\"i\").fill_null('x')"),
        (fl.col("p").fill_null(0), 'col("p").fill_null(0)'),
        (fl.col("s").cast(fl.Bool), "col(\"s\").cast(dtype='Bool')"),
        (fl.col("s").cast(fl.Timestamp), "col(\"s\").cast(dtype='Timestamp')"),
        (fl.col("t").cast(fl.Bool), "col(\"t\").cast(dtype='Bool')"),
        (fl.when(fl.col("p")).then(1).otherwise("x"), "when(col(\"p\")).then(1).otherwise('x')"),
        (fl.when(fl.col("i")).then(1).otherwise(0), 'when(col("i")).then(1).otherwise(0)'),
        (fl.col("f") + (fl.col("s") * 2), '(col("s") * 2)'),  # names the ill-typed part
    ],
    ids=str,
)
def test_type_errors_name_the_expression_and_hint(expr: Expr, rendered: str) -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        infer_dtype(expr.node, SCHEMA, where="feature view 'v', feature 'x'")
    error = info.value
    assert rendered in error.what
    assert error.where == "feature view 'v', feature 'x'"
    assert error.hint
    assert rendered in str(error)
    assert "hint: " in str(error)


def test_unknown_column_lists_the_available_columns() -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        infer_dtype((fl.col("nope") + 1).node, {"b": fl.Int64, "a": fl.String}, where="here")
    assert info.value.where == "here"
    assert "'nope'" in info.value.what
    assert info.value.hint == "available columns are: a, b"


# ---------------------------------------------------------------------------------------------
# Building expressions: literals, options, truthiness, names


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        (1, fl.Int64),
        (-(2**63), fl.Int64),
        (1.5, fl.Float64),
        (True, fl.Bool),
        ("x", fl.String),
        (None, dtypes.Unknown),
        (datetime(2024, 1, 1), fl.Timestamp),
    ],
)
def test_literal_types(value: Any, dtype: fl.DType) -> None:
    assert fl.lit(value).node.dtype == dtype  # type: ignore[attr-defined]


def test_negative_zero_literal_is_stored_as_zero() -> None:
    value = fl.lit(-0.0).node.value  # type: ignore[attr-defined]
    assert value == 0.0
    assert math.copysign(1.0, value) == 1.0


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), 2**63, object(), b"x", [1]]
)
def test_invalid_literals(value: Any) -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        fl.lit(value)
    assert info.value.hint


@pytest.mark.parametrize(
    "build_expr",
    [
        lambda: fl.col("x").clip("a"),  # type: ignore[arg-type]
        lambda: fl.col("x").clip(5, 1),
        lambda: fl.col("x").clip(float("nan")),
        lambda: fl.col("x").round(-1),
        lambda: fl.col("x").round(1.5),  # type: ignore[arg-type]
        lambda: fl.col("x").str.contains(5),  # type: ignore[arg-type]
        lambda: fl.col("x").str.starts_with(None),  # type: ignore[arg-type]
        lambda: fl.col("x").dt.hour(time_zone="Mars/Olympus_Mons"),
        lambda: fl.col("x").dt.year(time_zone="../etc/passwd"),
        lambda: fl.col("x").cast(int),  # type: ignore[arg-type]
        lambda: fl.col("x").cast(fl.List(fl.Int64)),
    ],
)
def test_invalid_options(build_expr: Any) -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        build_expr()
    assert info.value.hint


@pytest.mark.parametrize(
    "use",
    [
        lambda: bool(fl.col("x")),
        lambda: fl.col("x") > 1 and fl.col("y") > 1,
        lambda: not fl.col("x"),
        lambda: 1 if fl.col("x") == 1 else 0,
    ],
)
def test_expressions_have_no_truth_value(use: Any) -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        use()
    assert "&" in (info.value.hint or "")


def test_expression_equality_is_structural() -> None:
    a = (fl.col("x") + 1) * 2
    b = (fl.col("x") + 1) * 2
    assert a.equals(b)
    assert hash(a) == hash(b)
    assert not a.equals((fl.col("x") + 1.0) * 2)
    assert isinstance(a == b, Expr)  # == builds an expression, as in Polars


@pytest.mark.parametrize(
    ("expr", "slug"),
    [
        (fl.col("dep_delay").fill_null(0), "dep_delay_0_fill_null"),
        (fl.col("arr_delay") > 15, "arr_delay_gt_15"),
        (fl.col("x") / fl.col("y"), "x_per_y"),
        (fl.col("x") // 2, "x_div_2"),
        (fl.col("x") % 2, "x_mod_2"),
        (fl.col("x") - 1.5, "x_minus_1p5"),
        (fl.col("x") * -2, "x_times_neg2"),
        (fl.col("x") + 1, "x_plus_1"),
        (fl.col("x") <= 1, "x_le_1"),
        (fl.col("x") != 1, "x_ne_1"),
        (fl.col("dest") == "JFK", "dest_eq_jfk"),
        (fl.col("city") == "New York!", "city_eq_new_york"),
        (fl.col("ts") >= datetime(2024, 1, 2, 3, 4, 5), "ts_ge_20240102t030405"),
        (fl.col("s").str.lower(), "s_lower"),
        (fl.col("x").is_null(), "x_is_null"),
        ((fl.col("a") > 0) & True, "a_gt_0_and_true"),
        (~fl.col("flag"), "flag_not"),
        (fl.col("x").fill_null(None), "x_none_fill_null"),
    ],
    ids=str,
)
def test_slug(expr: Expr, slug: str) -> None:
    assert expr.slug() == slug
    assert slug.isidentifier()
