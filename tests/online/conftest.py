"""Redis fixtures: a real, throwaway redis-server per test session (never the system Redis)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from featurelib.online.testing import RedisProcess


@pytest.fixture(autouse=True)
def _isolated_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never follow a REDIS_URL (or timeout/binary override) from the outer shell."""
    for name in ("REDIS_URL", "FEATURELIB_REDIS_TIMEOUT", "FEATURELIB_REDIS_SERVER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server on a free port with a temporary directory, stopped after the session."""
    with RedisProcess() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session server's URL, emptied (FLUSHALL) before the test; restarted if it died."""
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url
