"""The model registry: registered models, immutable versions, aliases and their history, in SQL.

SQLite file by default (`<repo_root>/data/models.db`), PostgreSQL (or any SQLAlchemy URL) via
`FEATURELIB_REGISTRY_URL` or `ModelRegistry.open(url)`. Tables are created on open (see
`serving.registry_tables`). Every write runs in one transaction that first bumps the change
counter, so concurrent writers are serialized by the database and readers polling
`change_counter()` see each committed change exactly once.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from serving import registry_tables as t
from serving.errors import (
    ArtifactIntegrityError,
    ModelNotFoundError,
    RegistryError,
    RegistryUnavailableError,
)
from serving.model import TrainedModel
from serving.registry_aliases import AliasOperations
from serving.registry_records import (
    AliasMove,
    ModelVersion,
    RegisteredModel,
    as_utc,
    clean_metrics,
    json_ready,
    now_utc,
    split_model_ref,
    version_from_row,
)

__all__ = [
    "DEFAULT_ALIAS",
    "ENV_URL",
    "AliasMove",
    "ModelRegistry",
    "ModelVersion",
    "RegisteredModel",
    "default_url",
    "split_model_ref",
]

ENV_URL = "FEATURELIB_REGISTRY_URL"
DEFAULT_ALIAS = "champion"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")
_CACHE_SIZE = 8
_WRITE_ATTEMPTS = 5


def default_url(repo_root: Path | None = None) -> str:
    """`FEATURELIB_REGISTRY_URL`, else the SQLite file `<repo_root>/data/models.db`."""
    env = os.environ.get(ENV_URL)
    if env:
        return env
    root = Path(repo_root) if repo_root is not None else Path.cwd()
    return f"sqlite:///{(root / 'data' / 'models.db').resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: the serving process polls while `featurelib models promote` writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class ModelRegistry(AliasOperations):
    """Registered models, their immutable versions, mutable aliases and alias history."""

    def __init__(self, engine: Engine, *, repo_root: Path | None = None) -> None:
        self.engine = engine
        self.repo_root = None if repo_root is None else Path(repo_root).resolve()
        self._cache: OrderedDict[tuple[str, int, str], TrainedModel] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._create_tables()

    @classmethod
    def open(cls, url: str | None = None, *, repo_root: Path | None = None) -> ModelRegistry:
        """Open (creating tables if needed) the registry at `url` (default: see `default_url`)."""
        url = url or default_url(repo_root)
        try:
            if url.startswith("sqlite"):
                database = url.split("///", 1)[1] if "///" in url else ""
                if database and database != ":memory:":
                    Path(database).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                # No pre-ping: change_counter() must stay one query; a dropped connection fails one
                # call (RegistryUnavailableError) and the pool reconnects on the next.
                engine = create_engine(url, pool_recycle=1800)
        except Exception as exc:  # bad URL, missing driver
            raise RegistryError(
                f"cannot open model registry {url!r}: {exc}",
                hint="use e.g. sqlite:///path/models.db or postgresql+psycopg://user@host/db",
            ) from None
        return cls(engine, repo_root=repo_root)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.url!r})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ setup and writes
    def _create_tables(self) -> None:
        for attempt in range(3):
            try:
                t.metadata.create_all(self.engine)
                with self.engine.begin() as conn:
                    if conn.execute(select(t.state.c.id)).first() is None:
                        conn.execute(insert(t.state).values(id=1, change_counter=0))
                return
            except (IntegrityError, ProgrammingError):
                if attempt == 2:  # another process created the same tables/row at once
                    raise
            except OperationalError as exc:
                raise self._unavailable(exc) from None

    def _unavailable(self, exc: OperationalError) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"model registry {self.url} is unavailable: {exc.orig}",
            hint=f"check the database is running and reachable, or set {ENV_URL}",
        )

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction; bumping the counter first serializes concurrent writers."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(t.state)
                    .where(t.state.c.id == 1)
                    .values(change_counter=t.state.c.change_counter + 1)
                )
                yield conn
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def change_counter(self) -> int:
        """A number that increases with every committed write (one tiny query: poll it)."""
        with self._read() as conn:
            return int(conn.execute(select(t.state.c.change_counter)).scalar_one())

    # ------------------------------------------------------------------ versions
    def register(
        self,
        name: str,
        model: TrainedModel,
        *,
        metrics: Mapping[str, float],
        params: Mapping[str, Any],
        fingerprint: str,
        code_version: str,
        description: str = "",
        actor: str = "cli",
    ) -> ModelVersion:
        """Store `model` as the next version of `name` (created if new) and return it."""
        if not _NAME.match(name):
            raise RegistryError(
                f"invalid model name {name!r}",
                hint="use letters, digits, '_', '.', '-' (starting with a letter or digit)",
            )
        artifact = model.to_bytes()
        row = {
            "model": name,
            "flavor": model.flavor,
            "service": model.service,
            "service_version": model.service_version,
            "feature_names": list(model.feature_names),
            "metrics": clean_metrics(metrics),
            "params": json_ready(params),
            "fingerprint": fingerprint,
            "code_version": code_version,
            "description": description,
            "created_by": actor,
            "artifact": artifact,
            "artifact_sha256": hashlib.sha256(artifact).hexdigest(),
            "artifact_size": len(artifact),
        }
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._write() as conn:
                    now = now_utc()
                    exists = select(t.models.c.name).where(t.models.c.name == name)
                    if conn.execute(exists).first() is None:
                        conn.execute(
                            insert(t.models).values(
                                name=name, description=description, created_at=now, created_by=actor
                            )
                        )
                    latest = conn.execute(
                        select(func.max(t.versions.c.version)).where(t.versions.c.model == name)
                    ).scalar()
                    number = int(latest or 0) + 1
                    conn.execute(insert(t.versions).values(version=number, created_at=now, **row))
                return self.get(name, number)
            except IntegrityError:
                # A concurrent writer took the same number (or created the model): retry.
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _version_columns(self) -> list[Any]:
        return [c for c in t.versions.c if c.name not in ("artifact", "id")]

    def model_names(self) -> list[str]:
        with self._read() as conn:
            return list(conn.execute(select(t.models.c.name).order_by(t.models.c.name)).scalars())

    def _unknown_model(self, name: str) -> ModelNotFoundError:
        known = self.model_names()
        return ModelNotFoundError(
            f"no registered model named {name!r}",
            where=f"model registry {self.url}",
            hint=f"registered models: {known[:20]}"
            if known
            else "the registry is empty: register one with `featurelib train`",
        )

    def get(self, name: str, version: int) -> ModelVersion:
        with self._read() as conn:
            row = conn.execute(
                select(*self._version_columns()).where(
                    t.versions.c.model == name, t.versions.c.version == int(version)
                )
            ).first()
        if row is None:
            known = [v.version for v in self.versions(name)]  # raises for an unknown model
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}",
                hint=f"its versions are {known}" if known else "it has no versions yet",
            )
        return version_from_row(row)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(*self._version_columns())
                .where(t.versions.c.model == name)
                .order_by(t.versions.c.version)
            ).all()
            if not rows and conn.execute(select(t.models).where(t.models.c.name == name)).first():
                return []
        if not rows:
            raise self._unknown_model(name)
        return [version_from_row(r) for r in rows]

    def resolve(self, name: str, ref: str | int | None = None) -> ModelVersion:
        """A version by number, "latest", or alias (default: the champion)."""
        if isinstance(ref, int):
            return self.get(name, ref)
        text = DEFAULT_ALIAS if ref is None else str(ref).strip().lstrip("@")
        if text.isdigit():
            return self.get(name, int(text))
        if text.lower().startswith("v") and text[1:].isdigit():
            return self.get(name, int(text[1:]))
        if text == "latest":
            found = self.versions(name)
            if not found:
                raise ModelNotFoundError(f"model {name!r} has no versions yet")
            return found[-1]
        aliases = self.aliases(name)
        if text not in aliases:
            raise ModelNotFoundError(
                f"model {name!r} has no alias {text!r}",
                hint=f"its aliases are {aliases or 'none'}; set one with "
                f"`featurelib models promote {name} VERSION --alias {text}`",
            )
        return self.get(name, aliases[text])

    def list_models(self) -> list[RegisteredModel]:
        with self._read() as conn:
            models = conn.execute(select(t.models).order_by(t.models.c.name)).all()
            counts = {
                r.model: (int(r.n), int(r.latest))
                for r in conn.execute(
                    select(
                        t.versions.c.model,
                        func.count().label("n"),
                        func.max(t.versions.c.version).label("latest"),
                    ).group_by(t.versions.c.model)
                )
            }
            alias_rows = conn.execute(select(t.aliases).order_by(t.aliases.c.alias)).all()
        by_model: dict[str, dict[str, int]] = {}
        for a in alias_rows:
            by_model.setdefault(a.model, {})[a.alias] = int(a.version)
        return [
            RegisteredModel(
                name=m.name,
                description=m.description,
                created_at=as_utc(m.created_at),
                latest_version=counts.get(m.name, (0, None))[1],
                version_count=counts.get(m.name, (0, None))[0],
                aliases=by_model.get(m.name, {}),
            )
            for m in models
        ]

    # ------------------------------------------------------------------ artifacts
    def load(self, mv: ModelVersion) -> TrainedModel:
        """The version's model, after checking its artifact bytes against the recorded sha256."""
        key = (mv.name, mv.version, mv.artifact_sha256)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with self._read() as conn:
            row = conn.execute(
                select(t.versions.c.artifact, t.versions.c.artifact_sha256).where(
                    t.versions.c.model == mv.name, t.versions.c.version == mv.version
                )
            ).first()
        if row is None:
            self.get(mv.name, mv.version)  # raises the right not-found error
            raise ModelNotFoundError(f"model {mv.name!r} has no version {mv.version}")
        artifact = bytes(row.artifact)
        actual = hashlib.sha256(artifact).hexdigest()
        if actual != row.artifact_sha256 or actual != mv.artifact_sha256:
            raise ArtifactIntegrityError(
                f"artifact of {mv.ref} has sha256 {actual}, but {row.artifact_sha256} was "
                "recorded at registration",
                where=f"model registry {self.url}",
                hint="the stored bytes were altered: restore the database from a backup or "
                "register the model again",
            )
        model = TrainedModel.from_bytes(artifact)
        with self._cache_lock:
            self._cache[key] = model
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return model

    def attach(self, name: str, version: int, key: str, payload: bytes) -> None:
        """Store an immutable named blob with a version (refuses to overwrite `key`)."""
        self.get(name, version)
        try:
            with self._write() as conn:
                conn.execute(
                    insert(t.attachments).values(
                        model=name,
                        version=int(version),
                        key=key,
                        payload=payload,
                        sha256=hashlib.sha256(payload).hexdigest(),
                        created_at=now_utc(),
                    )
                )
        except IntegrityError:
            raise RegistryError(
                f"{name}/{version} already has attachment {key!r}; attachments are immutable",
                hint="register a new version to change it",
            ) from None

    def attachment(self, name: str, version: int, key: str) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(
                select(t.attachments.c.payload, t.attachments.c.sha256).where(
                    t.attachments.c.model == name,
                    t.attachments.c.version == int(version),
                    t.attachments.c.key == key,
                )
            ).first()
        if row is None:
            return None
        payload = bytes(row.payload)
        if hashlib.sha256(payload).hexdigest() != row.sha256:
            raise ArtifactIntegrityError(
                f"attachment {key!r} of {name}/{version} does not match its recorded sha256",
                hint="restore the database from a backup",
            )
        return payload

    def attachment_keys(self, name: str, version: int) -> list[str]:
        with self._read() as conn:
            return list(
                conn.execute(
                    select(t.attachments.c.key)
                    .where(t.attachments.c.model == name, t.attachments.c.version == int(version))
                    .order_by(t.attachments.c.key)
                ).scalars()
            )
