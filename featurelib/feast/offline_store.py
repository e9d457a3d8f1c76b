"""featurelib's offline engine as a Feast offline store.

    # feature_store.yaml
    offline_store:
      type: featurelib.feast.offline_store.FeaturelibOfflineStore
      progress: true        # training-set progress lines on stderr (default true)

`FeatureStore.get_historical_features(entity_df, features)` then returns featurelib's
point-in-time result (retrieval.py): plain views with featurelib's TTL and tie rules, sawtooth
window aggregations and on-demand features, all computed by the Polars engine. On-demand
features are part of the frame, so the job lists no on-demand views for Feast to transform
again. `pull_latest_from_table_or_query` / `pull_all_from_table_or_query` (used by
`feast materialize` and Feast's tooling) read sources with featurelib's reader (pull.py).

Not supported (clear featurelib errors): SQL-string entity_df, retrieval without entity_df
(start/end dates only), join_key_map projections, `filter_by_created_timestamp` (featurelib's
visibility rule uses event time), logged-feature writes and offline batch writes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import polars as pl
import pyarrow
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores.offline_store import (
    OfflineStore,
    RetrievalJob,
    RetrievalMetadata,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.saved_dataset import SavedDatasetStorage

from featurelib.errors import FeaturelibError, SourceError
from featurelib.feast import pull, retrieval
from featurelib.feast.sources import from_feast_source
from featurelib.offline.engine import stderr_progress

STORE_TYPE = "featurelib.feast.offline_store.FeaturelibOfflineStore"


class FeaturelibOfflineStoreConfig(FeastConfigBaseModel):
    """Config of the featurelib offline store (`offline_store:` in feature_store.yaml)."""

    type: Literal["featurelib.feast.offline_store.FeaturelibOfflineStore"] = (
        "featurelib.feast.offline_store.FeaturelibOfflineStore"
    )
    progress: bool = True
    """Print training-set progress lines on stderr."""


class FeaturelibRetrievalJob(RetrievalJob):
    """A lazy featurelib computation; runs once, on the first `to_df` / `to_arrow`."""

    def __init__(
        self,
        compute: Callable[[], pl.DataFrame],
        *,
        full_feature_names: bool = False,
        metadata: RetrievalMetadata | None = None,
        repo_path: Path | None = None,
    ) -> None:
        self._compute = compute
        self._frame: pl.DataFrame | None = None
        self._full_feature_names = full_feature_names
        self._metadata = metadata
        self._repo_path = repo_path

    def to_polars(self) -> pl.DataFrame:
        """The result as a Polars frame (featurelib's native form)."""
        if self._frame is None:
            self._frame = self._compute()
        return self._frame

    def _to_arrow_internal(self, timeout: int | None = None) -> pyarrow.Table:
        return self.to_polars().to_arrow()

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self.to_polars().to_pandas()

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return []  # on-demand features are computed by featurelib, in the frame already

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

        if not isinstance(storage, SavedDatasetFileStorage):
            raise SourceError(
                f"cannot persist to {type(storage).__name__}",
                hint="use SavedDatasetFileStorage(path='data/....parquet')",
            )
        path = Path(storage.file_options.uri)
        if not path.is_absolute() and self._repo_path is not None:
            path = self._repo_path / path
        if path.exists() and not allow_overwrite:
            raise SourceError(
                f"{path} exists", hint="pass allow_overwrite=True or choose another path"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_polars().write_parquet(path)


def _root(config: RepoConfig) -> Path:
    return Path(str(config.repo_path or ".")).resolve()


class FeaturelibOfflineStore(OfflineStore):
    """Feast offline store backed by featurelib's Polars engine."""

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str | None,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        frame = retrieval.check_entity_df(entity_df)
        requested = retrieval.resolve(feature_refs, list(feature_views), registry, project)
        store_config = config.offline_store
        progress = stderr_progress if getattr(store_config, "progress", True) else None
        root = _root(config)
        metadata = _metadata(frame, feature_refs)

        def compute() -> pl.DataFrame:
            return retrieval.historical_features(
                frame,
                requested,
                root,
                full_feature_names=full_feature_names,
                progress=progress,
            )

        return FeaturelibRetrievalJob(
            compute, full_feature_names=full_feature_names, metadata=metadata, repo_path=root
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        args = (config, data_source, join_key_columns, feature_name_columns, timestamp_field)
        compute = functools.partial(
            pull.pull, *args, created_timestamp_column, start_date, end_date, latest=True
        )
        return FeaturelibRetrievalJob(compute, repo_path=_root(config))

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        args = (config, data_source, join_key_columns, feature_name_columns, timestamp_field)
        compute = functools.partial(
            pull.pull, *args, created_timestamp_column, start_date, end_date, latest=False
        )
        return FeaturelibRetrievalJob(compute, repo_path=_root(config))

    def validate_data_source(self, config: RepoConfig, data_source: DataSource) -> None:
        """Check that featurelib can read the source (raises a featurelib SourceError)."""
        from feast.data_source import RequestSource

        from featurelib.offline.io import read_source

        if not isinstance(data_source, RequestSource):
            source = from_feast_source(data_source)
            read_source(source, _root(config)).collect_schema()


def _metadata(entity_df: pd.DataFrame, feature_refs: list[str]) -> RetrievalMetadata:
    datetimes = [str(c) for c in entity_df.select_dtypes(include=["datetime", "datetimetz"])]
    try:
        ts = retrieval.timestamp_column([str(c) for c in entity_df.columns], datetimes)
    except FeaturelibError:
        return RetrievalMetadata(features=feature_refs, keys=list(map(str, entity_df.columns)))
    times = pd.to_datetime(entity_df[ts], utc=True)
    return RetrievalMetadata(
        features=feature_refs,
        keys=[str(c) for c in entity_df.columns if c != ts],
        min_event_timestamp=times.min().to_pydatetime() if len(times) else None,
        max_event_timestamp=times.max().to_pydatetime() if len(times) else None,
    )
