"""Feast's SDK on featurelib's engine: historical retrieval, source pulls, the on-demand UDF."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from feast import FeatureStore

import featurelib as fl
from featurelib.feast.offline_store import FeaturelibOfflineStore

START = datetime(2013, 3, 1, tzinfo=UTC)
END = datetime(2013, 3, 2, tzinfo=UTC)

# Feast warns about on-demand views on every apply/retrieval; featurelib computes them.
pytestmark = pytest.mark.filterwarnings("ignore:On demand feature view is an experimental")


@pytest.fixture(scope="module")
def store(applied_repo: Path) -> FeatureStore:
    return FeatureStore(repo_path=str(applied_repo))


@pytest.fixture(scope="module")
def repo(applied_repo: Path) -> fl.Repo:
    return fl.Repo.load(applied_repo)


@pytest.fixture(scope="module")
def spine(applied_repo: Path) -> pl.DataFrame:
    """2,000 demo spine rows in random order (the output must keep it)."""
    return pl.read_parquet(applied_repo / "data" / "spine.parquet").sample(n=2000, seed=11)


def test_feature_service_retrieval_equals_training_set(
    store: FeatureStore, repo: fl.Repo, spine: pl.DataFrame
) -> None:
    job = store.get_historical_features(
        entity_df=spine.to_pandas(), features=store.get_feature_service("flight_delay")
    )
    got = pl.from_arrow(job.to_arrow())
    assert isinstance(got, pl.DataFrame)
    expected = fl.training_set(repo.service("flight_delay"), spine, repo=repo)
    assert got["flight_id"].to_list() == spine["flight_id"].to_list()  # entity rows keep order
    assert got.select(expected.columns).equals(expected)  # exactly featurelib's values
    # Feast adds the refs an on-demand view reads (FeatureStore.get_historical_features)
    assert [c for c in got.columns if c not in expected.columns] == ["plane_distance_mean_28d"]
    frame = job.to_df()
    assert list(frame.columns) == got.columns
    assert len(frame) == 2000
    assert frame["carrier_flights_28d"].sum() == expected["carrier_flights_28d"].sum()
    assert job.metadata is not None
    assert job.metadata.min_event_timestamp == spine["event_timestamp"].min()


def test_feature_refs_with_full_names_equal_training_set(
    store: FeatureStore, repo: fl.Repo, spine: pl.DataFrame
) -> None:
    refs = [
        "weather_at_origin:low_visibility",
        "carrier_delays:carrier_flights_7d",
        "flight_context:sched_hour",
        "flight_context:distance_vs_plane_typical",
    ]
    job = store.get_historical_features(
        entity_df=spine.to_pandas(), features=refs, full_feature_names=True
    )
    got = pl.from_arrow(job.to_arrow())
    assert isinstance(got, pl.DataFrame)
    service = fl.FeatureService(
        "refs",
        [
            repo.view("weather_at_origin")[["low_visibility"]],
            repo.view("carrier_delays")[["carrier_flights_7d"]],
            repo.view("flight_context")[["sched_hour", "distance_vs_plane_typical"]],
            repo.view("plane_info")[["year_built"]],
            repo.view("plane_delays")[["plane_distance_mean_28d"]],
        ],
    )
    expected = fl.training_set(service, spine, repo=repo, full_feature_names=True)
    features = [c for c in got.columns if c not in spine.columns]
    assert features[:4] == [r.replace(":", "__") for r in refs]  # request order
    assert set(features[4:]) == {"plane_info__year_built", "plane_delays__plane_distance_mean_28d"}
    assert got.equals(expected.select(got.columns))
    assert got["flight_context__sched_hour"].null_count() == 0


def test_sql_entity_df_is_a_featurelib_error(store: FeatureStore) -> None:
    with pytest.raises(fl.SpineError, match="SQL query") as err:
        store.get_historical_features(
            entity_df="SELECT * FROM spine", features=["weather_at_origin:temp"]
        )
    assert err.value.hint is not None


def test_on_demand_udf_equals_the_offline_features(
    store: FeatureStore, repo: fl.Repo, spine: pl.DataFrame
) -> None:
    odfv = store.get_on_demand_feature_view("flight_context")  # read back from the registry
    service = fl.FeatureService(
        "odfv",
        [
            repo.view("plane_info")[["year_built"]],
            repo.view("plane_delays")[["plane_distance_mean_28d"]],
            repo.view("flight_context"),
        ],
    )
    frame = fl.training_set(service, spine, repo=repo, full_feature_names=True)
    inputs = {
        c: frame[c].to_list()
        for c in (
            "scheduled_departure",
            "distance",
            "plane_info__year_built",
            "plane_delays__plane_distance_mean_28d",
        )
    }
    out = odfv.feature_transformation.udf(inputs)
    for name in repo.view("flight_context").feature_names():
        assert out[name] == frame[f"flight_context__{name}"].to_list(), name


_FRESH = """
import json, dill, sys
from datetime import datetime, timezone
from feast import FeatureStore
odfv = FeatureStore(repo_path=sys.argv[1]).get_on_demand_feature_view("flight_context")
udf = odfv.feature_transformation.udf  # rehydrated from the stored source text
body = dill.loads(odfv.feature_transformation.to_proto().body)  # the dill copy
row = {
    "scheduled_departure": [datetime(2013, 5, 1, 12, tzinfo=timezone.utc)],
    "distance": [1000.0],
    "plane_info__year_built": [2000],
    "plane_delays__plane_distance_mean_28d": [500.0],
}
print(json.dumps([udf(row), body(row), udf.__module__]))
"""


def test_udf_rehydrates_in_a_fresh_process(applied_repo: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", _FRESH, str(applied_repo)],
        capture_output=True,
        text=True,
        check=False,
        cwd=applied_repo.parent,
    )
    assert run.returncode == 0, run.stderr
    from_source, from_dill, module = json.loads(run.stdout.strip().splitlines()[-1])
    expected = {
        "sched_hour": [8],  # 12:00 UTC is 08:00 in New York (EDT)
        "sched_weekday": [3],  # Wednesday
        "flight_distance": [1000.0],
        "plane_age_years": [13],
        "distance_vs_plane_typical": [2.0],
    }
    assert from_source == expected
    assert from_dill == expected
    assert module == "feast_udf_rehydrate"  # Feast used the source text, not a pickle


def _flights(repo: fl.Repo) -> pl.DataFrame:
    from featurelib.offline.io import read_source

    return read_source(repo.sources["flights"], repo.root).collect()


def test_pull_latest_computes_features_as_of_the_end(store: FeatureStore, repo: fl.Repo) -> None:
    job = FeaturelibOfflineStore.pull_latest_from_table_or_query(
        config=store.config,
        data_source=store.get_data_source("flights"),
        join_key_columns=["carrier"],
        feature_name_columns=["carrier_flights_1d", "carrier_arr_delay_mean_7d"],
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        start_date=START,
        end_date=END,
    )
    got = pl.from_arrow(job.to_arrow())
    assert isinstance(got, pl.DataFrame)
    got = got.sort("carrier")
    assert set(got["event_timestamp"].to_list()) == {END}
    spine = got.select("carrier", "event_timestamp")
    svc = fl.FeatureService("s", [repo.view("carrier_delays")[got.columns[1:3]]])
    expected = fl.training_set(svc, spine, repo=repo)
    assert got.select(expected.columns).equals(expected)
    assert got["carrier_flights_1d"].sum() > 0
    # weather: the latest row per airport in the range, as featurelib orders ties
    weather = FeaturelibOfflineStore.pull_latest_from_table_or_query(
        config=store.config,
        data_source=store.get_data_source("weather"),
        join_key_columns=["origin"],
        feature_name_columns=["temp", "low_visibility"],
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
        start_date=START,
        end_date=END,
    ).to_arrow()
    rows = pl.from_arrow(weather)
    assert isinstance(rows, pl.DataFrame)
    assert rows.height == 3
    assert rows["event_timestamp"].max() <= END


def test_materialize_then_online_read(clone_applied: Callable[[], Path]) -> None:
    path = clone_applied()
    store = FeatureStore(repo_path=str(path))
    store.materialize(START, END, feature_views=["carrier_delays", "weather_at_origin"])
    online = store.get_online_features(
        features=["carrier_delays:carrier_flights_1d", "weather_at_origin:temp"],
        entity_rows=[{"carrier": "UA", "origin": "EWR"}],
    ).to_dict()
    repo = fl.Repo.load(path)
    events = _flights(repo).filter(
        pl.col("carrier") == "UA", pl.col("event_timestamp").is_between(START, END)
    )
    last = events["event_timestamp"].max()
    spine = pl.DataFrame({"carrier": ["UA"], "event_timestamp": [last]})
    svc = fl.FeatureService("s", [repo.view("carrier_delays")[["carrier_flights_1d"]]])
    expected = fl.training_set(svc, spine, repo=repo)["carrier_flights_1d"].to_list()
    assert online["carrier_flights_1d"] == expected  # value as of UA's last event in range
    assert online["temp"][0] is not None
