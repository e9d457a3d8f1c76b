"""Redis fixtures: the session's throwaway redis-server (tests/conftest.py), emptied per test."""

from __future__ import annotations

import pytest

from featurelib.online.testing import RedisProcess


@pytest.fixture(autouse=True)
def _isolated_redis_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never follow a REDIS_URL (or timeout/binary override) from the outer shell."""
    for name in ("REDIS_URL", "FEATURELIB_REDIS_TIMEOUT", "FEATURELIB_REDIS_SERVER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The session server's URL, emptied (FLUSHALL) before the test; restarted if it died."""
    return redis_server.flushed_url()
