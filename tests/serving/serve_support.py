"""Helpers of the scoring-service tests: a `featurelib serve` subprocess, OIP bodies, metric
parsing and the constants the fixtures in conftest.py build with (importable by any test module
in tests/serving/: `from serve_support import ServerProcess, infer_body, ...`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from featurelib.online.server import free_port

MODEL = "flight_delay_model"
SERVICE = "flight_delay"
NOW = datetime(2013, 5, 31, 12, 20, tzinfo=UTC)  # mid-hop: a test run never crosses a tile edge
# Online data up to NOW only: a server clock a few seconds past NOW then reads exactly what an
# in-process read at NOW does (no event between NOW and the server's clock is stored).
MATERIALIZED = (datetime(2013, 5, 1, tzinfo=UTC), NOW)
TRAIN_WINDOW = (datetime(2013, 5, 1, tzinfo=UTC), datetime(2013, 5, 10, tzinfo=UTC))
TREES = (8, 16, 32)  # versions 1, 2, 3
FEATURELIB = Path(sys.executable).with_name("featurelib")
ROWS = [
    {"carrier": "UA", "origin": "EWR", "dest": "ORD", "tailnum": "N14228",
     "scheduled_departure": "2013-05-31T14:00:00Z", "distance": 719.0},
    {"carrier": "AA", "origin": "JFK", "dest": "LAX", "tailnum": "N619AA",
     "scheduled_departure": "2013-05-31T15:30:00", "distance": 2475.0},
    {"carrier": "ZZ", "origin": "LGA", "dest": "ATL", "tailnum": None,
     "scheduled_departure": "2013-05-31T13:05:00+00:00", "distance": 762.0},
]  # fmt: skip


def materialize(root: Path, url: str) -> None:
    """Write the repo's online data for `MATERIALIZED` into the Redis at `url`."""
    from featurelib.online.api import materialize_range, open_store
    from featurelib.repo import Repo

    repo = Repo.load(root)
    materialize_range(open_store(repo, url), repo, *MATERIALIZED)


def registry_copy(trained: Path, directory: Path) -> str:
    """A private copy of the trained registry (for tests that move aliases); its URL."""
    target = directory / "models.db"
    shutil.copy(trained, target)
    return f"sqlite:///{target}"


def infer_body(rows: Sequence[Mapping[str, Any]], request_id: str | None = None) -> dict[str, Any]:
    """An OIP REST infer body (`pd` columns) for entity rows; datatypes by value type."""
    names = list(rows[0])
    inputs = []
    for name in names:
        values = [row.get(name) for row in rows]
        first = next((v for v in values if v is not None), "")
        datatype = (
            "FP64" if isinstance(first, float) else "INT64" if isinstance(first, int) else "BYTES"
        )
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows)], "data": values})
    body: dict[str, Any] = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    if request_id is not None:
        body["id"] = request_id
    return body


class ServerProcess:
    """`featurelib serve` as a real subprocess on free ports (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        *,
        redis_url: str,
        registry_url: str,
        config: Mapping[str, Any] | None = None,
        now: datetime = NOW,
        log_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        directory = log_dir or root
        self.stderr_path = directory / f"serve-{self.http_port}.log"
        args = [
            str(FEATURELIB), "serve", "--repo", str(root),
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
            "--registry", registry_url, "--redis-url", redis_url, "--now", now.isoformat(),
        ]  # fmt: skip
        if config:
            config_path = directory / f"serve-{self.http_port}.yaml"
            config_path.write_text(yaml.safe_dump(dict(config)))
            args += ["--config", str(config_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FEATURELIB_", "REDIS"))}
        self._stderr = self.stderr_path.open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self._stderr, stderr=self._stderr)

    def wait_ready(self, timeout: float = 60.0, headers: Mapping[str, str] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"featurelib serve exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.base_url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"featurelib serve not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the graceful exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        self.wait_ready()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of metric `name` whose labels include `labels` (Prometheus text)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def expected_predictions(
    root: Path, redis_url: str, registry_path: Path, version: int, rows: Sequence[Mapping[str, Any]]
) -> list[float]:
    """What `version` predicts for `rows` from features read in this process at NOW (the
    reference the servers' answers are compared with)."""
    import polars as pl

    from featurelib.online.api import get_features, open_store
    from featurelib.repo import Repo
    from serving.registry import ModelRegistry

    repo = Repo.load(root)
    keys = pl.DataFrame(
        [{k: row[k] for k in ("carrier", "origin", "dest", "tailnum")} for row in rows]
    )
    request = {
        "scheduled_departure": [_utc(row["scheduled_departure"]) for row in rows],
        "distance": [float(row["distance"]) for row in rows],
    }
    response = get_features(open_store(repo, redis_url), repo, SERVICE, keys, request, at=NOW)
    with ModelRegistry.open(f"sqlite:///{registry_path}") as registry:
        model = registry.load(registry.get(MODEL, version))
    return [float(v) for v in model.predict(response.features)]


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
