"""Static type inference of row expressions against a schema, with errors that name the culprit."""

from __future__ import annotations

from collections.abc import Mapping

from featurelib import dtypes
from featurelib.dtypes import DType, supertype
from featurelib.errors import ExpressionTypeError, UnknownColumnError
from featurelib.expr import (
    ARITY,
    BINARY_OPS,
    CASTS,
    DT_PARTS,
    Call,
    Column,
    FeatureRef,
    Literal,
    Node,
    When,
    option_problem,
)

_ARITH = ("add", "sub", "mul", "floordiv", "mod")
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
_DT_PARTS = DT_PARTS


_METHODS = {"neg": "-", "not": "~"}
_NAMESPACED = {
    "lower": "str.lower",
    "upper": "str.upper",
    "str_len": "str.len",
    "contains": "str.contains",
    "starts_with": "str.starts_with",
    "hour": "dt.hour",
    "weekday": "dt.weekday",
    "day": "dt.day",
    "month": "dt.month",
    "year": "dt.year",
}


def _render(node: Node) -> str:
    """The expression as the user would have written it, e.g. `(col("x") + 1)`."""
    if isinstance(node, Column):
        return f'col("{node.name}")'
    if isinstance(node, FeatureRef):
        return f'{node.view}["{node.name}"]'
    if isinstance(node, Literal):
        return repr(node.value)
    if isinstance(node, Call):
        if node.fn in BINARY_OPS and len(node.args) == 2:
            return f"({_render(node.args[0])} {BINARY_OPS[node.fn]} {_render(node.args[1])})"
        if not node.args:
            return f"{node.fn}()"
        if node.fn in _METHODS:
            return f"{_METHODS[node.fn]}{_render(node.args[0])}"
        args = [_render(a) for a in node.args[1:]]
        args += [f"{k}={v!r}" for k, v in node.options if v is not None]
        method = _NAMESPACED.get(node.fn, node.fn)
        return f"{_render(node.args[0])}.{method}({', '.join(args)})"
    if isinstance(node, When):
        parts = [f"when({_render(c)}).then({_render(v)})" for c, v in node.branches]
        return ".".join(parts) + f".otherwise({_render(node.otherwise)})"
    return type(node).__name__


def infer_dtype(node: Node, schema: Mapping[str, DType], *, where: str) -> DType:
    """The type of `node` over rows with `schema`; raises a DefinitionError when ill-typed.

    `FeatureRef` leaves are looked up in `schema` as "view.feature".
    """

    def fail(what: str, hint: str) -> ExpressionTypeError:
        return ExpressionTypeError(f"{what} in {_render(node)}", where=where, hint=hint)

    if isinstance(node, Column | FeatureRef):
        key = node.name if isinstance(node, Column) else f"{node.view}.{node.name}"
        if key not in schema:
            available = ", ".join(sorted(schema)) or "(none)"
            raise UnknownColumnError(
                f"unknown column {key!r}",
                where=where,
                hint=f"available columns are: {available}",
            )
        return schema[key]
    if isinstance(node, Literal):
        return node.dtype
    if isinstance(node, When):
        for cond, _ in node.branches:
            ct = infer_dtype(cond, schema, where=where)
            if ct.is_known and ct != dtypes.Bool:
                raise fail(f"condition {_render(cond)} is {ct}, not Bool", "compare values")
        result = infer_dtype(node.otherwise, schema, where=where)
        for _, value in node.branches:
            vt = infer_dtype(value, schema, where=where)
            merged = supertype(result, vt)
            if merged is None:
                raise fail(
                    f"branches have different types {result} and {vt}",
                    "cast the branches to one type with `.cast(...)`",
                )
            result = merged
        return result
    if not isinstance(node, Call):
        raise fail(f"unknown expression node {type(node).__name__}", "build it with fl.col")
    fn = node.fn
    if fn not in ARITY:
        raise fail(f"unknown function {fn!r}", "see featurelib.expr.ALL_FNS")
    if len(node.args) != ARITY[fn]:
        raise fail(
            f"{fn} takes {ARITY[fn]} arguments, got {len(node.args)}",
            "build expressions with fl.col(...) and its methods",
        )
    problem = option_problem(fn, node.options)
    if problem:
        raise fail(*problem)
    args = [infer_dtype(a, schema, where=where) for a in node.args]

    def need(ok: bool, what: str, hint: str) -> None:
        if not ok:
            raise fail(what, hint)

    known = all(a.is_known for a in args)
    math_hint = "apply it to an Int64 or Float64 value; convert others with `.cast(fl.Float64)`"
    if fn in _ARITH or fn == "truediv":
        a, b = args
        need(
            all(t.is_numeric or not t.is_known for t in args),
            f"`{BINARY_OPS[fn]}` needs numbers, got {a} and {b}",
            "cast Bool or String operands with `.cast(fl.Int64)` / `.cast(fl.Float64)`",
        )
        if fn == "truediv":
            return dtypes.Float64
        numeric = [t for t in args if t.is_known]
        if not numeric:
            return dtypes.Unknown
        return dtypes.Int64 if all(t == dtypes.Int64 for t in numeric) else dtypes.Float64
    if fn in _COMPARE:
        a, b = args
        need(
            supertype(a, b) is not None,
            f"cannot compare {a} with {b}",
            "compare values of one type; cast one side with `.cast(...)`",
        )
        return dtypes.Bool
    if fn in ("and", "or", "not"):
        need(
            all(a in (dtypes.Bool, dtypes.Unknown) for a in args),
            f"`{BINARY_OPS.get(fn, '~')}` needs Bool operands, got {', '.join(map(str, args))}",
            "build conditions with comparisons such as `col('x') > 0`",
        )
        return dtypes.Bool
    if fn in ("neg", "abs", "sqrt", "log", "clip", "round"):
        label = "-" if fn == "neg" else f".{fn}()"
        need(not known or args[0].is_numeric, f"`{label}` needs a number, got {args[0]}", math_hint)
    if fn in ("neg", "abs"):
        return args[0]
    if fn in ("sqrt", "log"):
        return dtypes.Float64
    if fn in ("clip", "round"):
        if fn == "round":
            return dtypes.Float64
        bounds = (node.option("lower"), node.option("upper"))
        if args[0] == dtypes.Int64 and not any(isinstance(b, float) for b in bounds):
            return dtypes.Int64
        return dtypes.Float64
    if fn in ("is_null", "is_not_null"):
        return dtypes.Bool
    if fn == "fill_null":
        merged = supertype(args[0], args[1])
        need(
            merged is not None,
            f"fill value of type {args[1]} does not fit a {args[0]} column",
            "use a fill value of the column's type",
        )
        assert merged is not None
        return merged
    if fn == "cast":
        target = str(node.option("dtype"))
        need(
            args[0] == dtypes.Unknown or args[0].name in CASTS.get(target, ()),
            f"cannot cast {args[0]} to {target}",
            "supported casts: numbers, Bool and String to numbers; numbers to Bool; "
            "anything to String; Int64 (epoch microseconds) to Timestamp; compare strings "
            "instead of casting them to Bool, e.g. col('s') == 'true'",
        )
        return DType.from_spec(target)
    if fn in ("lower", "upper", "str_len", "contains", "starts_with"):
        need(
            args[0] in (dtypes.String, dtypes.Unknown),
            f"`.{_NAMESPACED[fn]}` needs a String, got {args[0]}",
            "cast to fl.String first",
        )
        if fn in ("lower", "upper"):
            return dtypes.String
        return dtypes.Int64 if fn == "str_len" else dtypes.Bool
    if fn in _DT_PARTS:
        need(
            args[0] in (dtypes.Timestamp, dtypes.Unknown),
            f"`.{_NAMESPACED[fn]}` needs a Timestamp, got {args[0]}",
            "apply datetime parts to timestamp columns",
        )
        return dtypes.Int64
    raise fail(f"unknown function {fn!r}", "see featurelib.expr.ALL_FNS")
