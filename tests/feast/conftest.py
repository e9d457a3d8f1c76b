"""Feast repo fixtures: copies of the flights demo repo (shared data, own registry)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from featurelib.online.testing import RedisProcess

ROOT = Path(__file__).resolve().parents[2]
FEAST = str(Path(sys.executable).parent / "feast")
_OWN = {"registry.db", "online_store.db", "redis"}  # per-copy state, never shared
FEATURELIB_ONLINE = (
    "provider: featurelib.feast.provider.FeaturelibProvider",
    "  type: featurelib.feast.online_store.FeaturelibOnlineStore",
)
SQLITE_ONLINE = ("provider: local", "  type: sqlite\n  path: data/online_store.db")


def copy_repo(demo_repo: Path, target: Path, *, featurelib_online: bool = False) -> Path:
    """feature_repo/*.py + feature_store.yaml, with the demo data linked in (not copied).

    Unless `featurelib_online`, the copy's online store is Feast's sqlite with the local
    provider (what the offline-store tests materialize into: no Redis needed)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in [*(ROOT / "feature_repo").glob("*.py"), ROOT / "feature_repo/feature_store.yaml"]:
        shutil.copy(path, target / path.name)
    if not featurelib_online:
        config = (target / "feature_store.yaml").read_text()
        for ours, sqlite in zip(FEATURELIB_ONLINE, SQLITE_ONLINE, strict=True):
            assert ours in config, f"feature_store.yaml lacks {ours!r}"
            config = config.replace(ours, sqlite)
        (target / "feature_store.yaml").write_text(config)
    (target / "data").mkdir(exist_ok=True)
    for entry in (demo_repo / "data").iterdir():
        if entry.name not in _OWN:
            (target / "data" / entry.name).symlink_to(entry.resolve())
    return target


FeastCli = Callable[..., subprocess.CompletedProcess[str]]


def _feast_cli(
    repo: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `feast` CLI in `repo` (a real subprocess, as a user would); `env` adds
    environment variables."""
    return subprocess.run(
        [FEAST, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="session")
def feast_cli() -> FeastCli:
    """`feast_cli(repo, "plan")`: the `feast` CLI run in `repo` as a subprocess."""
    return _feast_cli


@pytest.fixture
def fresh_repo(demo_repo: Path, tmp_path: Path) -> Path:
    """A copy of the demo repo that `feast apply` has not seen."""
    return copy_repo(demo_repo, tmp_path / "feature_repo")


@pytest.fixture(scope="session")
def applied_repo(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo repo after `feast apply` (run once per session)."""
    repo = copy_repo(demo_repo, tmp_path_factory.mktemp("applied") / "feature_repo")
    run = _feast_cli(repo, "apply")
    assert run.returncode == 0, run.stdout + run.stderr
    (repo / "apply.log").write_text(run.stdout)
    return repo


@pytest.fixture
def clone_applied(applied_repo: Path, tmp_path: Path) -> Callable[[], Path]:
    """Make a private copy of the applied repo (its registry copied, data still linked)."""

    def clone() -> Path:
        target = tmp_path / "clone"
        shutil.copytree(applied_repo, target, symlinks=True)
        return target

    return clone


@pytest.fixture(scope="session")
def feast_redis_url(redis_server: RedisProcess) -> Callable[[], str]:
    """`feast_redis_url()`: the session server's URL after FLUSHALL (restarted if it died)."""
    return redis_server.flushed_url


RepoCopier = Callable[..., Path]


@pytest.fixture(scope="session")
def repo_copier(demo_repo: Path) -> RepoCopier:
    """`repo_copier(target, featurelib_online=...)`: `copy_repo` of the demo repo."""

    def copy(target: Path, *, featurelib_online: bool = False) -> Path:
        return copy_repo(demo_repo, target, featurelib_online=featurelib_online)

    return copy
