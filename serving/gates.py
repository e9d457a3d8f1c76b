"""Promotion gates: checks a model version must pass before an alias may point at it.

- metric thresholds (`{"auc": (">=", 0.6)}`) and "not worse than the alias's current version
  by more than X" (`max_regression={"auc": 0.01}`; log loss and Brier score: lower is better);
- signature: the version's feature service exists in the live definitions (the Feast registry
  after `feast apply`, else the repo files) with the definition version it was trained on;
- warm-up: the model loads and predicts a batch of rows from its stored training sample `runs`
  times with a p99 latency within the limit, returning finite probabilities.

A refused promotion raises `PromotionRefusedError` listing every failed gate with the measured
value; the registry is not changed.
"""

from __future__ import annotations

import io
import json
import operator
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from serving.errors import GatesFailedError, RegistryError

if TYPE_CHECKING:
    from serving.registry import ModelRegistry, ModelVersion

TRAINING_SAMPLE = "training_sample.parquet"
SERVICE_SPEC = "service_spec.json"
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_THRESHOLD = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class GateConfig:
    """Which promotion gates apply and their limits (None/empty disables a gate)."""

    metric_thresholds: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    max_regression: Mapping[str, float] = field(default_factory=dict)
    check_signature: bool = True
    repo_root: Path | None = None
    warmup_rows: int = 256
    warmup_runs: int = 20
    max_p99_ms: float | None = 250.0

    def __post_init__(self) -> None:
        for metric, (op, _) in self.metric_thresholds.items():
            if op not in _OPS:
                raise RegistryError(
                    f"unknown comparison {op!r} for metric {metric!r}", hint=f"use {list(_OPS)}"
                )
        if self.warmup_rows < 1 or self.warmup_runs < 1:
            raise RegistryError("warm-up needs at least one row and one run")


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate: what was measured and what was required."""

    gate: str
    passed: bool
    measured: str
    required: str

    def __str__(self) -> str:
        mark = "ok" if self.passed else "FAILED"
        return f"{mark:6} {self.gate}: {self.measured} (required: {self.required})"


def parse_threshold(text: str) -> tuple[str, tuple[str, float]]:
    """`"auc>=0.6"` → `("auc", (">=", 0.6))`."""
    match = _THRESHOLD.match(text)
    if match is None:
        raise RegistryError(
            f"cannot read metric threshold {text!r}", hint="write METRIC OP VALUE, e.g. auc>=0.6"
        )
    return match.group(1), (match.group(2), float(match.group(3)))


def _metric_gates(
    config: GateConfig, candidate: ModelVersion, incumbent: ModelVersion | None
) -> list[GateResult]:
    results = []
    for metric, (op, limit) in sorted(config.metric_thresholds.items()):
        value = candidate.metrics.get(metric)
        passed = value is not None and _OPS[op](value, limit)
        measured = "missing" if value is None else f"{value:.6g}"
        results.append(GateResult(f"metric {metric}", passed, measured, f"{op} {limit:g}"))
    for metric, tolerance in sorted(config.max_regression.items()):
        gate = f"no regression in {metric}"
        reference = None if incumbent is None else incumbent.metrics.get(metric)
        value = candidate.metrics.get(metric)
        if incumbent is None or reference is None:
            results.append(GateResult(gate, True, "no incumbent value to compare", "-"))
            continue
        if metric in LOWER_IS_BETTER:
            bound, op = reference + tolerance, "<="
            passed = value is not None and value <= bound
        else:
            bound, op = reference - tolerance, ">="
            passed = value is not None and value >= bound
        measured = "missing" if value is None else f"{value:.6g}"
        required = (
            f"{op} {bound:.6g} (version {incumbent.version}: {reference:.6g} ± {tolerance:g})"
        )
        results.append(GateResult(gate, passed, measured, required))
    return results


def _view_specs(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {p["view"]["name"]: p["view"] for p in spec.get("projections", [])}


def _signature_gate(
    registry: ModelRegistry, candidate: ModelVersion, config: GateConfig
) -> GateResult:
    gate, required = "signature", f"{candidate.service} at version {candidate.service_version}"
    root = config.repo_root or registry.repo_root
    if root is None:
        return GateResult(gate, False, "no feature repo given to compare against", required)
    from featurelib.online.live import load_serving_repo

    try:
        live = load_serving_repo(Path(root).resolve())
    except Exception as exc:  # an unloadable repo is a failed gate, reported, not a crash
        return GateResult(gate, False, f"cannot load definitions of {root}: {exc}", required)
    service = live.feature_services.get(candidate.service)
    if service is None:
        services = sorted(live.feature_services)
        return GateResult(gate, False, f"service absent (live services: {services})", required)
    if service.version == candidate.service_version:
        return GateResult(gate, True, f"{service.name} at version {service.version}", required)
    differences = [f"live version {service.version}"]
    live_names = set(service.output_names())
    missing = sorted(set(candidate.feature_names) - live_names)
    if missing:
        differences.append(f"features no longer served: {missing[:10]}")
    added = sorted(live_names - set(candidate.feature_names))
    if added:
        differences.append(f"features added: {added[:10]}")
    trained = registry.attachment(candidate.name, candidate.version, SERVICE_SPEC)
    if trained is not None:
        before, after = _view_specs(json.loads(trained)), _view_specs(service.to_spec())
        changed = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
        if changed:
            differences.append(f"views changed: {changed}")
        gone, new = sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())
        if gone:
            differences.append(f"views removed: {gone}")
        if new:
            differences.append(f"views added: {new}")
    return GateResult(gate, False, "; ".join(differences), required)


def _warmup_frame(
    registry: ModelRegistry, candidate: ModelVersion, rows: int
) -> tuple[pl.DataFrame, str]:
    payload = registry.attachment(candidate.name, candidate.version, TRAINING_SAMPLE)
    names = list(candidate.feature_names)
    if payload is None:
        # Without a sample, all-missing rows still exercise loading and the predict path.
        nulls = pl.DataFrame({n: pl.Series(n, [None] * rows) for n in names})
        return nulls, "all-null rows (no training sample attached)"
    sample = pl.read_parquet(io.BytesIO(payload), columns=names)
    if sample.height == 0:
        return pl.DataFrame({n: pl.Series(n, [None] * rows) for n in names}), "all-null rows"
    repeats = -(-rows // sample.height)
    frame = pl.concat([sample] * repeats).head(rows) if repeats > 1 else sample.head(rows)
    return frame, "training-sample rows"


def _warmup_gate(
    registry: ModelRegistry, candidate: ModelVersion, config: GateConfig
) -> GateResult:
    limit = config.max_p99_ms
    required = f"p99 <= {limit:g} ms for {config.warmup_rows} rows" if limit else "loads, predicts"
    gate = "warm-up latency"
    try:
        started = time.perf_counter()
        model = registry.load(candidate)
        load_ms = (time.perf_counter() - started) * 1000
        frame, kind = _warmup_frame(registry, candidate, config.warmup_rows)
        predictions = model.predict(frame)  # untimed: first call pays one-off costs
        timings = []
        for _ in range(config.warmup_runs):
            started = time.perf_counter()
            predictions = model.predict(frame)
            timings.append((time.perf_counter() - started) * 1000)
    except Exception as exc:  # a model that cannot load or predict fails this gate
        return GateResult(gate, False, f"load/predict failed: {exc}", required)
    if predictions.shape != (frame.height,) or not np.all(np.isfinite(predictions)):
        return GateResult(gate, False, "predictions not finite or wrong shape", required)
    if np.any((predictions < 0) | (predictions > 1)):
        return GateResult(gate, False, "predictions outside [0, 1]", required)
    p99 = float(np.percentile(timings, 99))
    measured = f"p99 {p99:.2f} ms over {config.warmup_runs} runs of {kind}; load {load_ms:.0f} ms"
    return GateResult(gate, limit is None or p99 <= limit, measured, required)


def evaluate_gates(
    registry: ModelRegistry,
    candidate: ModelVersion,
    config: GateConfig,
    *,
    incumbent: ModelVersion | None = None,
) -> list[GateResult]:
    """Every configured gate's result for promoting `candidate` over `incumbent`."""
    results = _metric_gates(config, candidate, incumbent)
    if config.check_signature:
        results.append(_signature_gate(registry, candidate, config))
    results.append(_warmup_gate(registry, candidate, config))
    return results


def check_promotion(
    registry: ModelRegistry,
    candidate: ModelVersion,
    alias: str,
    config: GateConfig,
    *,
    incumbent: ModelVersion | None = None,
) -> list[GateResult]:
    """The gate results, or `PromotionRefusedError` naming every failed gate."""
    results = evaluate_gates(registry, candidate, config, incumbent=incumbent)
    failed = [r for r in results if not r.passed]
    if failed:
        lines = "\n".join(f"  - {r.gate}: {r.measured} (required: {r.required})" for r in failed)
        raise GatesFailedError(
            f"promotion of {candidate.ref} to @{alias} refused: {len(failed)} gate(s) failed:\n"
            f"{lines}",
            results=results,
            hint="fix the model or the repo and retry, or pass --force (recorded in the history)",
        )
    return results
