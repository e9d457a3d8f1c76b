"""Great Expectations suites: built from a small training frame, validated (with GX 1.x) on a
clean frame and on frames with out-of-range values, an unseen category and more nulls."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from skew_monitor.expectations import (
    ExpectationSuiteError,
    SuiteOptions,
    build_suite,
    validate_suite,
)

FEATURES = ["distance", "delay_count", "carrier", "is_weekend", "tags"]


@pytest.fixture(scope="module")
def training() -> pl.DataFrame:
    rng = np.random.default_rng(5)
    n = 400
    distance = rng.uniform(100.0, 1100.0, n)
    distance[:8] = np.nan  # 2% missing
    return pl.DataFrame(
        {
            "distance": distance,
            "delay_count": rng.integers(0, 11, n),
            "carrier": rng.choice(["AA", "DL", "UA"], n),
            "is_weekend": rng.random(n) < 0.3,
            "tags": [["x"]] * n,
            "flight_id": [f"f{i}" for i in range(n)],
        }
    ).with_columns(pl.col("distance").fill_nan(None))


@pytest.fixture(scope="module")
def suite(training: pl.DataFrame) -> dict[str, object]:
    return build_suite(training, FEATURES, "delay_model:3")


def _by_key(suite: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
    expectations = suite["expectations"]
    assert isinstance(expectations, list)
    return {(e["kwargs"]["column"], e["type"]): e["kwargs"] for e in expectations}


def test_suite_is_derived_from_training_statistics(
    training: pl.DataFrame, suite: dict[str, object]
) -> None:
    assert json.loads(json.dumps(suite)) == suite
    kw = _by_key(suite)
    low = float(training["distance"].min())  # type: ignore[arg-type]
    high = float(training["distance"].max())  # type: ignore[arg-type]
    margin = 0.1 * (high - low)
    assert kw["distance", "expect_column_values_to_be_between"] == {
        "column": "distance",
        "min_value": pytest.approx(low - margin),
        "max_value": pytest.approx(high + margin),
        "mostly": 0.99,
    }
    # 8 of 400 null -> non-null 0.98, minus the 0.05 tolerance
    assert kw["distance", "expect_column_values_to_not_be_null"]["mostly"] == pytest.approx(0.93)
    assert kw["delay_count", "expect_column_values_to_be_between"]["min_value"] == -1.0
    assert kw["delay_count", "expect_column_values_to_be_between"]["max_value"] == 11.0
    assert kw["carrier", "expect_column_values_to_be_in_set"]["value_set"] == ["AA", "DL", "UA"]
    assert kw["is_weekend", "expect_column_values_to_be_in_set"]["value_set"] == ["false", "true"]
    assert kw["carrier", "expect_column_values_to_be_of_type"]["type_"] == "object"
    assert kw["delay_count", "expect_column_values_to_be_of_type"]["type_"] == "float64"
    assert not any(column == "tags" for column, _ in kw)  # lists: nothing element-wise to check
    meta = suite["meta"]["featurelib"]  # type: ignore[index]
    assert meta["training_rows"] == 400
    assert meta["features"]["tags"] == {"kind": None, "dtype": "List(String)"}


def test_high_cardinality_strings_get_no_value_set(training: pl.DataFrame) -> None:
    suite = build_suite(training, ["flight_id"], "m:1", SuiteOptions(max_categories=50))
    assert [e["type"] for e in suite["expectations"]] == [
        "expect_column_values_to_be_of_type",
        "expect_column_values_to_not_be_null",
    ]


def test_clean_frame_passes(training: pl.DataFrame, suite: dict[str, object]) -> None:
    summary = validate_suite(suite, training.sample(200, seed=1))
    assert summary.success, summary.failed
    assert summary.rows == 200
    assert len(summary.results) == 12  # 4 features x (type, not-null, range or set)
    assert summary.failed_features == ()
    assert summary.seconds > 0
    decoded = json.loads(json.dumps(summary.to_dict()))
    assert decoded["success"] is True
    assert decoded["evaluated"] == 12


def test_broken_frame_fails_on_the_right_features(
    training: pl.DataFrame, suite: dict[str, object]
) -> None:
    n = training.height
    index = pl.int_range(n)
    broken = training.with_columns(
        pl.when(index < 40).then(5000.0).otherwise(pl.col("distance")).alias("distance"),
        pl.when(index % 10 == 0).then(pl.lit("ZZ")).otherwise(pl.col("carrier")).alias("carrier"),
        pl.when(index < 120).then(None).otherwise(pl.col("delay_count")).alias("delay_count"),
    )
    summary = validate_suite(suite, broken)
    assert not summary.success
    failed = {(r.feature, r.expectation_type): r for r in summary.failed}
    assert set(failed) == {
        ("distance", "expect_column_values_to_be_between"),
        ("carrier", "expect_column_values_to_be_in_set"),
        ("delay_count", "expect_column_values_to_not_be_null"),
    }
    out_of_range = failed["distance", "expect_column_values_to_be_between"]
    assert out_of_range.unexpected_count == 40
    assert out_of_range.unexpected_values[:2] == (5000.0, 5000.0)
    assert out_of_range.unexpected_fraction == pytest.approx(40 / (n - 8), abs=0.01)
    unseen = failed["carrier", "expect_column_values_to_be_in_set"]
    assert unseen.unexpected_count == 40
    assert set(unseen.unexpected_values) == {"ZZ"}
    nulls = failed["delay_count", "expect_column_values_to_not_be_null"]
    assert nulls.unexpected_fraction == pytest.approx(120 / n)


def test_type_change_missing_column_and_feature_subset(
    training: pl.DataFrame, suite: dict[str, object]
) -> None:
    changed = training.with_columns(pl.col("delay_count").cast(pl.String)).drop("carrier")
    summary = validate_suite(suite, changed)
    failed = {(r.feature, r.expectation_type): r for r in summary.failed}
    type_check = failed["delay_count", "expect_column_values_to_be_of_type"]
    # an object column is checked value by value: every value is a str, not a float64
    assert type_check.unexpected_fraction == 1.0
    assert all(isinstance(v, str) for v in type_check.unexpected_values)
    missing = [r for r in summary.results if r.feature == "carrier"]
    assert len(missing) == 3
    assert all(not r.success for r in missing)
    assert "missing from the validated frame" in (missing[0].error or "")
    only = validate_suite(suite, changed, features=["distance"])
    assert only.success
    assert {r.feature for r in only.results} == {"distance"}


def test_all_null_online_column_fails_null_check_only(
    training: pl.DataFrame, suite: dict[str, object]
) -> None:
    frame = training.with_columns(pl.lit(None).alias("distance"))  # dtype Null
    summary = validate_suite(suite, frame, features=["distance"])
    assert [r.expectation_type for r in summary.failed] == ["expect_column_values_to_not_be_null"]


def test_build_suite_rejects_unknown_features(training: pl.DataFrame) -> None:
    with pytest.raises(ExpectationSuiteError, match=r"\['nope'\] are not columns"):
        build_suite(training, ["distance", "nope"], "m:1")
