"""Faults: the online store stopping, hanging and coming back while `featurelib serve` runs
(503 within the request deadline, never a hang; recovery without restarting the service), and
the `defaults` fallback of the core."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import polars as pl
import pytest
from serve_support import (
    MODEL,
    ROWS,
    ServerProcess,
    expected_predictions,
    infer_body,
    materialize,
)

from featurelib.online.live import LiveDefinitions
from featurelib.online.project import project_name
from featurelib.online.server import free_port
from featurelib.online.store import RedisOnlineStore
from featurelib.online.testing import RedisProcess
from serving.config import ServeConfig
from serving.core import ScoringCore
from serving.proto import grpc_predict_v2_pb2 as pb
from serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from serving.registry import ModelRegistry
from serving.server import store_client

DEADLINE = 0.5
SLACK = 0.5  # HTTP, JSON and scheduling on a busy CI machine


@pytest.fixture
def own_redis(serving_repo: Path) -> Iterator[RedisProcess]:
    """A redis-server of this test only (it gets stopped and paused), with the online data."""
    with RedisProcess() as server:
        materialize(serving_repo, server.url)
        yield server


def timed_infer(http: httpx.Client) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = http.post(f"/v2/models/{MODEL}/infer", json=infer_body(ROWS[:1]))
    return response, time.perf_counter() - started


def test_store_down_gives_503_within_the_deadline_and_recovers(
    serving_repo: Path,
    own_redis: RedisProcess,
    trained_registry: Path,
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        serving_repo,
        redis_url=own_redis.url,
        registry_url=f"sqlite:///{trained_registry}",
        config={"deadline_s": DEADLINE},
        log_dir=tmp_path,
    )
    expected = expected_predictions(serving_repo, own_redis.url, trained_registry, 1, ROWS[:1])
    with server, httpx.Client(base_url=server.base_url, timeout=10) as http:
        ok, _ = timed_infer(http)
        assert ok.status_code == 200
        assert ok.json()["outputs"][0]["data"] == pytest.approx(expected, abs=1e-12)

        own_redis.stop()  # refused connections
        for _ in range(3):
            response, seconds = timed_infer(http)
            assert response.status_code == 503
            assert "online store did not answer" in response.json()["error"]
            assert seconds < DEADLINE + SLACK
        assert http.get("/v2/health/live").status_code == 200
        with grpc.insecure_channel(server.grpc_address) as channel:
            request = pb.ModelInferRequest(model_name=MODEL)
            for name, value in ROWS[0].items():
                tensor = request.inputs.add(name=name, shape=[1])
                tensor.datatype = "FP64" if isinstance(value, float) else "BYTES"
                if isinstance(value, float):
                    tensor.contents.fp64_contents.append(value)
                else:
                    tensor.contents.bytes_contents.append(value.encode())
            with pytest.raises(grpc.RpcError) as unavailable:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=5)
            assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE

        own_redis.restart()  # same port, empty: the service must reconnect by itself
        materialize(serving_repo, own_redis.url)
        recovered, _ = timed_infer(http)
        assert recovered.status_code == 200, recovered.text
        assert recovered.json()["outputs"][0]["data"] == pytest.approx(expected, abs=1e-12)

        pid = own_redis.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a hung Redis: only the socket timeouts can answer
        try:
            response, seconds = timed_infer(http)
            assert response.status_code == 503
            assert seconds < DEADLINE + SLACK
        finally:
            os.kill(pid, signal.SIGCONT)
        recovered, _ = timed_infer(http)
        assert recovered.status_code == 200
    assert server.process.returncode == 0, server.output()


def test_defaults_when_the_store_is_unavailable(serving_repo: Path, trained_registry: Path) -> None:
    config = replace(
        ServeConfig(deadline_s=DEADLINE),
        on_store_unavailable="defaults",
        default_values={"temp": 15.0, "carrier_flights_7d": 100},
    )
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    store = RedisOnlineStore(store_client(dead, serving_repo, DEADLINE), project_name(serving_repo))
    with (
        ModelRegistry.open(f"sqlite:///{trained_registry}") as registry,
        LiveDefinitions(serving_repo) as definitions,
    ):
        core = ScoringCore(
            serving_repo, store=store, registry=registry, definitions=definitions, config=config
        )
        try:
            started = time.perf_counter()
            result = core.infer(MODEL, pl.DataFrame(ROWS))
            assert time.perf_counter() - started < DEADLINE + SLACK
        finally:
            core.close()
    assert result.degraded
    assert result.model_version == 1
    assert result.response.features["temp"].to_list() == [15.0] * 3
    assert result.response.features["carrier_flights_7d"].to_list() == [100] * 3
    assert result.response.statuses["temp"] == ["NOT_FOUND"] * 3
    assert len(result.predictions) == 3
    assert ((result.predictions > 0) & (result.predictions < 1)).all()


def test_feature_log_loses_nothing_across_a_redis_outage(
    serving_repo: Path, trained_registry: Path, tmp_path: Path
) -> None:
    """Requests served before, during (with default feature values, spilled to disk) and after
    an outage of the Redis that buffers the feature log are all in the flushed log, once."""
    from serving.feature_log import read_logs

    with RedisProcess(args=["--appendonly", "yes", "--appendfsync", "always"]) as redis_server:
        materialize(serving_repo, redis_server.url)
        server = ServerProcess(
            serving_repo,
            redis_url=redis_server.url,
            registry_url=f"sqlite:///{trained_registry}",
            config={"deadline_s": DEADLINE, "on_store_unavailable": "defaults"},
            log_dir=tmp_path,
        )
        served: list[str] = []
        with server, httpx.Client(base_url=server.base_url, timeout=10) as http:

            def score(request_id: str) -> httpx.Response:
                body = infer_body(ROWS[:1], request_id=request_id)
                response = http.post(f"/v2/models/{MODEL}/infer", json=body)
                assert response.status_code == 200, response.text
                served.append(request_id)
                return response

            for i in range(5):
                score(f"outage-before-{i}")
            redis_server.stop()  # graceful: the append-only file keeps the unflushed entries
            for i in range(4):
                degraded = score(f"outage-during-{i}")
                assert degraded.json()["parameters"].get("degraded") == "store_unavailable"
            redis_server.start()  # same port and directory: the buffered stream is back
            deadline = time.monotonic() + 20
            while True:  # the spilled entries are replayed once the logger sees Redis again
                try:
                    score(f"outage-after-{len(served)}")
                    break
                except AssertionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            for i in range(5):
                score(f"outage-after-{i}")
        assert server.process.returncode == 0, server.output()
    logged = read_logs(serving_repo, "flight_delay")
    ours = logged.filter(pl.col("request_id").str.starts_with("outage-"))
    assert sorted(ours["request_id"].to_list()) == sorted(served)
    during = ours.filter(pl.col("request_id").str.starts_with("outage-during"))
    assert during["temp"].to_list() == [None] * 4  # served with defaults (none configured)
    assert during["degraded"].to_list() == [True] * 4  # so the skew monitor leaves them out
    assert not ours.filter(pl.col("degraded").not_())["request_id"].str.contains("during").any()
