"""Alias operations of the model registry: promote (gated), remove, roll back, history.

Mixed into `serving.registry.ModelRegistry`; every move is one write transaction that checks,
under the database's write lock, that the alias still points where the caller saw it.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, cast

from sqlalchemy import Connection, insert, select, update

from serving import registry_tables as t
from serving.errors import ModelNotFoundError, RegistryError
from serving.registry_records import AliasMove, ModelVersion, move_from_row, now_utc

if TYPE_CHECKING:
    from serving.gates import GateConfig
    from serving.registry import ModelRegistry

_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,99}$")
_RESERVED_ALIASES = ("latest",)


class AliasOperations:
    """Alias reads and moves; the registry class provides the connections and version lookups."""

    # Provided by ModelRegistry.
    def _read(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def get(self, name: str, version: int) -> ModelVersion:
        raise NotImplementedError

    def model_names(self) -> list[str]:
        raise NotImplementedError

    def _unknown_model(self, name: str) -> ModelNotFoundError:
        raise NotImplementedError

    def aliases(self, name: str) -> dict[str, int]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.aliases.c.alias, t.aliases.c.version)
                .where(t.aliases.c.model == name)
                .order_by(t.aliases.c.alias)
            ).all()
        if not rows and name not in self.model_names():
            raise self._unknown_model(name)
        return {r.alias: int(r.version) for r in rows}

    @staticmethod
    def _check_alias(alias: str) -> None:
        if not _ALIAS.match(alias) or alias in _RESERVED_ALIASES:
            raise RegistryError(
                f"invalid alias {alias!r}",
                hint="start with a letter; letters, digits, '_' and '-'; 'latest' is reserved",
            )

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str = "",
        gates: GateConfig | None = None,
        force: bool = False,
    ) -> AliasMove:
        """Point `alias` at `version` (a promotion); gates refuse with every reason, unless
        `force` (recorded in the history)."""
        self._check_alias(alias)
        candidate = self.get(name, version)
        current = self.aliases(name).get(alias)
        if current == candidate.version:
            raise RegistryError(
                f"{name}@{alias} already points at version {current}: nothing to change",
                hint=f"`featurelib models history {name}` shows how it got there",
            )
        if gates is not None and not force:
            from serving.gates import check_promotion

            incumbent = None if current is None else self.get(name, current)
            check_promotion(
                cast("ModelRegistry", self), candidate, alias, gates, incumbent=incumbent
            )
        return self._move(name, alias, current, candidate.version, actor, reason, force)

    def remove_alias(self, name: str, alias: str, *, actor: str, reason: str = "") -> AliasMove:
        """Delete `alias` (recorded in the history; `rollback` restores it)."""
        current = self.aliases(name).get(alias)
        if current is None:
            raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
        return self._move(name, alias, current, None, actor, reason, False)

    def _move(
        self,
        name: str,
        alias: str,
        expected: int | None,
        target: int | None,
        actor: str,
        reason: str,
        forced: bool,
    ) -> AliasMove:
        now = now_utc()
        with self._write() as conn:
            # Checked under the write lock: a concurrent move since the gates ran means the
            # gates compared against a stale incumbent, so refuse instead of overwriting.
            current = conn.execute(
                select(t.aliases.c.version).where(
                    t.aliases.c.model == name, t.aliases.c.alias == alias
                )
            ).scalar()
            if current != expected:
                raise RegistryError(
                    f"alias {name}@{alias} moved to version {current} while this change was "
                    "being checked",
                    hint="look at `featurelib models history` and retry",
                )
            where = (t.aliases.c.model == name) & (t.aliases.c.alias == alias)
            if target is None:
                conn.execute(t.aliases.delete().where(where))
            elif current is None:
                conn.execute(
                    insert(t.aliases).values(
                        model=name, alias=alias, version=target, updated_at=now, updated_by=actor
                    )
                )
            else:
                conn.execute(
                    update(t.aliases)
                    .where(where)
                    .values(version=target, updated_at=now, updated_by=actor)
                )
            move_id = conn.execute(
                insert(t.alias_history)
                .values(
                    model=name,
                    alias=alias,
                    from_version=current,
                    to_version=target,
                    actor=actor,
                    reason=reason,
                    forced=forced,
                    at=now,
                )
                .returning(t.alias_history.c.id)
            ).scalar_one()
        return AliasMove(int(move_id), name, alias, current, target, actor, reason, forced, now)

    def rollback(self, name: str, alias: str, *, actor: str, reason: str = "") -> AliasMove:
        """Move `alias` back to the version it pointed at before its last move. Like
        `kubectl rollout undo`, a second rollback undoes the first (toggles between the last
        two versions); to go further back, promote that version explicitly."""
        moves = [m for m in self.history(name) if m.alias == alias]
        if not moves:
            raise RegistryError(
                f"alias {name}@{alias} has never moved: nothing to roll back",
                hint=f"known aliases: {self.aliases(name)}",
            )
        last = moves[-1]
        if last.from_version is None:
            raise RegistryError(
                f"alias {name}@{alias} was created by its last move (to version "
                f"{last.to_version}): there is no earlier version to return to",
                hint=f"promote a version explicitly: `featurelib models promote {name} VERSION "
                f"--alias {alias}`",
            )
        note = f"rollback of move #{last.id}" + (f": {reason}" if reason else "")
        return self._move(name, alias, last.to_version, last.from_version, actor, note, False)

    def history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Alias moves of `name` (optionally one alias), oldest first; append-only."""
        query = select(t.alias_history).where(t.alias_history.c.model == name)
        if alias is not None:
            query = query.where(t.alias_history.c.alias == alias)
        with self._read() as conn:
            rows = conn.execute(query.order_by(t.alias_history.c.id)).all()
        if not rows and name not in self.model_names():
            raise self._unknown_model(name)
        return [move_from_row(r) for r in rows]
