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

Every engine runs in its own subprocess (one per repeat, engines interleaved within a repeat) so
that its peak RSS (the child's VmHWM) is its own. Times are medians over repeats; ratios are
taken against anchors measured in the same run. Results are checked cell by cell against
featurelib's (floats within 1e-9 relative); mismatches and dropped rows are reported.

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

Smoke test without pytest: `python benchmarks/offline_pit.py --quick` must exit 0 and print a JSON
object as its last line (it finishes in well under two minutes).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED = 20240601
DATA_VERSION = 1
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
START = datetime(2024, 1, 1, tzinfo=UTC)
ACTIVITY = [f"a{i}" for i in range(12)]
PROFILE = [f"p{i}" for i in range(8)]
AGG_FEATURES = ["a0_sum_1d", "a0_sum_7d", "count_1d", "count_7d", "a1_mean_1d", "a1_mean_7d"]
TOLERANCE = 1e-9


@dataclass(frozen=True)
class ViewDef:
    name: str
    source: str
    features: tuple[str, ...]
    ttl: timedelta


VIEWS = (
    ViewDef("activity_7d", "activity", tuple(ACTIVITY[:6]), timedelta(days=7)),
    ViewDef("activity_2d", "activity", tuple(ACTIVITY[6:]), timedelta(days=2)),
    ViewDef("profile_30d", "profile", tuple(PROFILE), timedelta(days=30)),
)
PLAIN_FEATURES = [f for v in VIEWS for f in v.features]


@dataclass(frozen=True)
class Config:
    entities: int
    activity_events: int
    profile_events: int
    days: int
    spines: tuple[int, ...]

    @property
    def tag(self) -> str:
        return (
            f"v{DATA_VERSION}_e{self.entities}_a{self.activity_events}_p{self.profile_events}"
            f"_d{self.days}_s{'-'.join(map(str, self.spines))}"
        )


FULL = Config(100_000, 1_500_000, 500_000, 60, (100_000, 1_000_000))
QUICK = Config(10_000, 150_000, 50_000, 60, (10_000, 100_000))

PLAIN_ENGINES = ("featurelib", "polars_floor", "feast_duckdb", "feast_dask")
AGG_ENGINES = ("featurelib_agg", "duckdb_window", "duckdb_rangejoin")
ENGINES = PLAIN_ENGINES + AGG_ENGINES


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
# Data generation (runs in a child process)
# --------------------------------------------------------------------------------------------


def generate(cfg: Config, data_dir: Path) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(SEED)
    start_us = int(START.timestamp()) * 1_000_000
    span_us = cfg.days * DAY_US

    def timestamps(values: Any) -> pl.Expr:
        return pl.from_epoch(values, time_unit="us").dt.replace_time_zone("UTC")

    def events(name: str, rows: int, features: list[str]) -> pl.DataFrame:
        ts = start_us + rng.integers(0, span_us, rows, dtype=np.int64)
        frame = pl.DataFrame(
            {
                "user_id": rng.integers(0, cfg.entities, rows, dtype=np.int64),
                "event_timestamp": ts,
                "created": ts + rng.integers(0, 600_000_000, rows, dtype=np.int64),
                **{f: rng.standard_normal(rows) * (i + 1) + i for i, f in enumerate(features)},
            }
        )
        frame = (
            frame.with_columns(timestamps("event_timestamp"), timestamps("created"))
            .unique(["user_id", "event_timestamp"], keep="first", maintain_order=True)
            .sort("event_timestamp")  # an append-only event log
        )
        frame.write_parquet(data_dir / f"{name}.parquet")
        return frame

    sources = {
        "activity": events("activity", cfg.activity_events, ACTIVITY),
        "profile": events("profile", cfg.profile_events, PROFILE),
    }
    meta: dict[str, Any] = {"config": asdict(cfg), "seed": SEED, "boundary_cases": {}}
    meta["source_rows"] = {k: len(v) for k, v in sources.items()}
    for rows in cfg.spines:
        spine = pl.DataFrame(
            {
                "spine_row": np.arange(rows, dtype=np.int64),
                # ~2% of the spine asks for entities that have no events at all
                "user_id": rng.integers(0, int(cfg.entities * 1.02), rows, dtype=np.int64),
                "event_timestamp": start_us + DAY_US + rng.integers(0, span_us, rows),
            }
        ).with_columns(timestamps("event_timestamp"))
        spine.write_parquet(data_dir / f"spine_{rows}.parquet")
        # Spine rows with an event exactly `ttl` old: Feast keeps it, featurelib expires it.
        cases = 0
        for view in VIEWS:
            probe = spine.select("user_id", (pl.col("event_timestamp") - view.ttl).alias("e"))
            src = sources[view.source].select("user_id", pl.col("event_timestamp").alias("e"))
            cases += probe.join(src, on=["user_id", "e"], how="inner").height
        meta["boundary_cases"][str(rows)] = cases
    (data_dir / "meta.json").write_text(json.dumps(meta, indent=2))


# --------------------------------------------------------------------------------------------
# Engines (each runs in a child process; setup is untimed, the returned callable is timed)
# --------------------------------------------------------------------------------------------

Timed = Callable[[], Any]


def featurelib_services(data_dir: Path) -> tuple[Any, Any]:
    import featurelib as fl

    user = fl.Entity("user", {"user_id": fl.Int64})
    sources = {
        name: fl.ParquetSource(
            name,
            str(data_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_field="created",
        )
        for name in ("activity", "profile")
    }
    views = [
        fl.FeatureView(
            v.name, [user], sources[v.source], {f: fl.col(f) for f in v.features}, ttl=v.ttl
        )
        for v in VIEWS
    ]
    aggs = fl.AggregationView(
        "activity_aggs",
        [user],
        sources["activity"],
        [
            fl.sum("a0").windows("1d", "7d"),
            fl.count().windows("1d", "7d"),
            fl.mean("a1").windows("1d", "7d"),
        ],
    )
    assert aggs.feature_names() == AGG_FEATURES, aggs.feature_names()
    return fl.FeatureService("pit_plain", views), fl.FeatureService("pit_aggs", [aggs])


def setup_featurelib(data_dir: Path, spine: Path, aggregate: bool) -> Timed:
    import featurelib as fl

    plain_svc, agg_svc = featurelib_services(data_dir)
    svc = agg_svc if aggregate else plain_svc
    return lambda: fl.training_set(svc, spine, timestamp_column="event_timestamp")


def setup_polars_floor(data_dir: Path, spine_path: Path) -> Timed:
    import polars as pl

    def run() -> Any:
        spine = pl.read_parquet(spine_path).with_row_index("__row")
        left = spine.select("__row", "user_id", "event_timestamp").sort("event_timestamp")
        queries = []
        for view in VIEWS:
            right = (
                pl.scan_parquet(data_dir / f"{view.source}.parquet")
                .select("user_id", "event_timestamp", *view.features)
                .sort("event_timestamp")
            )
            joined = left.lazy().join_asof(
                right, on="event_timestamp", by="user_id", strategy="backward", tolerance=view.ttl
            )
            queries.append(joined.sort("__row").select(view.features))
        return pl.concat([spine.drop("__row"), *pl.collect_all(queries)], how="horizontal")

    return run


def setup_feast(data_dir: Path, spine_path: Path, store_type: str, repo: Path) -> Timed:
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    (repo / "feature_store.yaml").write_text(
        "project: pit_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        f"offline_store:\n  type: {store_type}\n"
        "entity_key_serialization_version: 3\n"
    )
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    sources = {
        name: FileSource(
            name=name,
            path=str(data_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
        for name in ("activity", "profile")
    }
    views = [
        FeatureView(
            name=v.name,
            entities=[user],
            ttl=v.ttl,
            schema=[Field(name="user_id", dtype=Int64)]
            + [Field(name=f, dtype=Float64) for f in v.features],
            source=sources[v.source],
        )
        for v in VIEWS
    ]
    store = FeatureStore(repo_path=str(repo))
    store.apply([user, *views])
    refs = [f"{v.name}:{f}" for v in VIEWS for f in v.features]

    def run() -> Any:
        entity_df = pd.read_parquet(spine_path)
        return store.get_historical_features(entity_df=entity_df, features=refs).to_df()

    return run


def _duckdb_sources(data_dir: Path, spine_path: Path) -> str:
    return f"""
        ev AS (SELECT user_id, epoch_us(event_timestamp) AS t, a0, a1
               FROM read_parquet('{data_dir / "activity.parquet"}')),
        sp AS (SELECT spine_row, user_id, epoch_us(event_timestamp) AS t
               FROM read_parquet('{spine_path}'))"""


def duckdb_window_sql(data_dir: Path, spine_path: Path) -> str:
    """Spine rows unioned into the event stream; one RANGE frame per window.

    The frame starts at floor(t, 1h) - W, i.e. `W + t mod 1h` before t (a per-row offset), and
    ends at CURRENT ROW, which in RANGE mode includes peers: events at exactly t are visible.
    """
    frames = {
        w: f"(PARTITION BY user_id ORDER BY t RANGE BETWEEN ({days * DAY_US} + t % {HOUR_US}) "
        "PRECEDING AND CURRENT ROW)"
        for w, days in (("1d", 1), ("7d", 7))
    }
    cols = ",\n".join(
        f"COALESCE(SUM(a0) OVER w{w}, 0) AS a0_sum_{w}, COUNT(ev) OVER w{w} AS count_{w}, "
        f"AVG(a1) OVER w{w} AS a1_mean_{w}"
        for w in frames
    )
    windows = ", ".join(f"w{w} AS {frame}" for w, frame in frames.items())
    return f"""
    WITH {_duckdb_sources(data_dir, spine_path)},
    u AS (SELECT NULL::BIGINT AS spine_row, user_id, t, a0, a1, 1 AS ev FROM ev
          UNION ALL
          SELECT spine_row, user_id, t, NULL, NULL, NULL FROM sp),
    w AS (SELECT spine_row, {cols} FROM u WINDOW {windows})
    SELECT * FROM w WHERE spine_row IS NOT NULL ORDER BY spine_row"""


def duckdb_rangejoin_sql(data_dir: Path, spine_path: Path) -> str:
    """Each spine row joined to its entity's events in [floor(t,1h) - 7d, t], then grouped."""
    lo = {w: f"s.t - s.t % {HOUR_US} - {days * DAY_US}" for w, days in (("1d", 1), ("7d", 7))}
    cols = ",\n".join(
        f"COALESCE(SUM(e.a0) FILTER (WHERE e.t >= {lo[w]}), 0) AS a0_sum_{w}, "
        f"COUNT(e.t) FILTER (WHERE e.t >= {lo[w]}) AS count_{w}, "
        f"AVG(e.a1) FILTER (WHERE e.t >= {lo[w]}) AS a1_mean_{w}"
        for w in lo
    )
    return f"""
    WITH {_duckdb_sources(data_dir, spine_path)}
    SELECT s.spine_row, {cols}
    FROM sp s LEFT JOIN ev e ON e.user_id = s.user_id AND e.t <= s.t AND e.t >= {lo["7d"]}
    GROUP BY s.spine_row ORDER BY s.spine_row"""


def setup_duckdb(data_dir: Path, spine_path: Path, rangejoin: bool) -> Timed:
    import duckdb

    sql = (duckdb_rangejoin_sql if rangejoin else duckdb_window_sql)(data_dir, spine_path)
    con = duckdb.connect()
    return lambda: con.sql(sql).pl()


# --------------------------------------------------------------------------------------------
# Child: run one engine once, report time and peak memory
# --------------------------------------------------------------------------------------------


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    # VmHWM is the high-water mark of this process image; ru_maxrss can carry the parent's
    # peak across fork+exec, so it is only the fallback.
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def normalized(engine: str, frame: Any) -> tuple[Any, bool]:
    """(frame with spine_row + feature columns sorted by spine_row, NaN as null; was in order)."""
    import polars as pl

    out = frame if isinstance(frame, pl.DataFrame) else pl.from_pandas(frame)
    features = AGG_FEATURES if engine in AGG_ENGINES else PLAIN_FEATURES
    out = out.select("spine_row", *features)
    rows = out["spine_row"]
    in_order = bool(rows.len() == 0 or (rows == pl.int_range(rows.len(), eager=True)).all())
    out = out.with_columns(pl.col(features).cast(pl.Float64).fill_nan(None)).sort("spine_row")
    return out, in_order


def run_child(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir).resolve()
    spine = data_dir / f"spine_{args.spine}.parquet"
    engine = args.run
    workdir = Path(tempfile.mkdtemp(prefix=f"pit_{engine}_"))
    try:
        started = time.perf_counter()
        if engine in ("featurelib", "featurelib_agg"):
            timed = setup_featurelib(data_dir, spine, aggregate=engine == "featurelib_agg")
        elif engine == "polars_floor":
            timed = setup_polars_floor(data_dir, spine)
        elif engine in ("feast_duckdb", "feast_dask"):
            store = "duckdb" if engine == "feast_duckdb" else "file"
            timed = setup_feast(data_dir, spine, store, workdir)
        elif engine in ("duckdb_window", "duckdb_rangejoin"):
            timed = setup_duckdb(data_dir, spine, rangejoin=engine == "duckdb_rangejoin")
        else:
            raise SystemExit(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
        setup_s = time.perf_counter() - started
        gc.collect()
        baseline = _status_mb("VmRSS")
        t0 = time.perf_counter()
        frame = timed()
        seconds = time.perf_counter() - t0
        peak = peak_rss_mb()
        out, in_order = normalized(engine, frame)
        if args.out:
            out.write_parquet(args.out)
        result = {
            "engine": engine,
            "spine_rows": args.spine,
            "seconds": seconds,
            "peak_rss_mb": peak,
            "baseline_rss_mb": baseline,
            "setup_s": setup_s,
            "rows": len(frame),
            "in_spine_order": in_order,
        }
        Path(args.result).write_text(json.dumps(result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
    """Cell-by-cell comparison keyed by spine_row (floats within 1e-9 relative)."""
    import polars as pl

    ref, other = pl.read_parquet(ref_path), pl.read_parquet(other_path)
    dupes = other.height - other["spine_row"].n_unique()
    joined = ref.join(other, on="spine_row", how="inner", suffix="__o")
    stats: dict[str, Any] = {
        "ref_rows": ref.height,
        "rows": other.height,
        "missing_rows": ref.join(other, on="spine_row", how="anti").height,
        "extra_rows": other.join(ref, on="spine_row", how="anti").height + dupes,
        "cells_compared": joined.height * len(features),
    }
    exprs = []
    for f in features:
        a, b = pl.col(f), pl.col(f + "__o")
        close = (a - b).abs() <= TOLERANCE * pl.max_horizontal(1.0, a.abs(), b.abs())
        exprs += [
            (a.is_null() & b.is_not_null()).sum().alias(f"{f}|null_in_featurelib_only"),
            (a.is_not_null() & b.is_null()).sum().alias(f"{f}|null_in_other_only"),
            (a.is_not_null() & b.is_not_null() & ~close).sum().alias(f"{f}|value_differs"),
        ]
    counts = joined.select(exprs).row(0, named=True)
    for kind in ("null_in_featurelib_only", "null_in_other_only", "value_differs"):
        stats[kind] = sum(v for k, v in counts.items() if k.endswith("|" + kind))
    stats["mismatched_cells"] = (
        stats["null_in_featurelib_only"] + stats["null_in_other_only"] + stats["value_differs"]
    )
    stats["equal"] = stats["mismatched_cells"] == 0 and stats["missing_rows"] == 0
    stats["equal"] = stats["equal"] and stats["extra_rows"] == 0
    return stats


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"], "log_tail": runs[0].get("log", "")[-1500:]}
    times = [r["seconds"] for r in ok]
    peaks = [r["peak_rss_mb"] for r in ok]
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": [round(t, 4) for t in times],
        "peak_rss_mb": statistics.median(peaks),
        "peak_rss_mb_max": max(peaks),
        "baseline_rss_mb": statistics.median(r["baseline_rss_mb"] or 0.0 for r in ok),
        "setup_s": statistics.median(r["setup_s"] for r in ok),
        "rows": ok[0]["rows"],
        "in_spine_order": ok[0]["in_spine_order"],
        "repeats": len(ok),
        "failed_repeats": len(runs) - len(ok),
    }


def machine_info() -> dict[str, Any]:
    import duckdb
    import feast
    import polars as pl

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem: float | None = None
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        mem = int(first.split()[1]) / 1024**2
    except (OSError, IndexError, ValueError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gb": None if mem is None else round(mem, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "polars": pl.__version__,
        "duckdb": duckdb.__version__,
        "feast": feast.__version__,
    }


def ratio(num: dict[str, Any] | None, den: dict[str, Any] | None, key: str) -> float | None:
    if not num or not den or key not in num or key not in den or not den[key]:
        return None
    return round(num[key] / den[key], 3)


def paired_ratio(runs: dict[str, list[dict[str, Any]]], num: str, den: str) -> float | None:
    """Median over repeats of the per-repeat time ratio (robust to drift on a noisy machine)."""
    pairs = [
        a["seconds"] / b["seconds"]
        for a, b in zip(runs.get(num, []), runs.get(den, []))
        if "error" not in a and "error" not in b
    ]
    return round(statistics.median(pairs), 3) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, 1 repeat, no dask")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--with-dask-1m", action="store_true", help="Feast dask store at 1M too")
    parser.add_argument("--skip-dask", action="store_true", help="never run Feast's dask store")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset")
    parser.add_argument("--data-root", default=str(HERE / ".data"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    # internal (child processes)
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--spine", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.generate:
        generate(cfg, Path(args.data_dir).resolve())
        return
    if args.run:
        run_child(args)
        return

    repeats = args.repeats or (1 if args.quick else 3)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    load_before = os.getloadavg()
    data_dir, meta = ensure_data(cfg, Path(args.data_root), args.timeout)
    out_dir = data_dir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    big = max(cfg.spines)
    plan: list[tuple[str, int]] = []
    for rows in cfg.spines:
        for engine in ENGINES:
            if engine not in engines:
                continue
            if engine == "feast_dask" and (
                args.quick or args.skip_dask or (rows == big and not args.with_dask_1m)
            ):
                continue
            plan.append((engine, rows))
    print(
        f"data: {meta['source_rows']} source rows, {cfg.entities:,} entities, spines "
        f"{[f'{n:,}' for n in cfg.spines]}; {len(plan)} measurements x {repeats} repeats",
        flush=True,
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(repeats):
        for engine, rows in plan:
            key = f"{engine}_{label(rows)}"
            previous = runs.setdefault(key, [])
            if previous and "error" in previous[0]:
                continue  # failed (crash, timeout): do not spend the time again
            out = out_dir / f"{key}.parquet" if rep == 0 else None
            res = run_once(engine, rows, data_dir, out, args.timeout)
            previous.append(res)
            head = f"[{rep + 1}/{repeats}] {engine:<17} spine={rows:>9,}"
            if "error" in res:
                print(f"{head}  FAILED: {res['error']}", flush=True)
                print("    " + res["log"].strip().replace("\n", "\n    ")[-1500:], flush=True)
            else:
                print(
                    f"{head}  {res['seconds']:8.3f} s  peak RSS {res['peak_rss_mb']:7.0f} MB"
                    f"  rows {res['rows']:,}  (setup {res['setup_s']:.1f} s)",
                    flush=True,
                )

    results = {key: summarize(rs) for key, rs in runs.items()}
    checks: dict[str, Any] = {}
    for rows in cfg.spines:
        lab = label(rows)
        for ref, others, feats in (
            ("featurelib", ("polars_floor", "feast_duckdb", "feast_dask"), PLAIN_FEATURES),
            ("featurelib_agg", ("duckdb_window", "duckdb_rangejoin"), AGG_FEATURES),
        ):
            ref_path = out_dir / f"{ref}_{lab}.parquet"
            for other in others:
                path = out_dir / f"{other}_{lab}.parquet"
                if ref_path.exists() and path.exists():
                    checks[f"{other}_vs_{ref}_{lab}"] = compare(ref_path, path, feats)

    figures: dict[str, Any] = {}
    for rows in cfg.spines:
        lab = label(rows)
        fl_, fl_agg = results.get(f"featurelib_{lab}"), results.get(f"featurelib_agg_{lab}")
        for name, num, den, key in RATIOS:
            num, den = f"{num}_{lab}", f"{den}_{lab}"
            figures[f"{name}_{lab}"] = ratio(results.get(num), results.get(den), key)
            if key == "median_s":
                figures[f"{name}_{lab}_paired"] = paired_ratio(runs, num, den)
        if fl_ and fl_agg:
            figures[f"featurelib_seconds_{lab}"] = fl_.get("median_s")
            figures[f"featurelib_agg_seconds_{lab}"] = fl_agg.get("median_s")
    verdicts: dict[str, Any] = {}
    for key, (op, bound) in TARGETS.items():
        value = figures.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        verdicts[key] = {"value": value, "target": f"{op} {bound}", "met": met}

    print("\n== medians ==")
    for key, s in results.items():
        if "error" in s:
            print(f"{key:<26} FAILED: {s['error']}")
        else:
            print(
                f"{key:<26} {s['median_s']:8.3f} s (min {s['min_s']:.3f}, max {s['max_s']:.3f})"
                f"  peak RSS {s['peak_rss_mb']:7.0f} MB  rows {s['rows']:,}"
                f"  spine order kept: {s['in_spine_order']}"
            )
    print("\n== result checks (cells vs featurelib; floats within 1e-9 relative) ==")
    print(
        f"exact TTL-boundary cases in the data (Feast keeps, featurelib expires): "
        f"{meta['boundary_cases']}"
    )
    for key, c in checks.items():
        print(
            f"{key:<40} equal={c['equal']}  rows {c['rows']:,}/{c['ref_rows']:,}"
            f"  missing {c['missing_rows']:,}  extra {c['extra_rows']:,}"
            f"  mismatched cells {c['mismatched_cells']:,} of {c['cells_compared']:,}"
            f" (null only in featurelib {c['null_in_featurelib_only']:,}, null only in other "
            f"{c['null_in_other_only']:,}, value differs {c['value_differs']:,})"
        )
    print("\n== ratios ==")
    for key, value in figures.items():
        print(f"{key:<45} {value}")
    print("\n== targets ==")
    for key, v in verdicts.items():
        print(
            f"{key:<45} {v['value']}  (target {v['target']}): "
            f"{'MET' if v['met'] else 'n/a' if v['met'] is None else 'MISSED'}"
        )
    summary = {
        "benchmark": "offline_pit",
        "quick": args.quick,
        "repeats": repeats,
        "data": {**meta, "dir": str(data_dir)},
        **{k: figures.get(k) for k in TARGETS},
        "figures": figures,
        "targets": verdicts,
        "results": results,
        "checks": checks,
        "machine": {
            **machine_info(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
