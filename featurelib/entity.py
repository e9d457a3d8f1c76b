"""Entities: the things features describe, identified by one or more typed join keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from featurelib import dtypes
from featurelib.dtypes import DType
from featurelib.errors import DefinitionError


def check_name(name: object, *, kind: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise DefinitionError(
            f"invalid {kind} name {name!r}",
            hint="names are identifiers: letters, digits and underscores, not starting with a digit",
        )
    return name


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
        check_name(name, kind="entity")
        pairs = (
            list(join_keys.items())
            if isinstance(join_keys, Mapping)
            else [(k, dtypes.String) for k in join_keys]
        )
        if not pairs:
            raise DefinitionError(
                "an entity needs at least one join key",
                where=f"entity {name!r}",
                hint='e.g. fl.Entity("carrier", {"carrier": fl.String})',
            )
        for key, dtype in pairs:
            check_name(key, kind="join key")
            if not isinstance(dtype, DType) or dtype not in (dtypes.Int64, dtypes.String):
                raise DefinitionError(
                    f"join key {key!r} has type {dtype!r}",
                    where=f"entity {name!r}",
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
