"""The demo's day of live traffic, replayed through the real scoring service.

    featurelib demo-serve --repo feature_repo --start 2013-12-30T00:00:00 --end 2013-12-31T00:00:00

The online store must hold everything up to `start` (`featurelib materialize 1970-01-01 START`)
and the registry a champion of `--model` (`featurelib train ... --champion xgboost`). Then:

1. `featurelib serve --allow-feature-time` starts as a real process on free ports.
2. Time advances in steps of `--step`. At each step end t, the step's source events (flights
   that landed, weather observations) are applied to the online store, as the ingestion
   pipeline would (online only: the batch sources already hold them, so logging them again
   would count them twice offline); then every flight whose prediction time falls in the step
   is scored at feature time t, one request per flight, alternating REST and gRPC (`--grpc-every`).
3. The service is stopped with SIGTERM, which flushes its feature log to Parquet.
4. The logged rows are batch-scored (`serving.batch.score_batch`) at their logged feature time
   with the version that answered each, and compared with the online predictions.

Because nothing later than t is in the store when requests are scored at t, the served values
are exactly what the offline engine computes at t: the skew report on this traffic shows no
mismatch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from featurelib.errors import FeaturelibError
from featurelib.online.api import open_store
from featurelib.online.live import load_serving_repo
from featurelib.online.push import Pusher
from featurelib.online.server import free_port
from featurelib.sources import BatchSource
from serving.errors import ServingError

Progress = Callable[[str], None]
REQUEST_COLUMNS = ("carrier", "origin", "dest", "tailnum", "scheduled_departure", "distance")
EVENT_SOURCES = ("flights", "weather")


@dataclass
class DemoSummary:
    """What the replay served and how its online predictions compare with batch scoring."""

    requests: int = 0
    by_transport: dict[str, int] = field(default_factory=dict)
    by_version: dict[int, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    logged_rows: int = 0
    batch_compared: int = 0
    batch_max_abs_diff: float = 0.0


RESET_PATHS = ("_push_log", "feature_log", "skew_reports", "models.db", "models.db-wal",
               "models.db-shm", "demo-serve.log")  # fmt: skip


def reset_demo(root: Path, *, redis_url: str | None = None) -> list[str]:
    """Clear what a demo run leaves behind: the online store's keys of the repo's project (on
    the embedded server or `redis_url`), the push log, feature log, model registry and reports."""
    import shutil

    from featurelib.online.connection import connect
    from featurelib.online.project import project_name

    root = root.resolve()
    done = []
    client = connect(redis_url, repo_root=root)
    removed = 0
    batch: list[Any] = []
    for key in client.scan_iter(match=f"fl:{project_name(root)}:*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            removed += int(client.unlink(*batch))
            batch = []
    if batch:
        removed += int(client.unlink(*batch))
    done.append(f"removed {removed} online store keys of project {project_name(root)!r}")
    for name in RESET_PATHS:
        path = root / "data" / name
        if path.is_dir():
            shutil.rmtree(path)
            done.append(f"removed {path}")
        elif path.exists():
            path.unlink()
            done.append(f"removed {path}")
    return done


def _launch(root: Path, registry: str | None, redis_url: str | None, log: Path) -> tuple[Any, ...]:
    http_port, grpc_port = free_port(), free_port()
    executable = Path(sys.executable).with_name("featurelib")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "featurelib.cli"]
    command += [
        "serve", "--repo", str(root), "--http-port", str(http_port),
        "--grpc-port", str(grpc_port), "--allow-feature-time",
    ]  # fmt: skip
    if registry:
        command += ["--registry", registry]
    if redis_url:
        command += ["--redis-url", redis_url]
    sink = log.open("wb")
    process = subprocess.Popen(command, stdout=sink, stderr=sink, env=dict(os.environ))
    return process, sink, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServingError(
                f"featurelib serve exited with status {process.returncode} before it was ready",
                where="demo-serve",
                hint=f"its output is in {log}",
            )
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServingError(
        f"featurelib serve was not ready after {timeout:g} s", where="demo-serve", hint=f"see {log}"
    )


def _events(root: Path, source: BatchSource, start: datetime, end: datetime) -> pl.DataFrame:
    from featurelib.offline.io import read_source

    ts = source.timestamp_field
    frame = read_source(source, root).filter((pl.col(ts) > start) & (pl.col(ts) <= end))
    return frame.drop("__order", strict=False).sort(ts).collect()


def _rest_body(row: dict[str, Any], at: datetime, request_id: str) -> dict[str, Any]:
    def tensor(name: str, datatype: str, value: Any) -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": [1], "data": [value]}

    inputs = [tensor(k, "BYTES", row[k]) for k in ("carrier", "origin", "dest", "tailnum")]
    inputs.append(tensor("scheduled_departure", "BYTES", row["scheduled_departure"].isoformat()))
    inputs[-1]["parameters"] = {"content_type": "datetime"}
    inputs.append(tensor("distance", "FP64", row["distance"]))
    return {
        "id": request_id,
        "parameters": {"content_type": "pd", "feature_time": at.isoformat()},
        "inputs": inputs,
    }


def _grpc_request(model: str, row: dict[str, Any], at: datetime, request_id: str) -> Any:
    from serving.proto import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.parameters["content_type"].string_param = "pd"
    request.parameters["feature_time"].string_param = at.isoformat()
    for name in ("carrier", "origin", "dest", "tailnum"):
        tensor = request.inputs.add(name=name, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append((row[name] or "").encode())
    tensor = request.inputs.add(name="scheduled_departure", datatype="BYTES", shape=[1])
    tensor.parameters["content_type"].string_param = "datetime"
    tensor.contents.bytes_contents.append(row["scheduled_departure"].isoformat().encode())
    tensor = request.inputs.add(name="distance", datatype="FP64", shape=[1])
    tensor.contents.fp64_contents.append(row["distance"])
    return request


def replay_traffic(
    root: str | Path,
    *,
    start: datetime,
    end: datetime,
    step: timedelta,
    model: str = "flight_delay",
    registry_url: str | None = None,
    redis_url: str | None = None,
    grpc_every: int = 2,
    progress: Progress | None = None,
) -> DemoSummary:
    """Serve the flights predicted in (start, end] through a real `featurelib serve` process
    (module docstring), then compare its logged predictions with batch scoring."""
    import grpc

    from serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    say = progress or (lambda _: None)
    root = Path(root).resolve()
    if end <= start or step <= timedelta(0):
        raise FeaturelibError(
            f"empty replay window ({start.isoformat()}, {end.isoformat()}] or step {step}",
            where="demo-serve",
            hint="END must be after START and STEP positive",
        )
    repo = load_serving_repo(root)
    store = open_store(repo, redis_url)
    pushers = {name: Pusher(store, repo, name, owner="demo-serve") for name in EVENT_SOURCES}
    events = {name: _events(root, pushers[name].source, start, end) for name in EVENT_SOURCES}
    spine = (
        pl.read_parquet(root / "data" / "spine.parquet")
        .filter((pl.col("event_timestamp") > start) & (pl.col("event_timestamp") <= end))
        .sort("event_timestamp")
    )
    say(
        f"replaying {spine.height} flights predicted in ({start:%Y-%m-%d %H:%M}, "
        f"{end:%Y-%m-%d %H:%M}] UTC with "
        + ", ".join(f"{f.height} {n} events" for n, f in events.items())
    )
    log = root / "data" / "demo-serve.log"
    process, sink, url, grpc_target = _launch(root, registry_url, redis_url, log)
    summary = DemoSummary()
    online: dict[str, tuple[int, float]] = {}
    latencies: dict[str, list[float]] = {"rest": [], "grpc": []}
    try:
        _wait_ready(process, url, log, timeout=180)
        say(f"featurelib serve is ready: REST {url}, gRPC {grpc_target} (log: {log})")
        with (
            httpx.Client(base_url=url, timeout=30) as http,
            grpc.insecure_channel(grpc_target) as channel,
        ):
            stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
            t_prev = start
            while t_prev < end:
                t = min(t_prev + step, end)
                for name, frame in events.items():
                    ts = pushers[name].source.timestamp_field
                    due = frame.filter((pl.col(ts) > t_prev) & (pl.col(ts) <= t))
                    if due.height:
                        batch, errors = pushers[name].validate(due)
                        if errors:
                            raise FeaturelibError(
                                f"demo {name} events refused: {errors[0]}", where="demo-serve"
                            )
                        pushers[name].apply(batch, now=t, offline=False)
                flights = spine.filter(
                    (pl.col("event_timestamp") > t_prev) & (pl.col("event_timestamp") <= t)
                )
                for row in flights.select(*REQUEST_COLUMNS, "flight_id").iter_rows(named=True):
                    request_id = f"demo-{row['flight_id']}"
                    transport = "grpc" if summary.requests % grpc_every == 1 else "rest"
                    began = time.perf_counter()
                    if transport == "grpc":
                        answer = stub.ModelInfer(_grpc_request(model, row, t, request_id))
                        version = int(answer.model_version)
                        prediction = float(answer.outputs[0].contents.fp64_contents[0])
                    else:
                        response = http.post(
                            f"/v2/models/{model}/infer", json=_rest_body(row, t, request_id)
                        )
                        if response.status_code != 200:
                            raise ServingError(
                                f"infer answered {response.status_code}: {response.text}",
                                where="demo-serve",
                            )
                        body = response.json()
                        version = int(body["model_version"])
                        prediction = float(body["outputs"][0]["data"][0])
                    latencies[transport].append((time.perf_counter() - began) * 1000)
                    online[request_id] = (version, prediction)
                    summary.requests += 1
                    summary.by_transport[transport] = summary.by_transport.get(transport, 0) + 1
                    summary.by_version[version] = summary.by_version.get(version, 0) + 1
                    if len(summary.samples) < 6:
                        summary.samples.append(
                            {"request_id": request_id, "transport": transport, "at": t, **row}
                            | {"model_version": version, "prediction": prediction}
                        )
                if flights.height:
                    say(f"  {t:%Y-%m-%d %H:%M} UTC: scored {flights.height} flights")
                t_prev = t
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # graceful: drains and flushes the feature log
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        sink.close()
    for transport, values in latencies.items():
        if values:
            summary.latency_ms[f"{transport}_p50"] = float(np.percentile(values, 50))
            summary.latency_ms[f"{transport}_p99"] = float(np.percentile(values, 99))
    _compare_with_batch(root, model, registry_url, online, summary, say)
    return summary


def _compare_with_batch(
    root: Path,
    model: str,
    registry_url: str | None,
    online: dict[str, tuple[int, float]],
    summary: DemoSummary,
    say: Progress,
) -> None:
    """Batch-score the logged rows at their logged feature time with the version that answered."""
    from serving.batch import score_batch
    from serving.feature_log import read_logs
    from serving.registry import ModelRegistry

    logs = read_logs(root, _service_of(root, model, registry_url))
    logs = logs.filter(pl.col("request_id").is_in(list(online)))
    summary.logged_rows = logs.height
    if logs.is_empty():
        return
    worst = 0.0
    with ModelRegistry.open(registry_url, repo_root=root) as registry:
        for (version,), rows in logs.group_by("model_version"):
            spine = rows.select(
                "request_id", *REQUEST_COLUMNS, pl.col("feature_time").alias("event_timestamp")
            )
            scored = score_batch(root, f"{model}@{version}", spine, registry)
            served = np.array([online[r][1] for r in scored["request_id"]])
            worst = max(worst, float(np.max(np.abs(scored["prediction"].to_numpy() - served))))
            summary.batch_compared += scored.height
    summary.batch_max_abs_diff = worst
    say(
        f"batch scoring of the {summary.batch_compared} logged rows at their feature time: "
        f"largest |online - batch| = {worst:.3g}"
    )


def _service_of(root: Path, model: str, registry_url: str | None) -> str:
    from serving.registry import ModelRegistry

    with ModelRegistry.open(registry_url, repo_root=root) as registry:
        return registry.resolve(model, "champion").service
