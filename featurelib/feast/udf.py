"""The UDF of a Feast on-demand feature view: featurelib's compiled Polars expressions.

Feast stores an ODFV's UDF twice in the registry: as source text (`body_text`, re-executed by
`feast.transformation.udf_rehydrate.resolve_udf`, which prefers it) and as dill bytes (`body`).
The generated function is tiny and self-contained: it embeds the on-demand view's featurelib
spec as a string literal and calls `evaluate`, so both forms work in any process that has
featurelib installed, and a changed expression changes the source (so `feast plan` shows it).

`evaluate` compiles a spec once (cached by its text) and then evaluates the batch with the same
`to_polars` expressions and casts the offline engine applies to the training frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import polars as pl

from featurelib.compile.polars_expr import on_demand_exprs, polars_dtype
from featurelib.dtypes import DType
from featurelib.errors import SpecError
from featurelib.expr import Column, FeatureRef, walk
from featurelib.sources import RequestSource
from featurelib.spec import dumps, loads
from featurelib.views import OnDemandView

_TEMPLATE = '''def {name}(inputs):
    """featurelib on-demand view {name!r} (generated: evaluates its compiled Polars expressions)."""
    from featurelib.feast.udf import evaluate

    return evaluate({spec!r}, inputs)
'''


def udf_source(view: OnDemandView) -> str:
    """The Python source of the UDF of `view` (a function named like the view)."""
    return _TEMPLATE.format(name=view.name, spec=dumps(view))


def make_udf(view: OnDemandView) -> tuple[Callable[[dict[str, Any]], dict[str, Any]], str]:
    """The UDF of `view` and its source text (what Feast stores as `udf_string`)."""
    source = udf_source(view)
    namespace: dict[str, Any] = {"__name__": f"featurelib_udf_{view.name}"}
    exec(compile(source, f"<featurelib udf {view.name}>", "exec"), namespace)
    udf: Callable[[dict[str, Any]], dict[str, Any]] = namespace[view.name]
    return udf, source


@dataclass(frozen=True)
class Compiled:
    """An on-demand view ready to evaluate: its input columns (Feast's names) and outputs."""

    view: OnDemandView
    inputs: dict[str, DType]  # request fields by name, input features as `view__feature`
    outputs: list[pl.Expr]


@lru_cache(maxsize=512)
def compile_view(spec: str) -> Compiled:
    view = loads(spec)
    if not isinstance(view, OnDemandView):
        raise SpecError(
            f"the UDF spec holds a {type(view).__name__}, not an on-demand view",
            hint="re-run `feast apply`",
        )
    leaves = {n for _, node in view.features for n in walk(node)}
    inputs: dict[str, DType] = {}
    for item in view.inputs:
        if isinstance(item, RequestSource):
            for name, dtype in item.columns.items():
                if Column(name) in leaves:
                    inputs[name] = dtype
        else:
            for name, dtype in item.feature_dtypes().items():
                if FeatureRef(item.name, name) in leaves:
                    inputs[f"{item.name}__{name}"] = dtype
    return Compiled(view, inputs, on_demand_exprs(view, qualified=False))


def _column(name: str, values: list[Any], dtype: DType) -> pl.Series:
    """One input column, typed like the offline engine's joined frame.

    Values keep the type they arrive with (offline, input features have the type of the data,
    which can differ from the declared type when a source has no declared schema), except:
    timestamps are normalized to UTC, NaN is read as null, and an all-missing column gets the
    declared type (Polars would type it Null).
    """
    from featurelib.offline.io import to_utc

    series = pl.Series(name, values, strict=False)
    if series.dtype == pl.Null and dtype.is_known:
        return series.cast(polars_dtype(dtype))
    if dtype.name == "Timestamp" or isinstance(series.dtype, pl.Datetime):
        return pl.select(to_utc(pl.lit(series), series.dtype)).to_series().alias(name)
    if series.dtype.is_float():
        return series.fill_nan(None)  # NaN is missing, as everywhere in featurelib
    return series


def evaluate(spec: str, inputs: dict[str, Any]) -> dict[str, list[Any]]:
    """Feast "python" mode UDF body: columns (lists) in, the view's feature columns out."""
    compiled = compile_view(spec)
    height = len(next(iter(inputs.values()))) if inputs else 0
    missing = [c for c in compiled.inputs if c not in inputs]
    if missing:
        raise SpecError(
            f"on-demand view {compiled.view.name!r} got no values for {missing}",
            hint="pass the request fields with the entity rows",
        )
    columns = [_column(c, list(inputs[c]), t) for c, t in compiled.inputs.items()]
    frame = pl.DataFrame(columns) if columns else pl.DataFrame(height=height)
    out = frame.select(compiled.outputs) if compiled.outputs else frame
    if out.height != height and out.height == 1:  # constant expressions
        out = out.select(pl.all().repeat_by(height).explode())
    return {name: out[name].to_list() for name in out.columns}
