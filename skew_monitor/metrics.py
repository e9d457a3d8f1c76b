"""Pure drift metrics on numpy arrays: the exact formulas the skew monitor reports.

Conventions shared by every function (README "Drift metrics" repeats them):

- Numeric samples are 1-D float64 arrays with nulls, NaN and +/-inf already removed (the caller
  reports those through the null-rate change).
- Numeric bins come from the *reference* sample: interior edges at the reference quantiles
  1/B, 2/B, ..., (B-1)/B (numpy's default "linear" interpolation), deduplicated, with -inf and
  +inf as outer ends. Bins are right-closed: bin 0 is (-inf, e1], bin i is (e_i, e_(i+1)], the
  last bin is (e_k, +inf). Right-closed bins keep a constant reference in one bin, so any
  value above it lands in another bin and shows up.
- Proportions are counts divided by the sample's size (they sum to 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.signedinteger[Any]]

DEFAULT_EPSILON = 1e-4
"""Replaces zero proportions in PSI (a bin empty on one side would make ln(q/p) infinite)."""

KS_EXACT_MAX_N = 10_000
"""Up to this sample size the KS p-value is exact (scipy's `method="auto"` switch point)."""


def quantile_edges(reference_sorted: FloatArray, bins: int) -> FloatArray:
    """Interior bin edges: the reference quantiles k/bins (k = 1..bins-1), deduplicated.

    `reference_sorted` must be sorted ascending. Linear interpolation between order statistics,
    identical to `numpy.quantile(x, k / bins)`.
    """
    n = reference_sorted.shape[0]
    if n == 0 or bins < 2:
        return np.empty(0, dtype=np.float64)
    position = np.arange(1, bins, dtype=np.float64) / bins * (n - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    fraction = position - low
    values = reference_sorted[low] + (reference_sorted[high] - reference_sorted[low]) * fraction
    return np.unique(values)


def bin_proportions(sample_sorted: FloatArray, edges: FloatArray) -> FloatArray:
    """Share of a sorted sample in each right-closed bin (-inf, e1], (e1, e2], ..., (ek, inf).

    Counting uses one binary search per edge on the sorted sample (no pass over the rows).
    """
    n = sample_sorted.shape[0]
    if n == 0:
        return np.zeros(edges.shape[0] + 1, dtype=np.float64)
    cumulative = np.searchsorted(sample_sorted, edges, side="right")
    counts = np.diff(np.concatenate(([0], cumulative, [n])))
    proportions: FloatArray = counts.astype(np.float64) / n
    return proportions


def psi(reference: FloatArray, current: FloatArray, epsilon: float = DEFAULT_EPSILON) -> float:
    """Population Stability Index: sum over bins of (q - p) * ln(q / p).

    p = reference proportions, q = current proportions (same bins or categories). Zero
    proportions are replaced by `epsilon` (default 1e-4) before the sum; proportions are not
    renormalized afterwards. Natural log, so PSI is in nats: < 0.1 stable, 0.1-0.2 moderate,
    >= 0.2 a significant shift (the usual reading).
    """
    p = np.where(reference > 0, reference, epsilon)
    q = np.where(current > 0, current, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: FloatArray, current: FloatArray) -> float:
    """Jensen-Shannon distance, log base 2: sqrt(JSD), in [0, 1].

    JSD = 1/2 * sum p*log2(p/m) + 1/2 * sum q*log2(q/m), m = (p + q) / 2, terms with a zero
    proportion contribute 0 (so no epsilon). Equals
    `scipy.spatial.distance.jensenshannon(p, q, base=2)`.
    """
    middle = (reference + current) / 2.0

    def _kl_to_middle(x: FloatArray) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / middle[mask])))

    divergence = 0.5 * _kl_to_middle(reference) + 0.5 * _kl_to_middle(current)
    return float(np.sqrt(min(max(divergence, 0.0), 1.0)))


def linf_distance(reference: FloatArray, current: FloatArray) -> float:
    """L-infinity distance (TFDV): max over categories of |p_i - q_i|, in [0, 1]."""
    if reference.shape[0] == 0:
        return 0.0
    return float(np.max(np.abs(reference - current)))


@dataclass(frozen=True)
class EcdfComparison:
    """Two-sample KS statistic and p-value plus the raw Wasserstein-1 distance."""

    ks_statistic: float
    ks_pvalue: float
    wasserstein: float


def compare_ecdfs(reference_sorted: FloatArray, current_sorted: FloatArray) -> EcdfComparison:
    """KS two-sample test and Wasserstein-1 distance from the two sorted samples, vectorized.

    Both ECDFs are evaluated at every distinct pooled value (right-continuous, so ties count
    fully), from one linear merge of the two sorted samples:

    - KS statistic D = max |F_ref(x) - F_cur(x)| over pooled x. p-value (two-sided): for
      max(n_ref, n_cur) <= 10 000 the exact distribution, above it Smirnov's asymptotic
      `kstwo.sf(D, round(n_ref * n_cur / (n_ref + n_cur)))` -- the same choice and formulas as
      `scipy.stats.ks_2samp(method="auto")`.
    - Wasserstein-1 W = integral |F_ref(x) - F_cur(x)| dx = sum over consecutive pooled values
      of |F_ref - F_cur| * (x_(i+1) - x_i); equals `scipy.stats.wasserstein_distance`.
    """
    n_ref = reference_sorted.shape[0]
    n_cur = current_sorted.shape[0]
    if n_ref == 0 or n_cur == 0:
        return EcdfComparison(float("nan"), float("nan"), float("nan"))
    # A stable argsort of two concatenated sorted runs is a linear merge (timsort); cumulative
    # counts of reference members along the merge give both ECDFs at every pooled value.
    concatenated = np.concatenate((reference_sorted, current_sorted))
    order = np.argsort(concatenated, kind="stable")
    pooled = concatenated[order]
    # int32 cumulative sums are several times faster than numpy's default int64 ones
    count_type = np.int32 if n_ref + n_cur < 2**31 else np.int64
    ref_seen: IntArray = np.cumsum((order < n_ref).view(np.int8), dtype=count_type)
    # ECDFs are right-continuous: evaluate them at the last element of each run of ties
    run_end = np.empty(pooled.shape[0], dtype=bool)
    np.not_equal(pooled[1:], pooled[:-1], out=run_end[:-1])
    run_end[-1] = True
    ref_count: IntArray = ref_seen[run_end]
    seen: IntArray = (np.flatnonzero(run_end) + 1).astype(count_type)
    cur_count = seen - ref_count
    gaps = np.abs(ref_count / n_ref - cur_count / n_cur)
    statistic = float(gaps.max())
    wasserstein = float(np.sum(gaps[:-1] * np.diff(pooled[run_end])))
    return EcdfComparison(statistic, ks_pvalue(statistic, n_ref, n_cur), wasserstein)


def ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float:
    """Two-sided KS p-value for statistic D and sample sizes, as `scipy.stats.ks_2samp`."""
    if max(n_ref, n_cur) <= KS_EXACT_MAX_N:
        exact = _exact_ks_pvalue(statistic, n_ref, n_cur)
        if exact is not None:
            return exact
    larger, smaller = max(n_ref, n_cur), min(n_ref, n_cur)
    effective_n = np.round(larger * smaller / (larger + smaller))
    return float(np.clip(stats.kstwo.sf(statistic, effective_n), 0.0, 1.0))


def _exact_ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float | None:
    """scipy's exact two-sample KS probability; None when it is not computable (overflow)."""
    try:
        from scipy.stats._stats_py import _attempt_exact_2kssamp
    except ImportError:  # private helper moved: the asymptotic formula is the fallback
        return None
    import math

    with np.errstate(all="ignore"):
        success, _, probability = _attempt_exact_2kssamp(
            n_ref, n_cur, math.gcd(n_ref, n_cur), statistic, "two-sided"
        )
    if not success:
        return None
    return float(np.clip(probability, 0.0, 1.0))


def normalized_wasserstein(wasserstein: float, reference_std: float) -> float:
    """Wasserstein-1 divided by the reference sample std (ddof=1).

    A constant reference (std 0) gives 0.0 when the distance is 0 and +inf otherwise: any
    movement away from a constant is an unbounded shift in reference-std units.
    """
    if reference_std > 0:
        return wasserstein / reference_std
    return 0.0 if wasserstein == 0 else float("inf")


def chi2_homogeneity_pvalue(reference_counts: FloatArray, current_counts: FloatArray) -> float:
    """Pearson chi-square test that two category count vectors share one distribution.

    Categories empty on both sides are dropped; 1.0 when fewer than two categories remain.
    Same value as `scipy.stats.chi2_contingency([ref, cur], correction=False)`.
    """
    keep = (reference_counts + current_counts) > 0
    ref, cur = reference_counts[keep], current_counts[keep]
    if ref.shape[0] < 2 or ref.sum() == 0 or cur.sum() == 0:
        return 1.0
    table = np.vstack((ref, cur))
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    return float(stats.chi2.sf(chi2, ref.shape[0] - 1))


def two_proportion_pvalue(x_ref: int, n_ref: int, x_cur: int, n_cur: int) -> float:
    """Two-sided pooled z-test p-value that two rates (x / n) are equal; 1.0 if undefined."""
    if n_ref == 0 or n_cur == 0:
        return 1.0
    pooled = (x_ref + x_cur) / (n_ref + n_cur)
    variance = pooled * (1 - pooled) * (1 / n_ref + 1 / n_cur)
    if variance <= 0:
        return 1.0
    z = (x_cur / n_cur - x_ref / n_ref) / np.sqrt(variance)
    return float(2 * stats.norm.sf(abs(z)))


def adjust_pvalues(pvalues: FloatArray, method: str) -> FloatArray:
    """Multiple-testing adjusted p-values: "bh" (Benjamini-Hochberg), "bonferroni" or "none".

    BH: sort ascending, p_(i) * m / i, then a running minimum from the largest rank down,
    capped at 1 (same as `scipy.stats.false_discovery_control(p, method="bh")`). Bonferroni:
    min(p * m, 1). NaN p-values are left NaN and do not count in m.
    """
    adjusted = np.full(pvalues.shape, np.nan)
    valid = ~np.isnan(pvalues)
    p = pvalues[valid]
    m = p.shape[0]
    if m == 0 or method == "none":
        adjusted[valid] = p
        return adjusted
    if method == "bonferroni":
        adjusted[valid] = np.minimum(p * m, 1.0)
        return adjusted
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    running_min = np.minimum.accumulate(scaled[::-1])[::-1]
    result = np.empty(m)
    result[order] = np.minimum(running_min, 1.0)
    adjusted[valid] = result
    return adjusted
