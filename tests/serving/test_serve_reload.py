"""Hot reload: clients keep scoring while the champion alias moves three times (no failed
request, the answering version follows the alias); then a graceful SIGTERM shutdown exits 0
and has flushed every served request to the feature log."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from serve_support import MODEL, ROWS, SERVICE, ServerProcess, infer_body, registry_copy

from featurelib.online.testing import RedisProcess
from serving.feature_log import read_logs
from serving.registry import ModelRegistry

CLIENTS = 2
MAX_REQUESTS = 3000  # per client: bounds the loop if something stalls


class ClientLoop(threading.Thread):
    """Sends single-row infer requests back to back until stopped; records every outcome."""

    def __init__(self, base_url: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.base_url = base_url
        self.stop = threading.Event()
        self.outcomes: list[tuple[str, int, str]] = []  # (request id, status, version)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            for i in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                request_id = f"{self.name}-{i}"
                body = infer_body([ROWS[i % len(ROWS)]], request_id=request_id)
                try:
                    response = http.post(f"/v2/models/{MODEL}/infer", json=body)
                    version = response.json().get("model_version", "")
                    self.outcomes.append((request_id, response.status_code, version))
                except httpx.HTTPError as exc:
                    self.outcomes.append((request_id, 0, type(exc).__name__))

    def versions(self) -> list[str]:
        return [v for _, _, v in self.outcomes]


def test_alias_moves_without_failed_requests_and_shutdown_flushes_the_log(
    serving_repo: Path,
    serving_redis: RedisProcess,
    trained_registry: Path,
    tmp_path: Path,
) -> None:
    url = registry_copy(trained_registry, tmp_path)
    server = ServerProcess(
        serving_repo,
        redis_url=serving_redis.url,
        registry_url=url,
        config={"reload_interval_s": 0.2},
        log_dir=tmp_path,
    )
    started = time.time()
    with ModelRegistry.open(url) as registry, server:
        clients = [ClientLoop(server.base_url, f"reload{n}") for n in range(CLIENTS)]
        for client in clients:
            client.start()
        deadline = time.monotonic() + 30  # every loop answered by version 1 before any move
        while not all(c.versions()[:1] == ["1"] for c in clients):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.05)
        for version in (2, 3, 1):
            registry.set_alias(MODEL, "champion", version, actor="test", reason="hot reload test")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if all(c.versions()[-1:] == [str(version)] for c in clients):
                    break
                time.sleep(0.05)
            else:
                pytest.fail(f"the service did not switch to version {version}:\n{server.output()}")
            time.sleep(0.3)  # keep scoring on this version for a while
        for client in clients:
            client.stop.set()
            client.join(15)
        exit_status = server.stop()
    outcomes = [o for c in clients for o in c.outcomes]
    failed = [o for o in outcomes if o[1] != 200]
    assert not failed, failed[:5]
    assert len(outcomes) >= 20
    for client in clients:  # the answering version followed the alias: 1 -> 2 -> 3 -> 1
        changes = [
            v for i, v in enumerate(client.versions()) if i == 0 or v != client.versions()[i - 1]
        ]
        assert changes == ["1", "2", "3", "1"], changes
    assert exit_status == 0, server.output()
    logged = read_logs(serving_repo, SERVICE, since=datetime.fromtimestamp(started - 1, UTC))
    ours = logged.filter(logged["request_id"].str.starts_with("reload"))
    assert set(ours["request_id"].to_list()) == {o[0] for o in outcomes}
    served = {o[0]: int(o[2]) for o in outcomes}
    versions = dict(zip(ours["request_id"].to_list(), ours["model_version"].to_list(), strict=True))
    assert versions == served
