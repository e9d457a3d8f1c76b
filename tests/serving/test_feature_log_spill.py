"""Feature log while Redis is down: log() spills to disk quickly and never raises; the spill is
replayed when Redis is back; spill files of crashed processes are replayed; nothing is lost."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import numpy as np
import polars as pl
import pytest

from featurelib.online.connection import connect
from featurelib.online.read import OnlineResponse
from featurelib.online.store import RedisOnlineStore
from featurelib.online.testing import RedisProcess
from serving.feature_log import FeatureLogger, read_logs, spill_dir
from serving.log_flush import encode_column, encode_entry, stream_key

T0 = datetime(2013, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def persistent_redis() -> Iterator[RedisProcess]:
    """A dedicated server with an append-only file, so entries survive its restart."""
    with RedisProcess(args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        yield server


def log_request(logger: FeatureLogger, i: int) -> None:
    inputs = pl.DataFrame({"carrier": [f"C{i}"], "distance": [float(i)]})
    features = pl.DataFrame({"delay": [i / 4], "flights": [i]})
    response = OnlineResponse(features, {"delay": ["PRESENT"], "flights": ["PRESENT"]}, {})
    at = T0 + timedelta(milliseconds=i)
    logger.log(f"r{i}", at, at, "svc", "v1", "m", 1, inputs, response, np.array([i / 100]))


def wait_for(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_redis_down_spills_fast_and_replays_everything_once(
    persistent_redis: RedisProcess, tmp_path: Path
) -> None:
    client = connect(persistent_redis.url)
    store = RedisOnlineStore(client, "spilltest")
    logger = FeatureLogger(
        tmp_path, store, flush_interval_s=None, retry_interval_s=0.1, log=None
    )  # background replay on, periodic flushing off
    for i in range(10):
        log_request(logger, i)
    assert logger.stats.logged == 10

    persistent_redis.stop()
    durations = []
    for i in range(10, 110):
        started = time.perf_counter()
        log_request(logger, i)  # must not raise
        durations.append(time.perf_counter() - started)
    assert logger.stats.spilled == 100
    assert max(durations) < 0.5, f"slowest log() took {max(durations):.3f}s"
    assert sum(durations) < 5.0
    spilled = list(spill_dir(tmp_path).glob("*.spill"))
    assert len(spilled) == 1

    persistent_redis.start()  # same port, same append-only file
    wait_for(lambda: logger.stats.replayed == 100 and not any(spill_dir(tmp_path).iterdir()))
    log_request(logger, 110)  # straight to Redis again
    assert logger.stats.logged == 11
    logger.close()  # final flush

    logs = read_logs(tmp_path, "svc")
    assert logs["request_id"].to_list() == [f"r{i}" for i in range(111)]
    assert logs["flights"].to_list() == list(range(111))
    assert logs["prediction"].to_list() == [i / 100 for i in range(111)]
    raw = pl.concat([pl.read_parquet(p) for p in tmp_path.rglob("*.parquet")])
    assert raw.height == 111  # exactly once, even before de-duplication
    client.close()


def test_spill_of_a_crashed_process_is_replayed_torn_record_skipped(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    client = connect(redis_server.flushed_url())
    store = RedisOnlineStore(client, "spilltest2")
    key = stream_key("spilltest2", "svc")
    directory = spill_dir(tmp_path)
    directory.mkdir(parents=True)
    records = b""
    for i in range(3):
        data = encode_entry(
            request_id=f"old{i}",
            logged_at_us=1_370_000_000_000_000 + i,
            feature_time_us=1_370_000_000_000_000,
            service="svc",
            service_version="v0",
            model=None,
            model_version=None,
            rows=1,
            predictions=None,
            columns=[encode_column(pl.Series("carrier", ["UA"]))],
        )
        record = msgpack.packb([key, data], use_bin_type=True)
        records += struct.pack(">I", len(record)) + record
    torn = struct.pack(">I", 500) + b"\x93partial"  # a crash in the middle of a write
    (directory / "1-otherhost-999-0.spill").write_bytes(records + torn)

    logger = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False, log=None)
    assert logger.replay() == 3
    assert not list(directory.glob("*.spill"))
    logger.close()
    logs = read_logs(tmp_path, "svc")
    assert logs["request_id"].to_list() == ["old0", "old1", "old2"]
    assert logs["logged_at"].to_list()[0] == datetime.fromtimestamp(1_370_000_000, UTC)
    client.close()


def test_spill_file_held_by_a_live_process_is_left_alone(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    client = connect(redis_server.flushed_url())
    store = RedisOnlineStore(client, "spilltest3")
    writer = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False, log=None)
    writer._healthy = False  # as after a failed XADD: this logger now writes to its spill file
    log_request(writer, 1)
    other = FeatureLogger(tmp_path, store, flush_interval_s=None, background=False, log=None)
    assert other.replay() == 0  # the writer holds its file's lock
    assert len(list(spill_dir(tmp_path).glob("*.spill"))) == 1
    assert writer.replay() == 1  # Redis answers: the writer rotates and replays its own file
    assert client.xlen(stream_key("spilltest3", "svc")) == 1
    writer.close()
    other.close()
    assert read_logs(tmp_path, "svc")["request_id"].to_list() == ["r1"]
    client.close()
