"""Batch scoring on the offline path: point-in-time features for a spine, then the model.

    scores = score_batch(root, "flight_delay@champion", "data/spine.parquet")

The model reference is `NAME` (the champion), `NAME@ALIAS`, `NAME@3` or `NAME@latest`. The
features come from `featurelib.training_set` with the serving definitions (the Feast registry's
after `feast apply`), so a spine row scored here gets the prediction the online service gave
for the same (keys, time) row, which `tests/serving/test_batch_consistency.py` checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from serving.registry import ModelRegistry, ModelVersion, split_model_ref

__all__ = ["resolve_model_ref", "score_batch"]

Progress = Callable[[str], None]


def resolve_model_ref(registry: ModelRegistry, model_ref: str) -> ModelVersion:
    """The version `NAME`, `NAME@ALIAS`, `NAME@3` or `NAME@latest` names (default: champion)."""
    name, ref = split_model_ref(model_ref)
    return registry.resolve(name, ref)


def score_batch(
    root: str | Path,
    model_ref: str,
    spine: Any,
    registry: ModelRegistry | None = None,
    *,
    timestamp_column: str = "event_timestamp",
    progress: Progress | None = None,
) -> pl.DataFrame:
    """The spine's columns plus `prediction` (Float64), `model` and `model_version` (Int64).

    `spine` is a Polars/pandas/Arrow frame or a Parquet path with the service's entity keys,
    request fields and the timestamp column (prediction times); rows keep their order.
    """
    from featurelib.offline.engine import training_set
    from featurelib.online.live import load_serving_repo

    started = time.perf_counter()
    root = Path(root).resolve()
    owned = registry is None
    registry = registry or ModelRegistry.open(repo_root=root)
    try:
        mv = resolve_model_ref(registry, model_ref)
        model = registry.load(mv)
    finally:
        if owned:
            registry.close()
    say = progress or (lambda _: None)
    repo = load_serving_repo(root)
    service = repo.service(mv.service)
    if service.version != mv.service_version:
        say(
            f"warning: feature service {service.name!r} changed since {mv.ref} was trained "
            f"(definition {mv.service_version} -> {service.version}); scoring with the current "
            "definition, as the online service does"
        )
    say(f"scoring with {mv.ref} ({mv.flavor}) on features of {service.name!r}")
    frame = training_set(
        service, spine, repo=repo, timestamp_column=timestamp_column, progress=progress
    )
    tick = time.perf_counter()
    predictions = model.predict(frame)
    say(f"predicted {frame.height:,} rows in {time.perf_counter() - tick:.2f}s")
    outputs = set(service.output_names())
    spine_columns = [c for c in frame.columns if c not in outputs]
    result = frame.select(spine_columns).with_columns(
        pl.Series("prediction", predictions, dtype=pl.Float64),
        pl.lit(mv.name, pl.String).alias("model"),
        pl.lit(mv.version, pl.Int64).alias("model_version"),
    )
    elapsed = time.perf_counter() - started
    say(f"scored {result.height:,} rows in {elapsed:.1f}s ({result.height / elapsed:,.0f} rows/s)")
    return result
