"""Data sources: Parquet/CSV files, DuckDB queries over files, and request sources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from featurelib import dtypes
from featurelib.dtypes import DType
from featurelib.entity import check_name
from featurelib.errors import DefinitionError

Schema = tuple[tuple[str, DType], ...]


def _schema(raw: Mapping[str, DType] | None, *, where: str) -> Schema | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise DefinitionError(
            f"schema must map column names to types, got {raw!r}",
            where=where,
            hint='e.g. schema={"carrier": fl.String, "arr_delay": fl.Float64}',
        )
    for col, dtype in raw.items():
        if not isinstance(dtype, DType):
            raise DefinitionError(
                f"column {col!r} has type {dtype!r}, not a featurelib type",
                where=where,
                hint="use fl.Int64, fl.Float64, fl.Bool, fl.String or fl.Timestamp",
            )
    return tuple(raw.items())


def _schema_spec(schema: Schema | None) -> list[list[str]] | None:
    return None if schema is None else [[k, t.to_spec()] for k, t in schema]


def _schema_from_spec(raw: object) -> dict[str, DType] | None:
    if raw is None:
        return None
    return {str(k): DType.from_spec(str(t)) for k, t in raw}  # type: ignore[attr-defined]


@dataclass(frozen=True, init=False)
class BatchSource:
    """A source of timestamped event rows (base of file and query sources).

    `path` (or the files a query reads) is resolved against the feature repo directory when
    relative. Naive timestamps are read as UTC; floating NaN is read as null.
    """

    name: str
    format: str
    location: str
    timestamp_field: str
    created_timestamp_field: str | None
    schema: Schema | None
    description: str

    def __init__(
        self,
        name: str,
        *,
        format: str,  # noqa: A002 - the file format
        location: str,
        timestamp_field: str = "event_timestamp",
        created_timestamp_field: str | None = None,
        schema: Mapping[str, DType] | None = None,
        description: str = "",
    ) -> None:
        where = f"source {name!r}"
        check_name(name, kind="source", where=where)
        if format not in ("parquet", "csv", "duckdb"):
            raise DefinitionError(
                f"unknown format {format!r}",
                where=where,
                hint="use fl.ParquetSource, fl.CsvSource or fl.DuckDBSource",
            )
        if not isinstance(location, str) or not location:
            raise DefinitionError(
                "empty path or query", where=where, hint="give the file path or the SQL query"
            )
        if not isinstance(timestamp_field, str) or not timestamp_field:
            raise DefinitionError(
                f"invalid timestamp_field {timestamp_field!r}",
                where=where,
                hint='name the event time column, e.g. timestamp_field="event_timestamp"',
            )
        parsed = _schema(schema, where=where)
        if parsed is not None:
            cols = dict(parsed)
            for field in (timestamp_field, created_timestamp_field):
                if field is not None and cols.get(field) not in (dtypes.Timestamp, None):
                    raise DefinitionError(
                        f"timestamp column {field!r} is declared {cols[field]}",
                        where=where,
                        hint="declare it as fl.Timestamp",
                    )
                if field is not None and field not in cols:
                    raise DefinitionError(
                        f"timestamp column {field!r} is not in the schema",
                        where=where,
                        hint=f"add {field!r}: fl.Timestamp to `schema`",
                    )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "location", location)
        object.__setattr__(self, "timestamp_field", timestamp_field)
        object.__setattr__(self, "created_timestamp_field", created_timestamp_field)
        object.__setattr__(self, "schema", parsed)
        object.__setattr__(self, "description", description)

    @property
    def columns(self) -> dict[str, DType] | None:
        return None if self.schema is None else dict(self.schema)

    def to_spec(self) -> dict[str, object]:
        return {
            "kind": "source",
            "name": self.name,
            "format": self.format,
            "location": self.location,
            "timestamp_field": self.timestamp_field,
            "created_timestamp_field": self.created_timestamp_field,
            "schema": _schema_spec(self.schema),
            "description": self.description,
        }

    @staticmethod
    def from_spec(spec: Mapping[str, object]) -> BatchSource:
        created = spec.get("created_timestamp_field")
        return BatchSource(
            str(spec["name"]),
            format=str(spec["format"]),
            location=str(spec["location"]),
            timestamp_field=str(spec["timestamp_field"]),
            created_timestamp_field=None if created is None else str(created),
            schema=_schema_from_spec(spec.get("schema")),
            description=str(spec.get("description", "")),
        )


def ParquetSource(  # noqa: N802 - a constructor
    name: str,
    path: str,
    *,
    timestamp_field: str = "event_timestamp",
    created_timestamp_field: str | None = None,
    schema: Mapping[str, DType] | None = None,
    description: str = "",
) -> BatchSource:
    """Events in a Parquet file, or a directory of Parquet files (Hive partitions allowed).

    Examples:
        >>> import featurelib as fl
        >>> src = fl.ParquetSource("flights", "data/flights", created_timestamp_field="created")
        >>> src.format
        'parquet'
    """
    return BatchSource(
        name,
        format="parquet",
        location=path,
        timestamp_field=timestamp_field,
        created_timestamp_field=created_timestamp_field,
        schema=schema,
        description=description,
    )


def CsvSource(  # noqa: N802
    name: str,
    path: str,
    *,
    timestamp_field: str = "event_timestamp",
    created_timestamp_field: str | None = None,
    schema: Mapping[str, DType] | None = None,
    description: str = "",
) -> BatchSource:
    """Events in a CSV file with a header row; timestamps in ISO 8601.

    Examples:
        >>> import featurelib as fl
        >>> fl.CsvSource("events", "data/events.csv").format
        'csv'
    """
    return BatchSource(
        name,
        format="csv",
        location=path,
        timestamp_field=timestamp_field,
        created_timestamp_field=created_timestamp_field,
        schema=schema,
        description=description,
    )


def DuckDBSource(  # noqa: N802
    name: str,
    query: str,
    *,
    timestamp_field: str = "event_timestamp",
    created_timestamp_field: str | None = None,
    schema: Mapping[str, DType] | None = None,
    description: str = "",
) -> BatchSource:
    """Events produced by a DuckDB SQL query over files (run with the repo dir as working dir).

    Examples:
        >>> import featurelib as fl
        >>> q = "SELECT * FROM 'data/weather.parquet' WHERE origin <> 'LGA'"
        >>> fl.DuckDBSource("weather_sql", q).format
        'duckdb'
    """
    return BatchSource(
        name,
        format="duckdb",
        location=query,
        timestamp_field=timestamp_field,
        created_timestamp_field=created_timestamp_field,
        schema=schema,
        description=description,
    )


@dataclass(frozen=True, init=False)
class RequestSource:
    """Fields that arrive with each request (and as spine columns offline).

    Examples:
        >>> import featurelib as fl
        >>> req = fl.RequestSource("flight_request", {"distance": fl.Float64})
        >>> req.columns
        {'distance': Float64}
    """

    name: str
    schema: Schema
    description: str

    def __init__(self, name: str, schema: Mapping[str, DType], description: str = "") -> None:
        check_name(name, kind="request source", where=f"request source {name!r}")
        parsed = _schema(schema, where=f"request source {name!r}")
        if not parsed:
            raise DefinitionError(
                "a request source needs at least one field",
                where=f"request source {name!r}",
                hint='e.g. fl.RequestSource("req", {"distance": fl.Float64})',
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "schema", parsed)
        object.__setattr__(self, "description", description)

    @property
    def columns(self) -> dict[str, DType]:
        return dict(self.schema)

    def to_spec(self) -> dict[str, object]:
        return {
            "kind": "request_source",
            "name": self.name,
            "schema": _schema_spec(self.schema),
            "description": self.description,
        }

    @staticmethod
    def from_spec(spec: Mapping[str, object]) -> RequestSource:
        schema = _schema_from_spec(spec["schema"]) or {}
        return RequestSource(str(spec["name"]), schema, str(spec.get("description", "")))
