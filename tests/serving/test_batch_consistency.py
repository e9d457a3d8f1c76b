"""Prediction consistency: requests served online by the scoring core (demo data replayed at a
2013 time, champion/challenger split) are logged; batch scoring the logged (keys, request
fields, feature time) rows with the version that answered gives the same predictions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from serve_support import MODEL, registry_copy

import featurelib as fl
from featurelib.online.api import materialize_incremental, open_store
from featurelib.online.live import LiveDefinitions, load_serving_repo
from featurelib.online.testing import RedisProcess
from serving.batch import score_batch
from serving.config import RoutingConfig, ServeConfig
from serving.core import ScoringCore
from serving.feature_log import FeatureLogger, read_logs
from serving.registry import ModelRegistry
from serving.server import replay_clock

KEYS = ["carrier", "origin", "dest", "tailnum"]
FIELDS = ["scheduled_departure", "distance"]
REPLAY = datetime(2013, 7, 15, 12, 0, 30, tzinfo=UTC)


def test_online_predictions_of_logged_requests_equal_batch_scoring(
    copy_demo_repo: Any, trained_registry: Path, redis_server: RedisProcess, tmp_path: Path
) -> None:
    root = copy_demo_repo(tmp_path / "repo")  # private: this test's logs are the only ones
    spine = pl.read_parquet(root / "data" / "spine.parquet")
    repo = load_serving_repo(root)
    service = repo.service("flight_delay")
    registry = ModelRegistry.open(registry_copy(trained_registry, tmp_path))

    store = open_store(repo, redis_server.flushed_url())
    materialize_incremental(store, repo, REPLAY)
    definitions = LiveDefinitions(root)
    logger = FeatureLogger(root, store, definitions=definitions, flush_interval_s=None)
    config = ServeConfig(models=(MODEL,), routing=RoutingConfig(share=0.5))
    core = ScoringCore(
        root, store=store, registry=registry, definitions=definitions, config=config,
        logger=logger, clock=replay_clock(REPLAY),
    )  # fmt: skip
    try:
        around = spine.filter(
            pl.col("event_timestamp").is_between(REPLAY - timedelta(hours=2), REPLAY)
        ).head(60)
        requests = [around.slice(i, 1) for i in range(40)]  # one row each: split by entity
        requests += [around.slice(40 + 5 * i, 5) for i in range(4)]  # multi-row requests
        odd = around.head(2).with_columns(  # an unknown carrier, a null tail number
            carrier=pl.Series(["ZZ", "UA"]), tailnum=pl.Series(["N1", None], dtype=pl.String)
        )
        requests.append(odd)
        served = {}
        for i, rows in enumerate(requests):
            result = core.infer(MODEL, rows.select(*KEYS, *FIELDS), request_id=f"q{i}")
            served[f"q{i}"] = (result.model_version, result.predictions)
        logger.flush()
    finally:
        core.close()
        logger.close()
        definitions.close()

    logs = read_logs(root, "flight_delay")
    assert logs.height == 40 + 20 + 2
    assert set(logs["request_id"]) == set(served)
    versions = set(logs["model_version"])
    assert versions == {1, 2}, "the 50% split routes some entities to the challenger"
    for request_id, (version, predictions) in served.items():
        rows = logs.filter(pl.col("request_id") == request_id).sort("row")
        assert set(rows["model_version"]) == {version}
        np.testing.assert_array_equal(rows["prediction"].to_numpy(), predictions)
    assert (logs["feature_time"] >= REPLAY).all()
    assert (logs["feature_time"] < REPLAY + timedelta(minutes=1)).all()

    # The logged feature values equal the offline ones at the logged feature time.
    offline_features = fl.training_set(
        service,
        logs.select(*KEYS, *FIELDS, pl.col("feature_time").alias("event_timestamp")),
        repo=root,
    )
    for name in service.output_names():
        a, b = logs[name], offline_features[name]
        assert (a.is_null() == b.is_null()).all(), name
        if a.dtype.is_float():
            x, y = a.fill_null(0.0).to_numpy(), b.fill_null(0.0).to_numpy()
            scale = np.maximum(1.0, np.maximum(np.abs(x), np.abs(y)))
            assert (np.abs(x - y) <= 1e-9 * scale).all(), name
        else:
            assert a.equals(b), name

    for version in sorted(versions):
        part = logs.filter(pl.col("model_version") == version)
        batch_spine = part.select(
            "request_id", "row", *KEYS, *FIELDS, pl.col("feature_time").alias("event_timestamp")
        )
        batch = score_batch(root, f"{MODEL}@{version}", batch_spine, registry)
        assert batch["model_version"].unique().to_list() == [version]
        online = part["prediction"].to_numpy()
        offline = batch["prediction"].to_numpy()
        np.testing.assert_allclose(offline, online, rtol=1e-9, atol=0)
        assert not np.isnan(online).any()
    registry.close()
