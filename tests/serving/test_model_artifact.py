"""TrainedModel and Preprocessor: encodings, input checks, and byte-exact artifact round trips."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from serving.errors import ModelInputError, RegistryError
from serving.model import Preprocessor, TrainedModel
from serving.train import fit_sklearn, fit_xgboost

SIGNATURE = ("svc", "0123456789abcdef")


def training_frame(rows: int = 600) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    size = rng.uniform(0, 10, rows)
    flag = rng.random(rows) < 0.5
    color = rng.choice(["red", "green", "blue"], rows)
    label = (size + flag * 3 + (color == "red") * 4 + rng.normal(0, 2, rows)) > 8
    return pl.DataFrame(
        {
            "size": size,
            "count": rng.integers(0, 5, rows),
            "flag": flag,
            "color": color,
            "seen_at": [datetime(2013, 1, 1, tzinfo=UTC)] * rows,
            "recent": [[1.0, 2.0]] * rows,
            "label": label,
        }
    )


FEATURES = ["size", "count", "flag", "color", "seen_at", "recent"]


def test_preprocessor_encodes_each_kind_and_drops_times_and_lists() -> None:
    prep = Preprocessor.fit(training_frame(), FEATURES)
    assert prep.feature_names == ("size", "count", "flag", "color")
    assert prep.dropped == ("seen_at", "recent")
    assert prep.columns[3].categories == ("blue", "green", "red")
    rows = pl.DataFrame(
        {
            "color": ["red", "purple", None],  # unknown and missing → NaN
            "flag": [True, False, None],
            "count": [1, None, 3],
            "size": [1.5, float("nan"), None],
            "extra": ["ignored", "ignored", "ignored"],
        }
    )
    matrix = prep.transform(rows)
    assert matrix.dtype == np.float32
    assert matrix.flags.c_contiguous
    expected = np.array(
        [[1.5, 1, 1, 2], [np.nan, np.nan, 0, np.nan], [np.nan, 3, np.nan, np.nan]],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(matrix, expected)
    assert Preprocessor.from_dict(prep.to_dict()) == prep


def test_inputs_missing_or_mistyped_columns_are_refused() -> None:
    prep = Preprocessor.fit(training_frame(), FEATURES)
    with pytest.raises(ModelInputError, match=r"lacks 1 model feature\(s\): \['color'\]"):
        prep.transform(pl.DataFrame({"size": [1.0], "count": [1], "flag": [True]}))
    wrong = pl.DataFrame({"size": ["big"], "count": [1], "flag": [True], "color": ["red"]})
    with pytest.raises(ModelInputError, match="size"):
        prep.transform(wrong)
    all_null = pl.DataFrame({n: [None, None] for n in prep.feature_names})
    assert prep.transform(all_null).shape == (2, 4)


@pytest.mark.parametrize("flavor", ["xgboost", "sklearn"])
def test_artifact_round_trip_is_byte_and_prediction_identical(flavor: str, tmp_path: Path) -> None:
    frame = training_frame()
    prep = Preprocessor.fit(frame, FEATURES)
    fit = fit_xgboost if flavor == "xgboost" else fit_sklearn
    extra = {"num_boost_round": 25} if flavor == "xgboost" else None
    model, _ = fit(frame, "label", prep, SIGNATURE, extra)
    predictions = model.predict(frame)
    assert predictions.dtype == np.float64
    assert predictions.shape == (frame.height,)
    assert 0.0 < predictions.min() < predictions.max() < 1.0
    truth = frame["label"].to_numpy()
    assert np.mean((predictions >= 0.5) == truth) > 0.75
    artifact = model.to_bytes()
    loaded = TrainedModel.from_bytes(artifact)
    if flavor == "xgboost":  # XGBoost's format is canonical; pickles may differ in memo layout
        assert loaded.to_bytes() == artifact
    assert (loaded.flavor, loaded.service, loaded.service_version) == (flavor, *SIGNATURE)
    assert loaded.feature_names == ("size", "count", "flag", "color")
    np.testing.assert_array_equal(loaded.predict(frame), predictions)
    assert model.predict(frame.head(0)).shape == (0,)
    # Another process loading the same bytes gets bit-identical predictions.
    (tmp_path / "model.bin").write_bytes(artifact)
    frame.write_parquet(tmp_path / "rows.parquet")
    script = (
        "import sys, numpy as np, polars as pl\n"
        "from serving.model import TrainedModel\n"
        "m = TrainedModel.from_bytes(open(sys.argv[1], 'rb').read())\n"
        "np.save(sys.argv[3], m.predict(pl.read_parquet(sys.argv[2])))\n"
    )
    out = tmp_path / "predictions.npy"
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "model.bin"),
            str(tmp_path / "rows.parquet"),
            str(out),
        ],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert np.load(out).tobytes() == predictions.tobytes()


def test_bad_artifacts_are_refused() -> None:
    with pytest.raises(RegistryError, match="bad magic bytes"):
        TrainedModel.from_bytes(b"not a model")
    with pytest.raises(RegistryError, match="unknown model flavor"):
        TrainedModel("lightgbm", Preprocessor.fit(training_frame(), ["size"]), None, *SIGNATURE)
