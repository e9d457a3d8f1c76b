"""Where a run's reference comes from, which definitions replay older logged rows, and the
Great Expectations suite: the model registry's attachments, with fallbacks that are reported.

Reference (what "training" looked like):
- "model" (default): the `training_sample.parquet` attachment of the model version that served
  the most logged rows in the window (ties: the newest version). Its `expectations.json` is the
  Great Expectations suite; a version without one gets it built from the sample and attached.
  When the rows name no model (feature-only requests) or the version has no sample, the run
  falls back to "offline" and says so in the report's notes.
- "offline": the replayed offline values of the same rows. Drift then measures the distribution
  gap between serving and the offline path itself (training-serving skew, not data drift).
- a path to a Parquet file holding the feature columns (e.g. a training set).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from featurelib.errors import FeaturelibError
from featurelib.views import FeatureService
from skew_monitor.replay import ReplayResult

SAMPLE_KEY = "training_sample.parquet"
SERVICE_SPEC_KEY = "service_spec.json"
SUITE_KEY = "expectations.json"


class ReferenceNotFoundError(FeaturelibError):
    """The reference named for a run does not exist."""


@dataclass(frozen=True)
class Reference:
    """The frame drift is measured against, where it came from, and its expectation suite."""

    frame: pl.DataFrame
    info: dict[str, Any]
    suite: dict[str, Any] | None = None


def _dominant_model(logs: pl.DataFrame) -> tuple[str, int] | None:
    if "model" not in logs.columns or "model_version" not in logs.columns:
        return None
    counts = (
        logs.filter(pl.col("model").is_not_null() & pl.col("model_version").is_not_null())
        .group_by("model", "model_version")
        .len()
        .sort(["len", "model_version"], descending=True)
    )
    if counts.is_empty():
        return None
    model, version, _ = counts.row(0)
    return str(model), int(version)


def model_reference(
    root: Path,
    logs: pl.DataFrame,
    registry_url: str | None,
    features: Sequence[str],
    notes: list[str],
) -> Reference | None:
    """The training sample (and suite) of the most-served model version; None when missing."""
    served = _dominant_model(logs)
    if served is None:
        notes.append("the logged rows name no model version: reference = offline replay")
        return None
    from serving.registry import ModelRegistry

    name, version = served
    with ModelRegistry.open(registry_url, repo_root=root) as registry:
        payload = registry.attachment(name, version, SAMPLE_KEY)
        if payload is None:
            notes.append(
                f"model {name}/{version} has no {SAMPLE_KEY} attachment "
                "(register it with `featurelib train`): reference = offline replay"
            )
            return None
        frame = pl.read_parquet(io.BytesIO(payload))
        suite = stored_suite(registry, name, version, frame, features, notes)
    others = logs.select("model", "model_version").drop_nulls().unique().height - 1
    if others > 0:
        notes.append(
            f"{others} other model version(s) also served rows in the window; the reference is "
            f"the training sample of {name}/{version}, which served the most rows"
        )
    info = {
        "kind": "model",
        "model": name,
        "version": version,
        "rows": frame.height,
        "description": f"training sample of model {name}/{version} ({frame.height:,} rows)",
    }
    return Reference(frame, info, suite)


def resolve_reference(
    root: Path,
    reference: str,
    registry_url: str | None,
    logs: pl.DataFrame,
    replayed: ReplayResult | None,
    features: Sequence[str],
    notes: list[str],
) -> Reference:
    if reference == "model":
        found = model_reference(root, logs, registry_url, features, notes)
        if found is not None:
            return found
    elif reference != "offline":
        path = Path(reference)
        if not path.is_absolute():
            path = root / path
        if not path.exists():
            raise ReferenceNotFoundError(
                f"reference {reference!r} is neither 'model', 'offline' nor a file",
                where=str(path),
                hint="use --reference model, --reference offline or a Parquet file of features",
            )
        frame = pl.read_parquet(path)
        info = {"kind": "file", "path": str(path), "rows": frame.height}
        return Reference(frame, info | {"description": f"{path} ({frame.height:,} rows)"})
    frame = replayed.offline if replayed is not None else pl.DataFrame()
    description = f"offline replay of the same {frame.height:,} rows"
    return Reference(frame, {"kind": "offline", "rows": frame.height, "description": description})


def logged_definitions(
    root: Path,
    registry_url: str | None,
    logs: pl.DataFrame,
    service: FeatureService,
    notes: list[str],
) -> dict[str, FeatureService]:
    """Definitions of the logged service versions that differ from the current one, recovered
    from the `service_spec.json` a model version trained on that version carries."""
    if "service_version" not in logs.columns or not logs.height:
        return {}
    wanted = set(logs["service_version"].drop_nulls().unique().to_list()) - {service.version}
    registry_file = root / "data" / "models.db"
    if not wanted or (registry_url is None and not _registry_configured(registry_file)):
        return {}
    from featurelib.spec import loads
    from serving.registry import ModelRegistry

    found: dict[str, FeatureService] = {}
    with ModelRegistry.open(registry_url, repo_root=root) as registry:
        for name in registry.model_names():
            for mv in registry.versions(name):
                if mv.service != service.name or mv.service_version not in wanted - set(found):
                    continue
                spec = registry.attachment(name, mv.version, SERVICE_SPEC_KEY)
                definition = loads(spec) if spec is not None else None
                if isinstance(definition, FeatureService):
                    found[mv.service_version] = definition
    for version in sorted(wanted - set(found)):
        notes.append(
            f"no stored definition of service version {version}: its rows are replayed with "
            f"the current definitions ({service.version}) and compared by name"
        )
    return found


def _registry_configured(registry_file: Path) -> bool:
    return bool(os.environ.get("FEATURELIB_REGISTRY_URL")) or registry_file.exists()


# ---------------------------------------------------------------- Great Expectations


def stored_suite(
    registry: Any,
    name: str,
    version: int,
    sample: pl.DataFrame,
    features: Sequence[str],
    notes: list[str],
) -> dict[str, Any] | None:
    """The version's stored suite; built from its training sample and attached when missing."""
    payload = registry.attachment(name, version, SUITE_KEY)
    if payload is not None:
        suite: dict[str, Any] = json.loads(payload)
        return suite
    built = build_reference_suite(sample, features, notes, f"{name}-v{version}")
    if built is not None:
        registry.attach(name, version, SUITE_KEY, json.dumps(built, sort_keys=True).encode())
        notes.append(f"model {name}/{version} had no {SUITE_KEY}: built from its training sample")
    return built


def build_reference_suite(
    reference: pl.DataFrame, features: Sequence[str], notes: list[str], name: str = "reference"
) -> dict[str, Any] | None:
    """A suite profiled from the reference frame (its features that the logs also hold)."""
    from skew_monitor.expectations import build_suite

    present = [f for f in features if f in reference.columns]
    if not present:
        notes.append("expectations: the reference holds none of the logged features")
        return None
    return build_suite(reference, present, name)


def _describe(outcome: dict[str, Any]) -> str:
    what = f"{outcome['feature']}: {outcome['expectation_type']}"
    if outcome.get("error"):
        return f"{what} ({outcome['error']})"
    detail = []
    if outcome.get("unexpected_fraction") is not None:
        detail.append(f"{outcome['unexpected_fraction']:.2%} unexpected")
    if outcome.get("unexpected_values"):
        detail.append(f"e.g. {outcome['unexpected_values'][:3]}")
    if outcome.get("observed_value") is not None and not detail:
        detail.append(f"observed {outcome['observed_value']}")
    detail.append(f"expected {outcome['expected']}")
    return f"{what} failed ({'; '.join(detail)})"


def validate_logs(
    suite: dict[str, Any], logs: pl.DataFrame, notes: list[str]
) -> dict[str, Any] | None:
    """The suite validated on the logged online values: counts, results and failures."""
    from skew_monitor.expectations import validate_suite

    summary = validate_suite(suite, logs).to_dict()
    failures = [
        {"column": r["feature"], "description": _describe(r), **r}
        for r in summary["results"]
        if not r["success"]
    ]
    return {
        "suite": summary["suite_name"],
        "success": summary["success"],
        "evaluated": summary["evaluated"],
        "failed": summary["failed"],
        "failed_features": summary["failed_features"],
        "seconds": summary["seconds"],
        "failures": failures,
        "results": summary["results"],
    }
