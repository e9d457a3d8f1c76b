"""Shared fixtures: the flights demo repo with generated data, and one throwaway real Redis
server (both built once per test session; never the system Redis)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from featurelib.online.testing import RedisProcess

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of feature_repo/ with freshly generated demo data under data/."""
    from featurelib.demo.flights_data import generate

    repo = tmp_path_factory.mktemp("feature_repo")
    for name in ("definitions.py", "feature_store.yaml"):
        shutil.copy(ROOT / "feature_repo" / name, repo / name)
    generate(repo / "data")
    return repo


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server on a free port with a temporary directory, stopped after the session."""
    with RedisProcess() as server:
        yield server
