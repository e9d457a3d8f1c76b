"""The flights demo end to end: CLI training set, hand-checked values, and no label leakage."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import featurelib as fl

CUTOFF = datetime(2013, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def repo(demo_repo: Path) -> fl.Repo:
    return fl.Repo.load(demo_repo)


@pytest.fixture(scope="module")
def sample_spine(demo_repo: Path) -> pl.DataFrame:
    spine = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    return spine.sample(n=15_000, seed=7).sort("flight_id")


def training_set_cli(repo: Path, service: str, spine: Path | str, out: Path) -> Any:
    """Run `featurelib training-set` as a user would, in a subprocess."""
    args = ["training-set", "--repo", str(repo), "--service", service]
    return subprocess.run(
        [sys.executable, "-m", "featurelib.cli", *args, "--spine", str(spine), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_builds_the_demo_training_set(demo_repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "training.parquet"
    run = training_set_cli(demo_repo, "flight_delay", demo_repo / "data" / "spine.parquet", out)
    assert run.returncode == 0, run.stderr
    assert "[4/4] plane_delays" in run.stderr  # progress is shown
    assert "plain views" in run.stderr
    assert "rows/s" in run.stderr
    frame = pl.read_parquet(out)
    spine = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    assert frame.height == spine.height == 336_776
    assert frame["flight_id"].to_list() == spine["flight_id"].to_list()  # spine order kept
    service = fl.Repo.load(demo_repo).service("flight_delay")
    assert frame.columns == [*spine.columns, *service.output_names()]
    assert frame["carrier_flights_28d"].min() == 0
    assert frame["carrier_flights_28d"].max() > 1000
    assert set(frame["sched_hour"].unique().to_list()) <= set(range(24))


def test_cli_reports_errors_without_a_traceback(demo_repo: Path, tmp_path: Path) -> None:
    run = training_set_cli(demo_repo, "no_such_service", "x.parquet", tmp_path / "o")
    assert run.returncode == 2
    assert "no feature service named 'no_such_service'" in run.stderr
    assert "flight_delay" in run.stderr  # the hint lists the services
    assert "Traceback" not in run.stderr


def test_window_values_match_a_direct_computation(
    repo: fl.Repo, demo_repo: Path, sample_spine: pl.DataFrame
) -> None:
    """carrier mean arrival delay over 7d (hop 1h) recomputed plainly for 40 spine rows."""
    svc = fl.FeatureService("check", [repo.view("carrier_delays"), repo.view("weather_at_origin")])
    out = fl.training_set(svc, sample_spine.sample(40, seed=3), repo=repo)
    flights = pl.read_parquet(demo_repo / "data" / "flights", hive_partitioning=True)
    weather = pl.read_parquet(demo_repo / "data" / "weather.parquet")
    for row in out.iter_rows(named=True):
        t = row["event_timestamp"]
        start = t.replace(minute=0, second=0, microsecond=0) - timedelta(days=7)
        window = flights.filter(
            (pl.col("carrier") == row["carrier"])
            & (pl.col("event_timestamp") >= start)
            & (pl.col("event_timestamp") <= t)
        )
        assert row["carrier_flights_7d"] == window.height
        delays = window["arr_delay"].drop_nulls()
        if delays.len():
            assert row["carrier_arr_delay_mean_7d"] == pytest.approx(delays.mean(), rel=1e-12)
        else:
            assert row["carrier_arr_delay_mean_7d"] is None
        obs = weather.filter(
            (pl.col("origin") == row["origin"])
            & (pl.col("event_timestamp") <= t)
            & (pl.col("event_timestamp") > t - timedelta(hours=3))
        ).sort("event_timestamp")
        assert row["temp"] == (obs["temp"][-1] if obs.height else None)


def _perturb_future(src: Path, dst: Path) -> None:
    """Copy the demo data, replacing every value of every event after CUTOFF by garbage."""
    dst.mkdir(parents=True)
    flights = pl.read_parquet(src / "flights", hive_partitioning=True)
    future = pl.col("event_timestamp") > CUTOFF
    garbage = flights.with_columns(
        [
            pl.when(future).then(pl.lit(9999.0)).otherwise(pl.col(c)).alias(c)
            for c in ("arr_delay", "dep_delay", "distance", "air_time")
        ]
        + [pl.when(future).then(pl.lit(True)).otherwise(pl.col("cancelled")).alias("cancelled")]
    )
    # Future events also move: still in the future, but they must not be seen either way.
    garbage = garbage.with_columns(
        pl.when(future)
        .then(pl.col("event_timestamp") + timedelta(minutes=1))
        .otherwise(pl.col("event_timestamp"))
        .alias("event_timestamp")
    )
    out = dst / "flights"
    for (month,), part in garbage.group_by("month"):
        (out / f"month={month}").mkdir(parents=True)
        part.drop("month").write_parquet(out / f"month={month}" / "part-0.parquet")
    weather = pl.read_parquet(src / "weather.parquet")
    weather.with_columns(
        [
            pl.when(pl.col("event_timestamp") > CUTOFF).then(-999.0).otherwise(pl.col(c)).alias(c)
            for c in ("temp", "wind_speed", "wind_gust", "precip", "visib")
        ]
    ).write_parquet(dst / "weather.parquet")
    pl.read_parquet(src / "planes.parquet").write_parquet(dst / "planes.parquet")


def test_no_feature_uses_an_event_later_than_the_spine_timestamp(
    demo_repo: Path, tmp_path: Path
) -> None:
    """Garble every event after CUTOFF: features of spine rows at or before CUTOFF must not move."""
    spine = pl.read_parquet(demo_repo / "data" / "spine.parquet")
    before = spine.filter(
        (pl.col("event_timestamp") <= CUTOFF)
        & (pl.col("event_timestamp") > CUTOFF - timedelta(days=2))
    )
    assert before.height > 1000
    garbled = tmp_path / "repo"
    garbled.mkdir()
    (garbled / "definitions.py").write_text((demo_repo / "definitions.py").read_text())
    _perturb_future(demo_repo / "data", garbled / "data")
    clean_repo, garbled_repo = fl.Repo.load(demo_repo), fl.Repo.load(garbled)
    clean = fl.training_set(clean_repo.service("flight_delay"), before, repo=clean_repo)
    dirty = fl.training_set(garbled_repo.service("flight_delay"), before, repo=garbled_repo)
    assert clean.equals(dirty, null_equal=True)
    # The perturbation is visible for rows after the cutoff, so the test has teeth.
    after = spine.filter(
        (pl.col("event_timestamp") > CUTOFF + timedelta(hours=6))
        & (pl.col("event_timestamp") < CUTOFF + timedelta(days=1))
    )
    clean_after = fl.training_set(clean_repo.service("flight_delay"), after, repo=clean_repo)
    dirty_after = fl.training_set(garbled_repo.service("flight_delay"), after, repo=garbled_repo)
    assert not clean_after.equals(dirty_after, null_equal=True)
    assert (dirty_after["carrier_arr_delay_mean_1d"] > 1000).any()
