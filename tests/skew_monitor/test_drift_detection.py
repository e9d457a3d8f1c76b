"""compute_drift: injected skew is detected on the right feature only; identical distributions
raise no alarm; per-feature metrics equal the hand-computed ones; config and input errors."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import polars as pl
import pytest
from scipy import spatial, stats

from skew_monitor.drift import DriftInputError, FeatureDrift, compute_drift, skipped_features
from skew_monitor.thresholds import DriftConfig, DriftConfigError, FeatureThresholds

N = 40_000
CATEGORIES = np.array([f"c{i:02d}" for i in range(12)])
CATEGORY_WEIGHTS = np.arange(12, 0, -1) / np.arange(12, 0, -1).sum()


def _with_nulls(rng: np.random.Generator, values: pl.Series, rate: float) -> pl.Series:
    mask = pl.Series(rng.random(values.len()) < rate)
    return pl.select(pl.when(mask).then(None).otherwise(values)).to_series().alias(values.name)


def _frame(rng: np.random.Generator, n: int = N) -> pl.DataFrame:
    """20 features: 8 normal, 4 skewed, 3 integer (ties), 4 categorical, 1 boolean."""
    columns: list[pl.Series] = []
    for i in range(8):
        columns.append(pl.Series(f"normal_{i}", rng.normal(10.0 * i, 1.0 + i, n)))
    for i in range(4):
        columns.append(pl.Series(f"skewed_{i}", rng.exponential(1.0 + i, n)))
    for i in range(3):
        columns.append(pl.Series(f"count_{i}", rng.poisson(2 + 3 * i, n)))
    for i in range(4):
        columns.append(pl.Series(f"cat_{i}", rng.choice(CATEGORIES, n, p=CATEGORY_WEIGHTS)))
    columns.append(pl.Series("flag", rng.random(n) < 0.3))
    columns = [_with_nulls(rng, c, 0.02) for c in columns]
    return pl.DataFrame(columns)


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return _frame(np.random.default_rng(11))


@pytest.fixture(scope="module")
def same_distribution() -> pl.DataFrame:
    return _frame(np.random.default_rng(12))


def _by_name(results: list[FeatureDrift]) -> dict[str, FeatureDrift]:
    return {r.feature: r for r in results}


def test_identical_distributions_raise_no_alarm(
    reference: pl.DataFrame, same_distribution: pl.DataFrame
) -> None:
    results = compute_drift(reference, same_distribution)
    assert len(results) == 20
    assert [r.feature for r in results if r.drifted] == []
    kinds = {r.feature: r.kind for r in results}
    assert kinds["normal_0"] == "numeric"
    assert kinds["count_2"] == "numeric"
    assert kinds["cat_0"] == "categorical"
    assert kinds["flag"] == "categorical"
    for r in results:  # every metric is small, not just under the decision rule
        assert r.psi is not None
        assert r.psi < 0.01
        assert r.js_distance is not None
        assert r.js_distance < 0.05
        assert abs(r.null_rate_change) < 0.01
        if r.kind == "numeric":
            assert r.wasserstein_norm is not None
            assert r.wasserstein_norm < 0.05
            assert r.ks_statistic is not None
            assert r.ks_statistic < 0.02
            assert r.linf is None
        else:
            assert r.linf is not None
            assert r.linf < 0.02
            assert r.ks_pvalue is None
            assert r.wasserstein_norm is None
            assert r.new_category_rate == 0.0


def test_injected_skew_is_attributed_to_the_right_features(
    reference: pl.DataFrame, same_distribution: pl.DataFrame
) -> None:
    rng = np.random.default_rng(99)
    n = same_distribution.height
    new_category = pl.Series(np.where(rng.random(n) < 0.05, "brand_new", CATEGORIES[0]))
    current = same_distribution.with_columns(
        # a shift of 0.3 reference std (std of normal_3 is 4)
        pl.col("normal_3") + 1.2,
        # 5% of rows carry a category the reference never had
        pl.when(new_category == "brand_new")
        .then(pl.lit("brand_new"))
        .otherwise(pl.col("cat_2"))
        .alias("cat_2"),
        # null rate 2% -> ~17%
        pl.when(pl.Series(rng.random(n) < 0.15))
        .then(None)
        .otherwise(pl.col("skewed_1"))
        .alias("skewed_1"),
    )
    results = _by_name(compute_drift(reference, current))
    assert sorted(f for f, r in results.items() if r.drifted) == ["cat_2", "normal_3", "skewed_1"]

    shifted = results["normal_3"]
    assert shifted.wasserstein_norm == pytest.approx(0.3, abs=0.02)
    assert any(b.startswith("wasserstein_norm: ") for b in shifted.breaches)
    assert shifted.p_adjusted is not None
    assert shifted.p_adjusted < 1e-10

    unseen = results["cat_2"]
    assert unseen.new_categories == ("brand_new",)
    assert unseen.new_category_rate == pytest.approx(0.05, abs=0.005)
    assert any(b.startswith("new_category_rate: ") for b in unseen.breaches)

    nulls = results["skewed_1"]
    assert nulls.null_rate_change == pytest.approx(0.147, abs=0.01)
    assert [b.split(":")[0] for b in nulls.breaches] == ["null_rate_change"]


def test_feature_metrics_equal_hand_computed_values() -> None:
    ref_values = [float(v) for v in range(1, 41)]  # 1..40
    cur_values = [float(v) + 10 for v in range(1, 41)]  # 11..50
    reference = pl.DataFrame({"x": [*ref_values, None], "c": ["a"] * 20 + ["b"] * 21})
    current = pl.DataFrame(
        {"x": [*cur_values, math.nan], "c": ["a"] * 10 + ["b"] * 21 + ["z"] * 10}
    )
    config = DriftConfig(bins=4)
    x, c = compute_drift(reference, current, ["x", "c"], config)

    # quartile edges of 1..40: positions .25*39 = 9.75, 19.5, 29.25 -> 10.75, 20.5, 30.25
    assert x.histogram.edges == pytest.approx((10.75, 20.5, 30.25))
    p = np.array([10, 10, 10, 10]) / 40
    q = np.array([0, 10, 10, 20]) / 40  # 11..20 | 21..30 | 31..40 -> 10 each | 41..50 -> last
    eps_q = np.where(q > 0, q, 1e-4)
    assert x.psi == pytest.approx(float(np.sum((eps_q - p) * np.log(eps_q / p))))
    assert x.js_distance == pytest.approx(spatial.distance.jensenshannon(p, q, base=2))
    assert x.ks_statistic == pytest.approx(0.25)  # F_ref(10) - F_cur(10) = 10/40
    assert x.ks_pvalue == pytest.approx(stats.ks_2samp(ref_values, cur_values).pvalue)
    # every value moves by 10: W1 = 10; std of 1..40 (ddof=1) = sqrt(40 * 41 / 12)
    assert x.wasserstein_norm == pytest.approx(10 / math.sqrt(40 * 41 / 12))
    assert x.null_rate_reference == pytest.approx(1 / 41)  # null
    assert x.null_rate_current == pytest.approx(1 / 41)  # NaN counts as null
    assert x.n_reference == 41
    assert x.n_current == 41

    # categories a, b, z: p = 20/41, 21/41, 0; q = 10/41, 21/41, 10/41
    p_c = np.array([20, 21, 0]) / 41
    q_c = np.array([10, 21, 10]) / 41
    assert c.histogram.categories == ("b", "a", "z")
    assert c.linf == pytest.approx(10 / 41)
    eps_p = np.where(p_c > 0, p_c, 1e-4)
    assert c.psi == pytest.approx(float(np.sum((q_c - eps_p) * np.log(q_c / eps_p))))
    assert c.js_distance == pytest.approx(spatial.distance.jensenshannon(p_c, q_c, base=2))
    assert c.new_category_rate == pytest.approx(10 / 41)
    table = np.array([[20, 21, 0], [10, 21, 10]])
    assert c.chi2_pvalue == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert c.drifted
    assert c.breaches[-1].startswith("new_category_rate: 0.2439 >= 0.01")
    # PSI is large, but 40 vs 40 values: the KS test is not significant, so no verdict
    assert x.p_adjusted is not None
    assert x.p_adjusted > 0.01
    assert not x.drifted


def test_small_samples_are_reported_but_not_judged() -> None:
    reference = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0]})
    current = pl.DataFrame({"x": [100.0, 200.0, 300.0]})
    (x,) = compute_drift(reference, current)
    assert x.ks_statistic == 1.0
    assert x.psi is not None
    assert x.psi > 1
    assert not x.drifted
    assert x.breaches == ()
    assert x.p_adjusted is None
    assert "too few non-null values" in x.notes[0]


def test_all_null_current_column_is_a_null_rate_breach() -> None:
    reference = pl.DataFrame({"x": np.arange(100, dtype=np.float64)})
    current = pl.DataFrame({"x": pl.Series([None] * 100, dtype=pl.Null)})
    (x,) = compute_drift(reference, current)
    assert x.psi is None
    assert x.ks_statistic is None
    assert x.null_rate_change == 1.0
    assert x.drifted
    assert x.breaches[0].startswith("null_rate_change: +1")
    json.dumps(x.to_dict(), allow_nan=False)


def test_per_feature_overrides_and_disable(
    reference: pl.DataFrame, same_distribution: pl.DataFrame
) -> None:
    current = same_distribution.with_columns(pl.col("normal_3") + 1.2, pl.col("normal_5") + 3.0)
    config = DriftConfig.from_dict(
        {
            "alpha": 0.001,
            "correction": "bonferroni",
            "per_feature": {
                # W_norm ~ 0.3, PSI ~ 0.1, JS ~ 0.15: raise every floor above them
                "normal_3": {"wasserstein_norm": 0.5, "psi": 0.5, "js_distance": 0.5},
                "normal_5": {"enabled": False},
            },
        }
    )
    results = _by_name(compute_drift(reference, current, config=config))
    assert not results["normal_3"].drifted
    assert results["normal_3"].wasserstein_norm == pytest.approx(0.3, abs=0.02)
    assert not results["normal_5"].drifted
    assert results["normal_5"].notes == ("drift checks disabled for this feature in the config",)
    assert compute_drift(reference, current, ["normal_5"])[0].drifted
    # bonferroni over the 19 judged features
    ks_p = results["normal_0"].ks_pvalue
    assert ks_p is not None
    assert results["normal_0"].p_adjusted == pytest.approx(min(ks_p * 19, 1.0))


def test_config_round_trip_and_validation() -> None:
    config = DriftConfig(
        alpha=0.05, per_feature={"a": FeatureThresholds(psi=0.3, null_rate_change=0.1)}
    )
    again = DriftConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.thresholds_for("a").psi == 0.3
    assert again.thresholds_for("a").linf == 0.1  # inherited default
    assert again.thresholds_for("b").psi == 0.2
    with pytest.raises(DriftConfigError, match="unknown threshold names"):
        DriftConfig.from_dict({"per_feature": {"a": {"psii": 0.3}}})
    with pytest.raises(DriftConfigError, match="alpha must be in"):
        DriftConfig(alpha=1.5)
    with pytest.raises(DriftConfigError, match="psi must be >= 0"):
        DriftConfig(per_feature={"a": FeatureThresholds(psi=-1)})
    with pytest.raises(DriftConfigError, match="unknown correction"):
        DriftConfig.from_dict({"correction": "holm"})


def test_skipped_kinds_and_input_errors() -> None:
    frame = pl.DataFrame(
        {
            "x": [1.0, 2.0],
            "tags": [["a"], ["b", "c"]],
            "at": [datetime(2024, 1, 1), datetime(2024, 1, 2)],
        }
    )
    reasons = skipped_features(frame, frame)
    assert set(reasons) == {"tags", "at"}
    assert "temporal" in reasons["at"]
    assert "no scalar distribution" in reasons["tags"]
    assert [r.feature for r in compute_drift(frame, frame)] == ["x"]
    with pytest.raises(DriftInputError, match="'tags' cannot be compared"):
        compute_drift(frame, frame, ["x", "tags"])
    with pytest.raises(DriftInputError, match=r"\['y'\] are not columns of the current"):
        compute_drift(frame.with_columns(y=pl.lit(1)), frame, ["y"])
    with pytest.raises(DriftInputError, match="numeric in the reference but String"):
        compute_drift(frame, frame.with_columns(pl.col("x").cast(pl.String)), ["x"])


def test_to_dict_is_strict_json(reference: pl.DataFrame, same_distribution: pl.DataFrame) -> None:
    results = compute_drift(reference, same_distribution, ["normal_0", "cat_0"])
    decoded = json.loads(json.dumps([r.to_dict() for r in results], allow_nan=False))
    numeric, categorical = decoded
    assert numeric["histogram"]["kind"] == "numeric"
    assert len(numeric["histogram"]["edges"]) == 9
    assert sum(numeric["histogram"]["reference"]) == pytest.approx(1.0)
    assert categorical["histogram"]["categories"][0] == "c00"
    assert categorical["ks_pvalue"] is None
    assert categorical["linf"] is not None
