"""Row-level consistency replay: the comparison rules (design §3) and a replay of logged rows
through the real offline engine on a tiny repo."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import skew_replay_cases as cases

import featurelib as fl
from featurelib.repo import Repo
from skew_monitor.replay import (
    ReplayConfig,
    ReplayError,
    Tolerance,
    compare_feature,
    replay,
    spine_columns,
)

IDENT = pl.DataFrame({"request_id": ["r1"] * 6, "row": pl.Series(range(6), dtype=pl.UInt32)})


def test_floats_match_within_relative_tolerance_and_nan_is_null() -> None:
    online = pl.Series([1.0, 1e12, 2.0, None, 4.0, float("nan")])
    offline = pl.Series([1.0 + 1e-10, 1e12 + 1.0, 2.1, 3.0, None, None])
    result = compare_feature(IDENT, online, offline, "x", Tolerance())
    # 1e12 + 1 is within 1e-9 * 1e12 = 1000; 2.0 vs 2.1 is not; NaN vs null is a match.
    assert (result.matches, result.mismatches) == (3, 3)
    assert result.match_rate == pytest.approx(0.5)
    assert (result.online_only_null, result.offline_only_null, result.both_null) == (1, 1, 1)
    assert result.breached
    assert [s["row"] for s in result.samples] == [2, 3, 4]
    assert result.samples[0] == {
        "request_id": "r1",
        "row": 2,
        "online_value": 2.0,
        "offline_value": 2.1,
    }
    # SMAPE and |diff| quantiles over the 4 rows where both are non-null.
    diffs = [1e-10, 1.0, 0.1]
    smape = (1e-10 / ((2 + 1e-10) / 2) + 1 / ((2e12 + 1) / 2) + 0.1 / (4.1 / 2)) / 3
    assert result.smape == pytest.approx(smape, rel=1e-6)
    assert result.diff_quantiles["max"] == pytest.approx(1.0)
    assert result.diff_quantiles["p50"] == pytest.approx(sorted(diffs)[1], rel=1e-6)


def test_equal_infinities_match_and_unequal_ones_do_not() -> None:
    online = pl.Series([float("inf"), float("-inf"), 1.0, float("inf"), 2.0, 5.0])
    offline = pl.Series([float("inf"), float("-inf"), 1.0, 3.0, float("inf"), 5.0])
    result = compare_feature(IDENT, online, offline, "ratio", Tolerance())
    assert (result.matches, result.mismatches) == (4, 2)
    # Quantiles over the pairs with a finite difference (4 equal pairs: 0), never NaN.
    assert result.diff_quantiles == {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    assert result.smape == 0.0


def test_integers_strings_and_booleans_are_exact() -> None:
    ints = compare_feature(
        IDENT, pl.Series([1, 2, 3, 0, 0, None]), pl.Series([1, 2, 4, 0, 0, None]), "n", Tolerance()
    )
    assert ints.mismatches == 1
    assert ints.smape == pytest.approx(2 * 1 / 7 / 5)
    strings = compare_feature(
        IDENT,
        pl.Series(["a", "b", None, "c", "d", "e"]),
        pl.Series(["a", "B", None, "c", "d", "e"], dtype=pl.Categorical),
        "s",
        Tolerance(),
    )
    assert (strings.mismatches, strings.smape, strings.both_null) == (1, None, 1)
    bools = compare_feature(
        IDENT,
        pl.Series([True, False, None, True, True, False]),
        pl.Series([True, True, False, True, True, False]),
        "b",
        Tolerance(),
    )
    assert (bools.mismatches, bools.online_only_null) == (2, 1)


def test_lists_compare_elementwise_with_float_tolerance() -> None:
    online = pl.Series([[1.0, 2.0], [], None, [1.0], [None, 3.0], [5.0, 6.0]])
    offline = pl.Series([[1.0, 2.0 + 1e-12], [], None, [1.0, 2.0], [None, 3.0], [5.0, 6.5]])
    result = compare_feature(IDENT, online, offline, "last3", Tolerance())
    assert result.mismatches == 2
    assert [s["row"] for s in result.samples] == [3, 5]
    assert result.samples[1]["offline_value"] == [5.0, 6.5]


def test_configurable_tolerance_and_threshold() -> None:
    online, offline = pl.Series([1.0] * 1000), pl.Series([1.0] * 999 + [1.01])
    ident = pl.DataFrame({"request_id": [f"r{i}" for i in range(1000)]})
    strict = compare_feature(ident, online, offline, "x", Tolerance())
    assert strict.mismatches == 1
    assert not strict.breached  # 0.999 is the default minimum match rate
    loose = compare_feature(ident, online, offline, "x", Tolerance(rel_tolerance=0.02))
    assert loose.mismatches == 0
    config = ReplayConfig.from_dict(
        {"min_match_rate": 1.0, "features": {"y": {"rel_tolerance": 0.5}}}
    )
    assert config.tolerance("x") == Tolerance(min_match_rate=1.0)
    assert config.tolerance("y") == Tolerance(rel_tolerance=0.5, min_match_rate=1.0)
    with pytest.raises(ReplayError, match="unknown replay settings"):
        ReplayConfig.from_dict({"tolerance": 1})


def test_spine_columns_come_from_the_service(tmp_path: Path) -> None:
    tiny = cases.build_repo(tmp_path)
    assert spine_columns(tiny.service) == (["user_id"], ["req_amount"])


def test_clean_replay_matches_every_row_and_attributes_a_changed_constant(
    tmp_path: Path,
) -> None:
    tiny = cases.build_repo(tmp_path / "repo")
    requests = cases.spine(400, cases.LOG_START, cases.LOG_END)
    features = cases.served(tiny, requests)
    logs = cases.log_frame(requests, features, service_version=tiny.service.version)
    clean = replay(logs, tiny.service, tiny.repo)
    assert [f.feature for f in clean.features] == cases.FEATURES
    assert all(f.rows_compared == 400 and f.mismatches == 0 for f in clean.features)
    assert not clean.breached()
    assert not clean.definitions_changed
    assert clean.offline.columns == cases.FEATURES

    # The serving side computes amount_with_tax with 1.25 instead of 1.2.
    skewed = logs.with_columns(amount_with_tax=pl.col("req_amount") * 1.25)
    result = replay(skewed, tiny.service, tiny.repo, ReplayConfig(samples=3))
    by_name = {f.feature: f for f in result.features}
    assert [f.feature for f in result.breached()] == ["amount_with_tax"]
    tax = by_name["amount_with_tax"]
    assert tax.mismatches == 400
    assert tax.smape == pytest.approx(0.05 / 1.225 * 2 / 2, rel=1e-9)  # |1.25-1.2|/((1.25+1.2)/2)
    sample = tax.samples[0]
    assert set(sample) == {
        "request_id",
        "row",
        "feature_time",
        "user_id",
        "online_value",
        "offline_value",
    }
    assert sample["online_value"] == pytest.approx(sample["offline_value"] / 1.2 * 1.25)
    assert len(tax.samples) == 3


def test_replay_reports_changed_definitions_and_missing_columns(tmp_path: Path) -> None:
    tiny = cases.build_repo(tmp_path / "repo")
    requests = cases.spine(40, cases.LOG_START, cases.LOG_END)
    logs = cases.log_frame(
        requests, cases.served(tiny, requests), service_version="older-version"
    ).with_columns(retired_feature=pl.lit(1.0))
    result = replay(logs, tiny.service, tiny.repo)
    assert result.definitions_changed
    assert result.logged_versions == ("older-version",)
    assert result.not_replayed == ("retired_feature",)
    assert all(f.mismatches == 0 for f in result.features)
    with pytest.raises(ReplayError, match=r"lack columns \['user_id'\]"):
        replay(logs.drop("user_id"), tiny.service, tiny.repo)


def test_rows_of_an_older_service_version_replay_with_its_own_definition(tmp_path: Path) -> None:
    tiny = cases.build_repo(tmp_path / "repo")
    older = Repo.from_objects(cases.definitions(tax=1.25), root=tiny.root).service("shop")
    assert older.version != tiny.service.version
    requests = cases.spine(80, cases.LOG_START, cases.LOG_END)
    old_rows = cases.log_frame(
        requests.head(40),
        served_with(older, tiny, requests.head(40)),
        service_version=older.version,
    )
    new_rows = cases.log_frame(
        requests.tail(40),
        cases.served(tiny, requests.tail(40)),
        service_version=tiny.service.version,
    )
    new_rows = new_rows.with_columns(request_id="new-" + pl.col("request_id"))
    logs = pl.concat([old_rows, new_rows]).sort("feature_time")  # versions interleaved
    own = replay(logs, tiny.service, tiny.repo, definitions={older.version: older})
    assert all(f.mismatches == 0 and f.rows_compared == 80 for f in own.features)
    assert own.replayed_with == {older.version: "logged version", tiny.service.version: "current"}
    assert not own.definitions_changed
    current_only = replay(logs, tiny.service, tiny.repo)
    assert current_only.definitions_changed
    assert [(f.feature, f.mismatches) for f in current_only.breached()] == [("amount_with_tax", 40)]
    # The offline frame stays in log order across the version groups.
    assert current_only.offline["amount_with_tax"].to_list() == pytest.approx(
        (logs["req_amount"] * 1.2).to_list()
    )


def served_with(
    service: fl.FeatureService, tiny: cases.TinyRepo, requests: pl.DataFrame
) -> pl.DataFrame:
    return fl.training_set(
        service, requests, repo=tiny.repo, timestamp_column="feature_time"
    ).select(cases.FEATURES)
