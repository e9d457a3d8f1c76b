"""Batch scoring: `score_batch` and `featurelib score` equal the registered model's predictions
on `training_set` for the same spine (demo data, real SQLite registry, real XGBoost models from
the shared `trained_registry` fixture)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from serve_support import MODEL, registry_copy

import featurelib as fl
from featurelib.cli import main
from featurelib.repo import Repo
from serving.batch import resolve_model_ref, score_batch
from serving.errors import ModelNotFoundError
from serving.registry import ModelRegistry


@pytest.fixture(scope="module")
def trained(
    trained_registry: Path, demo_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ModelRegistry, pl.DataFrame]]:
    """A private copy of the shared test registry (MODEL v1 = champion, v2 = challenger, v3);
    yields its URL, the registry and a spine of later flights than the models trained on."""
    url = registry_copy(trained_registry, tmp_path_factory.mktemp("batch_registry"))
    registry = ModelRegistry.open(url)
    spine = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    later = spine.filter(pl.col("event_timestamp").dt.month() == 7).head(300)
    later = later.with_columns(  # unknown keys and a null key score too (null features)
        pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("ZZ")).otherwise("carrier"),
        pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise("tailnum").alias("tailnum"),
    )
    yield url, registry, later
    registry.close()


@pytest.fixture(scope="module")
def features(demo_repo: Path, trained: tuple[str, ModelRegistry, pl.DataFrame]) -> pl.DataFrame:
    """The offline features of the later spine (what the models are checked against)."""
    spine = trained[2]
    return fl.training_set(Repo.load(demo_repo).service("flight_delay"), spine, repo=demo_repo)


def test_score_batch_equals_model_on_training_set(
    demo_repo: Path, trained: tuple[str, ModelRegistry, pl.DataFrame], features: pl.DataFrame
) -> None:
    _, registry, spine = trained
    messages: list[str] = []
    scores = score_batch(demo_repo, f"{MODEL}@champion", spine, registry, progress=messages.append)
    champion = registry.resolve(MODEL, "champion")
    assert (champion.version, champion.flavor) == (1, "xgboost")
    expected = registry.load(champion).predict(features)
    assert scores.columns == [*spine.columns, "prediction", "model", "model_version"]
    assert scores.select(spine.columns).equals(spine)  # spine order and values kept
    np.testing.assert_array_equal(scores["prediction"].to_numpy(), expected)
    assert scores["prediction"].is_null().sum() == 0
    predicted = scores["prediction"].to_numpy()
    assert 0.0 < predicted.min() < predicted.max() < 1.0
    assert set(scores["model"]) == {MODEL}
    assert set(scores["model_version"]) == {1}
    assert any("scored 300 rows" in m for m in messages)

    # The bare name means the champion; a version number and other aliases resolve too.
    assert resolve_model_ref(registry, MODEL) == champion
    assert resolve_model_ref(registry, f"{MODEL}@challenger").version == 2
    assert resolve_model_ref(registry, f"{MODEL}@3").version == 3


def test_unknown_model_or_alias_is_a_clear_error(
    demo_repo: Path, trained: tuple[str, ModelRegistry, pl.DataFrame]
) -> None:
    _, registry, spine = trained
    with pytest.raises(ModelNotFoundError, match="no alias 'staging'"):
        score_batch(demo_repo, f"{MODEL}@staging", spine, registry)
    with pytest.raises(ModelNotFoundError):
        score_batch(demo_repo, "no_such_model", spine, registry)
    with pytest.raises(ModelNotFoundError):
        score_batch(demo_repo, f"{MODEL}@9", spine, registry)


def test_score_cli_writes_parquet(
    demo_repo: Path,
    trained: tuple[str, ModelRegistry, pl.DataFrame],
    features: pl.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, registry, spine = trained
    spine_path = tmp_path / "spine.parquet"
    spine.write_parquet(spine_path)
    out = tmp_path / "out" / "scores.parquet"
    argv = ["score", "--repo", str(demo_repo), "--model", f"{MODEL}@challenger"]
    argv += ["--spine", str(spine_path), "--out", str(out), "--registry", url]
    assert main(argv) == 0
    written = pl.read_parquet(out)
    assert written.select(spine.columns).equals(spine)
    expected = registry.load(registry.get(MODEL, 2)).predict(features)
    np.testing.assert_array_equal(written["prediction"].to_numpy(), expected)
    assert written["model_version"].to_list() == [2] * spine.height
    champion = registry.load(registry.resolve(MODEL, "champion")).predict(features)
    assert not np.allclose(written["prediction"].to_numpy(), champion)  # another model
    captured = capsys.readouterr()
    assert f"{MODEL}/2" in captured.err  # progress names the version that scored
    assert str(out) in captured.out
    assert main([*argv[:4], f"{MODEL}@nope", *argv[5:]]) == 2
    assert "no alias 'nope'" in capsys.readouterr().err
