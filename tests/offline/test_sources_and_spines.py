"""Sources (Parquet, partitioned Parquet, CSV, DuckDB SQL), spine inputs, and their errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

import featurelib as fl

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
USER = fl.Entity("user", {"user_id": fl.Int64})


def events_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            "event_timestamp": [T0, T0 + timedelta(hours=1), T0, T0],
            "amount": [10.0, float("nan"), 5.0, 7.5],
            "country": ["NL", "DE", "FR", None],
        }
    )


def service_for(source: fl.BatchSource, **view_kwargs: object) -> fl.FeatureService:
    view = fl.FeatureView(
        "user_latest",
        [USER],
        source,
        {"amount": fl.col("amount"), "country": fl.col("country")},
        **view_kwargs,  # type: ignore[arg-type]
    )
    return fl.FeatureService("svc", [view])


SPINE = pl.DataFrame(
    {
        "user_id": [1, 1, 2, 3, 4, None],
        "event_timestamp": [
            T0,
            T0 + timedelta(hours=2),
            T0 - timedelta(seconds=1),
            T0,
            T0,
            T0,
        ],
    }
)
EXPECTED_AMOUNT = [10.0, None, None, 7.5, None, None]  # NaN at 13:00 is read as null
EXPECTED_COUNTRY = ["NL", "DE", None, None, None, None]


def check(out: pl.DataFrame) -> None:
    assert out["amount"].to_list() == EXPECTED_AMOUNT
    assert out["country"].to_list() == EXPECTED_COUNTRY
    assert out["user_id"].to_list() == SPINE["user_id"].to_list()


def test_parquet_file(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    check(
        fl.training_set(service_for(fl.ParquetSource("ev", "events.parquet")), SPINE, repo=tmp_path)
    )


def test_partitioned_parquet_directory(tmp_path: Path) -> None:
    frame = events_frame().with_columns(day=pl.col("event_timestamp").dt.hour())
    for (hour,), part in frame.group_by("day"):
        (tmp_path / "events" / f"hour={hour}").mkdir(parents=True)
        part.drop("day").write_parquet(tmp_path / "events" / f"hour={hour}" / "part.parquet")
    check(fl.training_set(service_for(fl.ParquetSource("ev", "events")), SPINE, repo=tmp_path))


def test_csv_with_naive_iso_timestamps_read_as_utc(tmp_path: Path) -> None:
    events_frame().with_columns(
        pl.col("event_timestamp").dt.replace_time_zone(None).dt.strftime("%Y-%m-%dT%H:%M:%S")
    ).write_csv(tmp_path / "events.csv")
    check(fl.training_set(service_for(fl.CsvSource("ev", "events.csv")), SPINE, repo=tmp_path))


def test_duckdb_query_over_relative_files(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    query = "SELECT * FROM 'events.parquet' WHERE user_id <> 99"
    check(fl.training_set(service_for(fl.DuckDBSource("ev", query)), SPINE, repo=tmp_path))


def test_other_time_zones_and_units_are_converted(tmp_path: Path) -> None:
    frame = events_frame().with_columns(
        pl.col("event_timestamp").dt.convert_time_zone("America/New_York").dt.cast_time_unit("ns")
    )
    frame.write_parquet(tmp_path / "events.parquet")
    spine = SPINE.with_columns(pl.col("event_timestamp").dt.convert_time_zone("Asia/Tokyo"))
    out = fl.training_set(
        service_for(fl.ParquetSource("ev", "events.parquet")), spine, repo=tmp_path
    )
    assert out["amount"].to_list() == EXPECTED_AMOUNT
    assert out["event_timestamp"].dtype == pl.Datetime("us", "UTC")


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda f, p: f.to_pandas(), id="pandas"),
        pytest.param(lambda f, p: f.to_arrow(), id="arrow"),
        pytest.param(lambda f, p: f.lazy(), id="lazy"),
        pytest.param(lambda f, p: (f.write_parquet(p), p)[1], id="parquet-path"),
        pytest.param(lambda f, p: (f.write_parquet(p), str(p))[1], id="parquet-str"),
        pytest.param(
            lambda f, p: f.with_columns(
                pl.col("event_timestamp").dt.replace_time_zone(None).dt.to_string()
            ),
            id="naive-strings",
        ),
    ],
)
def test_spine_inputs(tmp_path: Path, convert: object) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    spine = convert(SPINE, tmp_path / "spine.parquet")  # type: ignore[operator]
    svc = service_for(fl.ParquetSource("ev", "events.parquet"))
    check(fl.training_set(svc, spine, repo=tmp_path))


def test_pandas_spine_with_nullable_keys(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    spine = pd.DataFrame(
        {"user_id": pd.array([1, None], dtype="Int64"), "event_timestamp": [T0, T0]}
    )
    out = fl.training_set(
        service_for(fl.ParquetSource("ev", "events.parquet")), spine, repo=tmp_path
    )
    assert out["amount"].to_list() == [10.0, None]


def test_spine_keys_of_another_type_are_cast(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    spine = pl.DataFrame({"user_id": ["1", "x"], "event_timestamp": [T0, T0]})
    out = fl.training_set(
        service_for(fl.ParquetSource("ev", "events.parquet")), spine, repo=tmp_path
    )
    assert out["amount"].to_list() == [10.0, None]  # "x" is no user id: null, not an error
    assert out["user_id"].to_list() == ["1", "x"]  # spine columns pass through untouched


def test_full_feature_names(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    svc = service_for(fl.ParquetSource("ev", "events.parquet"))
    out = fl.training_set(svc, SPINE, repo=tmp_path, full_feature_names=True)
    assert out.columns == [
        "user_id",
        "event_timestamp",
        "user_latest__amount",
        "user_latest__country",
    ]


def test_extra_spine_columns_pass_through_in_order(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    spine = SPINE.with_columns(label=pl.Series([1, 0, 1, 0, 1, 0]))
    out = fl.training_set(
        service_for(fl.ParquetSource("ev", "events.parquet")), spine, repo=tmp_path
    )
    assert out.columns == ["user_id", "event_timestamp", "label", "amount", "country"]
    assert out["label"].to_list() == [1, 0, 1, 0, 1, 0]


# ----------------------------------------------------------------------------- errors


def test_missing_source_file_says_how_to_fix(tmp_path: Path) -> None:
    svc = service_for(fl.ParquetSource("ev", "nowhere.parquet"))
    with pytest.raises(fl.SourceError, match="does not exist") as info:
        fl.training_set(svc, SPINE, repo=tmp_path)
    assert info.value.where == "source 'ev'"
    assert info.value.hint


def test_declared_column_missing_from_data(tmp_path: Path) -> None:
    events_frame().drop("country").write_parquet(tmp_path / "events.parquet")
    schema = {"user_id": fl.Int64, "event_timestamp": fl.Timestamp, "amount": fl.Float64}
    source = fl.ParquetSource("ev", "events.parquet", schema={**schema, "country": fl.String})
    with pytest.raises(fl.SourceError, match="'country' is missing") as info:
        fl.training_set(service_for(source), SPINE, repo=tmp_path)
    assert "amount" in (info.value.hint or "")


def test_declared_type_mismatch(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    schema = {
        "user_id": fl.Int64,
        "event_timestamp": fl.Timestamp,
        "amount": fl.Float64,
        "country": fl.Int64,
    }
    svc = service_for(fl.ParquetSource("ev", "events.parquet", schema=schema))
    with pytest.raises(fl.SourceError, match="declared Int64 but the data holds String"):
        fl.training_set(svc, SPINE, repo=tmp_path)


def test_undeclared_unknown_column_is_caught_against_the_data(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    view = fl.FeatureView(
        "v", [USER], fl.ParquetSource("ev", "events.parquet"), {"f": fl.col("amout")}
    )
    with pytest.raises(fl.UnknownColumnError, match="amout") as info:
        fl.training_set(fl.FeatureService("s", [view]), SPINE, repo=tmp_path)
    assert "amount" in (info.value.hint or "")


def test_bad_duckdb_query(tmp_path: Path) -> None:
    svc = service_for(fl.DuckDBSource("ev", "SELEKT nonsense"))
    with pytest.raises(fl.SourceError, match="DuckDB query failed"):
        fl.training_set(svc, SPINE, repo=tmp_path)


def test_spine_missing_key_column(tmp_path: Path) -> None:
    events_frame().write_parquet(tmp_path / "events.parquet")
    svc = service_for(fl.ParquetSource("ev", "events.parquet"))
    with pytest.raises(fl.SpineError, match="'user_id' \\(for 'user_latest'\\)"):
        fl.training_set(svc, SPINE.drop("user_id"), repo=tmp_path)


def test_spine_missing_request_field(tmp_path: Path) -> None:
    req = fl.RequestSource("req", {"amount_requested": fl.Float64})
    od = fl.OnDemandView("od", [req], {"big": fl.col("amount_requested") > 100})
    with pytest.raises(fl.SpineError, match="'amount_requested' \\(for 'od'\\)"):
        fl.training_set(fl.FeatureService("s", [od]), SPINE, repo=tmp_path)


def test_spine_missing_timestamp_column(tmp_path: Path) -> None:
    svc = service_for(fl.ParquetSource("ev", "events.parquet"))
    with pytest.raises(fl.SpineError, match="no timestamp column 'ts'") as info:
        fl.training_set(svc, SPINE, repo=tmp_path, timestamp_column="ts")
    assert "event_timestamp" in (info.value.hint or "")


def test_spine_with_unparseable_timestamps(tmp_path: Path) -> None:
    svc = service_for(fl.ParquetSource("ev", "events.parquet"))
    spine = pl.DataFrame({"user_id": [1], "event_timestamp": ["yesterday"]})
    with pytest.raises(fl.SpineError, match="not timestamps"):
        fl.training_set(svc, spine, repo=tmp_path)


def test_spine_of_an_unsupported_type(tmp_path: Path) -> None:
    svc = service_for(fl.ParquetSource("ev", "events.parquet"))
    with pytest.raises(fl.SpineError, match="cannot read a spine from int"):
        fl.training_set(svc, 42, repo=tmp_path)


def test_polars_backward_asof_takes_the_last_of_tied_rows() -> None:
    """The plain-view join relies on this (no de-duplication pass): pin it against upgrades."""
    right = pl.DataFrame({"k": [1, 1, 1, 1], "e": [1, 2, 2, 2], "v": ["a", "b", "c", "d"]})
    left = pl.DataFrame({"k": [1, 1], "t": [2, 5]})
    out = left.join_asof(
        right, left_on="t", right_on="e", by="k", strategy="backward", check_sortedness=False
    )
    assert out["v"].to_list() == ["d", "d"]


def test_on_demand_over_undeclared_float_sum_keeps_its_fraction(tmp_path: Path) -> None:
    """A sum over a source without a declared schema is Float64 only at run time."""
    events_frame().with_columns(pl.col("amount").fill_nan(3.75)).write_parquet(
        tmp_path / "events.parquet"
    )
    aggs = fl.AggregationView(
        "aggs", [USER], fl.ParquetSource("ev", "events.parquet"), [fl.sum("amount").windows("1d")]
    )
    req = fl.RequestSource("req", {"factor": fl.Float64})
    od = fl.OnDemandView("od", [req, aggs], {"scaled": fl.col("amount_sum_1d") * fl.col("factor")})
    spine = pl.DataFrame(
        {"user_id": [1], "event_timestamp": [T0 + timedelta(hours=2)], "factor": [1.0]}
    )
    out = fl.training_set(fl.FeatureService("s", [aggs, od]), spine, repo=tmp_path)
    assert out["amount_sum_1d"].to_list() == [13.75]
    assert out["scaled"].to_list() == [13.75]
