"""Drift thresholds: defaults that suit the sample size, per-feature overrides, and the
multiple-testing correction across features.

A feature is judged drifted when at least one of these breaches holds:

- numeric: the corrected KS p-value < `alpha` AND an effect size reaches its floor (PSI >=
  0.2, or JS distance >= 0.1, or Wasserstein / reference std >= 0.1). Both are needed: with 1M
  rows every negligible difference is significant, and with 50 rows PSI is noisy (its expected
  value under no drift is about (bins - 1) * (1/n_ref + 1/n_cur)), so the test guards the small
  samples and the effect floor guards the large ones.
- categorical: the corrected chi-square p-value < `alpha` AND (L-infinity >= 0.1, the TFDV
  default, or PSI >= 0.2, or JS >= 0.1); or categories unseen in the reference make up >= 1% of
  the current non-null values.
- any kind: |null-rate change| >= 0.05 AND the two-proportion z-test (corrected across features
  in its own family) has p < `alpha`.

The KS and chi-square p-values of all judged features form one family, corrected with
Benjamini-Hochberg (false discovery rate `alpha`) by default, or Bonferroni (family-wise error
rate) on request. Features with fewer than `min_samples` (default 30) non-null values on either
side are not judged at all: their metrics are reported with a note and `drifted=False`, because
no test is decisive at that size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from featurelib.errors import FeaturelibError

Correction = Literal["bh", "bonferroni", "none"]
_CORRECTIONS = ("bh", "bonferroni", "none")


class DriftConfigError(FeaturelibError):
    """A drift configuration (thresholds, overrides, correction) is invalid."""


@dataclass(frozen=True)
class FeatureThresholds:
    """Breach thresholds of one feature; None inherits the config's default for that metric."""

    psi: float | None = None
    js_distance: float | None = None
    wasserstein_norm: float | None = None
    linf: float | None = None
    new_category_rate: float | None = None
    null_rate_change: float | None = None
    enabled: bool | None = None  # False: metrics are computed and shown, never judged

    def merged_over(self, base: FeatureThresholds) -> FeatureThresholds:
        """These thresholds with every None filled from `base`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in values.items() if v is not None})


DEFAULT_THRESHOLDS = FeatureThresholds(
    psi=0.2,
    js_distance=0.1,
    wasserstein_norm=0.1,
    linf=0.1,
    new_category_rate=0.01,
    null_rate_change=0.05,
    enabled=True,
)


@dataclass(frozen=True)
class DriftConfig:
    """How drift is measured (bins, epsilon) and judged (thresholds, alpha, correction)."""

    bins: int = 10
    epsilon: float = 1e-4
    alpha: float = 0.01
    correction: Correction = "bh"
    min_samples: int = 30
    defaults: FeatureThresholds = DEFAULT_THRESHOLDS
    per_feature: Mapping[str, FeatureThresholds] = field(default_factory=dict)
    max_histogram_categories: int = 20

    def __post_init__(self) -> None:
        where = "DriftConfig"
        if self.bins < 2:
            raise DriftConfigError(f"bins must be >= 2, got {self.bins}", where=where)
        if not 0 < self.epsilon < 0.01:
            raise DriftConfigError(
                f"epsilon must be in (0, 0.01), got {self.epsilon}",
                where=where,
                hint="it only replaces empty-bin proportions; 1e-4 is the default",
            )
        if not 0 < self.alpha < 1:
            raise DriftConfigError(f"alpha must be in (0, 1), got {self.alpha}", where=where)
        if self.correction not in _CORRECTIONS:
            raise DriftConfigError(
                f"unknown correction {self.correction!r}",
                where=where,
                hint=f"use one of {', '.join(_CORRECTIONS)}",
            )
        if self.min_samples < 1:
            raise DriftConfigError(f"min_samples must be >= 1, got {self.min_samples}", where=where)
        if self.max_histogram_categories < 1:
            raise DriftConfigError("max_histogram_categories must be >= 1", where=where)
        full = self.defaults.merged_over(DEFAULT_THRESHOLDS)
        _check_thresholds(full, f"{where}.defaults")
        for name, overrides in self.per_feature.items():
            _check_thresholds(overrides.merged_over(full), f"{where}.per_feature[{name!r}]")

    def thresholds_for(self, feature: str) -> FeatureThresholds:
        """The effective thresholds of `feature` (its overrides over the defaults)."""
        base = self.defaults.merged_over(DEFAULT_THRESHOLDS)
        overrides = self.per_feature.get(feature)
        return overrides.merged_over(base) if overrides is not None else base

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftConfig:
        """Build from a parsed YAML/JSON mapping, e.g.
        `{"alpha": 0.01, "defaults": {"psi": 0.25}, "per_feature": {"dep_delay": {"psi": 0.3}}}`.
        """
        data = dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DriftConfigError(
                f"unknown drift config keys {unknown}",
                where="drift config",
                hint=f"allowed keys: {sorted(known)}",
            )
        if "defaults" in data:
            data["defaults"] = _thresholds_from_dict(data["defaults"], "drift config defaults")
        if "per_feature" in data:
            per_feature = data["per_feature"] or {}
            if not isinstance(per_feature, Mapping):
                raise DriftConfigError(
                    "per_feature must map feature names to thresholds",
                    where="drift config",
                )
            data["per_feature"] = {
                str(name): _thresholds_from_dict(value, f"drift config per_feature[{name!r}]")
                for name, value in per_feature.items()
            }
        try:
            return cls(**data)
        except TypeError as exc:  # a wrongly typed value that __post_init__ compared
            raise DriftConfigError(str(exc), where="drift config") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (round-trips through `from_dict`)."""
        return {
            "bins": self.bins,
            "epsilon": self.epsilon,
            "alpha": self.alpha,
            "correction": self.correction,
            "min_samples": self.min_samples,
            "defaults": _thresholds_to_dict(self.defaults),
            "per_feature": {k: _thresholds_to_dict(v) for k, v in self.per_feature.items()},
            "max_histogram_categories": self.max_histogram_categories,
        }


def _thresholds_to_dict(thresholds: FeatureThresholds) -> dict[str, Any]:
    return {f.name: getattr(thresholds, f.name) for f in fields(thresholds)}


def _thresholds_from_dict(value: Any, where: str) -> FeatureThresholds:
    if isinstance(value, FeatureThresholds):
        return value
    if not isinstance(value, Mapping):
        raise DriftConfigError(f"expected a mapping of thresholds, got {value!r}", where=where)
    allowed = {f.name for f in fields(FeatureThresholds)}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise DriftConfigError(
            f"unknown threshold names {unknown}", where=where, hint=f"allowed: {sorted(allowed)}"
        )
    return FeatureThresholds(**{str(k): v for k, v in value.items()})


def _check_thresholds(thresholds: FeatureThresholds, where: str) -> None:
    for f in fields(thresholds):
        value = getattr(thresholds, f.name)
        if f.name == "enabled":
            if not isinstance(value, bool):
                raise DriftConfigError(f"enabled must be true or false, got {value!r}", where=where)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DriftConfigError(f"{f.name} must be a number, got {value!r}", where=where)
        if math.isnan(value) or value < 0:
            raise DriftConfigError(
                f"{f.name} must be >= 0, got {value}",
                where=where,
                hint="use a large number (or enabled: false) to switch a check off",
            )


@dataclass(frozen=True)
class Evidence:
    """The measured values one feature's verdict is decided on (None: not measurable)."""

    feature: str
    kind: str  # "numeric" | "categorical"
    valid_reference: int  # non-null values
    valid_current: int
    psi: float | None
    js_distance: float | None
    wasserstein_norm: float | None
    linf: float | None
    new_category_rate: float | None
    new_categories: tuple[str, ...]
    null_rate_change: float
    p_adjusted: float | None  # KS (numeric) / chi-square (categorical), corrected
    null_p_adjusted: float | None  # two-proportion test of the null rates, corrected


def judge(e: Evidence, config: DriftConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(breaches, notes) of one feature under `config`: the rules of this module's docstring.

    Callers pass p_adjusted=None for features that were not judged (too few values, disabled).
    """
    t = config.thresholds_for(e.feature)
    breaches: list[str] = []
    notes: list[str] = []
    if not t.enabled:
        notes.append("drift checks disabled for this feature in the config")
    elif min(e.valid_reference, e.valid_current) < config.min_samples:
        notes.append(
            f"too few non-null values to judge the distribution ({e.valid_reference} reference, "
            f"{e.valid_current} current < min_samples {config.min_samples})"
        )
    if e.p_adjusted is not None and e.p_adjusted < config.alpha:
        test = "KS" if e.kind == "numeric" else "chi2"
        why = f" ({test} p_adj={e.p_adjusted:.3g} < {config.alpha:g})"
        effects: list[tuple[str, float | None, float | None]] = [
            ("psi", e.psi, t.psi),
            ("js_distance", e.js_distance, t.js_distance),
        ]
        if e.kind == "numeric":
            effects.append(("wasserstein_norm", e.wasserstein_norm, t.wasserstein_norm))
        else:
            effects.insert(0, ("linf", e.linf, t.linf))
        breaches += [
            f"{metric}: {value:.4g} >= {limit:g}{why}"
            for metric, value, limit in effects
            if value is not None and limit is not None and value >= limit
        ]
    if (
        t.enabled
        and e.kind == "categorical"
        and e.new_category_rate is not None
        and t.new_category_rate is not None
        and e.valid_current >= config.min_samples
        and e.new_category_rate > 0
        and e.new_category_rate >= t.new_category_rate
    ):
        listed = ", ".join(repr(c) for c in e.new_categories[:3])
        breaches.append(
            f"new_category_rate: {e.new_category_rate:.4g} >= {t.new_category_rate:g} "
            f"(categories unseen in the reference: {listed})"
        )
    if (
        e.null_p_adjusted is not None
        and t.null_rate_change is not None
        and abs(e.null_rate_change) >= t.null_rate_change
        and e.null_p_adjusted < config.alpha
    ):
        breaches.append(
            f"null_rate_change: {e.null_rate_change:+.4g} (|change| >= {t.null_rate_change:g}, "
            f"p_adj={e.null_p_adjusted:.3g} < {config.alpha:g})"
        )
    return tuple(breaches), tuple(notes)
