"""Training on a slice of the flights demo: two registered versions with sane metrics."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featurelib.repo import Repo
from serving.errors import ModelInputError
from serving.gates import SERVICE_SPEC, TRAINING_SAMPLE
from serving.registry import ModelRegistry
from serving.train import TrainResult, fingerprint, train

SPINE_ROWS = 20_000


@pytest.fixture(scope="module")
def spine(demo_repo: Path) -> pl.DataFrame:
    """The first ~3 weeks of demo flights (training takes seconds)."""
    frame = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    return frame.sort("event_timestamp", maintain_order=True).head(SPINE_ROWS)


@pytest.fixture(scope="module")
def trained(
    demo_repo: Path, spine: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, str, list[str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('train_registry') / 'models.db'}"
    lines: list[str] = []
    result = train(
        demo_repo,
        "flight_delay",
        spine,
        "is_delayed",
        "flight_delay",
        params={"num_boost_round": 150},
        registry=ModelRegistry.open(url, repo_root=demo_repo),
        champion="xgboost",
        challenger="sklearn",
        progress=lines.append,
    )
    return result, url, lines


def test_train_registers_baseline_then_xgboost_with_sane_metrics(
    trained: tuple[TrainResult, str, list[str]], demo_repo: Path
) -> None:
    result, url, lines = trained
    registry = ModelRegistry.open(url, repo_root=demo_repo)
    assert [(v.version, v.flavor) for v in registry.versions("flight_delay")] == [
        (1, "sklearn"),
        (2, "xgboost"),
    ]
    assert registry.aliases("flight_delay") == {"challenger": 1, "champion": 2}
    service = Repo.load(demo_repo).service("flight_delay")
    for flavor, mv in result.versions.items():
        assert mv.metrics == pytest.approx(result.metrics[flavor])
        assert 0.55 < mv.metrics["auc"] < 1.0, flavor
        assert 0.0 < mv.metrics["log_loss"] < 0.69
        assert 0.0 < mv.metrics["brier"] < 0.25
        assert 0.6 < mv.metrics["accuracy"] <= 1.0
        assert 0.1 < mv.metrics["positive_rate"] < 0.4
        assert (mv.service, mv.service_version) == ("flight_delay", service.version)
        assert mv.feature_names == tuple(service.output_names())
        assert mv.fingerprint == result.fingerprint
        assert mv.code_version
        assert mv.params["train_rows"] == result.train_rows
        assert mv.params["label"] == "is_delayed"
    assert result.train_rows + result.eval_rows <= SPINE_ROWS
    assert result.eval_rows > 0.15 * SPINE_ROWS
    assert result.versions["xgboost"].params["objective"] == "binary:logistic"
    assert any(line.startswith("building training set") for line in lines)
    assert any("registered flight_delay version 2 (xgboost)" in line for line in lines)


def test_reloaded_models_predict_exactly_like_the_trained_ones(
    trained: tuple[TrainResult, str, list[str]], demo_repo: Path
) -> None:
    result, url, _ = trained
    fresh = ModelRegistry.open(url, repo_root=demo_repo)
    sample = fresh.attachment("flight_delay", 1, TRAINING_SAMPLE)
    assert sample is not None
    rows = pl.read_parquet(io.BytesIO(sample)).tail(3000)
    for flavor, mv in result.versions.items():
        reloaded = fresh.load(fresh.get("flight_delay", mv.version))
        expected = result.models[flavor].predict(rows)
        assert reloaded.predict(rows).tobytes() == expected.tobytes()
        assert np.all((expected > 0) & (expected < 1))


def test_training_sample_and_spec_are_attached(
    trained: tuple[TrainResult, str, list[str]], demo_repo: Path
) -> None:
    result, url, _ = trained
    registry = ModelRegistry.open(url, repo_root=demo_repo)
    mv = result.versions["xgboost"]
    payload = registry.attachment("flight_delay", mv.version, TRAINING_SAMPLE)
    assert payload is not None
    sample = pl.read_parquet(io.BytesIO(payload))
    assert sample.columns == ["event_timestamp", *mv.feature_names]
    assert sample.height == result.train_rows
    assert sample["event_timestamp"].max() < result.split_time
    assert registry.attachment("flight_delay", mv.version, SERVICE_SPEC) is not None
    suite = json.loads(registry.attachment("flight_delay", mv.version, "expectations.json") or b"")
    kinds = {(e["type"], e["kwargs"]["column"]) for e in suite["expectations"]}
    assert {c for _, c in kinds} >= set(mv.feature_names)  # every model input is profiled
    assert ("expect_column_values_to_be_between", "carrier_arr_delay_mean_1d") in kinds
    assert ("expect_column_values_to_be_in_set", "low_visibility") in kinds


def test_fingerprint_is_deterministic_and_sensitive() -> None:
    frame = pl.DataFrame({"a": [1, 2, 3], "b": ["x", None, "z"]})
    assert fingerprint(frame) == fingerprint(frame.clone())
    assert fingerprint(frame) != fingerprint(frame.with_columns(pl.col("a") + 1))
    assert fingerprint(frame).startswith("sha256:")


def test_unknown_label_is_refused_with_the_candidates(demo_repo: Path, spine: pl.DataFrame) -> None:
    frame = spine.head(50).with_columns(
        pl.lit(None, dtype=pl.Float64).alias(n)
        for n in Repo.load(demo_repo).service("flight_delay").output_names()
    )
    with pytest.raises(ModelInputError, match=r"(?s)label column 'delayed'.*is_delayed"):
        train(demo_repo, "flight_delay", None, "delayed", "m", training_frame=frame)
