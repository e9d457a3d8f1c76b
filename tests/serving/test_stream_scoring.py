"""Streaming scoring end to end: events in a real Redis Stream are pushed (features update),
scored by the scoring core, predictions written to an output stream; bad entries dead-lettered;
predictions equal batch scoring of the logged (keys, feature time) rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from serve_support import MODEL, registry_copy

from featurelib.cli import main
from featurelib.demo.stream import new_flights, send
from featurelib.online.api import get_features, materialize_incremental, open_store
from featurelib.online.live import load_serving_repo
from featurelib.online.stream import PAUSE_ENV
from featurelib.online.testing import RedisProcess, StderrLines
from serving.batch import score_batch
from serving.feature_log import read_logs
from serving.registry import ModelRegistry

KEYS = ["carrier", "origin", "dest", "tailnum"]


@pytest.fixture(scope="module")
def trained_repo(
    copy_demo_repo: Any, trained_registry: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A private demo repo copy and a private copy of the shared test registry (MODEL v1 =
    champion, v2 = challenger)."""
    root = copy_demo_repo(tmp_path_factory.mktemp("stream_repo"))
    return root, registry_copy(trained_registry, tmp_path_factory.mktemp("stream_registry"))


def replay_time(flights: pl.DataFrame) -> datetime:
    """A minute after the latest event: every pushed event is visible."""
    latest = flights["event_timestamp"].max()
    assert isinstance(latest, datetime)
    return latest + timedelta(minutes=1)


def entries(client: Any, stream: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange(stream)
    ]


def test_stream_scoring_pushes_scores_and_writes_predictions(
    trained_repo: tuple[Path, str], redis_server: RedisProcess
) -> None:
    root, registry_url = trained_repo
    url = redis_server.flushed_url()
    repo = load_serving_repo(root)
    store = open_store(repo, url)
    flights = new_flights(root / "data", 30)
    now = replay_time(flights)
    materialize_incremental(store, repo, now)
    planes = flights.select(*KEYS, "scheduled_departure", "distance").unique(
        "tailnum", maintain_order=True
    )
    before = get_features(store, repo, "flight_delay", planes, at=now).features

    send(store.client, "flights:in", flights, "t1")  # event ids demo-t1-<flight_id>
    explicit = {
        "request_id": "explicit-1", "carrier": "UA", "origin": "EWR", "dest": "ORD",
        "tailnum": "N12345", "scheduled_departure": "2014-01-02T20:00:00Z", "distance": 719.0,
    }  # fmt: skip
    store.client.xadd("flights:in", {"score": json.dumps(explicit)})
    store.client.xadd("flights:in", {"data": "not json"})
    store.client.xadd("flights:in", {"score": json.dumps({"carrier": "UA"})})

    argv = ["score-stream", "--repo", str(root), "--stream", "flights:in"]
    argv += ["--output-stream", "flights:scores", "--model", f"{MODEL}@champion"]
    argv += ["--source", "flights", "--consumer", "c1", "--redis-url", url]
    argv += ["--registry", registry_url, "--now", now.isoformat(), "--idle-exit", "0.5"]
    argv += ["--block-ms", "100"]
    assert main(argv) == 0

    out = entries(store.client, "flights:scores")
    expected_ids = {f"demo-t1-{i}" for i in flights["flight_id"]} | {"explicit-1"}
    assert {o["id"] for o in out} == expected_ids
    assert len(out) == 31
    assert {(o["model"], o["model_version"]) for o in out} == {(MODEL, "1")}
    by_id = {o["id"]: o for o in out}
    first = flights.row(0, named=True)
    assert json.loads(by_id[f"demo-t1-{first['flight_id']}"]["keys"]) == {k: first[k] for k in KEYS}
    dead = entries(store.client, "flights:in:dead")
    assert len(dead) == 2
    assert "data is not valid JSON" in dead[0]["reason"]
    assert "scoring refused" in dead[1]["reason"]
    assert "origin" in dead[1]["reason"]  # names the missing input
    assert store.client.xpending("flights:in", "featurelib-score")["pending"] == 0

    # The pushed flights reached the online store: each plane's 1-day count grew by its flights.
    after = get_features(store, repo, "flight_delay", planes, at=now).features
    pushed = planes.join(flights.group_by("tailnum").len(), on="tailnum", how="left")
    assert (after["plane_flights_1d"] - before["plane_flights_1d"]).to_list() == pushed[
        "len"
    ].to_list()

    # Each prediction equals batch scoring of the logged (keys, request fields, feature time).
    logs = read_logs(root, "flight_delay")
    assert logs.height == 31
    spine = logs.select(
        "request_id", "row", *KEYS, "scheduled_departure", "distance",
        pl.col("feature_time").alias("event_timestamp"),
    )  # fmt: skip
    with ModelRegistry.open(registry_url) as registry:
        batch = score_batch(root, f"{MODEL}@1", spine, registry)
    logged = logs["prediction"].to_numpy()
    np.testing.assert_allclose(batch["prediction"].to_numpy(), logged, rtol=1e-9, atol=0)
    streamed = sorted(float(o["prediction"]) for o in out)
    np.testing.assert_allclose(sorted(logged), streamed, rtol=1e-12, atol=0)


def test_consumer_killed_after_push_loses_nothing_and_pushes_once(
    trained_repo: tuple[Path, str], redis_server: RedisProcess
) -> None:
    """A consumer killed (SIGKILL) after pushing, before writing predictions: the restarted one
    re-pushes nothing (event ids are de-duplicated) and writes each prediction once."""
    from serving.stream_scoring import ScoringStats, open_stream_scorer

    root, registry_url = trained_repo
    url = redis_server.flushed_url()
    repo = load_serving_repo(root)
    store = open_store(repo, url)
    flights = new_flights(root / "data", 5)
    now = replay_time(flights)
    materialize_incremental(store, repo, now)
    send(store.client, "in2", flights, "t2")
    argv = [sys.executable, "-m", "featurelib.cli", "score-stream", "--repo", str(root)]
    argv += ["--stream", "in2", "--output-stream", "out2", "--model", MODEL]
    argv += ["--source", "flights", "--group", "g", "--consumer", "c9", "--redis-url", url]
    argv += ["--registry", registry_url, "--now", now.isoformat(), "--no-feature-log"]
    env = {**os.environ, PAUSE_ENV: "pushed"}
    with subprocess.Popen(argv, stderr=subprocess.PIPE, env=env, text=True) as process:
        try:
            StderrLines(process).wait_for("paused at pushed")  # a deadline, never a hang
        finally:
            process.kill()
    assert store.client.xlen("out2") == 0
    assert store.client.xpending("in2", "g")["pending"] == 5

    scorer = open_stream_scorer(
        root, model=MODEL, source="flights", stream="in2", output_stream="out2",
        group="g", consumer="c9", redis_url=url, registry_url=registry_url, now=now,
        block_ms=100, log_features=False,
    )  # fmt: skip
    try:
        stats = scorer.run(idle_exit_s=0.3)
    finally:
        scorer.close()
    assert isinstance(stats, ScoringStats)
    assert (stats.messages, stats.scored, stats.outputs) == (5, 5, 5)
    assert (stats.applied, stats.duplicates) == (0, 5)  # pushed once, by the killed consumer
    out = entries(store.client, "out2")
    assert sorted(o["id"] for o in out) == sorted(f"demo-t2-{i}" for i in flights["flight_id"])
    # Routed by the champion/challenger split (bare model name): one request per entry.
    assert len({o["request_id"] for o in out}) == 5
