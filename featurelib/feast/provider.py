"""A Feast provider whose materialization is featurelib's own.

    # feature_store.yaml
    provider: featurelib.feast.provider.FeaturelibProvider

`feast materialize START END` / `feast materialize-incremental END` call
`materialize_single_feature_view(view, start, end)` once per view; for views registered by
featurelib this runs `featurelib.online.api.materialize_range` for that view and range
(plain views: the latest row per entity; aggregation views: tiles and aligned blocks, trimmed
to the longest window), writing featurelib's Redis layout through `FeaturelibOnlineStore`, and
records `end` as featurelib's incremental state for the view. A `materialize-incremental`
first run whose default start (now - TTL, now - 52 weeks for TTL 0) is after `end` (old data)
falls back to featurelib's own first-run start (end - TTL / longest window, or everything).
Feast records its own materialization interval afterwards, as for any provider. Everything
else is Feast's passthrough provider (reads go to the online store's `online_read`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from feast.feature_view import FeatureView
from feast.infra.passthrough_provider import PassthroughProvider
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig

from featurelib.feast.online_store import (
    FeaturelibOnlineStoreConfig,
    open_online_store,
    repo_root,
)
from featurelib.feast.registry import definition_of
from featurelib.repo import Repo
from featurelib.views import AggregationView
from featurelib.views import FeatureView as FlFeatureView


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr)


class FeaturelibProvider(PassthroughProvider):
    """Feast's passthrough provider, with featurelib's materialization for featurelib views."""

    def materialize_single_feature_view(
        self,
        config: RepoConfig,
        feature_view: FeatureView | OnDemandFeatureView,
        start_date: datetime,
        end_date: datetime,
        registry: BaseRegistry,
        project: str,
        tqdm_builder: Callable[[int], Any],
        disable_event_timestamp: bool = False,
    ) -> None:
        view = definition_of(feature_view)
        if not isinstance(view, FlFeatureView | AggregationView) or not isinstance(
            config.online_store, FeaturelibOnlineStoreConfig
        ):
            super().materialize_single_feature_view(
                config,
                feature_view,
                start_date,
                end_date,
                registry,
                project,
                tqdm_builder,
                disable_event_timestamp,
            )
            return
        from featurelib.online.api import materialize_incremental, materialize_range

        repo = Repo.from_objects([view], root=repo_root(config))
        store = open_online_store(config)
        start, end = _aware(start_date), _aware(end_date)
        if start > end:
            # Only `materialize-incremental`'s first-run default (now - TTL, or now - 52 weeks
            # for TTL 0) gets here (`materialize` rejects start > end): on data older than
            # that, start where featurelib's incremental materialization would instead.
            materialize_incremental(store, repo, end, views=[view.name], progress=_progress)
            return
        materialize_range(store, repo, start, end, views=[view.name], progress=_progress)
