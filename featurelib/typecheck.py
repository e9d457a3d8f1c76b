"""Static type inference of row expressions against a schema, with errors that name the culprit."""

from __future__ import annotations

from collections.abc import Mapping

from featurelib import dtypes
from featurelib.dtypes import DType, supertype
from featurelib.errors import ExpressionTypeError, UnknownColumnError
from featurelib.expr import BINARY_OPS, Call, Column, FeatureRef, Literal, Node, When

_ARITH = ("add", "sub", "mul", "floordiv", "mod")
_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
_DT_PARTS = ("hour", "weekday", "day", "month")


def _render(node: Node) -> str:
    if isinstance(node, Column):
        return f'col("{node.name}")'
    if isinstance(node, FeatureRef):
        return f'{node.view}["{node.name}"]'
    if isinstance(node, Literal):
        return repr(node.value)
    if isinstance(node, Call):
        if node.fn in BINARY_OPS and len(node.args) == 2:
            return f"({_render(node.args[0])} {BINARY_OPS[node.fn]} {_render(node.args[1])})"
        return f"{_render(node.args[0])}.{node.fn}(...)" if node.args else node.fn
    return "when(...)"


def infer_dtype(node: Node, schema: Mapping[str, DType], *, where: str) -> DType:
    """The type of `node` over rows with `schema`; raises a DefinitionError when ill-typed.

    `FeatureRef` leaves are looked up in `schema` as "view.feature".
    """

    def fail(what: str, hint: str) -> ExpressionTypeError:
        return ExpressionTypeError(f"{what} in {_render(node)}", where=where, hint=hint)

    if isinstance(node, Column | FeatureRef):
        key = node.name if isinstance(node, Column) else f"{node.view}.{node.name}"
        if key not in schema:
            known = ", ".join(sorted(schema)) or "(none)"
            raise UnknownColumnError(
                f"unknown column {key!r}",
                where=where,
                hint=f"available columns are: {known}",
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
    args = [infer_dtype(a, schema, where=where) for a in node.args]
    fn = node.fn

    def need(ok: bool, what: str, hint: str) -> None:
        if not ok:
            raise fail(what, hint)

    known = all(a.is_known for a in args)
    if fn in _ARITH or fn == "truediv":
        a, b = args
        need(
            not known or (a.is_numeric and b.is_numeric),
            f"`{BINARY_OPS[fn]}` needs numbers, got {a} and {b}",
            "cast Bool or String operands with `.cast(fl.Int64)` / `.cast(fl.Float64)`",
        )
        if fn == "truediv":
            return dtypes.Float64
        if not known:
            return dtypes.Unknown
        return dtypes.Int64 if a == b == dtypes.Int64 else dtypes.Float64
    if fn in _COMPARE:
        a, b = args
        need(
            not known or supertype(a, b) is not None,
            f"cannot compare {a} with {b}",
            "compare values of one type; cast one side with `.cast(...)`",
        )
        return dtypes.Bool
    if fn in ("and", "or", "not"):
        need(
            all(a in (dtypes.Bool, dtypes.Unknown) for a in args),
            f"`{fn}` needs Bool operands, got {', '.join(map(str, args))}",
            "build conditions with comparisons such as `col('x') > 0`",
        )
        return dtypes.Bool
    if fn in ("neg", "abs"):
        need(not known or args[0].is_numeric, f"`{fn}` needs a number, got {args[0]}", "cast")
        return args[0]
    if fn in ("sqrt", "log"):
        need(not known or args[0].is_numeric, f"`{fn}` needs a number, got {args[0]}", "cast")
        return dtypes.Float64
    if fn in ("clip", "round"):
        need(not known or args[0].is_numeric, f"`{fn}` needs a number, got {args[0]}", "cast")
        return dtypes.Float64 if fn == "round" else args[0]
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
        return DType.from_spec(str(node.option("dtype")))
    if fn in ("lower", "upper", "str_len", "contains", "starts_with"):
        need(
            args[0] in (dtypes.String, dtypes.Unknown),
            f"`.str.{fn}` needs a String, got {args[0]}",
            "cast to fl.String first",
        )
        if fn in ("lower", "upper"):
            return dtypes.String
        return dtypes.Int64 if fn == "str_len" else dtypes.Bool
    if fn in _DT_PARTS:
        need(
            args[0] in (dtypes.Timestamp, dtypes.Unknown),
            f"`.dt.{fn}` needs a Timestamp, got {args[0]}",
            "apply datetime parts to timestamp columns",
        )
        return dtypes.Int64
    raise fail(f"unknown function {fn!r}", "see featurelib.expr.ALL_FNS")
