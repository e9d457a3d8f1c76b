"""featurelib's Redis online store as a Feast custom online store.

    # feature_store.yaml
    provider: featurelib.feast.provider.FeaturelibProvider   # materialize -> featurelib
    online_store:
      type: featurelib.feast.online_store.FeaturelibOnlineStore
      redis_url: redis://host:6379/0    # optional: default $REDIS_URL, else the embedded Redis

Data lives in featurelib's own layout (`featurelib.online.layout`): `featurelib materialize`
and `feast materialize` write the same keys, and `FeatureStore.get_online_features` /
`feast serve` read exactly what `featurelib.online.api.get_features` reads.

- `online_read` rebuilds the view's featurelib definition from its `featurelib.spec` tag,
  decodes Feast's entity keys back to join key values (a multi-key entity's Feast entities
  `route__origin` / `route__dest` keep the join key names `origin` / `dest`), reads with
  featurelib's serving path (`featurelib.online.read`, one pipelined round trip) as of now
  (or `read_at`), and returns Feast values typed by the view's Feast schema. Rows featurelib
  reports NOT_FOUND or OUTSIDE_MAX_AGE (TTL enforced at read) come back as `(None, None)`, which
  Feast reports as NOT_FOUND: Feast's regular read path has no TTL check of its own (only its
  pre-computed feature-vector path has), so OUTSIDE_MAX_AGE cannot reach Feast's response.
  Aggregation rows carry the read time as their event timestamp (a window value is "as of" it).
- Materialization: `FeaturelibProvider.materialize_single_feature_view` runs featurelib's own
  materialization for the view and range (aggregation views as tiles/blocks, never Feast rows).
  `online_write_batch` (other providers, `write_to_online_store`, pushes) writes plain rows with
  featurelib's keep-newest script; for an aggregation view it recomputes the blocks of the
  batch's entities from the source up to the batch's latest event time.
- `update` deletes the data of removed views, `teardown` that of every view (SCAN + UNLINK of
  the view's keys for its definition version, and its incremental-materialization state).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import polars as pl
import redis
from feast.entity import Entity
from feast.feature_view import FeatureView
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values

from featurelib.durations import epoch_micros
from featurelib.errors import RepoError
from featurelib.feast.registry import definition_of
from featurelib.online import layout
from featurelib.online.read import NOT_FOUND, OUTSIDE_MAX_AGE, ServingPlan, get_online_features
from featurelib.online.store import RedisOnlineStore
from featurelib.views import AggregationView, FeatureService
from featurelib.views import FeatureView as FlFeatureView

STORE_TYPE = "featurelib.feast.online_store.FeaturelibOnlineStore"
StoredView = FlFeatureView | AggregationView
Row = tuple[datetime | None, dict[str, ValueProto] | None]


class FeaturelibOnlineStoreConfig(FeastConfigBaseModel):
    """Config of the featurelib online store (`online_store:` in feature_store.yaml)."""

    type: Literal["featurelib.feast.online_store.FeaturelibOnlineStore"] = (
        "featurelib.feast.online_store.FeaturelibOnlineStore"
    )
    redis_url: str | None = None
    """Redis URL; default `$REDIS_URL`, else the repo's embedded Redis (`<repo>/data/redis`)."""
    read_at: datetime | None = None
    """Serve as of this fixed time instead of now (backtests, demos on old data, tests)."""


def repo_root(config: RepoConfig) -> Path:
    return Path(str(config.repo_path or ".")).resolve()


def stored_view(table: Any) -> StoredView:
    """The featurelib plain or aggregation view a Feast feature view was registered from."""
    view = definition_of(table)
    if not isinstance(view, FlFeatureView | AggregationView):
        raise RepoError(
            f"Feast feature view {getattr(table, 'name', table)!r} has no featurelib definition",
            hint="featurelib's online store serves views registered by featurelib "
            "(run `feast apply` on a featurelib repo)",
        )
    return view


_STORES: dict[tuple[str | None, Path, str], RedisOnlineStore] = {}
_URLS: dict[int, str] = {}  # id(store) -> the URL it was opened with


def open_online_store(config: RepoConfig) -> RedisOnlineStore:
    """The featurelib store for `config` (one client per URL, repo and project per process)."""
    from featurelib.online.connection import URL_ENV, connect, resolve_url

    url = getattr(config.online_store, "redis_url", None)
    root = repo_root(config)
    key = (url or os.environ.get(URL_ENV, "").strip() or None, root, str(config.project))
    store = _STORES.get(key)
    if store is None:
        resolved = resolve_url(url, repo_root=root)
        store = RedisOnlineStore(connect(resolved), str(config.project))
        _STORES[key], _URLS[id(store)] = store, resolved
    return store


@contextmanager
def _redis_errors(store: RedisOnlineStore) -> Iterator[None]:
    """Redis failures as featurelib's RedisUnavailableError (URL password masked, a hint)."""
    from featurelib.online.connection import unavailable

    try:
        yield
    except redis.RedisError as exc:
        raise unavailable(exc, _URLS.get(id(store), "redis://?")) from exc


def delete_view_data(store: RedisOnlineStore, view: StoredView) -> int:
    """Delete a view's keys (its current definition version) and its materialization state."""
    key = layout.plain_key if isinstance(view, FlFeatureView) else layout.aggregation_key
    pattern = key(store.project, view.name, view.version, "*")
    deleted = 0
    batch: list[bytes] = []
    for found in store.client.scan_iter(match=pattern, count=1000):
        batch.append(found)
        if len(batch) >= 1000:
            deleted += int(store.client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(store.client.unlink(*batch))
    store.client.delete(layout.materialized_key(store.project, view.name, view.version))
    return deleted


def _read_time(config: RepoConfig) -> datetime:
    at: datetime | None = getattr(config.online_store, "read_at", None)
    if at is None:
        return datetime.now(UTC)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _micros(value: datetime) -> int:
    return epoch_micros(value)


def entity_rows(entity_keys: Sequence[EntityKeyProto]) -> list[dict[str, Any]]:
    """Feast entity keys as featurelib entity rows ({join key: Python value})."""
    return [
        {
            name: feast_value_type_to_python_type(value)
            for name, value in zip(key.join_keys, key.entity_values, strict=True)
        }
        for key in entity_keys
    ]


class FeaturelibOnlineStore(OnlineStore):
    """Feast online store reading and writing featurelib's Redis layout."""

    _plans: ClassVar[dict[tuple[str, str, tuple[str, ...]], ServingPlan]] = {}

    def _plan(self, view: StoredView, features: Sequence[str]) -> ServingPlan:
        key = (view.name, view.version, tuple(features))
        plan = self._plans.get(key)
        if plan is None:
            service = FeatureService(f"_feast_online_{view.name}", [view[list(features)]])
            plan = self._plans[key] = ServingPlan(service)
        return plan

    # ------------------------------------------------------------------ reads
    def online_read(
        self,
        config: RepoConfig,
        table: FeatureView,
        entity_keys: list[EntityKeyProto],
        requested_features: list[str] | None = None,
    ) -> list[Row]:
        if not entity_keys:
            return []
        view = stored_view(table)
        names = list(requested_features or view.feature_names())
        unknown = [n for n in names if n not in view.feature_names()]
        if unknown:
            raise RepoError(
                f"view {view.name!r} has no features {unknown}",
                hint=f"its features are {view.feature_names()}",
            )
        at = _read_time(config)
        store = open_online_store(config)
        with _redis_errors(store):
            response = get_online_features(
                store, self._plan(view, names), pl.DataFrame(entity_rows(entity_keys)), at=at
            )
        types = {f.name: f.dtype.to_value_type() for f in table.features}
        protos = {
            n: python_values_to_proto_values(response.features[n].to_list(), types[n])
            for n in names
        }
        missing = (NOT_FOUND, OUTSIDE_MAX_AGE)
        rows: list[Row] = []
        for i in range(len(entity_keys)):
            found = {n: protos[n][i] for n in names if response.statuses[n][i] not in missing}
            if not found:
                rows.append((None, None))
                continue
            if isinstance(view, FlFeatureView):
                stamp = next(
                    (s for n in names if (s := response.event_timestamps[n][i]) is not None), None
                )
            else:
                stamp = at
            rows.append((stamp, found))
        return rows

    # ------------------------------------------------------------------ writes
    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        if not data:
            return
        view = stored_view(table)
        store = open_online_store(config)
        keys = list(view.join_keys)
        if isinstance(view, AggregationView):
            with _redis_errors(store):
                self._recompute_blocks(config, store, view, keys, data)
        else:
            names = view.feature_names()
            rows = []
            for entity_key, values, event_ts, created_ts in data:
                by_name = dict(zip(entity_key.join_keys, entity_key.entity_values, strict=True))
                tag = layout.entity_tag([feast_value_type_to_python_type(by_name[k]) for k in keys])
                missing = [n for n in names if n not in values]
                if missing:
                    raise RepoError(
                        f"rows written to view {view.name!r} lack features {missing}",
                        hint="featurelib stores whole rows: write every feature of the view",
                    )
                row = [feast_value_type_to_python_type(values[n]) for n in names]
                created = None if created_ts is None else _micros(created_ts)
                rows.append((tag, _micros(event_ts), created, row))
            with _redis_errors(store):
                store.write_rows(view.name, view.version, rows)
        if progress:
            progress(len(data))

    @staticmethod
    def _recompute_blocks(
        config: RepoConfig,
        store: RedisOnlineStore,
        view: AggregationView,
        keys: list[str],
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
    ) -> None:
        """Feast rows of window values cannot become blocks: recompute the blocks of the
        batch's entities from the source, for events up to the batch's latest event time."""
        from featurelib.online.api import EPOCH
        from featurelib.online.materialize import materialize_aggregation

        entities = pl.DataFrame(
            [
                {
                    k: feast_value_type_to_python_type(v)
                    for k, v in zip(key.join_keys, key.entity_values, strict=True)
                    if k in keys
                }
                for key, _, _, _ in data
            ]
        )
        end = max(ts if ts.tzinfo else ts.replace(tzinfo=UTC) for _, _, ts, _ in data)
        materialize_aggregation(store, view, repo_root(config), EPOCH, end, entities=entities)

    # ------------------------------------------------------------------ infra
    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Delete the data of removed views (kept views need no set-up: keys are created on
        write). Connects to Redis only when there is something to delete."""
        views = [v for t in tables_to_delete if (v := _maybe_view(t)) is not None]
        if views:
            store = open_online_store(config)
            with _redis_errors(store):
                for view in views:
                    delete_view_data(store, view)

    def teardown(
        self,
        config: RepoConfig,
        tables: Sequence[FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        views = [v for t in tables if (v := _maybe_view(t)) is not None]
        if views:
            store = open_online_store(config)
            with _redis_errors(store):
                for view in views:
                    delete_view_data(store, view)


def _maybe_view(table: Any) -> StoredView | None:
    view = definition_of(table)
    return view if isinstance(view, FlFeatureView | AggregationView) else None
