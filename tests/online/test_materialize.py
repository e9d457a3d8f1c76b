"""Materialization on the flights demo: CLI, online == offline, idempotence, resumability,
view-version isolation. Real Redis (session fixture), real files, the CLI in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis

import featurelib as fl
from featurelib.online.api import (
    get_features,
    last_materialized,
    materialize_incremental,
    materialize_range,
)
from featurelib.online.connection import connect
from featurelib.online.store import RedisOnlineStore

T = datetime(2013, 6, 20, 18, 0, tzinfo=UTC)


def cli(*args: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "featurelib.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def snapshot(client: redis.Redis) -> dict[bytes, Any]:
    """Every key's type and contents (to compare whole databases)."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out[key] = client.hgetall(key) if kind == b"hash" else client.get(key)
    return out


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


@pytest.fixture
def store(redis_url: str, demo_repo: Path) -> RedisOnlineStore:
    return RedisOnlineStore(connect(redis_url), "flights")


def test_cli_materialize_then_online_equals_offline(
    demo_repo: Path, redis_url: str, store: RedisOnlineStore
) -> None:
    run = cli(
        "materialize-incremental", T.isoformat(), "--repo", str(demo_repo), redis_url=redis_url
    )
    assert run.returncode == 0, run.stderr
    assert "rows/s" in run.stderr
    repo = fl.Repo.load(demo_repo)
    spine = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    rows = (
        spine.filter(pl.col("scheduled_departure") > T)
        .head(300)
        .with_columns(pl.lit(T).alias("event_timestamp"))
    )
    online = get_features(store, repo, "flight_delay", rows, at=T)
    offline = fl.training_set(repo.service("flight_delay"), rows, repo=repo)
    mismatches = [
        (name, i, g, w)
        for name in repo.service("flight_delay").output_names()
        for i, (g, w) in enumerate(
            zip(online.features[name].to_list(), offline[name].to_list(), strict=True)
        )
        if not close(g, w)
    ]
    assert mismatches == []
    assert online.features["carrier_flights_28d"].min() > 0  # real data reached Redis


def test_get_online_cli_prints_json(demo_repo: Path, redis_url: str) -> None:
    assert (
        cli(
            "materialize-incremental",
            T.isoformat(),
            "--repo",
            str(demo_repo),
            "--views",
            "carrier_delays",
            redis_url=redis_url,
        ).returncode
        == 0
    )
    run = cli(
        "get-online",
        "--json",
        "--repo",
        str(demo_repo),
        "--service",
        "flight_delay",
        "--at",
        T.isoformat(),
        "--rows",
        '[{"carrier": "UA", "origin": "EWR", "dest": "IAH", "tailnum": "N14228", '
        '"scheduled_departure": "2013-06-20T19:00:00", "distance": 1400}]',
        redis_url=redis_url,
    )
    assert run.returncode == 0, run.stderr
    assert '"carrier_flights_28d": [' in run.stdout
    assert '"NOT_FOUND"' in run.stdout  # views that were not materialized


def test_materializing_twice_changes_nothing(demo_repo: Path, store: RedisOnlineStore) -> None:
    repo = fl.Repo.load(demo_repo)
    materialize_range(store, repo, T - timedelta(days=30), T)
    first = snapshot(store.client)
    materialize_range(store, repo, T - timedelta(days=30), T)
    assert snapshot(store.client) == first
    assert len(first) > 1000


def test_incremental_runs_resume_and_match_one_run(
    demo_repo: Path, store: RedisOnlineStore
) -> None:
    repo = fl.Repo.load(demo_repo)
    views = ["carrier_delays", "weather_at_origin", "plane_info"]
    # A run that "crashed" after its first view: only carrier_delays got its state.
    materialize_incremental(store, repo, T - timedelta(hours=5), views[:1])
    assert last_materialized(store, repo.view("carrier_delays")) == T - timedelta(hours=5)  # type: ignore[arg-type]
    assert last_materialized(store, repo.view("plane_info")) is None  # type: ignore[arg-type]
    materialize_incremental(store, repo, T, views)  # resumes every view from its own state
    resumed = snapshot(store.client)
    store.client.flushdb()
    materialize_incremental(store, repo, T, views)
    clean = snapshot(store.client)
    state_keys = {k for k in clean if b":mat:" in k}
    assert {k: v for k, v in resumed.items() if k not in state_keys} == {
        k: v for k, v in clean.items() if k not in state_keys
    }


def test_changed_definition_never_reads_old_data(demo_repo: Path, store: RedisOnlineStore) -> None:
    repo = fl.Repo.load(demo_repo)
    materialize_range(store, repo, T - timedelta(days=30), T, ["carrier_delays"])
    old = repo.view("carrier_delays")
    assert isinstance(old, fl.AggregationView)
    changed = fl.AggregationView(
        old.name, list(old.entities), old.source, [fl.count().windows("1d", name="carrier_flights")]
    )
    assert changed.version != old.version
    svc_old = fl.FeatureService("old", [old[["carrier_flights_1d"]]])
    svc_new = fl.FeatureService("new", [changed])
    rows = [{"carrier": "UA"}]
    repo_old = fl.Repo.from_objects([svc_old], root=demo_repo)
    repo_new = fl.Repo.from_objects([svc_new], root=demo_repo)
    assert get_features(store, repo_old, "old", rows, at=T).features["carrier_flights_1d"][0] > 0
    new = get_features(store, repo_new, "new", rows, at=T)
    assert new.features["carrier_flights_1d"].to_list() == [0]  # nothing under the new version
    materialize_range(store, repo_new, T - timedelta(days=2), T, ["carrier_delays"])
    assert get_features(store, repo_new, "new", rows, at=T).features["carrier_flights_1d"][0] > 0
