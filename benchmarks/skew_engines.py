"""Evidently side of `benchmarks/skew.py`, run inside `benchmarks/.venv-evidently` (Evidently is
installed only there, never in featurelib's environment), so this file imports nothing from
featurelib.

    python skew_engines.py REF.parquet CUR.parquet SPEC.json

SPEC: {"numerical": [...], "categorical": [...], "repeats": 1}. Reads both Parquet files into
pandas (untimed), then times `Report([DataDriftPreset()]).run(current, reference)` plus turning
the result into a dict (Evidently computes lazily in places; the dict is what a user consumes).
Prints one JSON line: seconds per repeat, the Evidently version, the API used and the columns
Evidently flagged as drifted.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.metadata import version
from typing import Any

import pandas as pd


def _run_new_api(
    reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str]
) -> dict[str, Any]:
    """Evidently >= 0.7: Dataset + DataDefinition, `evidently.presets.DataDriftPreset`."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    ref = Dataset.from_pandas(reference, data_definition=definition)
    cur = Dataset.from_pandas(current, data_definition=definition)
    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    return dict(snapshot.dict())


def _run_legacy_api(
    reference: pd.DataFrame, current: pd.DataFrame, numerical: list[str], categorical: list[str]
) -> dict[str, Any]:
    """Evidently < 0.7 (or its `legacy` package): ColumnMapping + metric_preset."""
    try:
        from evidently.legacy.metric_preset import DataDriftPreset
        from evidently.legacy.pipeline.column_mapping import ColumnMapping
        from evidently.legacy.report import Report
    except ImportError:
        from evidently import ColumnMapping  # type: ignore[no-redef]
        from evidently.metric_preset import DataDriftPreset  # type: ignore[no-redef]
        from evidently.report import Report  # type: ignore[no-redef]
    mapping = ColumnMapping(numerical_features=numerical, categorical_features=categorical)
    report = Report(metrics=[DataDriftPreset()])
    report.run(reference_data=reference, current_data=current, column_mapping=mapping)
    return dict(report.as_dict())


def _drifted_columns(result: Any, columns: list[str]) -> list[str]:
    """Columns Evidently reports as drifted, found by walking its result dict."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            name = node.get("column_name")
            if isinstance(name, str) and node.get("drift_detected") is True:
                found.add(name)
            # new API: {"metric_id": "ValueDrift(column=x,...)", "value": score}
            metric = node.get("metric_id") or node.get("metric_name")
            if isinstance(metric, str) and metric.startswith("ValueDrift(column="):
                config = node.get("config") or {}
                column = metric.split("column=", 1)[1].split(",", 1)[0].rstrip(")")
                value, threshold = node.get("value"), config.get("threshold")
                # Wasserstein/JS scores: drift when the score reaches the threshold
                numbers = isinstance(value, int | float) and isinstance(threshold, int | float)
                if numbers and value >= threshold:
                    found.add(column)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(result)
    return sorted(c for c in found if c in columns)


def main() -> None:
    ref_path, cur_path, spec_path = sys.argv[1:4]
    with open(spec_path) as handle:
        spec = json.load(handle)
    numerical: list[str] = spec["numerical"]
    categorical: list[str] = spec["categorical"]
    reference = pd.read_parquet(ref_path, columns=numerical + categorical)
    current = pd.read_parquet(cur_path, columns=numerical + categorical)
    try:
        import evidently.presets  # noqa: F401

        runner, api = _run_new_api, "evidently.presets (Dataset/DataDefinition)"
    except ImportError:
        runner, api = _run_legacy_api, "legacy Report/ColumnMapping"
    seconds: list[float] = []
    result: dict[str, Any] = {}
    for _ in range(int(spec.get("repeats", 1))):
        started = time.perf_counter()
        result = runner(reference, current, numerical, categorical)
        seconds.append(time.perf_counter() - started)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "evidently": version("evidently"),
                "pandas": version("pandas"),
                "api": api,
                "rows": len(current),
                "drifted": _drifted_columns(result, numerical + categorical),
            }
        )
    )


if __name__ == "__main__":
    main()
