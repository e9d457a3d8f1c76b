"""Feature log: log -> Redis Stream -> Parquet round trip, sampling, schema evolution,
at-least-once flushing, graceful shutdown (real Redis, real files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from featurelib.cli import main
from featurelib.online.connection import connect
from featurelib.online.project import project_name
from featurelib.online.read import OnlineResponse
from featurelib.online.store import RedisOnlineStore
from featurelib.online.testing import RedisProcess
from featurelib.repo import Repo
from serving.feature_log import FeatureLogger, read_logs, sampled
from serving.log_flush import GROUP, LogFlusher, stream_key

ROOT = Path(__file__).resolve().parents[2]
UTC_US = pl.Datetime("us", "UTC")
T0 = datetime(2013, 6, 1, 23, 59, 58, tzinfo=UTC)  # two seconds before midnight


@pytest.fixture
def store(redis_server: RedisProcess) -> Iterator[RedisOnlineStore]:
    client = connect(redis_server.flushed_url())
    yield RedisOnlineStore(client, "fltest")
    client.close()


def request(i: int, rows: int = 2) -> tuple[pl.DataFrame, OnlineResponse]:
    """Inputs and an online response with every value kind (nulls included) for request i."""
    inputs = pl.DataFrame(
        {
            "carrier": [f"C{i}"] + ["UA"] * (rows - 1),
            "tailnum": [f"N{i}", None][:rows] + ["N9"] * max(rows - 2, 0),
            "scheduled_departure": [T0 + timedelta(hours=k) for k in range(rows)],
            "distance": [100.0 + i + k for k in range(rows)],
        },
        schema_overrides={"scheduled_departure": UTC_US},
    )
    features = pl.DataFrame(
        {
            "delay_mean": [0.5 * i + k if k != 1 else None for k in range(rows)],
            "flights": [i * 10 + k for k in range(rows)],
            "low_visibility": [k % 2 == 0 for k in range(rows)],
            "engine": ["Turbo-fan" if k == 0 else None for k in range(rows)],
            "last_seen": [T0 - timedelta(minutes=i + k) for k in range(rows)],
            "recent": [[1.0, float(i)] if k == 0 else None for k in range(rows)],
        },
        schema={
            "delay_mean": pl.Float64,
            "flights": pl.Int64,
            "low_visibility": pl.Boolean,
            "engine": pl.String,
            "last_seen": UTC_US,
            "recent": pl.List(pl.Float64),
        },
    )
    statuses = {
        name: ["PRESENT" if v is not None else "NULL_VALUE" for v in features[name]]
        for name in features.columns
    }
    statuses["flights"] = ["PRESENT"] + ["NOT_FOUND"] * (rows - 1)
    return inputs, OnlineResponse(features, statuses, {})


def log_one(logger: FeatureLogger, i: int, at: datetime, rows: int = 2) -> bool:
    inputs, response = request(i, rows)
    return logger.log(
        f"req-{i}",
        at,
        at - timedelta(days=1000),
        "svc",
        "v1",
        "delay_model",
        3,
        inputs,
        response,
        np.array([0.25 + i / 1000 + k for k in range(rows)]),
    )


def test_round_trip_exact_values_dtypes_statuses_and_date_partitions(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    for i in range(4):  # requests at 23:59:58, 23:59:59, 00:00:00 and 00:00:01
        log_one(logger, i, T0 + timedelta(seconds=i))
    feature_only = request(9, rows=1)
    logger.log("req-9", T0, T0, "svc", "v1", None, None, *feature_only, None)
    assert store.client.xlen(stream_key("fltest", "svc")) == 5
    results = logger.flush()
    assert [(r.service, r.entries, r.rows) for r in results] == [("svc", 5, 9)]
    assert store.client.xlen(stream_key("fltest", "svc")) == 0  # acknowledged and deleted
    days = sorted(p.name for p in (tmp_path / "data/feature_log/service=svc").iterdir())
    assert days == ["date=2013-06-01", "date=2013-06-02"]

    logs = read_logs(tmp_path, "svc")
    assert logs.height == 9
    assert logs.columns[:10] == [
        "request_id",
        "row",
        "logged_at",
        "feature_time",
        "service",
        "service_version",
        "model",
        "model_version",
        "prediction",
        "degraded",
    ]
    assert logs["degraded"].to_list() == [False] * 9
    assert logs.columns[10:14] == ["carrier", "tailnum", "scheduled_departure", "distance"]
    assert logs.columns[-6:] == [
        "status__delay_mean",
        "status__flights",
        "status__low_visibility",
        "status__engine",
        "status__last_seen",
        "status__recent",
    ]
    schema = logs.schema
    assert schema["row"] == pl.UInt32
    assert schema["logged_at"] == UTC_US
    assert schema["model_version"] == pl.Int64
    assert schema["scheduled_departure"] == UTC_US
    assert schema["last_seen"] == UTC_US
    assert schema["recent"] == pl.List(pl.Float64)
    assert schema["low_visibility"] == pl.Boolean
    assert schema["flights"] == pl.Int64

    # Every value equals what was served, row by row.
    for i in range(4):
        got = logs.filter(pl.col("request_id") == f"req-{i}").sort("row")
        inputs, response = request(i)
        expected = pl.concat([inputs, response.features], how="horizontal")
        assert got.select(expected.columns).equals(expected)
        assert got["prediction"].to_list() == [0.25 + i / 1000 + k for k in range(2)]
        assert got["logged_at"].to_list() == [T0 + timedelta(seconds=i)] * 2
        assert got["feature_time"].to_list() == [T0 + timedelta(seconds=i, days=-1000)] * 2
        assert got["status__flights"].to_list() == ["PRESENT", "NOT_FOUND"]
        assert got["status__delay_mean"].to_list() == ["PRESENT", "NULL_VALUE"]
        assert got["model"].to_list() == ["delay_model"] * 2
        assert got["model_version"].to_list() == [3, 3]
    feature_row = logs.filter(pl.col("request_id") == "req-9").row(0, named=True)
    assert feature_row["model"] is None
    assert feature_row["model_version"] is None
    assert feature_row["prediction"] is None

    # [since, until): the first day only, then the second.
    midnight = datetime(2013, 6, 2, tzinfo=UTC)
    first = read_logs(tmp_path, "svc", until=midnight)
    assert sorted(set(first["request_id"])) == ["req-0", "req-1", "req-9"]
    second = read_logs(tmp_path, "svc", since=midnight)
    assert sorted(set(second["request_id"])) == ["req-2", "req-3"]
    assert read_logs(tmp_path, "other").height == 0


def test_service_version_change_adds_and_removes_columns(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    log_one(logger, 1, T0)
    logger.flush()
    inputs, response = request(2)
    features = response.features.drop("engine").with_columns(new_feature=pl.lit(7, pl.Int32))
    statuses = {k: v for k, v in response.statuses.items() if k != "engine"}
    statuses["new_feature"] = ["PRESENT", "PRESENT"]
    later = T0 + timedelta(seconds=1)
    logger.log(
        "req-2", later, later, "svc", "v2", "m", 4, inputs, OnlineResponse(features, statuses, {}),
        np.array([0.1, 0.2]),
    )  # fmt: skip
    logger.flush()
    logs = read_logs(tmp_path, "svc")
    assert logs.height == 4
    v1 = logs.filter(pl.col("service_version") == "v1")
    v2 = logs.filter(pl.col("service_version") == "v2")
    assert v1["new_feature"].to_list() == [None, None]
    assert v2["new_feature"].to_list() == [7, 7]
    assert v2["engine"].to_list() == [None, None]
    assert v1["engine"].to_list() == ["Turbo-fan", None]
    assert v2["status__engine"].to_list() == [None, None]
    assert logs.columns[-1].startswith("status__")


def test_sampling_is_by_entity_hash_and_stable(store: RedisOnlineStore, tmp_path: Path) -> None:
    repo = Repo.load(ROOT / "feature_repo")  # definitions only: keys of flight_delay
    logger = FeatureLogger(
        tmp_path, store, definitions=repo, sample_rate=0.3, flush_interval_s=None,
        background=False,
    )  # fmt: skip
    empty = OnlineResponse(pl.DataFrame(), {}, {})
    decisions = {}
    for i in range(2000):
        inputs = pl.DataFrame(
            {"distance": [1.0], "carrier": ["UA"], "origin": ["EWR"], "dest": [f"D{i}"],
             "tailnum": [f"N{i}"]}
        )  # fmt: skip
        decisions[i] = logger.log(f"r{i}", T0, T0, "flight_delay", "v", None, None, inputs,
                                  empty, None)  # fmt: skip
        # The key order of the service (carrier, origin, dest, tailnum) is what is hashed.
        assert decisions[i] == sampled(["UA", "EWR", f"D{i}", f"N{i}"], 0.3)
    kept = sum(decisions.values())
    assert 0.27 * 2000 <= kept <= 0.33 * 2000
    assert logger.stats.sampled_out == 2000 - kept
    assert store.client.xlen(stream_key("fltest", "flight_delay")) == kept
    # The same entity gets the same decision every time (other request fields do not matter).
    for i in range(50):
        inputs = pl.DataFrame(
            {"tailnum": [f"N{i}"], "dest": [f"D{i}"], "origin": ["EWR"], "carrier": ["UA"],
             "distance": [float(i)]}
        )  # fmt: skip
        again = logger.log("x", T0, T0, "flight_delay", "v", None, None, inputs, empty, None)
        assert again == decisions[i]
    logger.flush()
    logs = read_logs(tmp_path, "flight_delay")
    assert logs.columns[10:15] == ["carrier", "origin", "dest", "tailnum", "distance"]


def test_crash_between_write_and_ack_rewrites_same_file(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    for i in range(6):
        log_one(logger, i, T0 + timedelta(seconds=i))

    def crash(point: str) -> None:
        raise RuntimeError(f"simulated crash at {point}")

    key = stream_key("fltest", "svc")
    crashing = LogFlusher(tmp_path, store.client, "fltest", consumer="c1", hook=crash)
    with pytest.raises(RuntimeError, match="simulated crash at written"):
        crashing.flush()
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    assert len(written) == 2  # both dates written, nothing acknowledged
    assert store.client.xpending(key, GROUP)["pending"] == 6
    # The same consumer restarts: re-reads its pending entries, rewrites the same files.
    LogFlusher(tmp_path, store.client, "fltest", consumer="c1").flush()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == written
    assert store.client.xpending(key, GROUP)["pending"] == 0
    assert store.client.xlen(key) == 0
    logs = read_logs(tmp_path, "svc")
    assert logs.height == 12
    assert sorted(set(logs["request_id"])) == [f"req-{i}" for i in range(6)]


def test_abandoned_entries_are_claimed_by_another_flusher_and_deduplicated(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    for i in range(3):
        log_one(logger, i, T0)

    def crash(point: str) -> None:
        raise RuntimeError(point)

    dead = LogFlusher(tmp_path, store.client, "fltest", consumer="dead", hook=crash)
    with pytest.raises(RuntimeError):
        dead.flush()
    for i in range(3, 5):  # new entries arrive after the crash
        log_one(logger, i, T0)
    # Smaller batches than the dead flusher's: the reclaimed entries land in other files.
    other = LogFlusher(
        tmp_path, store.client, "fltest", consumer="other", claim_idle_ms=1, batch_size=2
    )
    [result] = other.flush()
    assert result.entries == 5  # 3 reclaimed + 2 new
    files = list(tmp_path.rglob("*.parquet"))
    assert len(files) == 4  # the dead flusher's (3 entries), 2 + 1 reclaimed, 2 new
    raw = pl.concat([pl.read_parquet(f) for f in files])
    assert raw.height == 16  # 3 requests x 2 rows written twice, plus 2 x 2
    logs = read_logs(tmp_path, "svc")
    assert logs.height == 10
    assert logs.select("request_id", "row").is_duplicated().sum() == 0


def test_close_flushes_and_background_thread_flushes(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=0.2, retry_interval_s=0.05)
    log_one(logger, 1, T0)
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while not list(tmp_path.rglob("*.parquet")) and datetime.now(UTC) < deadline:
        logger._stop.wait(0.05)
    assert read_logs(tmp_path, "svc")["request_id"].to_list() == ["req-1", "req-1"]
    log_one(logger, 2, T0)
    logger.close()  # graceful shutdown: the final flush writes req-2
    assert read_logs(tmp_path, "svc")["request_id"].unique().sort().to_list() == ["req-1", "req-2"]
    assert store.client.xlen(stream_key("fltest", "svc")) == 0


def test_undecodable_entries_go_to_dead_letter_stream(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    log_one(logger, 1, T0)
    key = stream_key("fltest", "svc")
    store.client.xadd(key, {"d": b"\x00garbage"})
    [result] = logger.flush()
    assert (result.entries, result.bad) == (1, 1)
    dead: Any = store.client.xrange(f"{key}:dead")
    assert len(dead) == 1
    assert dead[0][1][b"d"] == b"\x00garbage"
    assert read_logs(tmp_path, "svc").height == 2
    assert logger.flusher.services() == ["svc"]  # the dead-letter stream is no service


def test_logs_flush_and_show_commands(
    redis_server: RedisProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_server.flushed_url()
    client = connect(url)
    store = RedisOnlineStore(client, project_name(tmp_path))  # the project the CLI derives
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False, log=None)
    for i in range(3):
        log_one(logger, i, T0 + timedelta(seconds=i))
    assert main(["logs", "flush", "--repo", str(tmp_path), "--redis-url", url]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["services"]["svc"]["requests"] == 3
    assert summary["services"]["svc"]["rows"] == 6
    assert len(summary["services"]["svc"]["files"]) == 2  # 2013-06-01 and 2013-06-02
    argv = ["logs", "show", "--repo", str(tmp_path), "--service", "svc", "--json"]
    assert main([*argv, "--since", "2013-06-02T00:00:00"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["request_id"], r["row"]) for r in rows] == [("req-2", 0), ("req-2", 1)]
    assert rows[0]["flights"] == 20
    assert rows[0]["status__flights"] == "PRESENT"
    logger.close()
    client.close()


def test_a_feature_changing_type_between_versions_in_one_batch(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    """A feature that is a float under v1 and a list under v2, both unflushed: one file per
    layout, and the background flusher keeps working."""
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    log_one(logger, 1, T0)
    inputs, response = request(2)
    features = response.features.with_columns(delay_mean=pl.lit([1.0, 2.0]))  # now a list
    later = T0 + timedelta(milliseconds=1)
    logger.log(
        "req-2", later, later, "svc", "v2", "m", 4, inputs,
        OnlineResponse(features, response.statuses, {}), np.array([0.1, 0.2]),
    )  # fmt: skip
    results = logger.flush()
    assert sum(r.entries for r in results) == 2
    files = sorted((tmp_path / "data" / "feature_log").rglob("*.parquet"))
    assert len(files) == 2
    kinds = sorted(str(pl.read_parquet(f).schema["delay_mean"]) for f in files)
    assert kinds == ["Float64", "List(Float64)"]
    assert store.client.xlen(stream_key("fltest", "svc")) == 0
    # Read back together: the column that changed type is text in both versions' rows.
    logs = read_logs(tmp_path, "svc")
    assert logs.schema["delay_mean"] == pl.String
    assert logs["delay_mean"].to_list() == ["0.5", None, "[1.0, 2.0]", "[1.0, 2.0]"]


def test_flusher_recreates_its_group_after_the_stream_is_recreated(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    """Redis restarted empty (or the key was evicted) and a logger's XADD made the stream
    again, without the consumer group: the next flush creates it and writes the entries."""
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    log_one(logger, 1, T0)
    assert sum(r.entries for r in logger.flush()) == 1
    store.client.delete(stream_key("fltest", "svc"))
    log_one(logger, 2, T0)
    assert sum(r.entries for r in logger.flush()) == 1
    assert sorted(read_logs(tmp_path, "svc")["request_id"].unique()) == ["req-1", "req-2"]


def test_reused_client_request_ids_are_not_collapsed(
    store: RedisOnlineStore, tmp_path: Path
) -> None:
    """Three distinct requests with the same client-chosen id are three logged requests;
    a replayed copy of one entry (at-least-once) is still dropped."""
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    inputs, response = request(1, rows=1)
    for k in range(3):
        at = T0 + timedelta(milliseconds=k)
        logger.log("1", at, at, "svc", "v1", "m", 1, inputs, response, np.array([0.5]))
    logger.flush()
    copy = next((tmp_path / "data" / "feature_log").rglob("*.parquet"))
    pl.read_parquet(copy).write_parquet(copy.with_name("copy-" + copy.name))
    logs = read_logs(tmp_path, "svc")
    assert logs["request_id"].to_list() == ["1", "1", "1"]
    assert logs["logged_at"].n_unique() == 3


def test_read_logs_selects_partitions_by_utc_date(store: RedisOnlineStore, tmp_path: Path) -> None:
    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False)
    log_one(logger, 1, T0)  # 23:59:58 UTC on June 1st, rows in the date=2013-06-01 partition
    logger.flush()
    india = timezone(timedelta(hours=5, minutes=30))
    since = (T0 - timedelta(seconds=1)).astimezone(india)  # 05:29:57 on June 2nd there
    assert read_logs(tmp_path, "svc", since=since).height == 2
    assert read_logs(tmp_path, "svc", until=since).height == 0
