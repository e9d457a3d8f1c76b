"""featurelib logical types <-> Feast types, and the tags featurelib stores on Feast objects."""

from __future__ import annotations

from feast import types as ft
from feast.value_type import ValueType

from featurelib import dtypes
from featurelib.dtypes import DType
from featurelib.errors import DefinitionError

KIND = "featurelib.kind"  # spec kind: entity, source, feature_view, aggregation_view, ...
SPEC = "featurelib.spec"  # fl.dumps(definition): the registry's copy of the definition
VERSION = "featurelib.version"  # definition.version (views and services)

_PRIMITIVE: dict[str, ft.PrimitiveFeastType] = {
    "Int64": ft.Int64,
    "Float64": ft.Float64,
    "Bool": ft.Bool,
    "String": ft.String,
    "Timestamp": ft.UnixTimestamp,
}
_BACK = {v: k for k, v in _PRIMITIVE.items()}


def feast_type(dtype: DType, *, where: str) -> ft.FeastType:
    """The Feast type featurelib values of `dtype` are registered as (List(x) -> Array(x))."""
    if dtype.name == "List" and dtype.inner is not None and dtype.inner.name in _PRIMITIVE:
        return ft.Array(_PRIMITIVE[dtype.inner.name])
    if dtype.name in _PRIMITIVE:
        return _PRIMITIVE[dtype.name]
    hint = (
        "declare the source's schema (schema={...}) or generate its data before `feast apply`, "
        "so featurelib can infer the type"
        if dtype.name == "Unknown"
        else "Feast has no type for it; use Int64, Float64, Bool, String, Timestamp or List(...)"
    )
    raise DefinitionError(f"type {dtype} has no Feast equivalent", where=where, hint=hint)


def featurelib_type(feast: ft.FeastType) -> DType:
    """Inverse of `feast_type` (Unknown for Feast types featurelib does not have)."""
    if isinstance(feast, ft.Array):
        base = feast.base_type
        if isinstance(base, ft.PrimitiveFeastType) and base in _BACK:
            return dtypes.List(DType.from_spec(_BACK[base]))
        return dtypes.Unknown
    if isinstance(feast, ft.PrimitiveFeastType) and feast in _BACK:
        return DType.from_spec(_BACK[feast])
    return dtypes.Unknown


def entity_value_type(dtype: DType, *, where: str) -> ValueType:
    """The Feast value type of a join key (featurelib keys are String or Int64)."""
    if dtype == dtypes.String:
        return ValueType.STRING
    if dtype == dtypes.Int64:
        return ValueType.INT64
    raise DefinitionError(
        f"join key type {dtype} is not supported", where=where, hint="use fl.String or fl.Int64"
    )
