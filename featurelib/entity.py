"""Entities: the things features describe, identified by one or more typed join keys."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from featurelib import dtypes
from featurelib.dtypes import DType
from featurelib.errors import DefinitionError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_name(name: object, *, kind: str, where: str | None = None) -> str:
    """`name` if it is a valid name (an ASCII identifier), else a DefinitionError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"invalid {kind} name {name!r}",
            where=where,
            hint="names are identifiers: ASCII letters, digits and underscores, not starting "
            "with a digit",
        )
    if "__" in name and kind in _RESERVED_SEPARATOR_KINDS:
        raise DefinitionError(
            f"invalid {kind} name {name!r}: '__' is reserved",
            where=where,
            hint="'__' separates view and feature in full feature names (view__feature); "
            "use a single underscore",
        )
    return name


_RESERVED_SEPARATOR_KINDS = ("feature view", "aggregation view", "on-demand view", "feature")


@dataclass(frozen=True, init=False)
class Entity:
    """A business object (carrier, airport, route) identified by typed join keys.

    Examples:
        >>> import featurelib as fl
        >>> route = fl.Entity("route", {"origin": fl.String, "dest": fl.String})
        >>> route.key_names
        ('origin', 'dest')
    """

    name: str
    join_keys: tuple[tuple[str, DType], ...]
    description: str

    def __init__(
        self,
        name: str,
        join_keys: Mapping[str, DType] | Sequence[str],
        description: str = "",
    ) -> None:
        where = f"entity {name!r}"
        check_name(name, kind="entity", where=where)
        if isinstance(join_keys, str):  # one key: Entity("carrier", "carrier")
            join_keys = [join_keys]
        pairs = (
            list(join_keys.items())
            if isinstance(join_keys, Mapping)
            else [(k, dtypes.String) for k in join_keys]
        )
        if not pairs:
            raise DefinitionError(
                "an entity needs at least one join key",
                where=where,
                hint='e.g. fl.Entity("carrier", {"carrier": fl.String})',
            )
        for key, dtype in pairs:
            check_name(key, kind="join key", where=where)
            if not isinstance(dtype, DType) or dtype not in (dtypes.Int64, dtypes.String):
                raise DefinitionError(
                    f"join key {key!r} has type {dtype!r}",
                    where=where,
                    hint="join keys are fl.String or fl.Int64",
                )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "join_keys", tuple(pairs))
        object.__setattr__(self, "description", description)

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.join_keys)

    def to_spec(self) -> dict[str, object]:
        return {
            "kind": "entity",
            "name": self.name,
            "join_keys": [[k, t.to_spec()] for k, t in self.join_keys],
            "description": self.description,
        }

    @staticmethod
    def from_spec(spec: Mapping[str, object]) -> Entity:
        keys = {str(k): DType.from_spec(str(t)) for k, t in spec["join_keys"]}  # type: ignore[attr-defined]
        return Entity(str(spec["name"]), keys, str(spec.get("description", "")))
