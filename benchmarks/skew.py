"""Skew monitor benchmark: drift metrics on 1M rows x 20 features, featurelib vs Evidently's
DataDriftPreset on the same data; row-level replay comparison of 1M logged rows; GX cost.

Data (generated once, cached as Parquet under `benchmarks/.data/skew_<rows>/`): a reference and
a current frame of `--rows` rows x 20 features -- 14 numeric (normal, exponential, Poisson
counts; 1% nulls) and 6 categorical strings (10 to 200 categories) -- with four injected
shifts in `current`: `num_03` mean + 0.25 std, `num_07` std x 1.5, `cat_02` 5% of rows in a
category the reference never had, `num_11` null rate 1% -> 20%.

(a) Drift: featurelib `skew_monitor.drift.compute_drift(reference, current)` (Polars frames
    read beforehand, untimed; median of `--repeats`) vs Evidently `Report([DataDriftPreset()])`
    on the same Parquet files read into pandas, with the column kinds given explicitly (no
    type inference), timed inside a subprocess running in `benchmarks/.venv-evidently` (created
    here with `python -m venv` + `pip install evidently` if missing; Evidently is never a
    featurelib dependency). Evidently's default tests at this size are the ones featurelib also
    reports (normalized Wasserstein for numeric, Jensen-Shannon for categorical columns); both
    sides' drifted-column sets are printed next to the injected ones.
(b) Replay: a 1M-row feature log (request_id, row, 20 features) against the same rows
    recomputed offline (shuffled, 0.1% of one feature's values perturbed): join on
    (request_id, row), then `skew_monitor.replay.compare_feature` per feature (match rate,
    SMAPE, diff quantiles, samples). The offline recomputation itself (`training_set`) is not
    part of this timing: it is the offline engine's benchmark (`offline_pit.py`).
(c) Great Expectations: build a suite from the reference (Polars) and validate the current
    frame with GX 1.x (pandas boundary conversion included); GX's import is timed apart.

Usage:
    python benchmarks/skew.py                 # 1M rows, 3 repeats (~2-4 min incl. Evidently)
    python benchmarks/skew.py --quick         # 100k rows, 1 repeat
    python benchmarks/skew.py --no-evidently  # skip the Evidently anchor

The last line of the output is a JSON object with the figures, ratios and target verdicts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pit_engines import verdict_lines, verdicts

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from offline_pit import code_version, machine_info  # noqa: E402

from skew_monitor.drift import compute_drift  # noqa: E402

EVIDENTLY_VENV = HERE / ".venv-evidently"
NUMERIC = [f"num_{i:02d}" for i in range(14)]
CATEGORICAL = [f"cat_{i:02d}" for i in range(6)]
INJECTED = {"num_03", "num_07", "cat_02", "num_11"}
TARGETS = {"speedup_vs_evidently": (">=", 10.0), "drift_seconds": ("<=", 10.0)}


def log(message: str) -> None:
    print(message, flush=True)


def generate(rows: int, seed: int, shifted: bool) -> pl.DataFrame:
    """One frame of `rows` x 20 features; `shifted` applies the injected changes."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        if i % 3 == 0:
            values = rng.normal(10.0 * i, 1.0 + i, rows)
            if shifted and name == "num_03":
                values = values + 0.25 * (1.0 + i)
        elif i % 3 == 1:
            values = rng.exponential(1.0 + i, rows)
            if shifted and name == "num_07":  # std x 1.5 around the same mean
                values = (values - (1.0 + i)) * 1.5 + (1.0 + i)
        else:
            values = rng.poisson(2.0 + i, rows).astype(np.float64)
        null_rate = 0.2 if shifted and name == "num_11" else 0.01
        values[rng.random(rows) < null_rate] = np.nan
        columns[name] = values
    for i, name in enumerate(CATEGORICAL):
        size = (10, 25, 50, 100, 150, 200)[i]
        weights = 1.0 / np.arange(1, size + 1)
        labels = np.array([f"{name}_v{k}" for k in range(size)])
        values = labels[rng.choice(size, rows, p=weights / weights.sum())]
        if shifted and name == "cat_02":
            values = np.where(rng.random(rows) < 0.05, "brand_new_value", values)
        columns[name] = values
    frame = pl.DataFrame(columns)
    return frame.with_columns(pl.col(NUMERIC).fill_nan(None))


def ensure_data(rows: int) -> tuple[Path, Path]:
    folder = HERE / ".data" / f"skew_{rows}"
    reference, current = folder / "reference.parquet", folder / "current.parquet"
    if not (reference.exists() and current.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        log(f"generating {rows:,} x 20 reference and current frames into {folder}")
        generate(rows, 1, shifted=False).write_parquet(reference)
        generate(rows, 2, shifted=True).write_parquet(current)
    return reference, current


def ensure_evidently() -> Path:
    """The Evidently venv's python, created on first use (never featurelib's environment)."""
    python = EVIDENTLY_VENV / "bin" / "python"
    probe = [str(python), "-c", "import pyarrow, evidently.presets"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    log(f"creating {EVIDENTLY_VENV} and installing evidently (one time)")
    subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
    subprocess.run(
        # evidently 0.7 imports pandas internals that pandas 3 removed
        [str(python), "-m", "pip", "install", "--quiet", "evidently", "pandas<3", "pyarrow"],
        check=True,
    )
    return python


def time_featurelib(reference: Path, current: Path, repeats: int) -> dict[str, Any]:
    ref, cur = pl.read_parquet(reference), pl.read_parquet(current)
    seconds = []
    results = []
    for _ in range(repeats):
        started = time.perf_counter()
        results = compute_drift(ref, cur, NUMERIC + CATEGORICAL)
        seconds.append(time.perf_counter() - started)
    return {
        "seconds": seconds,
        "median": statistics.median(seconds),
        "drifted": sorted(r.feature for r in results if r.drifted),
    }


def time_evidently(reference: Path, current: Path, repeats: int) -> dict[str, Any]:
    python = ensure_evidently()
    spec = {"numerical": NUMERIC, "categorical": CATEGORICAL, "repeats": repeats}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(spec, handle)
    completed = subprocess.run(
        [str(python), str(HERE / "skew_engines.py"), str(reference), str(current), handle.name],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    Path(handle.name).unlink()
    if completed.returncode != 0:
        raise RuntimeError(f"evidently child failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["median"] = statistics.median(result["seconds"])
    return result


def replay_frames(rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A feature log and its offline recomputation (shuffled; 0.1% of num_05 perturbed)."""
    data = generate(rows, 3, shifted=False)
    requests = rows // 4  # 4 rows per request
    ident = pl.DataFrame(
        {
            "request_id": (pl.int_range(rows, eager=True) // 4).cast(pl.String),
            "row": (pl.int_range(rows, eager=True) % 4).cast(pl.UInt32),
        }
    )
    logged = pl.concat([ident, data], how="horizontal")
    rng = np.random.default_rng(4)
    perturb = pl.Series(rng.random(rows) < 0.001)
    offline = logged.with_columns(
        pl.when(perturb).then(pl.col("num_05") * 1.01).otherwise(pl.col("num_05")).alias("num_05")
    ).sample(fraction=1.0, shuffle=True, seed=5)
    assert requests > 0
    return logged, offline


def time_replay(rows: int, repeats: int) -> dict[str, Any]:
    from skew_monitor.replay import Tolerance, compare_feature

    logged, offline = replay_frames(rows)
    features = NUMERIC + CATEGORICAL
    seconds = []
    match_rates: dict[str, float] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        joined = logged.join(offline, on=["request_id", "row"], how="left", suffix="__offline")
        ident = joined.select("request_id", "row")
        results = [
            compare_feature(ident, joined[f], joined[f"{f}__offline"], f, Tolerance())
            for f in features
        ]
        seconds.append(time.perf_counter() - started)
        match_rates = {r.feature: r.match_rate for r in results}
    return {
        "seconds": seconds,
        "median": statistics.median(seconds),
        "engine": "polars join + skew_monitor.replay.compare_feature",
        "mismatching_features": sorted(f for f, rate in match_rates.items() if rate < 1.0),
        "num_05_match_rate": match_rates.get("num_05"),
    }


def time_expectations(reference: Path, current: Path) -> dict[str, Any]:
    from skew_monitor.expectations import build_suite, validate_suite

    ref, cur = pl.read_parquet(reference), pl.read_parquet(current)
    started = time.perf_counter()
    import great_expectations  # noqa: F401

    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    suite = build_suite(ref, NUMERIC + CATEGORICAL, "bench:1")
    build_seconds = time.perf_counter() - started
    validate_suite(suite, cur.head(1000))  # context setup, untimed
    started = time.perf_counter()
    summary = validate_suite(suite, cur)
    validate_seconds = time.perf_counter() - started
    return {
        "import_seconds": import_seconds,
        "build_seconds": build_seconds,
        "validate_seconds": validate_seconds,
        "expectations": len(summary.results),
        "failed_features": list(summary.failed_features),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--evidently-repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="100k rows, 1 repeat")
    parser.add_argument("--no-evidently", action="store_true")
    args = parser.parse_args()
    rows, repeats = (100_000, 1) if args.quick else (args.rows, args.repeats)
    reference, current = ensure_data(rows)

    ours = time_featurelib(reference, current, repeats)
    log(
        f"featurelib compute_drift, {rows:,} rows x 20 features: median {ours['median']:.2f}s "
        f"over {repeats} ({', '.join(f'{s:.2f}' for s in ours['seconds'])}); "
        f"drifted {ours['drifted']} (injected {sorted(INJECTED)})"
    )
    theirs: dict[str, Any] | None = None
    if not args.no_evidently:
        theirs = time_evidently(reference, current, args.evidently_repeats)
        log(
            f"evidently {theirs['evidently']} DataDriftPreset: median {theirs['median']:.2f}s "
            f"over {len(theirs['seconds'])}; drifted {theirs['drifted']}"
        )
    replay = time_replay(rows, repeats)
    log(
        f"replay join + compare, {rows:,} logged rows x 20 features: median "
        f"{replay['median']:.2f}s; mismatching {replay['mismatching_features']} "
        f"(num_05 match rate {replay['num_05_match_rate']:.4f})"
    )
    gx = time_expectations(reference, current)
    log(
        f"great expectations: import {gx['import_seconds']:.1f}s, build suite "
        f"{gx['build_seconds']:.2f}s, validate {gx['expectations']} expectations on {rows:,} "
        f"rows {gx['validate_seconds']:.2f}s; failed features {gx['failed_features']}"
    )
    figures: dict[str, Any] = {
        "benchmark": "skew",
        "rows": rows,
        "features": len(NUMERIC) + len(CATEGORICAL),
        "repeats": repeats,
        "drift_seconds": ours["median"],
        "drift_seconds_all": ours["seconds"],
        "drift_detected": ours["drifted"],
        "injected": sorted(INJECTED),
        "evidently_seconds": theirs["median"] if theirs else None,
        "evidently_version": theirs["evidently"] if theirs else None,
        "evidently_detected": theirs["drifted"] if theirs else None,
        "speedup_vs_evidently": theirs["median"] / ours["median"] if theirs else None,
        "replay_seconds": replay["median"],
        "replay_rows_per_s": rows / replay["median"],
        "replay_engine": replay["engine"],
        "gx_import_seconds": gx["import_seconds"],
        "gx_build_seconds": gx["build_seconds"],
        "gx_validate_seconds": gx["validate_seconds"],
        "gx_failed_features": gx["failed_features"],
        "machine": machine_info(),
        "code": code_version(),
    }
    figures["targets"] = verdicts(figures, TARGETS)
    for line in verdict_lines(figures, TARGETS):
        print(line)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
