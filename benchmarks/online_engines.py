"""Definitions, engines and the measured children of `online.py` (see its docstring).

Every measurement runs in a child process started by `online.py`; the children share the one
throwaway Redis server the parent started and use one Redis database per engine:

    db 1  featurelib (`RedisOnlineStore`, featurelib's layout; the read floor reads these keys)
    db 2  Feast's built-in Redis online store
    db 3  the raw pipelined-write floor (the bytes featurelib wrote to db 1, SET again)
    db 4  scratch (write-path phases, profiling)

Children:

* `mat_featurelib` - FLUSHDB, `materialize_range` of the three plain views (timed), then of
  the aggregation view (timed apart; Feast has no equivalent);
* `mat_raw` - the (key, value) bytes featurelib left in db 1 (untimed), FLUSHDB db 3, then a
  pipelined SET of the same bytes (timed);
* `mat_feast` - FLUSHDB, `FeatureStore.materialize` in-process (timed; the time spent inside
  the Redis store's `online_write_batch` is recorded apart);
* `fl_phases` - featurelib's write path cut into phases (Polars, encoding, script calls);
* `reads` - result checks (all engines in this process), then read latency: featurelib,
  Feast and the floor each in its own spawned worker process (own heap and garbage
  collector, only its own imports), driven in lock-step rounds by this child so that drift on
  a shared machine hits every engine alike; GC collections and time per engine are recorded;
* `profile` - cProfile of featurelib's write and read paths (with `online.py --profile`).
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import math
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pit_engines import (
    ACTIVITY,
    AGG_FEATURES,
    PLAIN_FEATURES,
    PROFILE,
    START,
    VIEWS,
    Config,
    feast_objects,
)
from pit_engines import peak_rss_mb as _peak_rss_mb

PROJECT = "bench_online"
DB = {"featurelib": 1, "feast": 2, "raw": 3, "scratch": 4}
SEED = 20240602
TOLERANCE = 1e-9  # floats compare within 1e-9 * max(1, |a|, |b|)
WRITE_BATCH = 2000  # commands per pipeline flush (featurelib's RedisOnlineStore uses 2000 too)
FLIP = 1 << 63
CASES = ("plain_1", "plain_100", "agg_1", "agg_100")
AGG_VIEW = "activity_aggs"


def peak_rss_mb() -> float:
    return round(_peak_rss_mb(), 1)


def window(cfg: Config) -> tuple[datetime, datetime]:
    """Materialization range [start, end]: every generated event lies inside it."""
    return START - timedelta(days=1), START + timedelta(days=cfg.days)


def read_at(cfg: Config) -> datetime:
    """The read time: the end of the data (TTLs and windows are judged against it)."""
    return window(cfg)[1]


def db_url(url: str, db: int) -> str:
    """`redis://host:port/<db>` from the server's `redis://host:port/0`."""
    return url.rsplit("/", 1)[0] + f"/{db}"


def client(url: str, db: int) -> Any:
    import redis

    return redis.Redis.from_url(db_url(url, db))


# --------------------------------------------------------------------------------------------
# Definitions (the same views as the offline benchmark, sources with a declared schema)
# --------------------------------------------------------------------------------------------


@dataclass
class Definitions:
    plain: Any  # FeatureService: the three plain views (20 features)
    combo: Any  # FeatureService: the same + one aggregation view (26 features)
    views: list[Any]
    agg: Any
    repo: Any


def featurelib_definitions(data_dir: Path) -> Definitions:
    import featurelib as fl

    user = fl.Entity("user", {"user_id": fl.Int64})
    columns = {"activity": ACTIVITY, "profile": PROFILE}
    sources = {
        name: fl.ParquetSource(
            name,
            str(data_dir / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_field="created",
            # Declared: online reads type their values from the declared schema (see the
            # benchmark's report: without it they come back null / truncated).
            schema={
                "user_id": fl.Int64,
                "event_timestamp": fl.Timestamp,
                "created": fl.Timestamp,
                **dict.fromkeys(features, fl.Float64),
            },
        )
        for name, features in columns.items()
    }
    views = [
        fl.FeatureView(
            v.name, [user], sources[v.source], {f: fl.col(f) for f in v.features}, ttl=v.ttl
        )
        for v in VIEWS
    ]
    agg = fl.AggregationView(
        AGG_VIEW,
        [user],
        sources["activity"],
        [
            fl.sum("a0").windows("1d", "7d"),
            fl.count().windows("1d", "7d"),
            fl.mean("a1").windows("1d", "7d"),
        ],
    )
    assert agg.feature_names() == AGG_FEATURES, agg.feature_names()
    plain = fl.FeatureService("online_plain", views)
    combo = fl.FeatureService("online_agg", [*views, agg])
    repo = fl.Repo.from_objects([plain, combo], root=data_dir)
    return Definitions(plain, combo, views, agg, repo)


def featurelib_store(url: str, db: int) -> Any:
    from featurelib.online.store import RedisOnlineStore

    return RedisOnlineStore(client(url, db), PROJECT)


def feast_store(data_dir: Path, repo_dir: Path, port: int, offline: str, apply: bool) -> Any:
    """Feast 0.67 with its built-in Redis online store on our server (db 2)."""
    from feast import FeatureStore

    repo_dir.mkdir(parents=True, exist_ok=True)
    (repo_dir / "feature_store.yaml").write_text(
        f"project: {PROJECT}\n"
        f"registry: {repo_dir / 'registry.db'}\n"
        "provider: local\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "127.0.0.1:{port},db={DB["feast"]}"\n'
        f"offline_store:\n  type: {offline}\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(repo_dir))
    if apply:
        store.apply(feast_objects(data_dir))
    return store


FEAST_REFS = [f"{v.name}:{f}" for v in VIEWS for f in v.features]


# --------------------------------------------------------------------------------------------
# Materialization children
# --------------------------------------------------------------------------------------------


def mat_featurelib(cfg: Config, data_dir: Path, url: str) -> dict[str, Any]:
    from featurelib.online.api import materialize_range

    defs = featurelib_definitions(data_dir)
    store = featurelib_store(url, DB["featurelib"])
    store.client.flushdb()
    start, end = window(cfg)
    names = [v.name for v in defs.views]
    gc.collect()
    t0 = time.perf_counter()
    results = materialize_range(store, defs.repo, start, end, views=names)
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    t1 = time.perf_counter()
    agg = materialize_range(store, defs.repo, start, end, views=[AGG_VIEW])
    agg_seconds = time.perf_counter() - t1
    return {
        "seconds": seconds,
        "rows": sum(r.rows for r in results),
        "records": sum(r.records for r in results),
        "per_view": {r.view: {"rows": r.rows, "seconds": round(r.seconds, 4)} for r in results},
        "peak_rss_mb": peak,
        "agg_seconds": agg_seconds,
        "agg_events": sum(r.rows for r in agg),
        "agg_records": sum(r.records for r in agg),
        "keys": store.client.dbsize(),
    }


def featurelib_records(url: str) -> list[tuple[bytes, bytes]]:
    """Every plain-view (key, value) featurelib wrote to its database."""
    source = client(url, DB["featurelib"])
    keys = sorted(source.scan_iter(match=f"fl:{PROJECT}:v:*".encode(), count=5000))
    values: list[bytes] = []
    for i in range(0, len(keys), 5000):
        values += source.mget(keys[i : i + 5000])
    return list(zip(keys, values, strict=True))


def pipelined_set(target: Any, records: Sequence[tuple[bytes, bytes]]) -> None:
    pipe = target.pipeline(transaction=False)
    for n, (key, value) in enumerate(records, start=1):
        pipe.set(key, value)
        if n % WRITE_BATCH == 0:
            pipe.execute()
    pipe.execute()


def mat_raw(cfg: Config, data_dir: Path, url: str) -> dict[str, Any]:
    records = featurelib_records(url)
    if not records:
        raise SystemExit("db 1 holds no featurelib records: run mat_featurelib first")
    target = client(url, DB["raw"])
    target.flushdb()
    gc.collect()
    t0 = time.perf_counter()
    pipelined_set(target, records)
    seconds = time.perf_counter() - t0
    written = target.dbsize()
    target.flushdb()
    return {
        "seconds": seconds,
        "rows": len(records),
        "records": written,
        "bytes": sum(len(k) + len(v) for k, v in records),
        "peak_rss_mb": peak_rss_mb(),
    }


def mat_feast(
    cfg: Config, data_dir: Path, url: str, port: int, workdir: Path, offline: str
) -> dict[str, Any]:
    import feast.infra.online_stores.redis as feast_redis

    client(url, DB["feast"]).flushdb()
    store = feast_store(data_dir, workdir / "feast_repo", port, offline, apply=True)
    # Time spent inside the Redis store's write (the rest is the offline pull + conversions).
    spent = {"write_s": 0.0, "calls": 0, "rows": 0}
    original = feast_redis.RedisOnlineStore.online_write_batch

    def timed_write(self: Any, config: Any, table: Any, data: Any, progress: Any) -> None:
        t = time.perf_counter()
        try:
            original(self, config, table, data, progress)
        finally:
            spent["write_s"] += time.perf_counter() - t
            spent["calls"] += 1
            spent["rows"] += len(data)

    feast_redis.RedisOnlineStore.online_write_batch = timed_write  # type: ignore[method-assign]
    start, end = window(cfg)
    gc.collect()
    t0 = time.perf_counter()
    store.materialize(start_date=start, end_date=end)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows": spent["rows"],
        "records": client(url, DB["feast"]).dbsize(),
        "online_write_batch_s": spent["write_s"],
        "online_write_batch_calls": spent["calls"],
        "peak_rss_mb": peak_rss_mb(),
    }


def fl_phases(cfg: Config, data_dir: Path, url: str) -> dict[str, Any]:
    """featurelib's plain write path cut into phases (scratch db 4), for the report."""
    from featurelib.offline.engine import _actual_columns, _key_types
    from featurelib.offline.io import cast_keys, read_source
    from featurelib.online import layout
    from featurelib.online.codec import encode_row
    from featurelib.online.materialize import _plain_value, latest_rows, write_latest
    from featurelib.online.store import KEEP_NEWEST

    defs = featurelib_definitions(data_dir)
    store = featurelib_store(url, DB["scratch"])
    store.client.flushdb()
    start, end = window(cfg)
    out: dict[str, float] = dict.fromkeys(
        ("polars_latest_s", "iter_rows_s", "encode_s", "write_rows_s", "evalsha_s", "set_s"), 0.0
    )
    rows = 0
    for view in defs.views:
        t = time.perf_counter()
        source = cast_keys(read_source(view.source, defs.repo.root), _key_types(view))
        view.feature_dtypes(_actual_columns(source))
        latest = latest_rows(view, source, start, end)
        out["polars_latest_s"] += time.perf_counter() - t
        rows += latest.height
        t = time.perf_counter()
        tuples = list(latest.iter_rows())
        out["iter_rows_s"] += time.perf_counter() - t
        t = time.perf_counter()
        version = view.version  # a property that hashes the definition: read it once
        encoded = [
            (
                layout.plain_key(PROJECT, view.name, version, entity),
                encode_row(event_us, created_us, [_plain_value(v) for v in values]),
            )
            for entity, event_us, created_us, *values in tuples
        ]
        out["encode_s"] += time.perf_counter() - t
        store.client.flushdb()
        t = time.perf_counter()
        write_latest(store, view, latest)  # what materialize does: iter_rows + encode + EVALSHA
        out["write_rows_s"] += time.perf_counter() - t
        store.client.flushdb()
        script = store.client.register_script(KEEP_NEWEST)
        script(keys=[b"warm"], args=[b"\0" * 16])  # loads the script once
        pipe = store.client.pipeline(transaction=False)
        t = time.perf_counter()
        for n, (key, value) in enumerate(encoded, start=1):
            pipe.evalsha(script.sha, 1, key, value)
            if n % WRITE_BATCH == 0:
                pipe.execute()
        pipe.execute()
        out["evalsha_s"] += time.perf_counter() - t
        store.client.flushdb()
        t = time.perf_counter()
        pipelined_set(store.client, encoded)
        out["set_s"] += time.perf_counter() - t
        store.client.flushdb()
    return {"rows": rows, **{k: round(v, 4) for k, v in out.items()}}


# --------------------------------------------------------------------------------------------
# The hand-written read floor: one redis-py pipeline, msgpack, no featurelib code on the path
# --------------------------------------------------------------------------------------------


def dyadic_cover(lo: int, hi: int, max_level: int) -> list[tuple[int, int]]:
    """(level, block) of the aligned blocks [b*2^L, (b+1)*2^L) covering [lo, hi), in order."""
    out = []
    a = lo
    while a < hi:
        align = max_level if a == 0 else (a & -a).bit_length() - 1
        level = min(align, (hi - a).bit_length() - 1, max_level)
        out.append((level, a >> level))
        a += 1 << level
    return out


def floor_spec(defs: Definitions) -> dict[str, Any]:
    """The layout parameters the floor needs, as plain data (taken from the definitions once,
    so that the floor's process imports no featurelib code)."""
    from featurelib.online.tiles import hop_plans

    (plan,) = hop_plans(defs.agg)  # one hop size (1h) for both windows
    assert plan.aggregations == (0, 1, 2), plan  # states: [sum s, count n, mean n, mean s]
    return {
        "plain": [
            (
                f"fl:{PROJECT}:v:{v.name}:{v.version}:{{",
                int(v.ttl.total_seconds()) * 1_000_000,
                len(v.features),
            )
            for v in defs.views
        ],
        "agg_prefix": f"fl:{PROJECT}:a:{defs.agg.name}:{defs.agg.version}:{{",
        "hop_us": plan.hop_us,
        "max_level": plan.max_level,
        "windows": [w.hops for w in defs.agg.aggregations[0].windows],  # 1d, 7d
    }


class Floor:
    """Reads featurelib's keys (layout documented in featurelib/online/layout.py) by hand.

    Plain views: GET per (view, entity); the 16-byte header's event time against `now` and the
    view's TTL (as featurelib does: expired or future rows read as missing), then msgpack.
    Aggregation: HMGET of the aligned blocks covering each window plus the current tile, then
    sum / count / mean merged by hand, in time order. Everything in one pipeline.
    """

    def __init__(self, redis_client: Any, spec: dict[str, Any], with_agg: bool) -> None:
        self.client = redis_client
        self.plain = [(prefix.encode(), ttl_us, n) for prefix, ttl_us, n in spec["plain"]]
        self.agg_prefix: bytes | None = spec["agg_prefix"].encode() if with_agg else None
        self.hop_us = spec["hop_us"]
        self.max_level = spec["max_level"]
        self.windows = spec["windows"]

    def _fields(self, now_us: int) -> tuple[list[bytes], list[list[int]]]:
        qhop = now_us // self.hop_us
        names: dict[bytes, int] = {}
        positions = []
        for hops in self.windows:
            blocks = [*dyadic_cover(qhop - hops, qhop, self.max_level), (0, qhop)]
            wanted = [f"{self.hop_us}:{lv}:{b}".encode() for lv, b in blocks]
            positions.append([names.setdefault(f, len(names)) for f in wanted])
        return list(names), positions

    def read(self, ids: Sequence[int], now_us: int, ttl: bool = True) -> list[list[Any]]:
        """Per entity: the 20 plain values (then the 6 aggregates), in definition order;
        `ttl=False` returns the stored plain rows whatever their age."""
        from msgpack import unpackb

        pipe = self.client.pipeline(transaction=False)
        tags = [str(i).encode() + b"}" for i in ids]
        for tag in tags:
            for prefix, _, _ in self.plain:
                pipe.get(prefix + tag)
        if self.agg_prefix is not None:
            fields, positions = self._fields(now_us)
            for tag in tags:
                pipe.hmget(self.agg_prefix + tag, fields)
        replies = pipe.execute()
        out = []
        k = 0
        for _ in tags:
            row: list[Any] = []
            for _, ttl_us, n in self.plain:
                raw = replies[k]
                k += 1
                if raw is not None:
                    event_us = int.from_bytes(raw[:8], "big") - FLIP
                    if not ttl or now_us - ttl_us < event_us <= now_us:
                        row += unpackb(raw[16:])
                        continue
                row += [None] * n
            out.append(row)
        if self.agg_prefix is not None:
            for row in out:
                states = [None if r is None else unpackb(r) for r in replies[k]]
                k += 1
                sums, counts, means = [], [], []
                for pos in positions:  # per window: merge in time order (as featurelib)
                    s = n_all = n_mean = 0
                    s_mean = None
                    for p in pos:
                        st = states[p]
                        if st is not None:  # [sum s, count n, mean n, mean s]
                            s += st[0] or 0
                            n_all += st[1] or 0
                            n_mean += st[2] or 0
                            s_mean = (st[3] or 0) if s_mean is None else s_mean + (st[3] or 0)
                    sums.append(s)
                    counts.append(n_all)
                    means.append(s_mean / n_mean if n_mean and s_mean is not None else None)
                row += [*sums, *counts, *means]
        return out


# --------------------------------------------------------------------------------------------
# Result checks
# --------------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return bool(abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b)))


def compare_rows(
    ref: list[list[Any]], other: list[list[Any]], names: list[str], skip: Any = None
) -> dict[str, Any]:
    """Cell by cell; `skip(i, j)` excludes cells (counted apart)."""
    counts = {"cells": 0, "skipped": 0, "null_in_ref_only": 0, "null_in_other_only": 0}
    counts["value_differs"] = 0
    examples = []
    for i, (a_row, b_row) in enumerate(zip(ref, other, strict=True)):
        for j, (a, b) in enumerate(zip(a_row, b_row, strict=True)):
            if skip is not None and skip(i, j):
                counts["skipped"] += 1
                continue
            counts["cells"] += 1
            if same(a, b):
                continue
            kind = (
                "null_in_ref_only"
                if a is None
                else "null_in_other_only"
                if b is None
                else "value_differs"
            )
            counts[kind] += 1
            if len(examples) < 5:
                examples.append({"row": i, "feature": names[j], "ref": a, "other": b})
    counts["mismatched_cells"] = (
        counts["null_in_ref_only"] + counts["null_in_other_only"] + counts["value_differs"]
    )
    return {**counts, "equal": counts["mismatched_cells"] == 0, "examples": examples}


def featurelib_rows(response: Any, names: list[str]) -> list[list[Any]]:
    columns = [response.features[n].to_list() for n in names]
    return [list(r) for r in zip(*columns, strict=True)]


def feast_rows(response: dict[str, list[Any]], names: list[str]) -> list[list[Any]]:
    return [list(r) for r in zip(*(response[n] for n in names), strict=True)]


def check_results(
    cfg: Config, defs: Definitions, engines: dict[str, Any], sample: list[int]
) -> dict[str, Any]:
    """featurelib (API, and its raw stored rows) vs Feast on the plain views; featurelib vs the
    floor on plain + aggregation; featurelib's online aggregates vs its offline engine."""
    import polars as pl

    import featurelib as fl
    from featurelib.online.read import OUTSIDE_MAX_AGE, get_online_features

    now = read_at(cfg)
    now_us = int(now.timestamp() * 1_000_000)
    store, plan_plain, plan_combo = engines["store"], engines["plan_plain"], engines["plan_combo"]
    feast = engines["feast"]
    raw_floor = Floor(store.client, floor_spec(defs), with_agg=False)
    names = PLAIN_FEATURES
    fl_plain: list[list[Any]] = []
    fl_combo: list[list[Any]] = []
    expired: list[list[bool]] = []
    fs: list[list[Any]] = []
    stored: list[list[Any]] = []
    floor_combo: list[list[Any]] = []
    for i in range(0, len(sample), 500):
        ids = sample[i : i + 500]
        rows = [{"user_id": u} for u in ids]
        resp = get_online_features(store, plan_plain, rows, at=now)
        fl_plain += featurelib_rows(resp, names)
        expired += [
            list(r) for r in zip(*([s == OUTSIDE_MAX_AGE for s in resp.statuses[n]] for n in names))
        ]
        fl_combo += featurelib_rows(
            get_online_features(store, plan_combo, rows, at=now), names + AGG_FEATURES
        )
        if feast is not None:
            fs += feast_rows(
                feast.get_online_features(features=FEAST_REFS, entity_rows=rows).to_dict(), names
            )
        # the rows featurelib stored, without the TTL judged at read time (Feast has none)
        stored += raw_floor.read(ids, now_us, ttl=False)
        floor_combo += engines["floor_combo"].read(ids, now_us)
    checks: dict[str, Any] = {"entities": len(sample)}
    if feast is not None:
        checks["featurelib_stored_vs_feast"] = compare_rows(stored, fs, names)
        checks["featurelib_read_vs_feast"] = compare_rows(
            fl_plain, fs, names, skip=lambda i, j: expired[i][j]
        )
        checks["featurelib_read_vs_feast"]["skipped_means"] = (
            "cells expired by the view's TTL at read time in featurelib (OUTSIDE_MAX_AGE); "
            "Feast's online read serves them"
        )
    checks["floor_vs_featurelib_plain"] = compare_rows(
        fl_plain, [r[:20] for r in floor_combo], names
    )
    checks["floor_vs_featurelib_agg"] = compare_rows(fl_combo, floor_combo, names + AGG_FEATURES)
    # featurelib's online aggregates at `now` vs its offline training set at `now`
    spine = pl.DataFrame({"user_id": sample}).with_columns(
        pl.lit(now).dt.cast_time_unit("us").alias("event_timestamp")
    )
    agg_svc = fl.FeatureService("online_agg_only", [defs.agg])
    offline = fl.training_set(agg_svc, spine, timestamp_column="event_timestamp")
    checks["featurelib_online_vs_offline_agg"] = compare_rows(
        [list(r) for r in offline.select(AGG_FEATURES).iter_rows()],
        [r[20:] for r in fl_combo],
        AGG_FEATURES,
    )
    return checks


# --------------------------------------------------------------------------------------------
# Read latency
# --------------------------------------------------------------------------------------------


def requests(entities: int, calls: int, size: int, seed: int) -> list[list[int]]:
    """`calls` requests of `size` random users (~2% unknown), seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(0, int(entities * 1.02), (calls, size), dtype=np.int64)
    return [[int(x) for x in row] for row in ids]


def percentiles(ns: list[int]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(ns, dtype=np.float64) / 1e6
    p = np.percentile(ms, [50, 90, 99, 99.9])
    return {
        "calls": len(ns),
        "p50_ms": round(float(p[0]), 4),
        "p90_ms": round(float(p[1]), 4),
        "p99_ms": round(float(p[2]), 4),
        "p999_ms": round(float(p[3]), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def setup_checks(
    cfg: Config, data_dir: Path, url: str, port: int, workdir: Path, offline: str
) -> tuple[Definitions, dict[str, Any]]:
    from featurelib.online.read import ServingPlan

    defs = featurelib_definitions(data_dir)
    store = featurelib_store(url, DB["featurelib"])
    if store.client.dbsize() == 0:
        raise SystemExit("db 1 is empty: run mat_featurelib first")
    feast = None
    if (workdir / "feast_repo" / "registry.db").exists():
        feast = feast_store(data_dir, workdir / "feast_repo", port, offline, apply=False)
    engines = {
        "store": store,
        "plan_plain": ServingPlan(defs.plain),
        "plan_combo": ServingPlan(defs.combo),
        "feast": feast,
        "floor_combo": Floor(client(url, DB["featurelib"]), floor_spec(defs), with_agg=True),
    }
    return defs, engines


class GcProbe:
    """Collections and time spent in the garbage collector, per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.reset()
        self._t0 = 0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.counts = [0, 0, 0]
        self.ms = [0.0, 0.0, 0.0]

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        else:
            g = info["generation"]
            self.counts[g] += 1
            self.ms[g] += (time.perf_counter_ns() - self._t0) / 1e6

    def stats(self) -> dict[str, Any]:
        return {"collections": list(self.counts), "ms": [round(x, 2) for x in self.ms]}


def engine_calls(engine: str, params: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    """Per case: a callable serving one prepared request (entity rows, user ids)."""
    url, at = params["url"], datetime.fromisoformat(params["at"])
    if engine == "featurelib":
        from featurelib.online.read import ServingPlan, get_online_features

        defs = featurelib_definitions(Path(params["data_dir"]))
        store = featurelib_store(url, DB["featurelib"])
        plans = {"plain": ServingPlan(defs.plain), "agg": ServingPlan(defs.combo)}

        def featurelib_call(plan: Any) -> Callable[..., Any]:
            return lambda rows, ids: get_online_features(store, plan, rows, at=at)

        return {case: featurelib_call(plans[case.split("_")[0]]) for case in CASES}
    if engine == "feast":
        feast = feast_store(
            Path(params["data_dir"]),
            Path(params["workdir"]) / "feast_repo",
            params["port"],
            params["offline"],
            apply=False,
        )

        def feast_call(rows: list[dict[str, int]], ids: list[int]) -> Any:
            return feast.get_online_features(features=FEAST_REFS, entity_rows=rows).to_dict()

        return {"plain_1": feast_call, "plain_100": feast_call}
    if engine == "floor":
        now_us = int(at.timestamp() * 1_000_000)
        floors = {
            kind: Floor(client(url, DB["featurelib"]), params["floor_spec"], kind == "agg")
            for kind in ("plain", "agg")
        }

        def floor_call(floor: Floor) -> Callable[..., Any]:
            return lambda rows, ids: floor.read(ids, now_us)

        return {case: floor_call(floors[case.split("_")[0]]) for case in CASES}
    raise ValueError(engine)


def read_worker(engine: str, params: dict[str, Any], conn: Any) -> None:
    """One engine in its own process (its own heap and garbage collector), serving slices of
    requests when the coordinator asks: ("case", name, ids), ("run", lo, hi), ("quit",)."""
    import traceback

    try:
        fns = engine_calls(engine, params)
        probe = GcProbe()
        conn.send(("ready", sorted(fns)))
        prepared: list[tuple[list[dict[str, int]], list[int]]] = []
        fn: Callable[..., Any] = lambda rows, ids: None  # noqa: E731
        while True:
            msg = conn.recv()
            if msg[0] == "case":
                fn = fns[msg[1]]
                prepared = [([{"user_id": u} for u in req], req) for req in msg[2]]
                for rows, req in prepared[:50]:  # warm-up, not recorded
                    fn(rows, req)
                gc.collect()
                probe.reset()
                conn.send(("ok",))
            elif msg[0] == "run":
                lat = []
                for rows, req in prepared[msg[1] : msg[2]]:
                    t0 = time.perf_counter_ns()
                    fn(rows, req)
                    lat.append(time.perf_counter_ns() - t0)
                conn.send(("lat", lat, probe.stats()))
            else:
                conn.send(("bye",))
                return
    except Exception:
        conn.send(("error", traceback.format_exc()))


def run_latency(
    cfg: Config, params: dict[str, Any], calls_1: int, calls_100: int, rounds: int
) -> dict[str, Any]:
    """Engines in separate processes, driven in lock-step: in each round every engine serves
    the same slice of requests in turn (the order rotates per round) while the others wait."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    workers: dict[str, tuple[Any, Any]] = {}
    serves: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for engine in ("featurelib", "feast", "floor"):
        if engine == "feast" and not params["feast"]:
            continue
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=read_worker, args=(engine, params, theirs), daemon=True)
        proc.start()
        reply = ours.recv()
        if reply[0] == "error":
            errors[engine] = reply[1][-2000:]
            print(f"{engine} read worker failed:\n{reply[1]}", flush=True)
            proc.join(5)
            continue
        workers[engine] = (proc, ours)
        serves[engine] = reply[1]
    out: dict[str, Any] = {"_errors": errors} if errors else {}
    try:
        for c, case in enumerate(CASES):
            here = [e for e in workers if case in serves[e]]
            size = 1 if case.endswith("_1") else 100
            n = calls_1 if size == 1 else calls_100
            ids = requests(cfg.entities, n, size, SEED + c)
            for e in here:
                workers[e][1].send(("case", case, ids))
            for e in here:
                reply = workers[e][1].recv()
                if reply[0] != "ok":
                    raise RuntimeError(f"{e}: {reply}")
            lat: dict[str, list[int]] = {e: [] for e in here}
            gc_stats: dict[str, Any] = {}
            per_round = math.ceil(n / rounds)
            started = time.perf_counter()
            for r in range(rounds):
                lo, hi = r * per_round, min(n, (r + 1) * per_round)
                for e in here[r % len(here) :] + here[: r % len(here)]:
                    workers[e][1].send(("run", lo, hi))
                    reply = workers[e][1].recv()
                    if reply[0] != "lat":
                        raise RuntimeError(f"{e}: {reply}")
                    lat[e] += reply[1]
                    gc_stats[e] = reply[2]
            out[case] = {e: {**percentiles(v), "gc": gc_stats[e]} for e, v in lat.items()}
            out[case]["_wall_s"] = round(time.perf_counter() - started, 2)
            for e in here:
                if e == "featurelib" or "featurelib" not in here:
                    continue
                pairs = []
                for r in range(rounds):
                    a = lat["featurelib"][r * per_round : (r + 1) * per_round]
                    b = lat[e][r * per_round : (r + 1) * per_round]
                    if a and b:
                        pairs.append(statistics.median(a) / statistics.median(b))
                out[case][f"_p50_ratio_vs_{e}_paired"] = round(statistics.median(pairs), 4)
            print(
                f"{case}: "
                + ", ".join(
                    f"{e} p50 {out[case][e]['p50_ms']:.3f} p99 {out[case][e]['p99_ms']:.3f} ms"
                    for e in here
                ),
                flush=True,
            )
    finally:
        for proc, conn in workers.values():
            try:
                conn.send(("quit",))
                conn.recv()
            except (OSError, EOFError):
                pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return out


def reads(
    cfg: Config,
    data_dir: Path,
    url: str,
    port: int,
    workdir: Path,
    offline: str,
    calls_1: int,
    calls_100: int,
    rounds: int,
    check_entities: int,
) -> dict[str, Any]:
    import numpy as np

    defs, engines = setup_checks(cfg, data_dir, url, port, workdir, offline)
    rng = np.random.default_rng(SEED - 1)
    universe = int(cfg.entities * 1.02)
    if check_entities >= universe:
        sample = list(range(universe))
    else:
        sample = sorted(int(x) for x in rng.choice(universe, check_entities, replace=False))
    t = time.perf_counter()
    checks = check_results(cfg, defs, engines, sample)
    checks["seconds"] = round(time.perf_counter() - t, 2)
    params = {
        "url": url,
        "port": port,
        "at": read_at(cfg).isoformat(),
        "data_dir": str(data_dir),
        "workdir": str(workdir),
        "offline": offline,
        "feast": engines["feast"] is not None,
        "floor_spec": floor_spec(defs),
    }
    del engines
    gc.collect()
    latency = run_latency(cfg, params, calls_1, calls_100, rounds)
    return {"checks": checks, "latency": latency}


# --------------------------------------------------------------------------------------------
# Profiles (online.py --profile)
# --------------------------------------------------------------------------------------------


def _top(profile: cProfile.Profile, sort: str, limit: int) -> tuple[str, list[dict[str, Any]]]:
    buf = io.StringIO()
    stats = pstats.Stats(profile, stream=buf)
    stats.sort_stats(sort).print_stats(limit)
    rows = []
    for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(func[0]).name}:{func[1]}({func[2]})",
                "calls": nc,
                "tottime_s": round(tt, 4),
                "cumtime_s": round(ct, 4),
            }
        )
    key = "tottime_s" if sort == "tottime" else "cumtime_s"
    rows.sort(key=lambda r: r[key], reverse=True)
    return buf.getvalue(), rows[:limit]


def profile(cfg: Config, data_dir: Path, url: str, log_dir: Path) -> dict[str, Any]:
    from featurelib.online.api import materialize_range
    from featurelib.online.read import ServingPlan, get_online_features

    defs = featurelib_definitions(data_dir)
    out: dict[str, Any] = {}
    scratch = featurelib_store(url, DB["scratch"])
    scratch.client.flushdb()
    start, end = window(cfg)
    names = [v.name for v in defs.views]
    jobs: list[tuple[str, Callable[[], Any]]] = [
        ("write_plain", lambda: materialize_range(scratch, defs.repo, start, end, views=names)),
    ]
    store = featurelib_store(url, DB["featurelib"])
    at = read_at(cfg)
    plans = {"plain": ServingPlan(defs.plain), "agg": ServingPlan(defs.combo)}
    for case in CASES:
        size = 1 if case.endswith("_1") else 100
        n = 2000 if size == 1 else 200
        prepared = [[{"user_id": u} for u in req] for req in requests(cfg.entities, n, size, 7)]
        plan = plans[case.split("_")[0]]

        def job(prepared: list[Any] = prepared, plan: Any = plan) -> None:
            for rows in prepared:
                get_online_features(store, plan, rows, at=at)

        jobs.append((f"read_{case}_x{n}", job))
    for name, fn in jobs:
        if name.startswith("read"):
            fn()  # warm (reads only)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        fn()
        prof.disable()
        wall = time.perf_counter() - t0
        text_tt, top_tt = _top(prof, "tottime", 25)
        text_ct, top_ct = _top(prof, "cumulative", 40)
        (log_dir / f"profile_{name}.txt").write_text(text_tt + "\n\n" + text_ct)
        out[name] = {"wall_s": round(wall, 3), "top_tottime": top_tt, "top_cumtime": top_ct}
        print(f"== {name}: {wall:.3f} s under cProfile ==\n{text_tt}", flush=True)
    scratch.client.flushdb()
    return out


# --------------------------------------------------------------------------------------------
# Child entry point
# --------------------------------------------------------------------------------------------


def run_child(name: str, cfg: Config, args: Any) -> None:
    data_dir = Path(args.data_dir).resolve()
    workdir = Path(args.workdir).resolve()
    url, port = args.redis_url, args.redis_port
    started = time.perf_counter()
    result: dict[str, Any]
    if name == "mat_featurelib":
        result = mat_featurelib(cfg, data_dir, url)
    elif name == "mat_raw":
        result = mat_raw(cfg, data_dir, url)
    elif name == "mat_feast":
        result = mat_feast(cfg, data_dir, url, port, workdir, args.feast_offline)
    elif name == "fl_phases":
        result = fl_phases(cfg, data_dir, url)
    elif name == "reads":
        result = reads(
            cfg,
            data_dir,
            url,
            port,
            workdir,
            args.feast_offline,
            args.calls_1,
            args.calls_100,
            args.rounds,
            args.check_entities,
        )
    elif name == "profile":
        result = profile(cfg, data_dir, url, Path(args.result).parent)
    else:
        raise SystemExit(f"unknown child {name!r}")
    result["child"] = name
    result["child_wall_s"] = round(time.perf_counter() - started, 2)
    result["finished_at"] = datetime.now(UTC).isoformat()
    Path(args.result).write_text(json.dumps(result, default=str))
