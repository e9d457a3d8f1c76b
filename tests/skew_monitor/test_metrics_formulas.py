"""The pure drift metrics against hand-computed values on tiny inputs and against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import spatial, stats

from skew_monitor import metrics


def _arr(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_quantile_edges_are_linear_reference_quantiles() -> None:
    ref = np.arange(1.0, 11.0)  # 1..10
    # positions k/4 * (n - 1) = 2.25, 4.5, 6.75 -> 3 + 0.25, 5 + 0.5, 7 + 0.75
    edges = metrics.quantile_edges(ref, 4)
    assert edges.tolist() == [3.25, 5.5, 7.75]
    assert np.allclose(edges, np.quantile(ref, [0.25, 0.5, 0.75]))


def test_quantile_edges_deduplicate_ties() -> None:
    ref = np.sort(_arr(1, 1, 1, 1, 1, 1, 1, 1, 2, 3))
    # deciles: 0.1..0.7 all fall on the ones; 0.8 -> pos 7.2 -> 1 + 0.2*1 = 1.2; 0.9 -> pos 8.1
    assert metrics.quantile_edges(ref, 10).tolist() == pytest.approx([1.0, 1.2, 2.1])


def test_bin_proportions_are_right_closed() -> None:
    sample = np.arange(1.0, 11.0)
    # (-inf, 3.25]: 1,2,3 | (3.25, 5.5]: 4,5 | (5.5, 7.75]: 6,7 | (7.75, inf): 8,9,10
    props = metrics.bin_proportions(sample, _arr(3.25, 5.5, 7.75))
    assert props.tolist() == pytest.approx([0.3, 0.2, 0.2, 0.3])
    # a value equal to an edge belongs to the bin that edge closes
    assert metrics.bin_proportions(_arr(5.5), _arr(3.25, 5.5, 7.75)).tolist() == [0, 1, 0, 0]


def test_constant_reference_still_separates_larger_values() -> None:
    ref = _arr(5, 5, 5, 5)
    edges = metrics.quantile_edges(ref, 10)
    assert edges.tolist() == [5.0]
    assert metrics.bin_proportions(ref, edges).tolist() == [1.0, 0.0]
    assert metrics.bin_proportions(_arr(5, 6), edges).tolist() == [0.5, 0.5]


def test_psi_hand_computed() -> None:
    p, q = _arr(0.5, 0.5), _arr(0.25, 0.75)
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert expected == pytest.approx(0.2746530721670274)
    assert metrics.psi(p, q) == pytest.approx(expected, rel=1e-12)
    assert metrics.psi(p, p) == 0.0


def test_psi_replaces_empty_bins_with_epsilon() -> None:
    p, q = _arr(1.0, 0.0), _arr(0.5, 0.5)
    eps = 1e-4
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - eps) * math.log(0.5 / eps)
    assert metrics.psi(p, q, eps) == pytest.approx(expected, rel=1e-12)
    assert metrics.psi(p, q, 1e-3) == pytest.approx(
        -0.5 * math.log(0.5) + (0.5 - 1e-3) * math.log(0.5 / 1e-3), rel=1e-12
    )


def test_js_distance_hand_computed() -> None:
    p, q = _arr(0.5, 0.5), _arr(0.25, 0.75)
    m = [0.375, 0.625]
    kl_p = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_q = 0.25 * math.log2(0.25 / m[0]) + 0.75 * math.log2(0.75 / m[1])
    expected = math.sqrt(0.5 * kl_p + 0.5 * kl_q)
    assert metrics.js_distance(p, q) == pytest.approx(expected, rel=1e-12)
    # disjoint supports: the maximum, 1; identical: 0
    assert metrics.js_distance(_arr(1, 0), _arr(0, 1)) == pytest.approx(1.0)
    assert metrics.js_distance(p, p) == 0.0


def test_js_distance_matches_scipy_on_random_histograms() -> None:
    rng = np.random.default_rng(7)
    for size in (2, 5, 10, 40):
        p = rng.random(size)
        q = rng.random(size)
        q[0] = 0.0  # an empty bin on one side
        p, q = p / p.sum(), q / q.sum()
        assert metrics.js_distance(p, q) == pytest.approx(
            spatial.distance.jensenshannon(p, q, base=2), abs=1e-12
        )


def test_linf_hand_computed() -> None:
    p = _arr(0.5, 0.3, 0.2, 0.0)
    q = _arr(0.4, 0.3, 0.1, 0.2)
    # |0.1|, 0, |0.1|, |0.2| -> 0.2
    assert metrics.linf_distance(p, q) == pytest.approx(0.2)


def test_ks_and_wasserstein_hand_computed() -> None:
    ref, cur = _arr(1, 2, 3, 4), _arr(3, 4, 5, 6)
    result = metrics.compare_ecdfs(ref, cur)
    # F_ref - F_cur at 1..6: .25, .5, .75-.25, 1-.5, 1-.75, 0 -> max .5
    assert result.ks_statistic == 0.5
    # W1 = sum |F_ref - F_cur| * gap = (.25 + .5 + .5 + .5 + .25) * 1 = 2
    assert result.wasserstein == pytest.approx(2.0)
    assert result.ks_pvalue == pytest.approx(stats.ks_2samp(ref, cur).pvalue, rel=1e-12)


def test_ks_counts_ties_fully() -> None:
    ref, cur = _arr(0, 0, 1), _arr(0, 1, 1)
    result = metrics.compare_ecdfs(ref, cur)
    # at 0: 2/3 vs 1/3 -> 1/3; at 1 both 1 -> D = 1/3; W1 = 1/3 * (1 - 0)
    assert result.ks_statistic == pytest.approx(1 / 3)
    assert result.wasserstein == pytest.approx(1 / 3)


def test_normalized_wasserstein_hand_computed() -> None:
    ref, cur = _arr(0, 1), _arr(1, 2)
    w = metrics.compare_ecdfs(ref, cur).wasserstein
    assert w == pytest.approx(1.0)
    std = float(np.std(ref, ddof=1))  # sqrt(((0-.5)^2 + (1-.5)^2) / 1) = sqrt(.5)
    assert metrics.normalized_wasserstein(w, std) == pytest.approx(1 / math.sqrt(0.5))
    assert metrics.normalized_wasserstein(0.0, 0.0) == 0.0
    assert metrics.normalized_wasserstein(0.3, 0.0) == math.inf


@pytest.mark.parametrize(
    ("n_ref", "n_cur", "integers"),
    [(30, 45, False), (200, 200, True), (5_000, 7_000, False), (20_000, 15_000, False),
     (30_000, 30_000, True)],
)  # fmt: skip
def test_ks_and_wasserstein_match_scipy(n_ref: int, n_cur: int, integers: bool) -> None:
    rng = np.random.default_rng(n_ref + n_cur)
    if integers:  # many ties
        ref = rng.integers(0, 20, n_ref).astype(np.float64)
        cur = rng.integers(1, 21, n_cur).astype(np.float64)
    else:
        ref = rng.normal(0.0, 1.0, n_ref)
        cur = rng.normal(0.05, 1.1, n_cur)
    ours = metrics.compare_ecdfs(np.sort(ref), np.sort(cur))
    theirs = stats.ks_2samp(ref, cur)
    assert ours.ks_statistic == pytest.approx(theirs.statistic, abs=1e-12)
    assert ours.ks_pvalue == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-300)
    assert ours.wasserstein == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-9)


def test_chi2_matches_scipy_contingency() -> None:
    ref = _arr(50, 30, 20, 0)
    cur = _arr(40, 35, 20, 5)
    expected = stats.chi2_contingency(np.vstack((ref, cur)), correction=False).pvalue
    assert metrics.chi2_homogeneity_pvalue(ref, cur) == pytest.approx(expected, rel=1e-12)
    # categories absent on both sides are dropped; one category left: nothing to test
    assert metrics.chi2_homogeneity_pvalue(_arr(5, 0), _arr(3, 0)) == 1.0


def test_two_proportion_pvalue_hand_computed() -> None:
    # 10/100 vs 20/100: pooled .15, var = .15 * .85 * (1/100 + 1/100) = .00255
    z = (0.2 - 0.1) / math.sqrt(0.00255)
    expected = math.erfc(z / math.sqrt(2))  # two-sided normal tail
    assert metrics.two_proportion_pvalue(10, 100, 20, 100) == pytest.approx(expected, rel=1e-9)
    assert metrics.two_proportion_pvalue(0, 100, 0, 50) == 1.0


def test_adjust_pvalues_bh_and_bonferroni() -> None:
    p = _arr(0.01, 0.04, 0.03, 0.5)
    # BH: sorted .01 .03 .04 .5 -> *4/rank: .04 .06 .0533 .5 -> running min from the top:
    # .04 .0533 .0533 .5, mapped back to input order
    bh = metrics.adjust_pvalues(p, "bh")
    assert bh.tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert bh == pytest.approx(stats.false_discovery_control(p, method="bh"))
    assert metrics.adjust_pvalues(p, "bonferroni").tolist() == pytest.approx([0.04, 0.16, 0.12, 1])
    assert metrics.adjust_pvalues(p, "none").tolist() == p.tolist()
    with_nan = metrics.adjust_pvalues(_arr(0.01, math.nan, 0.02), "bonferroni")
    assert with_nan[0] == pytest.approx(0.02)
    assert math.isnan(with_nan[1])
    assert with_nan[2] == pytest.approx(0.04)


def test_adjust_pvalues_bh_matches_scipy_on_random() -> None:
    p = np.random.default_rng(3).random(50) ** 3
    assert metrics.adjust_pvalues(p, "bh") == pytest.approx(
        stats.false_discovery_control(p, method="bh")
    )
