"""The online API: open the repo's store, materialize (full or incremental), read features.

    store = fl.online.open_store(repo)                      # REDIS_URL, else the embedded server
    materialize_incremental(store, repo, end)               # resumable: state kept per view
    get_features(store, repo, "flight_delay", rows, at=t)   # one pipelined round trip

Incremental state lives in Redis next to the data (`fl:<project>:mat:<view>:<version>` = the
last end materialized, ISO 8601), so every machine serving from that Redis agrees on it, and a
changed view definition (new version) starts from scratch. A crash mid-run leaves the state of
the unfinished view untouched; rerunning recomputes it, and writes are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.online import layout
from featurelib.online.connection import connect
from featurelib.online.materialize import MaterializeResult, materialize
from featurelib.online.project import project_name
from featurelib.online.read import OnlineResponse, ServingPlan, get_online_features
from featurelib.online.store import RedisOnlineStore
from featurelib.online.tiles import hop_plans
from featurelib.repo import Repo
from featurelib.views import AggregationView, FeatureView

Progress = Callable[[str], None]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLANS: dict[tuple[str, str], ServingPlan] = {}


def open_store(repo: Repo | Path, url: str | None = None) -> RedisOnlineStore:
    """The online store of a repo (or repo directory): `url`, else REDIS_URL, else the repo's
    embedded Redis."""
    root = repo.root if isinstance(repo, Repo) else Path(repo).resolve()
    return RedisOnlineStore(connect(url, repo_root=root), project_name(root))


def stored_views(
    repo: Repo, names: Sequence[str] | None = None
) -> list[FeatureView | AggregationView]:
    views: list[FeatureView | AggregationView] = [
        *repo.feature_views.values(),
        *repo.aggregation_views.values(),
    ]
    if names:
        wanted = set(names)
        unknown = wanted - {v.name for v in views}
        if unknown:
            from featurelib.errors import RepoError

            raise RepoError(
                f"no materializable views named {sorted(unknown)}",
                hint=f"views are: {sorted(v.name for v in views)}",
            )
        views = [v for v in views if v.name in wanted]
    return views


def _state_key(store: RedisOnlineStore, view: FeatureView | AggregationView) -> str:
    return layout.materialized_key(store.project, view.name, view.version)


def last_materialized(
    store: RedisOnlineStore, view: FeatureView | AggregationView
) -> datetime | None:
    raw = store.client.get(_state_key(store, view))
    if raw is None:
        return None
    return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else str(raw))


def _lookback(view: FeatureView | AggregationView) -> timedelta | None:
    if isinstance(view, FeatureView):
        return view.ttl
    longest = max(p.hop_us * (p.longest_window_hops + 1) for p in hop_plans(view))
    return timedelta(microseconds=longest)


def _run(
    store: RedisOnlineStore,
    repo: Repo,
    end: datetime,
    starts: list[tuple[FeatureView | AggregationView, datetime]],
    progress: Progress | None,
) -> list[MaterializeResult]:
    results = []
    for view, start in starts:
        if start > end:
            if progress:
                progress(f"{view.name}: already materialized up to {start.isoformat()}")
            continue
        results += materialize(store, [view], repo.root, start, end, progress)
        store.client.set(_state_key(store, view), end.isoformat())  # only once the view is done
    return results


def materialize_range(
    store: RedisOnlineStore,
    repo: Repo,
    start: datetime,
    end: datetime,
    views: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> list[MaterializeResult]:
    """Materialize event times in [start, end] and record `end` as each view's state."""
    starts = [(view, start) for view in stored_views(repo, views)]
    return _run(store, repo, end, starts, progress)


def materialize_incremental(
    store: RedisOnlineStore,
    repo: Repo,
    end: datetime,
    views: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> list[MaterializeResult]:
    """Materialize each view from its last materialized end (first run: its TTL / longest
    window before `end`, or everything when it has no TTL) up to `end`."""
    starts = []
    for view in stored_views(repo, views):
        start = last_materialized(store, view)
        if start is None:
            lookback = _lookback(view)
            start = EPOCH if lookback is None else end - lookback
        starts.append((view, start))
    return _run(store, repo, end, starts, progress)


def get_features(
    store: RedisOnlineStore,
    repo: Repo,
    service: str,
    entity_rows: Sequence[Mapping[str, Any]] | pl.DataFrame,
    request_fields: Mapping[str, Sequence[Any]] | None = None,
    at: datetime | None = None,
) -> OnlineResponse:
    """Online features of `service` for `entity_rows` (plan compiled once per service version)."""
    definition = repo.service(service)
    cache_key = (definition.name, definition.version)
    plan = _PLANS.get(cache_key)
    if plan is None:
        plan = _PLANS[cache_key] = ServingPlan(definition)
    return get_online_features(store, plan, entity_rows, request_fields, at)
