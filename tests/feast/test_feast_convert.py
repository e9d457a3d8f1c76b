"""DSL -> Feast conversion rules, and a CSV + DuckDB repo through Feast's registry and SDK."""

from __future__ import annotations

import textwrap
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from feast import FeatureStore
from feast import types as ft

import featurelib as fl
from featurelib.feast.convert import to_feast
from featurelib.feast.registry import load_repo_from_registry
from featurelib.feast.sources import FeaturelibSource
from featurelib.feast.types import feast_type, featurelib_type

user = fl.Entity("user", {"user_id": fl.Int64})
events = fl.ParquetSource(
    "events", "data/events.parquet", schema={"user_id": fl.Int64, "event_timestamp": fl.Timestamp}
)

# Feast warns about on-demand views on every apply/retrieval; featurelib computes them.
pytestmark = pytest.mark.filterwarnings("ignore:On demand feature view is an experimental")


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (fl.Int64, ft.Int64),
        (fl.Float64, ft.Float64),
        (fl.Bool, ft.Bool),
        (fl.String, ft.String),
        (fl.Timestamp, ft.UnixTimestamp),
        (fl.List(fl.Float64), ft.Array(ft.Float64)),
        (fl.List(fl.String), ft.Array(ft.String)),
    ],
)
def test_types_map_both_ways(dtype: fl.DType, expected: ft.FeastType) -> None:
    assert feast_type(dtype, where="test") == expected
    assert featurelib_type(expected) == dtype


def test_unknown_types_are_a_definition_error_with_a_hint() -> None:
    with pytest.raises(fl.DefinitionError, match="no Feast equivalent") as err:
        feast_type(fl.DType("Unknown"), where="view 'v'")
    assert "schema" in str(err.value.hint)


def test_an_entity_with_two_keys_becomes_two_feast_entities() -> None:
    route = fl.Entity("route", {"origin": fl.String, "dest": fl.String})
    source = fl.ParquetSource(
        "f",
        "f.parquet",
        schema={
            "origin": fl.String,
            "dest": fl.String,
            "x": fl.Float64,
            "event_timestamp": fl.Timestamp,
        },
    )
    view = fl.FeatureView("v", [route], source, ["x"], ttl="1h")
    objs = to_feast(fl.Repo.from_objects([view]))
    assert sorted(objs.entities) == ["route__dest", "route__origin"]
    fv = objs.feature_views["v"]
    assert sorted(fv.entities) == ["route__dest", "route__origin"]
    assert fv.ttl == timedelta(hours=1)
    clash = fl.Entity("route__dest", {"dest": fl.String})
    other = fl.FeatureView("w", [clash], source, ["x"])
    with pytest.raises(fl.DuplicateNameError, match="route__dest"):
        to_feast(fl.Repo.from_objects([view, other]))


def test_renamed_service_features_warn_that_feast_cannot_rename() -> None:
    src = fl.ParquetSource(
        "s",
        "s.parquet",
        schema={"user_id": fl.Int64, "x": fl.Float64, "event_timestamp": fl.Timestamp},
    )
    view = fl.FeatureView("v", [user], src, ["x"])
    service = fl.FeatureService("svc", [view[["x"]].rename({"x": "y"})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objs = to_feast(fl.Repo.from_objects([service]))
    assert any("cannot rename" in str(w.message) for w in caught)
    assert [f.name for f in objs.feature_services["svc"].feature_view_projections[0].features] == [
        "x"
    ]


_DEFINITIONS = """
import featurelib as fl
from featurelib import col

user = fl.Entity("user", {"user_id": fl.Int64})
csv = fl.CsvSource("events_csv", "data/events.csv")
sql = fl.DuckDBSource("events_sql", "SELECT * FROM 'data/events.csv' WHERE amount > 0")
last_amount = fl.FeatureView("last_amount", [user], csv, {"amount": col("amount")}, ttl="2d")
spend = fl.AggregationView(
    "spend", [user], sql, [fl.sum("amount").windows("1d", "7d"), fl.last_n("kind", 2).windows("7d")]
)
req = fl.RequestSource("req", {"price": fl.Float64})
ratio = fl.OnDemandView(
    "ratio",
    [req, spend],
    {
        "price_vs_spend": col("price") / col("amount_sum_7d"),
        # null on the sample row Feast's apply runs the UDF on (price 1.0): still registers
        "inv_excess": 1.0 / (col("price") - 1.0),
        "spend_x2": col("amount_sum_7d") * 2,  # input typed from the data (no schema)
    },
)
svc = fl.FeatureService("svc", [last_amount, spend, ratio])
"""


@pytest.fixture(scope="module")
def csv_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csv_repo")
    (root / "data").mkdir()
    base = datetime(2024, 1, 1, tzinfo=UTC)
    pl.DataFrame(
        {
            "user_id": [1, 1, 2, 1, 2, 2],
            "event_timestamp": [base + timedelta(hours=h) for h in (1, 5, 7, 30, 31, 80)],
            "amount": [10.0, -3.0, 7.5, 2.0, 1.0, 4.0],
            "kind": ["a", "b", "a", "c", "b", "a"],
        }
    ).write_csv(root / "data" / "events.csv")
    (root / "definitions.py").write_text(textwrap.dedent(_DEFINITIONS))
    (root / "feature_store.yaml").write_text(
        "project: csv_demo\nprovider: local\nregistry: data/registry.db\n"
        "online_store:\n  type: sqlite\n  path: data/online_store.db\n"
        "offline_store:\n  type: featurelib.feast.offline_store.FeaturelibOfflineStore\n"
        "  progress: false\nentity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(root))
    store.apply(list(to_feast(fl.Repo.load(root)).as_globals().values()))
    return root


def test_csv_and_duckdb_sources_register_as_featurelib_sources(csv_repo: Path) -> None:
    store = FeatureStore(repo_path=str(csv_repo))
    for name in ("events_csv", "events_sql"):
        source = store.get_data_source(name)
        assert isinstance(source, FeaturelibSource)  # rebuilt from the registry's proto
    assert store.get_data_source("events_sql").featurelib_source.format == "duckdb"
    assert load_repo_from_registry(csv_repo) == fl.Repo.load(csv_repo)
    spend = store.get_feature_view("spend")
    types = {f.name: str(f.dtype) for f in spend.features}
    assert types == {
        "amount_sum_1d": "Float64",
        "amount_sum_7d": "Float64",
        "kind_last_2_7d": "Array(String)",  # inferred from the data (no declared schema)
    }


def _csv_spine() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [2, 1, 1, 3, None],
            "event_timestamp": [
                datetime(2024, 1, d, h, tzinfo=UTC)
                for d, h in ((2, 9), (1, 6), (3, 1), (2, 0), (2, 0))
            ],
            "price": [5.0, 1.0, 2.0, 3.0, 4.0],
        }
    )


def test_csv_repo_retrieval_equals_training_set(csv_repo: Path) -> None:
    store = FeatureStore(repo_path=str(csv_repo))
    spine = _csv_spine()
    job = store.get_historical_features(
        entity_df=spine.to_pandas(), features=store.get_feature_service("svc")
    )
    got = pl.from_arrow(job.to_arrow())
    assert isinstance(got, pl.DataFrame)
    repo = fl.Repo.load(csv_repo)
    expected = fl.training_set(repo.service("svc"), spine, repo=repo)
    assert got.select(expected.columns).equals(expected)
    assert got["amount_sum_7d"].to_list() == [8.5, 10.0, 12.0, 0.0, 0.0]  # -3 filtered by SQL
    assert got["inv_excess"].to_list() == [0.25, None, 1.0, 0.5, 1 / 3]
    assert got["amount"].to_list() == [1.0, -3.0, 2.0, None, None]  # latest within 2d


def test_csv_repo_udf_equals_the_offline_features(csv_repo: Path) -> None:
    repo = fl.Repo.load(csv_repo)
    service = fl.FeatureService("u", [repo.view("spend")[["amount_sum_7d"]], repo.view("ratio")])
    frame = fl.training_set(service, _csv_spine(), repo=repo, full_feature_names=True)
    odfv = FeatureStore(repo_path=str(csv_repo)).get_on_demand_feature_view("ratio")
    inputs = {"price": frame["price"].to_list()}
    inputs["spend__amount_sum_7d"] = frame["spend__amount_sum_7d"].to_list()
    out = odfv.feature_transformation.udf(inputs)
    for name in repo.view("ratio").feature_names():
        assert out[name] == frame[f"ratio__{name}"].to_list(), name


def test_udf_keeps_values_whose_type_is_not_declared(tmp_path: Path) -> None:
    """An input view over a source without a declared schema has Unknown feature types: the
    Feast UDF leaves them as computed, as training_set and online reads do (it cast them to
    null)."""
    from featurelib.feast.udf import evaluate

    carrier = fl.Entity("carrier", {"carrier": fl.String})
    source = fl.ParquetSource("s", str(tmp_path / "s.parquet"), timestamp_field="ts")
    view = fl.FeatureView("v", [carrier], source, {"d": fl.col("delay")})
    odv = fl.OnDemandView("od", [view], {"d2": fl.col("d") * 2})
    assert evaluate(fl.dumps(odv), {"v__d": [1.5, 2.0]}) == {"d2": [3.0, 4.0]}
