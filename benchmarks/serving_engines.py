"""Set-up, load clients and the floor of `serving.py` (see its docstring).

Each engine's client runs in its own worker process (`engine_worker`), started once and driven
by the coordinator over a pipe: `("case", name, size)` prepares the requests of a case (and
warms up), `("run", concurrency, lo, hi)` sends requests `lo..hi` with `concurrency` clients,
each keeping at most one request in flight, and answers with the latency of every request.

Clients (the cheapest available, the same for every HTTP engine): one asyncio event loop
(uvloop) per worker with one keep-alive TCP connection per concurrent client, requests written
as prepared bytes and answers read by Content-Length; gRPC: `grpc.aio` with one channel and
prepared `ModelInferRequest` messages. A request counts as failed unless it answers 200 (gRPC
OK) with the expected number of predictions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODEL = "flight_delay"
SERVICE = "flight_delay"
# The read time: the online store holds the demo data up to READ_AT (materialized untimed),
# and both servers read at READ_AT (featurelib: `--now`, its clock then advances in real time;
# Feast: the plugin's fixed `read_at`). 12:20 is mid-hop, so a run of under 40 minutes never
# crosses an hourly tile edge and both read the same values.
READ_AT = datetime(2013, 12, 31, 12, 20, tzinfo=UTC)
# Requests: real spine rows (flights departing around the read time).
ROWS_FROM = datetime(2013, 12, 31, 11, tzinfo=UTC)
ROWS_UNTIL = datetime(2013, 12, 31, 23, tzinfo=UTC)
KEYS = ("carrier", "origin", "dest", "tailnum")
REQUEST_FIELDS = ("scheduled_departure", "distance")
OIP_TYPES = {"distance": "FP64"}  # every other input travels as BYTES (text)
BIN = Path(sys.executable).parent
REPO_FILES = ("definitions.py", "feature_store.yaml", "_feast_objects.py")


# --------------------------------------------------------------------------------------------
# Set-up (untimed)
# --------------------------------------------------------------------------------------------


def run_cli(argv: Sequence[str], log: Path, cwd: Path | None = None) -> float:
    """Run a CLI step; its output goes to `log`. Returns the seconds it took."""
    started = time.perf_counter()
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(argv)}\n")
        sink.flush()
        done = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd, env=clean_env())
    if done.returncode:
        tail = log.read_text(errors="replace")[-2000:]
        raise SystemExit(f"setup step failed ({done.returncode}): {' '.join(argv)}\n{tail}")
    return time.perf_counter() - started


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FEATURELIB_", "REDIS"))}


def write_store_yaml(repo: Path, source: Path, redis_url: str) -> None:
    """feature_store.yaml pointing Feast's online store (featurelib's plugin) at this run's
    Redis, reading at READ_AT."""
    text = source.read_text()
    marker = "  type: featurelib.feast.online_store.FeaturelibOnlineStore\n"
    if marker not in text:
        raise SystemExit(f"{source}: no featurelib online store section to configure")
    extra = f"  redis_url: {redis_url}\n  read_at: {READ_AT.isoformat()}\n"
    (repo / "feature_store.yaml").write_text(text.replace(marker, marker + extra))


def ensure_repo(
    source: Path, root: Path, redis_url: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """The cached benchmark repo under `root` (demo data, training set, trained model, Feast
    registry), built on first use; every run re-points it at this run's Redis."""
    repo = root / "repo"
    log = root / "setup.log"
    stamp = repo / "data" / ".bench_ready"
    root.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    fresh = not stamp.exists() or any(
        (source / n).stat().st_mtime > stamp.stat().st_mtime for n in REPO_FILES
    )
    if fresh:
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        for name in REPO_FILES:
            shutil.copy(source / name, repo / name)
    write_store_yaml(repo, source / "feature_store.yaml", redis_url)
    fl = str(BIN / "featurelib")
    if fresh:
        say("setup: demo data, training set, feast apply, training (cached afterwards)")
        steps["demo_data_s"] = run_cli([fl, "demo-data", "--repo", str(repo)], log)
        data = repo / "data"
        steps["training_set_s"] = run_cli(
            [fl, "training-set", "--repo", str(repo), "--service", SERVICE,
             "--spine", str(data / "spine.parquet"), "--out", str(data / "training_set.parquet")],
            log,
        )  # fmt: skip
        steps["feast_apply_s"] = run_cli([str(BIN / "feast"), "apply"], log, cwd=repo)
        steps["train_s"] = run_cli(
            [fl, "train", "--repo", str(repo), "--service", SERVICE,
             "--spine", str(data / "spine.parquet"), "--label", "is_delayed", "--model", MODEL,
             "--training-set", str(data / "training_set.parquet"),
             "--champion", "xgboost", "--challenger", "sklearn",
             "--registry", registry_url(repo)],
            log,
        )  # fmt: skip
        stamp.touch()
    say("setup: materializing the demo data up to the read time into the run's Redis")
    steps["materialize_s"] = run_cli(
        [fl, "materialize", "1970-01-01T00:00:00", READ_AT.isoformat(), "--repo", str(repo),
         "--redis-url", redis_url],
        log,
    )  # fmt: skip
    return {"repo": repo, "fresh": fresh, "steps": {k: round(v, 1) for k, v in steps.items()}}


def registry_url(repo: Path) -> str:
    return f"sqlite:///{repo / 'data' / 'models.db'}"


def request_rows(repo: Path) -> list[dict[str, Any]]:
    """The entity rows requests are drawn from: real spine rows around the read time."""
    import polars as pl

    spine = pl.read_parquet(repo / "data" / "spine.parquet")
    # Rows with a null key (a few flights have no tailnum) are left out: Feast's feature server
    # answers them with HTTP 500 (its entity de-duplication sorts key values and fails on a
    # null), which would count as failures and fast answers of the Feast pipeline.
    rows = (
        spine.filter(pl.col("event_timestamp").is_between(ROWS_FROM, ROWS_UNTIL))
        .drop_nulls(list(KEYS))
        .sort("flight_id")
    )
    out = []
    for row in rows.select(*KEYS, *REQUEST_FIELDS).iter_rows(named=True):
        row["scheduled_departure"] = row["scheduled_departure"].isoformat()
        out.append(row)
    return out


def batches(rows: list[dict[str, Any]], size: int, count: int) -> list[list[dict[str, Any]]]:
    """`count` requests of `size` consecutive rows (cycling through the pool)."""
    n = len(rows)
    return [[rows[(i * size + j) % n] for j in range(size)] for i in range(count)]


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def start_featurelib(repo: Path, redis_url: str, http: int, grpc: int, log: Path) -> Any:
    argv = [
        str(BIN / "featurelib"), "serve", "--repo", str(repo), "--http-port", str(http),
        "--grpc-port", str(grpc), "--registry", registry_url(repo), "--redis-url", redis_url,
        "--now", READ_AT.isoformat(),
    ]  # fmt: skip
    if os.environ.get("BENCH_SERVE_CONFIG"):
        argv += ["--config", os.environ["BENCH_SERVE_CONFIG"]]
    sink = log.open("w")
    return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=clean_env())


def start_feast(repo: Path, port: int, log: Path) -> Any:
    # Feast's defaults (1 worker), access log off as featurelib's.
    argv = [str(BIN / "feast"), "serve", "-p", str(port), "--no-access-log"]
    sink = log.open("w")
    return subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, cwd=repo, env=clean_env())


def wait_http(port: int, path: str, proc: Any, log: Path, timeout: float = 90.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready after {timeout}s")


def process_tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


# --------------------------------------------------------------------------------------------
# Request payloads
# --------------------------------------------------------------------------------------------


def oip_body(rows: list[dict[str, Any]]) -> bytes:
    inputs = [
        {
            "name": name,
            "datatype": OIP_TYPES.get(name, "BYTES"),
            "shape": [len(rows)],
            "data": [row[name] for row in rows],
        }
        for name in (*KEYS, *REQUEST_FIELDS)
    ]
    return json.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs}).encode()


def feast_body(rows: list[dict[str, Any]]) -> bytes:
    # Feast takes request-source fields (used by on-demand views) among the entities.
    entities = {name: [row[name] for row in rows] for name in (*KEYS, *REQUEST_FIELDS)}
    return json.dumps({"feature_service": SERVICE, "entities": entities}).encode()


def http_request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def grpc_request(rows: list[dict[str, Any]]) -> Any:
    from serving.proto import grpc_predict_v2_pb2 as pb

    tensors = []
    for name in (*KEYS, *REQUEST_FIELDS):
        values = [row[name] for row in rows]
        if name in OIP_TYPES:
            contents = pb.InferTensorContents(fp64_contents=values)
        else:
            contents = pb.InferTensorContents(
                bytes_contents=[("" if v is None else str(v)).encode() for v in values]
            )
        datatype = OIP_TYPES.get(name, "BYTES")
        tensors.append(
            pb.ModelInferRequest.InferInputTensor(
                name=name, datatype=datatype, shape=[len(rows)], contents=contents
            )
        )
    return pb.ModelInferRequest(model_name=MODEL, inputs=tensors)


# --------------------------------------------------------------------------------------------
# The floor
# --------------------------------------------------------------------------------------------


class Floor:
    """The least a scoring call must do, in one process (no HTTP, no validation, no merging of
    aggregation states, no on-demand features, no preprocessing, no logging or metrics):

    one redis-py pipeline (hiredis parser) with exactly the commands featurelib's read sends
    (an MGET of the entities' keys per plain view, an HMGET of the same block fields per
    aggregation view and entity; keys and field lists computed once up front with
    `featurelib.online.layout` and `ServingPlan.fields`), msgpack decoding of every reply, and
    `Booster.inplace_predict` on a float32 matrix prepared once from featurelib's answer for the
    same rows (so the model call has the real input).
    """

    def __init__(self, repo: Path, redis_url: str, requests: list[list[dict[str, Any]]]) -> None:
        import numpy as np
        import polars as pl
        import redis

        from featurelib.online import layout
        from featurelib.online.api import open_store
        from featurelib.online.read import ServingPlan, _tags, get_online_features
        from featurelib.repo import Repo
        from featurelib.views import FeatureView
        from serving.registry import ModelRegistry

        definitions = Repo.load(repo)
        plan = ServingPlan(definitions.service(SERVICE))
        store = open_store(definitions, redis_url)
        with ModelRegistry.open(registry_url(repo)) as registry:
            model = registry.load(registry.resolve(MODEL, "champion"))
        self.booster = model.estimator
        self.client = redis.Redis.from_url(redis_url)
        now_us = int(READ_AT.timestamp() * 1_000_000)
        self.prepared: list[tuple[list[tuple[str, Any]], Any]] = []
        for rows in requests:
            frame = _typed(pl.DataFrame(rows))
            tags = _tags(plan, frame)
            commands: list[tuple[str, Any]] = []
            for view in plan.stored:
                unique = list(dict.fromkeys(t for t in tags[tuple(view.join_keys)] if t))
                if isinstance(view, FeatureView):
                    keys = [layout.plain_key(store.project, view.name, view.version, t)
                            for t in unique]  # fmt: skip
                    commands.append(("mget", keys))
                else:
                    fields, _ = plan.fields(view, now_us)
                    for tag in unique:
                        key = layout.aggregation_key(store.project, view.name, view.version, tag)
                        commands.append(("hmget", (key, fields)))
            features = get_online_features(store, plan, frame, at=READ_AT).features
            matrix = np.ascontiguousarray(model.preprocessor.transform(features), np.float32)
            self.prepared.append((commands, matrix))
        store.client.close()

    def call(self, index: int) -> int:
        from msgpack import unpackb

        commands, matrix = self.prepared[index]
        pipe = self.client.pipeline(transaction=False)
        for kind, args in commands:
            if kind == "mget":
                pipe.mget(args)
            else:
                pipe.hmget(*args)
        decoded = 0
        for kind, reply in zip((c[0] for c in commands), pipe.execute(), strict=True):
            for raw in reply:
                if raw is not None:
                    unpackb(raw[16:] if kind == "mget" else raw, raw=False)
                    decoded += 1
        out = self.booster.inplace_predict(matrix, validate_features=False)
        return len(out)


def _typed(frame: Any) -> Any:
    """Spine rows as featurelib's read expects them (timestamps parsed, distance a float)."""
    import polars as pl

    return frame.with_columns(
        pl.col("scheduled_departure").str.to_datetime(time_zone="UTC"),
        pl.col("distance").cast(pl.Float64),
    )


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------


class HttpClient:
    """One keep-alive HTTP/1.1 connection; requests are prepared bytes, answers read by
    Content-Length."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def call(self, payload: bytes) -> tuple[int, bytes]:
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(payload)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"content-length:")
        if at < 0:
            raise RuntimeError(f"answer without Content-Length: {head[:200]!r}")
        end = lower.find(b"\r\n", at)
        body = await self.reader.readexactly(int(lower[at + 15 : end]))
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


def _oip_ok(status: int, body: bytes, rows: int) -> bool:
    if status != 200:
        return False
    answer = json.loads(body)
    return len(answer["outputs"][0]["data"]) == rows


class FeastPipeline:
    """What users build today: Feast's feature server for the features, then the same model
    (`TrainedModel.predict`, the registry's champion) in the client on the returned values."""

    def __init__(self, repo: Path) -> None:
        from serving.registry import ModelRegistry

        with ModelRegistry.open(registry_url(repo)) as registry:
            self.model = registry.load(registry.resolve(MODEL, "champion"))

    def predict(self, body: bytes) -> Any:
        import polars as pl

        answer = json.loads(body)
        names = answer["metadata"]["feature_names"]
        columns = {n: r["values"] for n, r in zip(names, answer["results"], strict=True)}
        return self.model.predict(pl.DataFrame(columns, strict=False))


class Engine:
    """One engine's calls in a worker process: `prepare` a case, then `run` slices of it."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.repo = Path(params["repo"])
        self.rows = params["rows"]
        self.loop = asyncio.new_event_loop()
        self.requests: list[list[dict[str, Any]]] = []
        self.payloads: list[Any] = []
        self.floor: Floor | None = None
        self.feast = FeastPipeline(self.repo) if name == "feast" else None
        self.channel: Any = None
        self.predictions: list[list[float]] = []

    def prepare(self, size: int, count: int) -> None:
        self.requests = batches(self.rows, size, count)
        if self.name == "rest":
            path = f"/v2/models/{MODEL}/infer"
            port = self.params["http_port"]
            self.payloads = [http_request(port, path, oip_body(r)) for r in self.requests]
        elif self.name == "feast":
            port = self.params["feast_port"]
            self.payloads = [
                http_request(port, "/get-online-features", feast_body(r)) for r in self.requests
            ]
        elif self.name == "grpc":
            self.payloads = [grpc_request(r) for r in self.requests]
        else:
            # Requests repeat with the period of the row pool: prepare each distinct one once.
            distinct = self.requests[: len(self.rows)]
            self.floor = Floor(self.repo, self.params["redis_url"], distinct)
            self.payloads = list(range(len(distinct)))

    def run(self, concurrency: int, lo: int, hi: int) -> dict[str, Any]:
        if self.name == "floor":
            return self._run_floor(concurrency, lo, hi)
        return self.loop.run_until_complete(self._run_async(concurrency, lo, hi))

    def _run_floor(self, concurrency: int, lo: int, hi: int) -> dict[str, Any]:
        import threading

        assert self.floor is not None
        floor = self.floor
        latencies: list[int] = []
        failures = 0
        position = [lo]
        lock = threading.Lock()

        def client() -> None:
            nonlocal failures
            while True:
                with lock:
                    i = position[0]
                    if i >= hi:
                        return
                    position[0] += 1
                k = i % len(self.payloads)
                start = time.perf_counter_ns()
                try:
                    ok = floor.call(k) == len(self.requests[k])
                except Exception:
                    ok = False
                took = time.perf_counter_ns() - start
                with lock:
                    latencies.append(took)
                    failures += not ok

        started = time.perf_counter()
        if concurrency == 1:
            client()
        else:
            threads = [threading.Thread(target=client) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return {"lat": latencies, "failures": failures, "wall_s": time.perf_counter() - started}

    async def _run_async(self, concurrency: int, lo: int, hi: int) -> dict[str, Any]:
        latencies: list[int] = []
        errors: list[str] = []
        failures = 0
        position = lo
        call = await self._caller(concurrency)

        async def client(slot: int) -> None:
            nonlocal position, failures
            while position < hi:
                i = position
                position += 1
                k = i % len(self.payloads)
                start = time.perf_counter_ns()
                try:
                    ok = await call(slot, k)
                except Exception as exc:
                    ok = False
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    await self._reconnect(slot)
                latencies.append(time.perf_counter_ns() - start)
                failures += not ok

        started = time.perf_counter()
        await asyncio.gather(*(client(s) for s in range(concurrency)))
        wall = time.perf_counter() - started
        await self._close()
        return {"lat": latencies, "failures": failures, "wall_s": wall, "errors": errors[:3]}

    async def _caller(self, concurrency: int) -> Callable[[int, int], Awaitable[bool]]:
        if self.name == "grpc":
            import grpc

            from serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

            if self.channel is None:
                self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.params['grpc_port']}")
                self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

            async def grpc_call(slot: int, k: int) -> bool:
                answer = await self.stub.ModelInfer(self.payloads[k], timeout=10)
                return len(answer.outputs[0].contents.fp64_contents) == len(self.requests[k])

            return grpc_call
        port = self.params["http_port" if self.name == "rest" else "feast_port"]
        self.clients = [HttpClient(port) for _ in range(concurrency)]
        for c in self.clients:
            await c.connect()
        if self.name == "rest":

            async def rest_call(slot: int, k: int) -> bool:
                status, body = await self.clients[slot].call(self.payloads[k])
                if status != 200:
                    raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
                return _oip_ok(status, body, len(self.requests[k]))

            return rest_call
        assert self.feast is not None
        feast = self.feast

        async def feast_call(slot: int, k: int) -> bool:
            status, body = await self.clients[slot].call(self.payloads[k])
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:200]!r}")
            return len(feast.predict(body)) == len(self.requests[k])

        return feast_call

    async def _reconnect(self, slot: int) -> None:
        if self.name in ("rest", "feast"):
            await self.clients[slot].close()
            try:
                await self.clients[slot].connect()
            except OSError:
                await asyncio.sleep(0.01)

    async def _close(self) -> None:
        if self.name in ("rest", "feast"):
            for c in self.clients:
                await c.close()

    def answers(self, count: int) -> list[float]:
        """Predictions for the first `count` prepared requests (result check, untimed)."""
        return self.loop.run_until_complete(self._answers(count))

    async def _answers(self, count: int) -> list[float]:
        out: list[float] = []
        if self.name == "grpc":
            await self._caller(1)
            for k in range(count):
                answer = await self.stub.ModelInfer(self.payloads[k], timeout=10)
                out += list(answer.outputs[0].contents.fp64_contents)
            return out
        if self.name == "floor":
            return out
        await self._caller(1)
        for k in range(count):
            status, body = await self.clients[0].call(self.payloads[k])
            if status != 200:
                raise RuntimeError(f"{self.name}: status {status}: {body[:300]!r}")
            if self.name == "rest":
                out += json.loads(body)["outputs"][0]["data"]
            else:
                assert self.feast is not None
                out += [float(v) for v in self.feast.predict(body)]
        await self._close()
        return out


def engine_worker(name: str, params: dict[str, Any], conn: Any) -> None:
    """An engine's client in its own process (module docstring)."""
    import traceback

    try:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
        engine = Engine(name, params)
        conn.send(("ready",))
        while True:
            msg = conn.recv()
            if msg[0] == "case":
                engine.prepare(msg[1], msg[2])
                engine.run(min(4, msg[3]), 0, min(msg[2], 100))  # warm-up, not recorded
                gc.collect()
                conn.send(("ok",))
            elif msg[0] == "run":
                conn.send(("res", engine.run(msg[1], msg[2], msg[3])))
            elif msg[0] == "answers":
                conn.send(("answers", engine.answers(msg[1])))
            else:
                conn.send(("bye",))
                return
    except Exception:
        conn.send(("error", traceback.format_exc()))
