"""The central promise: online(t) == offline(t), for every kind of feature (design §3).

Random events (ties, nulls, NaN, composite keys, out-of-order files) are materialized into a
real Redis up to a random time t; `get_online_features(at=t)` must equal `training_set` at t.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pit_cases import pit

import featurelib as fl
from featurelib.online.materialize import materialize
from featurelib.online.read import NOT_FOUND, OUTSIDE_MAX_AGE, ServingPlan, get_online_features
from featurelib.online.store import RedisOnlineStore

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def online_at(
    client: redis.Redis, directory: Path, svc: fl.FeatureService, rows: pl.DataFrame, t: datetime
) -> Any:
    client.flushdb()
    store = RedisOnlineStore(client, "test")
    plan = ServingPlan(svc)
    materialize(store, plan.stored, directory, EPOCH, t)
    return get_online_features(store, plan, rows, at=t)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=pit.scenario(), picks=st.lists(st.integers(0, 24), min_size=1, max_size=3))
def test_online_equals_offline_at_t(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, case: Any, picks: list[int]
) -> None:
    events, files, spine_rows = case
    directory = tmp_path_factory.mktemp("events")
    pit.write_files(directory, events, files)
    svc = pit.build(directory)
    client = redis.Redis.from_url(redis_url)
    spine = pl.DataFrame(
        {
            "k1": [r[0] for r in spine_rows],
            "k2": [r[1] for r in spine_rows],
            "event_timestamp": [pit.ts(r[2]) for r in spine_rows],
            "boost": [0.5] * len(spine_rows),
        }
    )
    offline = fl.training_set(svc, spine, repo=directory)
    for pick in picks:
        t = spine["event_timestamp"][pick % spine.height]
        at_t = spine.with_row_index("i").filter(pl.col("event_timestamp") == t)
        response = online_at(client, directory, svc, at_t.select("k1", "k2", "boost"), t)
        expected = offline[at_t["i"].to_list()]
        for name in svc.output_names():
            got, want = response.features[name].to_list(), expected[name].to_list()
            for g, w in zip(got, want, strict=True):
                assert pit.close(g, w), f"t={t} {name}: online {got} != offline {want}"


def test_statuses_ttl_and_unknown_keys(redis_url: str, tmp_path: Path) -> None:
    events = [pit.Event("a", 1, 0, None, 1.5, 7), pit.Event("b", 1, 0, None, None, 8)]
    pit.write_files(tmp_path / "ev", events, [[0, 1]])
    svc = pit.build(tmp_path / "ev")
    rows = pl.DataFrame({"k1": ["a", "b", "zz", None], "k2": [1, 1, 1, 1], "boost": [1.0] * 4})
    client = redis.Redis.from_url(redis_url)
    fresh = online_at(client, tmp_path / "ev", svc, rows, pit.ts(10))
    assert fresh.features["x"].to_list() == [1.5, None, None, None]
    assert fresh.statuses["x"] == ["PRESENT", "NULL_VALUE", NOT_FOUND, NOT_FOUND]
    assert fresh.features["count_rows_1h"].to_list() == [1, 1, 0, 0]
    # 30 minutes later the row is exactly ttl old: expired at read time, not at write time.
    store = RedisOnlineStore(client, "test")
    expired = get_online_features(store, ServingPlan(svc), rows, at=pit.ts(30))
    assert expired.statuses["x"][:2] == [OUTSIDE_MAX_AGE, OUTSIDE_MAX_AGE]
    assert expired.features["y"].to_list() == [None, None, None, None]
    assert expired.features["y_any"].to_list() == [7, 8, None, None]  # no TTL on that view


def test_sources_without_a_declared_schema_read_the_same_online(
    redis_url: str, tmp_path: Path
) -> None:
    """Feature types come from the data when the source declares no schema."""
    frame = pl.DataFrame(
        {
            "k1": ["a", "a"],
            "ts": [pit.ts(0), pit.ts(5)],
            "x": [2.25, 1.5],
            "label": ["p", "q"],
        }
    )
    frame.write_parquet(tmp_path / "ev.parquet")
    entity = fl.Entity("first", {"k1": fl.String})
    src = fl.ParquetSource("ev", str(tmp_path / "ev.parquet"), timestamp_field="ts")
    latest = fl.FeatureView("latest", [entity], src, {"x": fl.col("x"), "label": fl.col("label")})
    aggs = fl.AggregationView("aggs", [entity], src, [fl.sum("x").windows("1h")])
    svc = fl.FeatureService("svc", [latest, aggs])
    rows = pl.DataFrame({"k1": ["a"]})
    client = redis.Redis.from_url(redis_url)
    online = online_at(client, tmp_path, svc, rows, pit.ts(10)).features
    offline = fl.training_set(svc, rows.with_columns(event_timestamp=pl.lit(pit.ts(10))))
    assert online.row(0) == offline.drop("k1", "event_timestamp").row(0) == (1.5, "q", 3.75)
