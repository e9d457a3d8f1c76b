"""Training and registration: feature service → training set → XGBoost + a scikit-learn
baseline → evaluation on a later time split → two registered model versions.

    from serving.train import train
    result = train("feature_repo", "flight_delay", "feature_repo/data/spine.parquet",
                   "is_delayed", "flight_delay", champion="xgboost")

The split is by event time: the earliest `split` fraction of rows trains, the rest (strictly
later timestamps) evaluates, as the model will be used. XGBoost stops early on the last 10% of
the training rows, never on the evaluation rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from serving.errors import ModelInputError, RegistryError
from serving.gates import SERVICE_SPEC, TRAINING_SAMPLE, GateConfig
from serving.model import FLAVORS, PREDICT_THREADS, Preprocessor, TrainedModel
from serving.registry import AliasMove, ModelRegistry, ModelVersion

Progress = Callable[[str], None]
SAMPLE_ROWS = 100_000
EXPECTATIONS = "expectations.json"  # the key skew_monitor.references reads
XGBOOST_DEFAULTS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.08,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "seed": 0,
    "num_boost_round": 400,
    "early_stopping_rounds": 30,
}
SKLEARN_DEFAULTS: dict[str, Any] = {"C": 1.0, "max_iter": 1000}


@dataclass(frozen=True)
class TrainResult:
    """What `train` built: the registered versions (by flavor), their metrics and the split."""

    model_name: str
    versions: dict[str, ModelVersion]
    metrics: dict[str, dict[str, float]]
    train_rows: int
    eval_rows: int
    split_time: datetime
    fingerprint: str
    seconds: float
    moves: tuple[AliasMove, ...] = field(default=())
    models: dict[str, TrainedModel] = field(default_factory=dict)


def _silent(_: str) -> None:
    pass


def fingerprint(frame: pl.DataFrame) -> str:
    """A deterministic hash of a frame's schema and values (same data → same fingerprint)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[n, str(d)] for n, d in frame.schema.items()]).encode())
    buffer = io.BytesIO()
    frame.rechunk().write_ipc_stream(buffer, compression="uncompressed")
    digest.update(buffer.getvalue())
    return f"sha256:{digest.hexdigest()}"


def code_version(root: Path) -> str:
    """The git commit of the repo (suffixed "-dirty" with uncommitted changes), else the
    featurelib package version."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        import featurelib

        return f"featurelib {featurelib.__version__}"


def _labels(frame: pl.DataFrame, label: str) -> np.ndarray:
    values = frame.get_column(label).cast(pl.Float64).to_numpy()
    return np.asarray(values, dtype=np.float64)


def fit_xgboost(
    train_frame: pl.DataFrame,
    label: str,
    preprocessor: Preprocessor,
    signature: tuple[str, str],
    params: Mapping[str, Any] | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """A gradient-boosted tree model; early stopping on the latest 10% of `train_frame`."""
    import xgboost as xgb

    settings = {**XGBOOST_DEFAULTS, **(params or {})}
    rounds = int(settings.pop("num_boost_round"))
    patience = settings.pop("early_stopping_rounds")
    settings.setdefault("nthread", os.cpu_count() or 1)
    cut = int(train_frame.height * 0.9)
    fit_part, stop_part = train_frame.head(cut), train_frame.slice(cut)
    names = list(preprocessor.feature_names)
    dtrain = xgb.DMatrix(
        preprocessor.transform(fit_part), label=_labels(fit_part, label), feature_names=names
    )
    dstop = xgb.DMatrix(
        preprocessor.transform(stop_part), label=_labels(stop_part, label), feature_names=names
    )
    booster = xgb.train(
        settings,
        dtrain,
        num_boost_round=rounds,
        evals=[(dstop, "stop")],
        early_stopping_rounds=int(patience) if patience else None,
        verbose_eval=False,
    )
    best = getattr(booster, "best_iteration", None)
    if best is not None:  # keep only the trees up to the best round: the artifact = the model
        booster = booster[: best + 1]
    used = {**settings, "num_boost_round": rounds, "early_stopping_rounds": patience}
    used["trees"] = int(booster.num_boosted_rounds())
    booster.set_param({"nthread": PREDICT_THREADS})  # predict as a loaded model would
    model = TrainedModel("xgboost", preprocessor, booster, *signature, label=label)
    return model, used


def fit_sklearn(
    train_frame: pl.DataFrame,
    label: str,
    preprocessor: Preprocessor,
    signature: tuple[str, str],
    params: Mapping[str, Any] | None = None,
) -> tuple[TrainedModel, dict[str, Any]]:
    """The baseline: impute + scale (one-hot for categories) + logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    settings = {**SKLEARN_DEFAULTS, **(params or {})}
    categorical = list(preprocessor.categorical_indices)
    numeric = [i for i in range(len(preprocessor.columns)) if i not in categorical]
    parts: list[tuple[str, Any, list[int]]] = [
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)
    ]
    if categorical:
        encode = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=-1.0),
            OneHotEncoder(handle_unknown="ignore"),
        )
        parts.append(("categorical", encode, categorical))
    pipeline = Pipeline(
        [
            ("prepare", ColumnTransformer(parts)),
            ("classify", LogisticRegression(C=settings["C"], max_iter=settings["max_iter"])),
        ]
    )
    pipeline.fit(preprocessor.transform(train_frame), _labels(train_frame, label))
    model = TrainedModel("sklearn", preprocessor, pipeline, *signature, label=label)
    return model, {"estimator": "LogisticRegression", **settings}


def evaluate(model: TrainedModel, frame: pl.DataFrame, label: str) -> dict[str, float]:
    """AUC, log loss, accuracy (at 0.5), Brier score and positive rates on `frame`."""
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    truth = _labels(frame, label)
    predicted = model.predict(frame)
    metrics = {
        "log_loss": float(log_loss(truth, np.clip(predicted, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "accuracy": float(np.mean((predicted >= 0.5) == (truth == 1))),
        "brier": float(brier_score_loss(truth, predicted)),
        "positive_rate": float(np.mean(truth)),
        "predicted_positive_rate": float(np.mean(predicted >= 0.5)),
    }
    if 0 < truth.sum() < truth.size:  # AUC is undefined on a single-class evaluation set
        metrics["auc"] = float(roc_auc_score(truth, predicted))
    return dict(sorted(metrics.items()))


def split_by_time(frame: pl.DataFrame, split: float, ts: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Earliest `split` fraction for training; rows strictly later than all of them evaluate."""
    if not 0 < split < 1:
        raise ModelInputError(f"split must be between 0 and 1, got {split}", hint="e.g. 0.8")
    ordered = frame.sort(ts, maintain_order=True)
    cut_time = ordered.get_column(ts)[int(ordered.height * split)]
    train_part = ordered.filter(pl.col(ts) < cut_time)
    eval_part = ordered.filter(pl.col(ts) >= cut_time)
    if train_part.height == 0 or eval_part.height == 0:
        raise ModelInputError(
            f"time split at {cut_time} leaves an empty side ({train_part.height} train, "
            f"{eval_part.height} evaluation rows)",
            hint="use a spine spanning more distinct timestamps",
        )
    return train_part, eval_part


def _training_frame(
    root: Path, service_name: str, spine: Any, frame: pl.DataFrame | None, progress: Progress
) -> tuple[pl.DataFrame, Any]:
    from featurelib.offline.engine import training_set
    from featurelib.online.live import load_serving_repo

    repo = load_serving_repo(root)  # the definitions that will serve the model
    service = repo.service(service_name)
    if frame is None:
        progress(f"building training set for {service.name!r} from {spine}")
        frame = training_set(service, spine, repo=repo, progress=progress)
    missing = [n for n in service.output_names() if n not in frame.columns]
    if missing:
        raise ModelInputError(
            f"training frame lacks {len(missing)} feature(s) of service {service.name!r}: "
            f"{missing[:10]}",
            hint="build it with `featurelib training-set` for the same service",
        )
    return frame, service


def _sample(frame: pl.DataFrame, columns: list[str], seed: int) -> bytes:
    part = frame.select(columns)
    if part.height > SAMPLE_ROWS:
        part = part.sample(SAMPLE_ROWS, seed=seed).sort("event_timestamp", maintain_order=True)
    buffer = io.BytesIO()
    part.write_parquet(buffer)
    return buffer.getvalue()


def _expectation_suite(frame: pl.DataFrame, features: list[str], name: str) -> bytes:
    """The Great Expectations suite of the training rows (ranges, null fractions, category sets,
    types), stored with each version for the skew monitor to validate online logs against."""
    from skew_monitor.expectations import build_suite  # profiling only: GX is not imported

    present = [f for f in features if f in frame.columns]
    return json.dumps(build_suite(frame, present, name), sort_keys=True).encode()


def train(
    root: str | Path,
    service: str,
    spine: Any,
    label: str,
    model_name: str,
    *,
    split: float = 0.8,
    params: Mapping[str, Any] | None = None,
    sklearn_params: Mapping[str, Any] | None = None,
    training_frame: pl.DataFrame | None = None,
    registry: ModelRegistry | None = None,
    champion: str | None = None,
    challenger: str | None = None,
    gates: GateConfig | None = None,
    actor: str = "cli",
    timestamp_column: str = "event_timestamp",
    progress: Progress | None = None,
) -> TrainResult:
    """Build the training set, train both flavors, evaluate, register, optionally set aliases."""
    started = time.perf_counter()
    log = progress or _silent
    root = Path(root).resolve()
    for flavor in (champion, challenger):
        if flavor is not None and flavor not in FLAVORS:
            raise RegistryError(f"unknown flavor {flavor!r} for an alias", hint=f"use {FLAVORS}")
    frame, svc = _training_frame(root, service, spine, training_frame, log)
    features = set(svc.output_names())
    if label not in frame.columns:
        raise ModelInputError(
            f"label column {label!r} is not in the training frame",
            hint=f"pass a spine column: {[c for c in frame.columns if c not in features]}",
        )
    labelled = frame.filter(pl.col(label).is_not_null())
    if labelled.height < frame.height:
        log(f"dropped {frame.height - labelled.height:,} rows with a null label")
    train_part, eval_part = split_by_time(labelled, split, timestamp_column)
    split_time: datetime = eval_part.get_column(timestamp_column).min()  # type: ignore[assignment]
    log(f"split at {split_time}: {train_part.height:,} train rows, {eval_part.height:,} eval rows")
    preprocessor = Preprocessor.fit(train_part, svc.output_names())
    if preprocessor.dropped:
        log(f"not model inputs (timestamps/lists): {list(preprocessor.dropped)}")
    signature = (svc.name, svc.version)
    lineage = {
        "label": label,
        "split": split,
        "split_time": str(split_time),
        "train_rows": train_part.height,
        "eval_rows": eval_part.height,
    }
    models: dict[str, tuple[TrainedModel, dict[str, Any]]] = {}
    for flavor, fit, extra in (
        ("sklearn", fit_sklearn, sklearn_params),
        ("xgboost", fit_xgboost, params),
    ):
        tick = time.perf_counter()
        log(f"training {flavor} on {train_part.height:,} rows x {len(preprocessor.columns)}")
        models[flavor] = fit(train_part, label, preprocessor, signature, extra)
        log(f"trained {flavor} in {time.perf_counter() - tick:.1f}s")
    fp = fingerprint(labelled)
    version_of_code = code_version(root)
    registry = registry or ModelRegistry.open(repo_root=root)
    sample = _sample(train_part, [timestamp_column, *preprocessor.feature_names], seed=0)
    spec = json.dumps(svc.to_spec(), sort_keys=True).encode()
    suite = _expectation_suite(train_part, svc.output_names(), f"{model_name}-{svc.name}")
    versions: dict[str, ModelVersion] = {}
    metrics: dict[str, dict[str, float]] = {}
    for flavor, (model, used) in models.items():  # baseline first, then XGBoost
        metrics[flavor] = evaluate(model, eval_part, label)
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics[flavor].items())
        log(f"{flavor} on {eval_part.height:,} later rows: {shown}")
        mv = registry.register(
            model_name,
            model,
            metrics=metrics[flavor],
            params={**used, **lineage},
            fingerprint=fp,
            code_version=version_of_code,
            description=f"{flavor} on {svc.name} ({label})",
            actor=actor,
        )
        registry.attach(model_name, mv.version, TRAINING_SAMPLE, sample)
        registry.attach(model_name, mv.version, SERVICE_SPEC, spec)
        registry.attach(model_name, mv.version, EXPECTATIONS, suite)
        versions[flavor] = mv
        log(f"registered {model_name} version {mv.version} ({flavor}) in {registry.url}")
    moves = []
    for alias, flavor in (("champion", champion), ("challenger", challenger)):
        if flavor is not None:
            config = gates or GateConfig(repo_root=root)
            move = registry.set_alias(
                model_name,
                alias,
                versions[flavor].version,
                actor=actor,
                reason=f"featurelib train ({flavor})",
                gates=config,
            )
            moves.append(move)
            log(f"{model_name}@{alias} -> version {move.to_version} ({flavor})")
    return TrainResult(
        model_name=model_name,
        versions=versions,
        metrics=metrics,
        train_rows=train_part.height,
        eval_rows=eval_part.height,
        split_time=split_time,
        fingerprint=fp,
        seconds=time.perf_counter() - started,
        moves=tuple(moves),
        models={flavor: model for flavor, (model, _) in models.items()},
    )
