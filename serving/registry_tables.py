"""SQL tables of the model registry (SQLAlchemy Core; SQLite and PostgreSQL).

- `models`: one row per registered model name.
- `model_versions`: immutable versions (numbered 1.. per model; unique (model, version)), with
  the artifact bytes and their sha256, the signature (feature service + definition version),
  metrics, params, training-set fingerprint and code version. The registry has no update path.
- `model_aliases`: mutable pointers (model, alias) → version.
- `alias_history`: append-only record of every alias move (who, when, from, to, why, forced).
- `version_attachments`: immutable named blobs per version (training sample, expectations).
- `registry_state`: one row whose `change_counter` is bumped by every write, in the write's own
  transaction; it is also the first statement of each write, so concurrent writers queue on
  its row lock (PostgreSQL) or the database write lock (SQLite) instead of racing.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
)

versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), ForeignKey("models.name"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("flavor", String(32), nullable=False),
    Column("service", String(200), nullable=False),
    Column("service_version", String(100), nullable=False),
    Column("feature_names", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("params", JSON, nullable=False),
    Column("fingerprint", String(200), nullable=False),
    Column("code_version", String(200), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("artifact", LargeBinary, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("artifact_size", BigInteger, nullable=False),
    UniqueConstraint("model", "version", name="uq_model_versions_model_version"),
)

aliases = Table(
    "model_aliases",
    metadata,
    Column("model", String(200), ForeignKey("models.name"), primary_key=True),
    Column("alias", String(200), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(200), nullable=False),
    ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), ForeignKey("models.name"), nullable=False, index=True),
    Column("alias", String(200), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("forced", Boolean, nullable=False, default=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

attachments = Table(
    "version_attachments",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("payload", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
)

state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("change_counter", BigInteger, nullable=False),
)
