"""Logical data types of columns and features, independent of any engine."""

from __future__ import annotations

from dataclasses import dataclass

from featurelib.errors import SpecError


@dataclass(frozen=True, slots=True)
class DType:
    """A logical column type: Int64, Float64, Bool, String, Timestamp, List(inner) or Unknown."""

    name: str
    inner: DType | None = None

    def __repr__(self) -> str:
        return f"List({self.inner!r})" if self.name == "List" else self.name

    __str__ = __repr__

    @property
    def is_numeric(self) -> bool:
        return self.name in ("Int64", "Float64")

    @property
    def is_known(self) -> bool:
        return self.name != "Unknown"

    def to_spec(self) -> str:
        return repr(self)

    @staticmethod
    def from_spec(text: str) -> DType:
        if not isinstance(text, str):
            raise SpecError(f"data type {text!r} is not a string", hint='e.g. "Int64"')
        if text.startswith("List(") and text.endswith(")"):
            return List(DType.from_spec(text[5:-1]))
        try:
            return _BY_NAME[text]
        except KeyError:
            raise SpecError(
                f"unknown data type {text!r}",
                hint=f"use one of {', '.join(sorted(_BY_NAME))} or List(<type>)",
            ) from None


Int64 = DType("Int64")
Float64 = DType("Float64")
Bool = DType("Bool")
String = DType("String")
Timestamp = DType("Timestamp")
Unknown = DType("Unknown")

_BY_NAME = {t.name: t for t in (Int64, Float64, Bool, String, Timestamp, Unknown)}


def List(inner: DType) -> DType:  # noqa: N802 - reads like a type constructor
    """The type of a list of `inner` values (the result of `last_n`)."""
    return DType("List", inner)


def supertype(a: DType, b: DType) -> DType | None:
    """The type both `a` and `b` can be represented as, or None when there is none."""
    if a == b:
        return a
    if not a.is_known:
        return b
    if not b.is_known:
        return a
    if a.is_numeric and b.is_numeric:
        return Float64
    return None
