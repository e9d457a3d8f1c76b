"""Offline point-in-time benchmark: featurelib vs Feast 0.67 vs hand-written floors.

Builds the same point-in-time training set (three plain views with TTL, 20 float features) with

* featurelib `training_set`,
* Feast 0.67 `get_historical_features(...).to_df()` on its duckdb offline store and on its
  file (dask) offline store,
* a hand-written Polars floor (per view: source sorted by time, `join_asof` by entity with the TTL
  as tolerance, back to spine order),

and windowed aggregations (sum/count/mean over 1d and 7d sawtooth windows) with featurelib vs a
hand-written DuckDB SQL window query (`RANGE BETWEEN ... PRECEDING AND CURRENT ROW` over the
event stream with the spine rows unioned in; the frame start is per row, so it computes exactly
the sawtooth window `floor(t, 1h) - W <= e <= t`) and, for information, a DuckDB range join.

Every engine runs in its own subprocess (one per repeat, engines interleaved within a repeat)
so that its peak RSS (the child's VmHWM) is its own. Times are medians over repeats; ratios are
taken against anchors measured in the same run. Results are checked cell by cell against
featurelib's (floats within 1e-9 relative); mismatches and dropped rows are reported. Data
generation, the engines and the measured child live in `pit_engines.py`; this file plans the
runs, compares the outputs and reports.

Data (generated once, deterministic, cached in benchmarks/.data/): 100k entities, 2M events over
60 days (1.5M "activity" rows with 12 features, 0.5M "profile" rows with 8 features), a created
timestamp, unique (entity, event time) and random microseconds so that no event sits exactly on
a TTL boundary (Feast includes `e == t - ttl`, featurelib excludes it; the exact boundary cases are
counted and reported). Spines: 100k and 1M rows, random entities (~2% unknown), random times.

Usage:
    python benchmarks/offline_pit.py                 # full default run (3 repeats, ~5-10 min)
    python benchmarks/offline_pit.py --quick         # smoke run: small data, 1 repeat, no dask
    python benchmarks/offline_pit.py --with-dask-1m  # also Feast's dask store at 1M (~3 min, 7+ GB)
    python benchmarks/offline_pit.py --repeats 5 --engines featurelib,polars_floor

Smoke test without pytest (exits 0 and the last line parses as JSON; well under two minutes):
    python benchmarks/offline_pit.py --quick | tail -n 1 | python -m json.tool > /dev/null

Feast's duckdb offline store needs ibis (`pip install 'feast[duckdb]'`); without it that engine
is reported as failed and the other figures are still produced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pit_engines import (
    AGG_FEATURES,
    ENGINES,
    FULL,
    PLAIN_FEATURES,
    QUICK,
    Config,
    generate,
    run_engine,
    verdict_lines,
    verdicts,
)

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-9  # floats compare within 1e-9 * max(1, |a|, |b|) (design §3)

# (figure name, numerator engine, denominator engine, statistic): name_{spine label} = num / den
RATIOS = (
    ("speedup_vs_feast_duckdb", "feast_duckdb", "featurelib", "median_s"),
    ("memory_ratio_vs_feast_duckdb", "featurelib", "feast_duckdb", "peak_rss_mb"),
    ("ratio_vs_polars_floor", "featurelib", "polars_floor", "median_s"),
    ("speedup_vs_feast_dask", "feast_dask", "featurelib", "median_s"),
    ("memory_ratio_vs_feast_dask", "featurelib", "feast_dask", "peak_rss_mb"),
    ("agg_speedup_vs_duckdb_window", "duckdb_window", "featurelib_agg", "median_s"),
    ("agg_speedup_vs_duckdb_rangejoin", "duckdb_rangejoin", "featurelib_agg", "median_s"),
    ("agg_memory_ratio_vs_duckdb_window", "featurelib_agg", "duckdb_window", "peak_rss_mb"),
)
TARGETS = {
    "speedup_vs_feast_duckdb_1m": (">=", 8.0),
    "memory_ratio_vs_feast_duckdb_1m": ("<=", 0.25),
    "ratio_vs_polars_floor_1m": ("<=", 1.25),
    "agg_speedup_vs_duckdb_window_1m": (">=", 5.0),
}


def label(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    return f"{rows // 1000}k" if rows % 1000 == 0 else str(rows)


# --------------------------------------------------------------------------------------------
# Parent: plan, run children, compare outputs, summarize
# --------------------------------------------------------------------------------------------


def spawn(argv: list[str], timeout: float, log: Path) -> tuple[int | None, float]:
    started = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    return code, time.perf_counter() - started


def ensure_data(cfg: Config, data_root: Path, timeout: float) -> tuple[Path, dict[str, Any]]:
    data_dir = data_root / cfg.tag
    meta = data_dir / "meta.json"
    if not meta.exists():
        print(f"generating data in {data_dir} ...", flush=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, __file__, "--generate", "--data-dir", str(data_dir)]
        argv += ["--quick"] if cfg == QUICK else []
        code, took = spawn(argv, timeout, data_dir / "generate.log")
        if code != 0 or not meta.exists():
            print((data_dir / "generate.log").read_text()[-4000:], file=sys.stderr)
            raise SystemExit("data generation failed")
        print(f"generated in {took:.1f}s", flush=True)
    return data_dir, json.loads(meta.read_text())


def run_once(
    engine: str, rows: int, data_dir: Path, out: Path | None, timeout: float
) -> dict[str, Any]:
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    result = logs / f"{engine}_{rows}.json"
    result.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--run", engine, "--spine", str(rows)]
    argv += ["--data-dir", str(data_dir), "--result", str(result)]
    argv += ["--out", str(out)] if out else []
    log = logs / f"{engine}_{rows}.log"
    code, took = spawn(argv, timeout, log)
    if code == 0 and result.exists():
        return dict(json.loads(result.read_text()))
    tail = log.read_text(errors="replace")[-3000:]
    why = "timeout" if code is None else f"exit code {code}"
    return {"engine": engine, "spine_rows": rows, "error": f"{why} after {took:.0f}s", "log": tail}


def compare(ref_path: Path, other_path: Path, features: list[str]) -> dict[str, Any]:
    """Cell-by-cell comparison keyed by spine_row (floats within 1e-9 relative).

    Rows missing from `other` are counted apart (with how many of them have a null feature in
    featurelib's output, i.e. are expired or unknown there); cells are compared on shared rows.
    """
    import polars as pl

    ref, other = pl.read_parquet(ref_path), pl.read_parquet(other_path)
    missing = ref.join(other, on="spine_row", how="anti")
    joined = ref.join(other, on="spine_row", how="inner", suffix="__o")
    stats: dict[str, Any] = {
        "ref_rows": ref.height,
        "rows": other.height,
        "missing_rows": missing.height,
        "missing_rows_with_null_in_featurelib": missing.select(
            pl.any_horizontal(pl.col(features).is_null()).sum()
        ).item(),
        "extra_rows": other.join(ref, on="spine_row", how="anti").height
        + (other.height - other["spine_row"].n_unique()),
        "cells_compared": joined.height * len(features),
    }
    kinds = ("null_in_featurelib_only", "null_in_other_only", "value_differs")
    exprs = []
    for f in features:
        a, b = pl.col(f), pl.col(f + "__o")
        close = (a - b).abs() <= TOLERANCE * pl.max_horizontal(1.0, a.abs(), b.abs())
        conds = (a.is_null() & b.is_not_null(), a.is_not_null() & b.is_null(), ~close)
        exprs += [c.sum().alias(f"{f}|{k}") for c, k in zip(conds, kinds, strict=True)]
    counts = joined.select(exprs).row(0, named=True)
    for kind in kinds:
        stats[kind] = sum(v or 0 for k, v in counts.items() if k.endswith("|" + kind))
    stats["mismatched_cells"] = sum(stats[k] for k in kinds)
    stats["equal_on_shared_rows"] = stats["mismatched_cells"] == 0
    stats["equal"] = stats["mismatched_cells"] == stats["missing_rows"] == stats["extra_rows"] == 0
    return stats


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"], "log_tail": runs[0].get("log", "")[-1500:]}
    times = [r["seconds"] for r in ok]
    peaks = [r["peak_rss_mb"] for r in ok]
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "times_s": [round(t, 4) for t in times],
        "peak_rss_mb": round(statistics.median(peaks), 1),
        "peak_rss_mb_max": round(max(peaks), 1),
        "baseline_rss_mb": round(statistics.median(r["baseline_rss_mb"] or 0.0 for r in ok), 1),
        "setup_s": round(statistics.median(r["setup_s"] for r in ok), 3),
        "rows": ok[0]["rows"],
        "in_spine_order": ok[0]["in_spine_order"],
        "repeats": len(ok),
        "failed_repeats": len(runs) - len(ok),
    }


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    info: dict[str, Any] = {"cpus": os.cpu_count(), "cpu_model": "", "mem_total_gb": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        info["mem_total_gb"] = round(int(first.split()[1]) / 1024**2, 1)
    except (OSError, IndexError, ValueError):
        pass
    info["python"] = platform.python_version()
    info["platform"] = platform.platform()
    for dist in ("featurelib", "feast", "polars", "duckdb", "pandas", "dask", "ibis-framework"):
        try:
            info[dist] = version(dist)
        except Exception:
            info[dist] = None
    return info


def code_version() -> dict[str, Any]:
    """The commit measured and whether featurelib/ had uncommitted changes."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=HERE.parent, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "featurelib_dirty": bool(
            git("status", "--porcelain", "--untracked-files=no", "--", "featurelib")
        ),
    }


def ratio(num: dict[str, Any] | None, den: dict[str, Any] | None, key: str) -> float | None:
    if not num or not den or key not in num or key not in den or not den[key]:
        return None
    return round(float(num[key]) / float(den[key]), 3)


def paired_ratio(runs: dict[str, list[dict[str, Any]]], num: str, den: str) -> float | None:
    """Median over repeats of the per-repeat time ratio (robust to drift on a noisy machine)."""
    pairs = [
        a["seconds"] / b["seconds"]
        for a, b in zip(runs.get(num, []), runs.get(den, []))
        if "error" not in a and "error" not in b
    ]
    return round(statistics.median(pairs), 3) if pairs else None


def make_plan(cfg: Config, args: argparse.Namespace) -> list[tuple[str, int]]:
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    plan = []
    for rows in cfg.spines:
        for engine in ENGINES:
            if engine not in engines:
                continue
            if engine == "feast_dask" and (
                args.quick or args.skip_dask or (rows == max(cfg.spines) and not args.with_dask_1m)
            ):
                continue
            plan.append((engine, rows))
    return plan


def measure(
    plan: list[tuple[str, int]], repeats: int, data_dir: Path, out_dir: Path, timeout: float
) -> dict[str, list[dict[str, Any]]]:
    """Run every (engine, spine) once per repeat, interleaved; outputs kept from repeat 1."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(repeats):
        for engine, rows in plan:
            key = f"{engine}_{label(rows)}"
            previous = runs.setdefault(key, [])
            if previous and "error" in previous[0]:
                continue  # it crashed or timed out: do not spend the time again
            out = out_dir / f"{key}.parquet" if rep == 0 else None
            res = run_once(engine, rows, data_dir, out, timeout)
            previous.append(res)
            head = f"[{rep + 1}/{repeats}] {engine:<17} spine={rows:>9,}"
            if "error" in res:
                print(f"{head}  FAILED: {res['error']}", flush=True)
                print("    " + res["log"].strip().replace("\n", "\n    ")[-1500:], flush=True)
            else:
                print(
                    f"{head}  {res['seconds']:8.3f} s  peak RSS {res['peak_rss_mb']:6.0f} MB"
                    f" (at start {res['baseline_rss_mb'] or 0:4.0f})  rows {res['rows']:,}"
                    f"  (untimed setup {res['setup_s']:.1f} s)",
                    flush=True,
                )
    return runs


def check_outputs(cfg: Config, out_dir: Path) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    pairs = (
        ("featurelib", ("polars_floor", "feast_duckdb", "feast_dask"), PLAIN_FEATURES),
        ("featurelib_agg", ("duckdb_window", "duckdb_rangejoin"), AGG_FEATURES),
    )
    for rows in cfg.spines:
        lab = label(rows)
        for ref, others, features in pairs:
            ref_path = out_dir / f"{ref}_{lab}.parquet"
            for other in others:
                path = out_dir / f"{other}_{lab}.parquet"
                if ref_path.exists() and path.exists():
                    checks[f"{other}_vs_{ref}_{lab}"] = compare(ref_path, path, features)
    return checks


def ratios(
    cfg: Config, results: dict[str, Any], runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for rows in cfg.spines:
        lab = label(rows)
        for name, num, den, key in RATIOS:
            num, den = f"{num}_{lab}", f"{den}_{lab}"
            figures[f"{name}_{lab}"] = ratio(results.get(num), results.get(den), key)
            if key == "median_s":
                figures[f"{name}_{lab}_paired"] = paired_ratio(runs, num, den)
    return figures


def report(
    results: dict[str, Any], checks: dict[str, Any], figures: dict[str, Any], meta: dict[str, Any]
) -> None:
    print("\n== medians (wall time of the operation; peak RSS = the child's VmHWM) ==")
    for key, s in results.items():
        if "error" in s:
            print(f"{key:<24} FAILED: {s['error']}")
            continue
        print(
            f"{key:<24} {s['median_s']:8.3f} s (min {s['min_s']:.3f}, max {s['max_s']:.3f})"
            f"  peak RSS {s['peak_rss_mb']:6.0f} MB  rows {s['rows']:>9,}"
            f"  spine order kept: {s['in_spine_order']}"
        )
    print(
        "\n== result checks vs featurelib (cells on shared spine rows; floats within 1e-9 rel.) =="
    )
    print(
        f"exact TTL-boundary cases in the data (Feast keeps them, featurelib expires them): "
        f"{meta['boundary_cases']}"
    )
    for key, c in checks.items():
        print(
            f"{key:<40} equal={c['equal']!s:<5} rows {c['rows']:,}/{c['ref_rows']:,}"
            f" (missing {c['missing_rows']:,}, of which with a null feature in featurelib "
            f"{c['missing_rows_with_null_in_featurelib']:,}; extra {c['extra_rows']:,});"
            f" mismatched cells {c['mismatched_cells']:,}/{c['cells_compared']:,}"
            f" (null only in featurelib {c['null_in_featurelib_only']:,}, null only in other "
            f"{c['null_in_other_only']:,}, value differs {c['value_differs']:,})"
        )
    print("\n== ratios (median times / peak RSS; *_paired = median of per-repeat ratios) ==")
    for key, value in figures.items():
        if value is not None:
            print(f"{key:<45} {value}")
    for line in verdict_lines(figures, TARGETS):
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 1 repeat, no dask")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--with-dask-1m", action="store_true", help="Feast dask store at 1M too")
    parser.add_argument("--skip-dask", action="store_true", help="never run Feast's dask store")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--data-root", default=str(HERE / ".data"), help="generated data cache")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    # internal: child processes
    for flag in ("--run", "--data-dir", "--result", "--out"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    parser.add_argument("--spine", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.generate:
        generate(cfg, Path(args.data_dir).resolve())
        return
    if args.run:
        run_engine(args.run, Path(args.data_dir).resolve(), args.spine, args.out, args.result)
        return

    repeats = args.repeats or (1 if args.quick else 3)
    plan = make_plan(cfg, args)
    load_before, version_before = os.getloadavg(), code_version()
    data_dir, meta = ensure_data(cfg, Path(args.data_root).resolve(), args.timeout)
    out_dir = data_dir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    print(
        f"data: {meta['source_rows']} source rows, {cfg.entities:,} entities, spines "
        f"{', '.join(f'{n:,}' for n in cfg.spines)}; {len(plan)} measurements x {repeats}",
        flush=True,
    )
    runs = measure(plan, repeats, data_dir, out_dir, args.timeout)
    results = {key: summarize(rs) for key, rs in runs.items()}
    checks = check_outputs(cfg, out_dir)
    figures = ratios(cfg, results, runs)
    report(results, checks, figures, meta)
    summary = {
        "benchmark": "offline_pit",
        "quick": args.quick,
        "repeats": repeats,
        **{k: figures.get(k) for k in TARGETS},
        "targets": verdicts(figures, TARGETS),
        "figures": figures,
        "results": results,
        "checks": checks,
        "data": {**meta, "dir": str(data_dir)},
        "code": {"before": version_before, "after": code_version()},
        "machine": {
            **machine_info(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
