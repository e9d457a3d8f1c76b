"""featurelib sources as Feast data sources, and back.

Mapping (the most faithful Feast type for each featurelib format):

- Parquet file or directory -> `feast.FileSource` (ParquetFormat, same relative path, resolved
  against the repo directory by both Feast and featurelib). Feast tools that read a FileSource
  see the same files.
- CSV file and DuckDB query -> `FeaturelibSource`, a Feast *custom* data source
  (`DataSourceProto.CUSTOM_SOURCE`, like Feast's own PostgreSQLSource): Feast's FileSource only
  knows Parquet and Delta (feast/data_format.py), and Feast has no DuckDB query source (its
  duckdb offline store reads FileSources). Its `custom_options` hold the featurelib source spec,
  so any Feast process can rebuild it from the registry; featurelib's offline store reads it.

Every source carries its spec in the tags `featurelib.kind` / `featurelib.spec`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.infra.offline_stores.file_source import FileSource
from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto
from feast.repo_config import RepoConfig
from feast.value_type import ValueType

import featurelib as fl
from featurelib.errors import SourceError, SpecError
from featurelib.feast.types import KIND, SPEC
from featurelib.sources import BatchSource

CLASS_TYPE = "featurelib.feast.sources.FeaturelibSource"


class FeaturelibSource(DataSource):
    """A featurelib CSV or DuckDB source registered in Feast (a Feast custom data source)."""

    def __init__(self, source: BatchSource, *, tags: dict[str, str] | None = None) -> None:
        self.featurelib_source = source
        super().__init__(
            name=source.name,
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_field or "",
            description=source.description,
            tags=tags if tags is not None else source_tags(source),
        )

    def __hash__(self) -> int:
        return hash((self.name, self.timestamp_field))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FeaturelibSource)
            and bool(super().__eq__(other))  # type: ignore[no-untyped-call]
            and self.featurelib_source == other.featurelib_source
        )

    def source_type(self) -> DataSourceProto.SourceType.ValueType:
        return DataSourceProto.CUSTOM_SOURCE

    @staticmethod
    def from_proto(data_source: DataSourceProto) -> FeaturelibSource:
        spec = data_source.custom_options.configuration.decode()
        source = fl.loads(spec)
        if not isinstance(source, BatchSource):
            raise SpecError(
                f"custom options of Feast data source {data_source.name!r} hold a "
                f"{type(source).__name__}, not a featurelib source",
                hint="re-run `feast apply`",
            )
        return FeaturelibSource(source, tags=dict(data_source.tags))

    def _to_proto_impl(self) -> DataSourceProto:
        proto = DataSourceProto(
            name=self.name,
            type=DataSourceProto.CUSTOM_SOURCE,
            data_source_class_type=CLASS_TYPE,
            custom_options=DataSourceProto.CustomSourceOptions(
                configuration=fl.dumps(self.featurelib_source).encode()
            ),
            description=self.description,
            tags=self.tags,
            owner=self.owner,
        )
        proto.timestamp_field = self.timestamp_field
        proto.created_timestamp_column = self.created_timestamp_column
        return proto

    def validate(self, config: RepoConfig) -> None:
        from pathlib import Path

        from featurelib.offline.io import read_source

        read_source(self.featurelib_source, Path(str(config.repo_path or "."))).collect_schema()

    @staticmethod
    def source_datatype_to_feast_value_type() -> Callable[[str], ValueType]:
        from feast.type_map import pa_to_feast_value_type

        return pa_to_feast_value_type  # type: ignore[no-any-return]

    def get_table_column_names_and_types(self, config: RepoConfig) -> Iterable[tuple[str, str]]:
        from pathlib import Path

        import polars as pl

        from featurelib.offline.io import ORDER, read_source

        frame = read_source(self.featurelib_source, Path(str(config.repo_path or ".")))
        arrow = pl.DataFrame(schema=frame.collect_schema()).to_arrow().schema
        return [(f.name, str(f.type)) for f in arrow if f.name != ORDER]

    def get_table_query_string(self) -> str:
        return self.featurelib_source.location


def source_tags(source: BatchSource | fl.RequestSource) -> dict[str, str]:
    kind = "source" if isinstance(source, BatchSource) else "request_source"
    return {KIND: kind, SPEC: fl.dumps(source)}


def to_feast_source(source: BatchSource) -> DataSource:
    """The Feast data source registering `source` (see the module docstring for the mapping)."""
    if source.format == "parquet":
        return FileSource(
            name=source.name,
            path=source.location,
            file_format=ParquetFormat(),
            timestamp_field=source.timestamp_field,
            created_timestamp_column=source.created_timestamp_field or "",
            description=source.description,
            tags=source_tags(source),
        )
    return FeaturelibSource(source)


def from_feast_source(data_source: DataSource) -> BatchSource:
    """The featurelib source a Feast data source stands for.

    Sources registered by featurelib carry their spec; a plain Feast FileSource (Parquet) is
    read as the equivalent `fl.ParquetSource`.
    """
    if isinstance(data_source, FeaturelibSource):
        return data_source.featurelib_source
    spec = (data_source.tags or {}).get(SPEC)
    if spec is not None:
        source = fl.loads(spec)
        if isinstance(source, BatchSource):
            return source
    if isinstance(data_source, FileSource) and not isinstance(
        data_source.file_format, type(None) | ParquetFormat
    ):
        raise SourceError(
            f"file format {data_source.file_format} is not supported",
            where=f"Feast data source {data_source.name!r}",
            hint="featurelib reads Parquet FileSources; define other sources in the DSL",
        )
    if isinstance(data_source, FileSource):
        field_mapping_check(data_source)
        return fl.ParquetSource(
            data_source.name,
            data_source.path,
            timestamp_field=data_source.timestamp_field or "event_timestamp",
            created_timestamp_field=data_source.created_timestamp_column or None,
        )
    raise SourceError(
        f"{type(data_source).__name__} is not a featurelib source",
        where=f"Feast data source {data_source.name!r}",
        hint="featurelib's offline store reads featurelib sources and Parquet FileSources",
    )


def field_mapping_check(data_source: DataSource) -> None:
    """featurelib sources have no field mapping: expressions rename columns instead."""
    if data_source.field_mapping:
        raise SourceError(
            f"field_mapping {json.dumps(data_source.field_mapping)} is not supported",
            where=f"Feast data source {data_source.name!r}",
            hint="compute renamed features with expressions in the featurelib DSL",
        )
