"""Shared fixtures of the scoring-service tests (reusable by any test under tests/serving/).

Session-wide (built once):

- `serving_repo`: a private copy of the demo repo (definitions + generated data; no Feast
  registry, models or logs), so servers may write feature logs and pushes into it without
  touching the shared `demo_repo`.
- `serving_redis`: a dedicated throwaway redis-server holding the repo's online data
  materialized from May 2013 up to `NOW` (`serve_support.MATERIALIZED`); never flushed by
  other tests.
- `trained_registry`: the path of a SQLite model registry with three XGBoost versions of
  `serve_support.MODEL` (8, 16 and 32 trees, so they answer differently), aliases champion=1,
  challenger=2. Tests that move aliases work on a copy (`serve_support.registry_copy`).

- `scoring_server`: a running `featurelib serve` (REST + gRPC, no auth, default routing: every
  request answered by the champion, version 1) on the above, clock starting at `NOW`.

Helpers (`ServerProcess` running `featurelib serve` as a real process, `infer_body`,
`metric_value`, constants such as `NOW` and `ROWS`) live in `serve_support.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from serve_support import MODEL, SERVICE, TRAIN_WINDOW, TREES, ServerProcess, materialize

from featurelib.online.testing import RedisProcess


@pytest.fixture(scope="session")
def serving_repo(copy_demo_repo: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the demo repo (see the module docstring)."""
    path: Path = copy_demo_repo(tmp_path_factory.mktemp("serving_repo"))
    return path


@pytest.fixture(scope="session")
def serving_redis(serving_repo: Path) -> Iterator[RedisProcess]:
    """A dedicated redis-server with the repo's May 2013 online data."""
    with RedisProcess() as server:
        materialize(serving_repo, server.url)
        yield server


@pytest.fixture(scope="session")
def trained_registry(serving_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite registry file with versions 1..3 of MODEL (see the module docstring)."""
    from featurelib.offline.engine import training_set
    from featurelib.repo import Repo
    from serving.model import Preprocessor
    from serving.registry import ModelRegistry
    from serving.train import evaluate, fingerprint, fit_xgboost

    repo = Repo.load(serving_repo)
    service = repo.service(SERVICE)
    spine = pl.read_parquet(serving_repo / "data" / "spine.parquet").filter(
        pl.col("event_timestamp").is_between(*TRAIN_WINDOW)
    )
    frame = training_set(service, spine, repo=repo).filter(pl.col("is_delayed").is_not_null())
    preprocessor = Preprocessor.fit(frame, service.output_names())
    path = tmp_path_factory.mktemp("registry") / "models.db"
    with ModelRegistry.open(f"sqlite:///{path}") as registry:
        for trees in TREES:
            params = {"num_boost_round": trees, "early_stopping_rounds": 0, "nthread": 1}
            model, used = fit_xgboost(
                frame, "is_delayed", preprocessor, (service.name, service.version), params
            )
            registry.register(
                MODEL,
                model,
                metrics=evaluate(model, frame, "is_delayed"),
                params=used,
                fingerprint=fingerprint(frame),
                code_version="test",
                actor="test",
            )
        registry.set_alias(MODEL, "champion", 1, actor="test")
        registry.set_alias(MODEL, "challenger", 2, actor="test")
    return path


@pytest.fixture(scope="session")
def scoring_server(
    serving_repo: Path,
    serving_redis: RedisProcess,
    trained_registry: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """A running scoring service with the default configuration (module docstring)."""
    server = ServerProcess(
        serving_repo,
        redis_url=serving_redis.url,
        registry_url=f"sqlite:///{trained_registry}",
        log_dir=tmp_path_factory.mktemp("serve_logs"),
    )
    with server:
        yield server
