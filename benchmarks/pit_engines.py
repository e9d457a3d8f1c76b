"""Data, engines and the measured child process of `offline_pit.py` (see its docstring).

Everything here runs inside one child process per measurement: `generate` writes the cached
data; `run_engine` sets one engine up (untimed), runs it once (timed) and records wall time,
the process's peak RSS and a normalized copy of its output for the result checks.
"""

from __future__ import annotations

import gc
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SEED = 20240601
DATA_VERSION = 1
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
START = datetime(2024, 1, 1, tzinfo=UTC)
ACTIVITY = [f"a{i}" for i in range(12)]
PROFILE = [f"p{i}" for i in range(8)]
AGG_FEATURES = ["a0_sum_1d", "a0_sum_7d", "count_1d", "count_7d", "a1_mean_1d", "a1_mean_7d"]


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


# --------------------------------------------------------------------------------------------
# Data generation (runs in a child process)
# --------------------------------------------------------------------------------------------


def generate(cfg: Config, data_dir: Path) -> None:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(SEED)
    start_us = int(START.timestamp()) * 1_000_000
    span_us = cfg.days * DAY_US

    def timestamps(values: str) -> pl.Expr:
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
                right,
                on="event_timestamp",
                by="user_id",
                strategy="backward",
                tolerance=view.ttl,
                check_sortedness=False,  # both sides are sorted just above
            )
            queries.append(joined.sort("__row").select(view.features))
        return pl.concat([spine.drop("__row"), *pl.collect_all(queries)], how="horizontal")

    return run


def feast_objects(data_dir: Path) -> list[Any]:
    """The benchmark's entity and plain views as Feast objects (shared by online.py)."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

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
    return [user, *views]


def verdicts(figures: dict[str, Any], targets: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Each target's value, bound and whether it is met (None when not measured)."""
    out: dict[str, Any] = {}
    for key, (op, bound) in targets.items():
        value = figures.get(key)
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        out[key] = {"value": value, "target": f"{op} {bound}", "met": met}
    return out


def verdict_lines(figures: dict[str, Any], targets: dict[str, tuple[str, float]]) -> list[str]:
    """The "== targets ==" lines every benchmark prints before its JSON line."""
    lines = ["\n== targets =="]
    for key, v in verdicts(figures, targets).items():
        state = "n/a (not measured)" if v["met"] is None else "MET" if v["met"] else "MISSED"
        lines.append(f"{key:<36} {v['value']!s:>8}  target {v['target']:<8} {state}")
    return lines


def setup_feast(data_dir: Path, spine_path: Path, store_type: str, repo: Path) -> Timed:
    import pandas as pd
    from feast import FeatureStore

    if store_type == "duckdb":
        try:
            import ibis  # noqa: F401 - Feast's duckdb offline store is built on ibis
        except ImportError:
            raise SystemExit(
                "Feast's duckdb offline store needs ibis: pip install 'feast[duckdb]' "
                "(or 'ibis-framework[duckdb]>=10')"
            ) from None

    (repo / "feature_store.yaml").write_text(
        "project: pit_bench\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n  type: sqlite\n  path: {repo / 'online.db'}\n"
        f"offline_store:\n  type: {store_type}\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply(feast_objects(data_dir))
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


def run_engine(
    engine: str, data_dir: Path, spine_rows: int, out: str | None, result_path: str
) -> None:
    """Set the engine up (untimed), run it once (timed), write its result JSON and output."""
    spine = data_dir / f"spine_{spine_rows}.parquet"
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
        frame_out, in_order = normalized(engine, frame)
        if out:
            frame_out.write_parquet(out)
        result = {
            "engine": engine,
            "spine_rows": spine_rows,
            "seconds": seconds,
            "peak_rss_mb": peak,
            "baseline_rss_mb": baseline,
            "setup_s": setup_s,
            "rows": len(frame),
            "in_spine_order": in_order,
        }
        Path(result_path).write_text(json.dumps(result))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
