"""Shared fixtures: the flights demo repo with generated data, and one throwaway real Redis
server (both built once per test session; never the system Redis)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
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


# What runs leave under data/ (stores, logs, registries, reports): never copied, so a copy holds
# only the generated sources and whatever its own test writes.
DEMO_DATA_SKIP = (
    "redis", "_push_log", "feature_log", "skew_reports", "models.db*", "registry.db*", "*.lock",
)  # fmt: skip
CopyDemo = Callable[[Path], Path]


@pytest.fixture(scope="session")
def copy_demo_repo(demo_repo: Path) -> CopyDemo:
    """`copy(target)`: a private copy of the demo repo at `target` (definitions and generated
    sources only), for tests that push, log, register or report into their repo."""

    def copy(target: Path) -> Path:
        shutil.copytree(
            demo_repo, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*DEMO_DATA_SKIP)
        )
        return target

    return copy


@pytest.fixture(scope="session", autouse=True)
def _no_registry_from_the_shell() -> Iterator[None]:
    """Tests name their model registry: a developer's FEATURELIB_REGISTRY_URL never leaks in
    (session-wide, so module fixtures that train or register see it unset too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FEATURELIB_REGISTRY_URL", raising=False)
        yield


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """A redis-server on a free port with a temporary directory, stopped after the session."""
    with RedisProcess() as server:
        yield server
