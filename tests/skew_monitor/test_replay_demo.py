"""Clean run on the flights demo: requests served from a real Redis (materialized demo data,
`get_features`), logged by the real FeatureLogger (Redis Stream -> Parquet), then replayed
through the offline engine: zero mismatches on every feature of the service, no drift alert."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.online.api import get_features, materialize_incremental, open_store
from featurelib.online.testing import RedisProcess
from featurelib.repo import Repo
from serving.feature_log import FeatureLogger, read_logs
from skew_monitor.run import RunConfig, run_once

T = datetime(2013, 12, 20, 17, 0, tzinfo=UTC)  # the time the demo "serves" at
REQUESTS, ROWS_PER_REQUEST = 12, 25


def test_demo_logs_replay_with_zero_mismatches(
    copy_demo_repo: Any, redis_server: RedisProcess, tmp_path: Path
) -> None:
    redis_url = redis_server.flushed_url()  # the session's throwaway server, emptied
    demo_repo = copy_demo_repo(tmp_path / "repo")  # logs and reports stay in this copy
    repo = Repo.load(demo_repo)
    service = repo.service("flight_delay")
    store = open_store(repo, redis_url)
    materialize_incremental(store, repo, T)
    spine = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    upcoming = spine.filter(
        pl.col("event_timestamp").is_between(T, T + timedelta(hours=6), closed="right")
    ).head(REQUESTS * ROWS_PER_REQUEST)
    inputs = upcoming.select(
        "carrier", "origin", "dest", "tailnum", "scheduled_departure", "distance"
    )
    logged_at = datetime.now(UTC) - timedelta(minutes=5)
    logger = FeatureLogger(demo_repo, store, definitions=repo, background=False, log=None)
    try:
        for i in range(REQUESTS):
            batch = inputs.slice(i * ROWS_PER_REQUEST, ROWS_PER_REQUEST)
            response = get_features(store, repo, "flight_delay", batch, at=T)
            logger.log(
                f"demo-{uuid.uuid4().hex[:8]}",
                logged_at + timedelta(seconds=i),
                T,
                service.name,
                service.version,
                None,
                None,
                batch,
                response,
                None,
            )
    finally:
        logger.close()
    logs = read_logs(demo_repo, "flight_delay", logged_at - timedelta(minutes=1))
    assert logs.height == inputs.height == REQUESTS * ROWS_PER_REQUEST
    config = RunConfig(
        service="flight_delay",
        start=logged_at - timedelta(minutes=1),
        end=datetime.now(UTC),
        reference="model",  # no model served these feature-only requests: offline reference
    )
    outcome = run_once(demo_repo, config, repo=repo)
    report = outcome.report
    assert report["rows"] == REQUESTS * ROWS_PER_REQUEST
    replayed = [f for f in report["features"] if f.get("rows_compared")]
    assert len(replayed) == len(service.output_names())
    assert [f["feature"] for f in replayed if f["mismatches"]] == []
    assert all(f["rows_compared"] == report["rows"] for f in replayed)
    assert [f["feature"] for f in report["features"] if f["drifted"]] == []
    assert report["reference"]["kind"] == "offline"
    assert any("name no model version" in n for n in report["notes"])
    assert report["replay"]["definitions_changed"] is False
    assert outcome.exit_code == 0, report["breaches"]
    assert outcome.paths.html.exists()
    # Real data reached the log: windowed counts are positive, weather is present.
    counts = logs["carrier_flights_28d"]
    assert counts.min() > 0  # type: ignore[operator]
    assert logs["status__temp"].to_list().count("PRESENT") > logs.height // 2
