"""Records the model registry returns (frozen), and conversions from its SQL rows."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serving.errors import RegistryError


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version: artifact reference, signature, metrics and lineage."""

    name: str
    version: int
    flavor: str
    service: str
    service_version: str
    feature_names: tuple[str, ...]
    metrics: dict[str, float]
    params: dict[str, Any]
    fingerprint: str
    code_version: str
    created_at: datetime
    created_by: str
    artifact_sha256: str
    artifact_size: int = 0
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "flavor": self.flavor,
            "service": self.service,
            "service_version": self.service_version,
            "feature_names": list(self.feature_names),
            "metrics": self.metrics,
            "params": self.params,
            "fingerprint": self.fingerprint,
            "code_version": self.code_version,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "artifact_sha256": self.artifact_sha256,
            "artifact_size": self.artifact_size,
            "description": self.description,
        }


@dataclass(frozen=True)
class RegisteredModel:
    """A model name with a summary of its versions and current aliases."""

    name: str
    description: str
    created_at: datetime
    latest_version: int | None
    version_count: int
    aliases: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "latest_version": self.latest_version,
            "version_count": self.version_count,
            "aliases": self.aliases,
        }


@dataclass(frozen=True)
class AliasMove:
    """One row of the append-only alias history (None as a version = alias absent)."""

    id: int
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    forced: bool
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "actor": self.actor,
            "reason": self.reason,
            "forced": self.forced,
            "at": self.at.isoformat(),
        }


def split_model_ref(text: str) -> tuple[str, str | None]:
    """`"flight_delay@champion"` → `("flight_delay", "champion")`; `"m"` → `("m", None)`."""
    name, _, ref = text.partition("@")
    return name, (ref or None)


def now_utc() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes: everything the registry writes is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise RegistryError(
                f"metric {key!r} is {number}, not a finite number",
                hint="leave undefined metrics out (e.g. AUC on a single-class evaluation set)",
            )
        out[str(key)] = number
    return out


def json_ready(params: Mapping[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(dict(params), default=str, sort_keys=True))
    return loaded


def version_from_row(row: Any) -> ModelVersion:
    return ModelVersion(
        name=row.model,
        version=int(row.version),
        flavor=row.flavor,
        service=row.service,
        service_version=row.service_version,
        feature_names=tuple(row.feature_names),
        metrics=dict(row.metrics),
        params=dict(row.params),
        fingerprint=row.fingerprint,
        code_version=row.code_version,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
        artifact_sha256=row.artifact_sha256,
        artifact_size=int(row.artifact_size),
        description=row.description,
    )


def move_from_row(row: Any) -> AliasMove:
    return AliasMove(
        id=int(row.id),
        model=row.model,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        forced=bool(row.forced),
        at=as_utc(row.at),
    )
