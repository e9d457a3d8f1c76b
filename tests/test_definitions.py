"""Definitions: each validation raises the documented error, with the definition in `.where`
and a useful `.hint`; definitions are frozen, hashable, equal when built alike, and versioned."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import featurelib as fl
from featurelib import dtypes
from featurelib.aggregation import AggExpr, Window
from featurelib.durations import default_hop, format_duration, parse_duration
from featurelib.expr import Column, FeatureRef

CARRIER = fl.Entity("carrier", {"carrier": fl.String})
ORIGIN = fl.Entity("origin", {"origin": fl.String})
FLIGHT_COLUMNS = {
    "carrier": fl.String,
    "origin": fl.String,
    "dest": fl.String,
    "event_timestamp": fl.Timestamp,
    "arr_delay": fl.Float64,
    "distance": fl.Int64,
    "cancelled": fl.Bool,
}
FLIGHTS = fl.ParquetSource("flights", "data/flights", schema=FLIGHT_COLUMNS)
WEATHER = fl.ParquetSource(
    "weather",
    "data/weather.parquet",
    schema={"origin": fl.String, "event_timestamp": fl.Timestamp, "temp": fl.Float64},
)
REQUEST = fl.RequestSource("req", {"distance": fl.Float64, "hour": fl.Int64})


def feature_view(features: Any, **kwargs: Any) -> fl.FeatureView:
    return fl.FeatureView("fv", [CARRIER], FLIGHTS, features, **kwargs)


def aggregation_view(*aggregations: Any) -> fl.AggregationView:
    return fl.AggregationView("av", [CARRIER], FLIGHTS, list(aggregations))


def carrier_stats() -> fl.AggregationView:
    return fl.AggregationView(
        "carrier_stats",
        [CARRIER],
        FLIGHTS,
        [fl.mean("arr_delay").windows("1h", "7d"), fl.count().windows("1d")],
    )


def weather_view(name: str = "origin_weather") -> fl.FeatureView:
    return fl.FeatureView(name, [ORIGIN], WEATHER, {"temp": fl.col("temp")}, ttl="3h")


# ---------------------------------------------------------------------------------------------
# Feature views: columns, join keys, types


def test_unknown_column_in_a_feature() -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        feature_view({"late": fl.col("arr_dealy") > 15})
    error = info.value
    assert error.where == "feature view 'fv', feature 'late'"
    assert "'arr_dealy'" in error.what
    assert error.hint == (
        "available columns are: arr_delay, cancelled, carrier, dest, distance, event_timestamp, "
        "origin"
    )


def test_unknown_join_key_column() -> None:
    route = fl.Entity("route", {"origin": fl.String, "route_id": fl.String})
    with pytest.raises(fl.UnknownColumnError) as info:
        fl.FeatureView("fv", [route], FLIGHTS, ["dest"])
    error = info.value
    assert error.where == "feature view 'fv'"
    assert "'route_id'" in error.what
    assert "'route'" in error.what
    assert "'flights'" in error.what
    assert "arr_delay" in (error.hint or "")
    assert "carrier" in (error.hint or "")


def test_join_key_type_mismatch() -> None:
    carrier_id = fl.Entity("carrier_id", {"carrier": fl.Int64})
    with pytest.raises(fl.DefinitionError) as info:
        fl.AggregationView("av", [carrier_id], FLIGHTS, [fl.count().windows("1d")])
    error = info.value
    assert error.where == "aggregation view 'av'"
    assert "Int64" in error.what
    assert "String" in error.what
    assert error.hint == "declare the same type in both"


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        (fl.col("dest") + 1, '(col("dest") + 1)'),
        (fl.col("cancelled") & fl.col("distance"), '(col("cancelled") & col("distance"))'),
        (fl.col("distance").str.lower(), 'col("distance").str.lower()'),
        (fl.col("dest").dt.hour(), 'col("dest").dt.hour()'),
        (fl.when(fl.col("cancelled")).then(1).otherwise("no"), "when("),
        (fl.col("arr_delay").fill_null("none"), "fill_null('none')"),
    ],
    ids=str,
)
def test_type_mismatch_in_a_feature(expr: fl.Expr, fragment: str) -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        feature_view({"x": expr})
    assert info.value.where == "feature view 'fv', feature 'x'"
    assert fragment in info.value.what
    assert info.value.hint


def test_feature_view_types_and_plain_column_names() -> None:
    view = feature_view(["dest", "distance"], ttl="1d")
    assert view.features == (("dest", Column("dest")), ("distance", Column("distance")))
    assert view.feature_dtypes() == {"dest": fl.String, "distance": fl.Int64}
    assert view.ttl == timedelta(days=1)
    assert feature_view("dest").feature_names() == ["dest"]  # one name, not its letters


def test_feature_view_without_schema_defers_checks() -> None:
    source = fl.ParquetSource("raw", "data/raw.parquet")
    view = fl.FeatureView("fv", [CARRIER], source, {"x": fl.col("anything") + 1})
    assert view.feature_dtypes() == {"x": dtypes.Unknown}


@pytest.mark.parametrize(
    ("build", "error", "where"),
    [
        (lambda: feature_view({}), fl.DefinitionError, "feature view 'fv'"),
        (
            lambda: feature_view({"carrier": fl.col("dest")}),
            fl.DuplicateNameError,
            "feature view 'fv'",
        ),
        (
            lambda: feature_view({"bad name": fl.col("dest")}),
            fl.DefinitionError,
            "feature view 'fv'",
        ),
        (lambda: feature_view({"x": 5}), fl.DefinitionError, "feature view 'fv', feature 'x'"),
        (lambda: feature_view(["dest"], ttl="0s"), fl.DefinitionError, "feature view 'fv'"),
        (lambda: feature_view(["dest"], ttl="soon"), fl.DefinitionError, "feature view 'fv'"),
        (
            lambda: fl.FeatureView("1fv", [CARRIER], FLIGHTS, ["dest"]),
            fl.DefinitionError,
            "feature view '1fv'",
        ),
        (
            lambda: fl.FeatureView("fv", [], FLIGHTS, ["dest"]),
            fl.DefinitionError,
            "feature view 'fv'",
        ),
        (
            lambda: fl.FeatureView("fv", [CARRIER], REQUEST, ["dest"]),  # type: ignore[arg-type]
            fl.DefinitionError,
            "feature view 'fv'",
        ),
        (
            lambda: fl.FeatureView(
                "fv", [CARRIER, fl.Entity("c2", {"carrier": fl.String})], FLIGHTS, ["dest"]
            ),
            fl.DuplicateNameError,
            "feature view 'fv'",
        ),
    ],
)
def test_feature_view_errors(build: Callable[[], Any], error: type[Exception], where: str) -> None:
    with pytest.raises(error) as info:
        build()
    assert info.value.where == where  # type: ignore[attr-defined]
    assert info.value.hint  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Aggregates where a row expression is required


@pytest.mark.parametrize(
    "build",
    [
        lambda: fl.col("x") + fl.sum("y"),
        lambda: fl.sum("y") + 1,
        lambda: 1 + fl.sum("y"),
        lambda: fl.sum("y") / fl.col("x"),
        lambda: fl.sum("y") // 2,
        lambda: fl.sum("y") % 2,
        lambda: fl.sum("y") > 1,
        lambda: fl.sum("y") & fl.col("x"),
        lambda: -fl.sum("y"),
        lambda: ~fl.sum("y"),
        lambda: abs(fl.sum("y")),
        lambda: fl.sum("y").fill_null(0),
        lambda: fl.mean("y").cast(fl.Int64),
        lambda: fl.col("x") == fl.mean("y"),
        lambda: fl.col("x").fill_null(fl.mean("y")),
        lambda: fl.when(fl.col("x") > 0).then(fl.sum("y")).otherwise(0),
        lambda: fl.col("x") + fl.sum("y").windows("1d"),
        lambda: fl.sum(fl.mean("x")),  # type: ignore[arg-type]
        lambda: fl.count(fl.last("x")),  # type: ignore[arg-type]
        lambda: fl.sum(fl.mean("x").windows("1h")),  # type: ignore[arg-type]
    ],
)
def test_aggregate_inside_a_row_expression(build: Callable[[], Any]) -> None:
    with pytest.raises(fl.AggregateInRowExpressionError) as info:
        build()
    assert info.value.hint


def test_aggregate_as_a_feature_view_feature() -> None:
    with pytest.raises(fl.AggregateInRowExpressionError) as info:
        feature_view({"total": fl.sum("arr_delay")})
    assert info.value.where == "feature view 'fv', feature 'total'"
    assert "AggregationView" in (info.value.hint or "")


def test_aggregate_as_an_on_demand_feature() -> None:
    with pytest.raises(fl.AggregateInRowExpressionError) as info:
        fl.OnDemandView("odv", [REQUEST], {"m": fl.mean("distance").windows("1h")})  # type: ignore[dict-item]
    assert info.value.where == "on-demand view 'odv', feature 'm'"


def test_aggregate_without_windows_in_an_aggregation_view() -> None:
    with pytest.raises(fl.DefinitionError) as info:
        aggregation_view(fl.mean("arr_delay"))
    assert info.value.where == "aggregation view 'av'"
    assert ".windows(" in (info.value.hint or "")


def test_aggregates_still_have_attributes() -> None:
    agg = fl.mean("x")
    assert agg.fn == "mean"
    assert agg.arg == Column("x")
    with pytest.raises(AttributeError):
        agg.no_such_thing  # noqa: B018


# ---------------------------------------------------------------------------------------------
# Windows and hops


def test_window_not_a_multiple_of_its_hop() -> None:
    with pytest.raises(fl.WindowError) as info:
        fl.mean("x").windows("90min", hop="1h")
    error = info.value
    assert error.where == "aggregation 'x_mean'"
    assert "90min" in error.what
    assert "1h" in error.what
    assert "hop" in (error.hint or "")


@pytest.mark.parametrize(
    ("windows", "hop"),
    [
        (("1h", "90min"), "1h"),
        (("1h",), "2h"),
        (("61min",), None),  # default hop 5min does not divide 61min
        (("289h",), None),  # 12d + 1h: default hop 1d
        ((), None),
        (("1h", "60min"), None),  # the same window twice
    ],
)
def test_window_errors(windows: tuple[str, ...], hop: str | None) -> None:
    with pytest.raises(fl.WindowError) as info:
        fl.sum("x").windows(*windows, hop=hop, name="total")
    assert info.value.where == "aggregation 'total'"
    assert info.value.hint


@pytest.mark.parametrize(
    ("window", "hop"),
    [
        ("1min", "1min"),
        ("30min", "1min"),
        ("1h", "1min"),  # not > 1h
        ("65min", "5min"),
        ("12h", "5min"),  # not > 12h
        ("13h", "1h"),
        ("7d", "1h"),
        ("12d", "1h"),  # not > 12d
        ("13d", "1d"),
        ("30d", "1d"),
    ],
)
def test_default_hops(window: str, hop: str) -> None:
    (w,) = fl.mean("x").windows(window).windows
    assert (format_duration(w.length), format_duration(w.hop)) == (window, hop)
    assert w.hops == w.length // w.hop


@pytest.mark.parametrize(
    ("window", "hop"),
    [
        (timedelta(hours=1), timedelta(minutes=1)),
        (timedelta(hours=1, seconds=1), timedelta(minutes=5)),
        (timedelta(hours=12), timedelta(minutes=5)),
        (timedelta(hours=12, seconds=1), timedelta(hours=1)),
        (timedelta(days=12), timedelta(hours=1)),
        (timedelta(days=12, seconds=1), timedelta(days=1)),
    ],
)
def test_default_hop_boundaries(window: timedelta, hop: timedelta) -> None:
    assert default_hop(window) == hop


def test_explicit_hop_and_feature_names() -> None:
    agg = fl.max("distance").windows("2h", "1d", hop="30min", name="longest")
    assert agg.windows == (
        Window(timedelta(hours=2), timedelta(minutes=30)),
        Window(timedelta(days=1), timedelta(minutes=30)),
    )
    assert agg.feature_names() == ["longest_2h", "longest_1d"]
    assert agg.windows[1].hops == 48


@pytest.mark.parametrize(
    ("agg", "name"),
    [
        (fl.count(), "count"),
        (fl.count("dest"), "dest_count"),
        (fl.sum(fl.col("arr_delay") > 15), "arr_delay_gt_15_sum"),
        (fl.mean("arr_delay"), "arr_delay_mean"),
        (fl.min(fl.col("distance") / 1000), "distance_per_1000_min"),
        (fl.max("distance"), "distance_max"),
        (fl.stddev("arr_delay"), "arr_delay_stddev"),
        (fl.last("dest"), "dest_last"),
        (fl.last_n("dest", 3), "dest_last_3"),
    ],
    ids=str,
)
def test_default_names(agg: AggExpr, name: str) -> None:
    assert agg.default_name() == name
    assert agg.windows("1d", "7d").feature_names() == [f"{name}_1d", f"{name}_7d"]


@pytest.mark.parametrize(
    "build",
    [
        lambda: fl.last_n("x", 0),
        lambda: fl.last_n("x", -2),
        lambda: fl.last_n("x", "3"),  # type: ignore[arg-type]
        lambda: fl.last_n("x", True),
        lambda: AggExpr("median", Column("x")),
        lambda: AggExpr("sum", None),
        lambda: AggExpr("sum", Column("x"), 3),
        lambda: fl.sum(5),  # type: ignore[arg-type]
        lambda: fl.mean("x").windows("1h", name="bad name"),
    ],
)
def test_invalid_aggregates(build: Callable[[], Any]) -> None:
    with pytest.raises(fl.DefinitionError) as info:
        build()
    assert info.value.hint


# ---------------------------------------------------------------------------------------------
# Aggregation views


def test_aggregation_view_types() -> None:
    view = aggregation_view(
        fl.count().windows("1d"),
        fl.count("dest").windows("1d"),
        fl.sum("cancelled").windows("1d"),
        fl.sum("distance").windows("1d"),
        fl.sum("arr_delay").windows("1d"),
        fl.mean("distance").windows("1d"),
        fl.stddev("cancelled").windows("1d"),
        fl.min("dest").windows("1d"),
        fl.max("cancelled").windows("1d"),
        fl.last("event_timestamp").windows("1d"),
        fl.last_n("dest", 3).windows("1d"),
    )
    assert view.feature_dtypes() == {
        "count_1d": fl.Int64,
        "dest_count_1d": fl.Int64,
        "cancelled_sum_1d": fl.Int64,
        "distance_sum_1d": fl.Int64,
        "arr_delay_sum_1d": fl.Float64,
        "distance_mean_1d": fl.Float64,
        "cancelled_stddev_1d": fl.Float64,
        "dest_min_1d": fl.String,
        "cancelled_max_1d": fl.Bool,
        "event_timestamp_last_1d": fl.Timestamp,
        "dest_last_3_1d": fl.List(fl.String),
    }


@pytest.mark.parametrize(
    ("agg", "name"),
    [
        (fl.sum("dest"), "dest_sum"),
        (fl.mean("event_timestamp"), "event_timestamp_mean"),
        (fl.stddev(fl.col("dest").str.lower()), "dest_lower_stddev"),
    ],
)
def test_numeric_aggregate_of_a_non_numeric_column(agg: AggExpr, name: str) -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        aggregation_view(agg.windows("1d"))
    assert info.value.where == f"aggregation view 'av', aggregation {name!r}"
    assert "count" in (info.value.hint or "")


def test_unknown_column_in_an_aggregation() -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        aggregation_view(fl.mean("arr_dely").windows("1d"))
    assert info.value.where == "aggregation view 'av', aggregation 'arr_dely_mean'"
    assert "arr_delay" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("aggregations", "names"),
    [
        (
            [fl.mean("arr_delay").windows("1h"), fl.mean("arr_delay").windows("60min", "1d")],
            ["arr_delay_mean_1h"],
        ),
        ([fl.count().windows("1d"), fl.count().windows("1d", "7d")], ["count_1d"]),
        (
            [
                fl.mean("distance").windows("1d"),
                fl.sum("arr_delay").windows("1d", name="distance_mean"),
            ],
            ["distance_mean_1d"],
        ),
    ],
)
def test_duplicate_names_in_an_aggregation_view(aggregations: list[Any], names: list[str]) -> None:
    with pytest.raises(fl.DuplicateNameError) as info:
        aggregation_view(*aggregations)
    assert info.value.where == "aggregation view 'av'"
    assert str(names) in info.value.what
    assert "rename" in (info.value.hint or "")


def test_renamed_aggregation_resolves_the_duplicate() -> None:
    view = aggregation_view(
        fl.mean("arr_delay").windows("1h"), fl.mean("arr_delay").windows("1d", name="avg_delay")
    )
    assert view.feature_names() == ["arr_delay_mean_1h", "avg_delay_1d"]


def test_aggregation_view_errors() -> None:
    with pytest.raises(fl.DefinitionError) as info:
        aggregation_view()
    assert info.value.where == "aggregation view 'av'"
    assert info.value.hint
    with pytest.raises(fl.DefinitionError) as info:
        aggregation_view("arr_delay")
    assert info.value.where == "aggregation view 'av'"
    assert info.value.hint


def test_duplicate_feature_names_in_a_feature_view() -> None:
    with pytest.raises(fl.DuplicateNameError) as info:
        feature_view(["dest", "origin", "dest"])
    assert info.value.where == "feature view 'fv'"
    assert "['dest']" in info.value.what
    assert "rename" in (info.value.hint or "")


# ---------------------------------------------------------------------------------------------
# On-demand views


def test_on_demand_view_resolves_columns() -> None:
    stats = carrier_stats()
    odv = fl.OnDemandView(
        "odv",
        [REQUEST, stats],
        {
            "per_km": fl.col("arr_delay_mean_1h") / fl.col("distance"),
            "busy": stats["count_1d"] > 10,
        },
    )
    per_km = dict(odv.features)["per_km"]
    assert per_km.args == (  # type: ignore[attr-defined]
        FeatureRef("carrier_stats", "arr_delay_mean_1h"),
        Column("distance"),
    )
    assert odv.request_fields() == ["distance"]
    assert odv.feature_dtypes() == {"per_km": fl.Float64, "busy": fl.Bool}


def test_on_demand_unknown_column() -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        fl.OnDemandView("odv", [REQUEST, carrier_stats()], {"x": fl.col("distnce") * 2})
    error = info.value
    assert error.where == "on-demand view 'odv', feature 'x'"
    assert error.hint == (
        "request fields and input features are: arr_delay_mean_1h, arr_delay_mean_7d, "
        "count_1d, distance, hour"
    )


def test_on_demand_ambiguous_column_suggests_the_view() -> None:
    origin_weather, dest_weather = weather_view("origin_weather"), weather_view("dest_weather")
    with pytest.raises(fl.DefinitionError) as info:
        fl.OnDemandView("odv", [origin_weather, dest_weather], {"t": fl.col("temp") * 2})
    assert info.value.where == "on-demand view 'odv', feature 't'"
    assert "ambiguous" in info.value.what
    assert info.value.hint == 'write origin_weather["temp"] to name the view'
    odv = fl.OnDemandView(
        "odv", [origin_weather, dest_weather], {"t": origin_weather["temp"] - dest_weather["temp"]}
    )
    assert odv.feature_dtypes() == {"t": fl.Float64}


def test_on_demand_ambiguity_with_a_request_field_names_the_view() -> None:
    request = fl.RequestSource("req", {"temp": fl.Float64})
    with pytest.raises(fl.DefinitionError) as info:
        fl.OnDemandView("odv", [request, weather_view()], {"t": fl.col("temp") + 1})
    assert info.value.hint == 'write origin_weather["temp"] to name the view'


def test_on_demand_feature_ref_to_a_view_that_is_not_an_input() -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        fl.OnDemandView("odv", [REQUEST], {"t": weather_view()["temp"] + fl.col("distance")})
    assert info.value.where == "on-demand view 'odv', feature 't'"
    assert "'origin_weather'" in info.value.what
    assert "inputs" in (info.value.hint or "")


def test_on_demand_type_mismatch() -> None:
    with pytest.raises(fl.ExpressionTypeError) as info:
        fl.OnDemandView("odv", [REQUEST], {"x": fl.col("distance").str.upper()})
    assert info.value.where == "on-demand view 'odv', feature 'x'"
    assert 'col("distance").str.upper()' in info.value.what


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: fl.OnDemandView("odv", [REQUEST], {}), fl.DefinitionError),
        (lambda: fl.OnDemandView("odv", [], {"x": fl.lit(1)}), fl.DefinitionError),
        (
            lambda: fl.OnDemandView("odv", [REQUEST, REQUEST], {"x": fl.col("hour")}),
            fl.DuplicateNameError,
        ),
        (lambda: fl.OnDemandView("odv", [CARRIER], {"x": fl.lit(1)}), fl.DefinitionError),  # type: ignore[list-item]
        (lambda: fl.OnDemandView("odv", [REQUEST], {"x y": fl.col("hour")}), fl.DefinitionError),
    ],
)
def test_on_demand_view_errors(build: Callable[[], Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        build()
    assert info.value.where == "on-demand view 'odv'"  # type: ignore[attr-defined]
    assert info.value.hint  # type: ignore[attr-defined]


def test_getitem_of_an_unknown_feature() -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        carrier_stats()["count_7d"]
    assert info.value.hint == "its features are: arr_delay_mean_1h, arr_delay_mean_7d, count_1d"


def test_views_are_not_iterable() -> None:
    with pytest.raises(TypeError, match="list"):
        list(carrier_stats())


# ---------------------------------------------------------------------------------------------
# Feature services and projections


def test_feature_service_output_name_collision() -> None:
    first, second = weather_view("origin_weather"), weather_view("dest_weather")
    with pytest.raises(fl.DuplicateNameError) as info:
        fl.FeatureService("svc", [first, second])
    assert info.value.where == "feature service 'svc'"
    assert "['temp']" in info.value.what
    assert "rename" in (info.value.hint or "")
    service = fl.FeatureService("svc", [first, second[["temp"]].rename({"temp": "dest_temp"})])
    assert service.output_names() == ["temp", "dest_temp"]
    assert service.output_names(full_feature_names=True) == [
        "origin_weather__temp",
        "dest_weather__temp",
    ]


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda v: fl.FeatureService("svc", [v, v[["arr_delay_mean_1h"]]]), fl.DuplicateNameError),
        (lambda v: fl.FeatureService("svc", []), fl.DefinitionError),
        (
            lambda v: fl.FeatureService(
                "svc", [v[["count_1d"]].rename({"count_1d": "x"}), v[["count_1d"]]]
            ),
            fl.DuplicateNameError,
        ),
    ],
)
def test_feature_service_errors(build: Callable[[Any], Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        build(carrier_stats())
    assert info.value.where == "feature service 'svc'"  # type: ignore[attr-defined]
    assert info.value.hint  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "build",
    [
        lambda v: v[["nope"]],
        lambda v: v[["count_1d"]].rename({"arr_delay_mean_1h": "x"}),
    ],
)
def test_projection_unknown_features(build: Callable[[Any], Any]) -> None:
    with pytest.raises(fl.UnknownColumnError) as info:
        build(carrier_stats())
    assert info.value.where == "projection of view 'carrier_stats'"
    assert "count_1d" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda v: v[[]], fl.DefinitionError),
        (lambda v: v[["count_1d", "count_1d"]], fl.DuplicateNameError),
        (lambda v: v[["count_1d"]].rename({"count_1d": "not valid"}), fl.DefinitionError),
    ],
)
def test_projection_errors(build: Callable[[Any], Any], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        build(carrier_stats())
    assert info.value.where == "projection of view 'carrier_stats'"  # type: ignore[attr-defined]
    assert info.value.hint  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Entities, sources, names, durations


def test_entity_keys() -> None:
    route = fl.Entity("route", {"origin": fl.String, "flight": fl.Int64})
    assert route.key_names == ("origin", "flight")
    assert route.join_keys == (("origin", fl.String), ("flight", fl.Int64))
    assert fl.Entity("carrier", ["carrier"]) == CARRIER
    assert fl.Entity("carrier", "carrier") == CARRIER  # one key, not one per letter


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: fl.Entity("carrier", {}), "entity 'carrier'"),
        (lambda: fl.Entity("carrier", []), "entity 'carrier'"),
        (lambda: fl.Entity("carrier", {"carrier": fl.Bool}), "entity 'carrier'"),
        (lambda: fl.Entity("carrier", {"carrier": fl.Float64}), "entity 'carrier'"),
        (lambda: fl.Entity("carrier", {"carrier": str}), "entity 'carrier'"),  # type: ignore[dict-item]
        (lambda: fl.Entity("carrier", {"carrier id": fl.String}), "entity 'carrier'"),
        (lambda: fl.Entity("1carrier", ["carrier"]), "entity '1carrier'"),
        (lambda: fl.Entity("", ["carrier"]), "entity ''"),
        (lambda: fl.Entity("carrier-code", ["carrier"]), "entity 'carrier-code'"),
        (lambda: fl.Entity("café", ["carrier"]), "entity 'café'"),
        (lambda: fl.Entity(None, ["carrier"]), "entity None"),  # type: ignore[arg-type]
    ],
)
def test_entity_errors(build: Callable[[], Any], where: str) -> None:
    with pytest.raises(fl.DefinitionError) as info:
        build()
    assert info.value.where == where
    assert info.value.hint


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: fl.ParquetSource("bad name", "x.parquet"), "source 'bad name'"),
        (lambda: fl.ParquetSource("s", ""), "source 's'"),
        (lambda: fl.BatchSource("s", format="json", location="x.json"), "source 's'"),
        (
            lambda: fl.CsvSource("s", "x.csv", schema={"event_timestamp": fl.String}),
            "source 's'",
        ),
        (lambda: fl.CsvSource("s", "x.csv", schema={"x": fl.Int64}), "source 's'"),
        (
            lambda: fl.CsvSource(
                "s",
                "x.csv",
                created_timestamp_field="created",
                schema={"event_timestamp": fl.Timestamp},
            ),
            "source 's'",
        ),
        (lambda: fl.DuckDBSource("s", "SELECT 1", schema={"event_timestamp": int}), "source 's'"),  # type: ignore[dict-item]
        (lambda: fl.RequestSource("r", {}), "request source 'r'"),
        (lambda: fl.RequestSource("r", {"x": "Int64"}), "request source 'r'"),  # type: ignore[dict-item]
        (lambda: fl.RequestSource("r r", {"x": fl.Int64}), "request source 'r r'"),
    ],
)
def test_source_errors(build: Callable[[], Any], where: str) -> None:
    with pytest.raises(fl.DefinitionError) as info:
        build()
    assert info.value.where == where
    assert info.value.hint


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("90sec", timedelta(seconds=90)),
        ("5min", timedelta(minutes=5)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        (" 3 h ", timedelta(hours=3)),
        (timedelta(minutes=90), timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str | timedelta, expected: timedelta) -> None:
    assert parse_duration(text, where="here") == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "h",
        "1.5h",
        "-1h",
        "0s",
        "0d",
        "1 hour",
        "5 mins",
        "1H",
        "1h30min",
        None,
        5,
        timedelta(0),
        timedelta(hours=-1),
        timedelta(milliseconds=1500),
    ],
)
def test_bad_durations(text: Any) -> None:
    with pytest.raises(fl.DefinitionError) as info:
        parse_duration(text, where="feature view 'fv'")
    assert info.value.where == "feature view 'fv'"
    assert info.value.hint


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=90), "90min"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=36), "36h"),
        (timedelta(weeks=2), "14d"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text, where="x") == value


# ---------------------------------------------------------------------------------------------
# Frozen, hashable, equal, versioned


def build_all() -> list[Any]:
    stats = carrier_stats()
    weather = weather_view()
    odv = fl.OnDemandView(
        "trip", [REQUEST, stats], {"late_per_km": fl.col("arr_delay_mean_1h") / fl.col("distance")}
    )
    return [
        CARRIER,
        FLIGHTS,
        REQUEST,
        weather,
        stats,
        odv,
        weather[["temp"]].rename({"temp": "origin_temp"}),
        fl.FeatureService("svc", [weather, stats[["count_1d"]], odv]),
        fl.mean("x").windows("1h"),
        fl.mean("x"),
        stats.aggregations[0].windows[0],
        (fl.col("x") + 1).node,
    ]


@pytest.mark.parametrize("index", range(len(build_all())))
def test_definitions_are_frozen(index: int) -> None:
    obj = build_all()[index]
    field = dataclasses.fields(obj)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, getattr(obj, field))
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        obj.new_attribute = 1


@pytest.mark.parametrize("index", range(len(build_all())))
def test_definitions_built_alike_are_equal_and_hash_alike(index: int) -> None:
    first, second = build_all()[index], build_all()[index]
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second}) == 1


def test_definitions_that_differ_are_not_equal() -> None:
    assert weather_view("a") != weather_view("b")
    assert fl.mean("x").windows("1h") != fl.mean("x").windows("1h", hop="5min")
    assert feature_view({"x": fl.col("distance") + 1}) != feature_view(
        {"x": fl.col("distance") + 2}
    )
    assert feature_view(["dest"], ttl="1h") != feature_view(["dest"], ttl="2h")


def versioned_feature_view(
    expr: fl.Expr | None = None,
    ttl: str = "1h",
    description: str = "",
    source_description: str = "",
    entity_description: str = "",
    tags: dict[str, str] | None = None,
) -> fl.FeatureView:
    source = fl.ParquetSource(
        "flights", "data/flights", schema=FLIGHT_COLUMNS, description=source_description
    )
    carrier = fl.Entity("carrier", {"carrier": fl.String}, description=entity_description)
    features = {"x": fl.col("distance") * 2 if expr is None else expr}
    return fl.FeatureView(
        "fv", [carrier], source, features, ttl=ttl, description=description, tags=tags
    )


def versioned_aggregation_view(
    window: str = "1d", hop: str | None = None, description: str = ""
) -> fl.AggregationView:
    return fl.AggregationView(
        "av",
        [CARRIER],
        FLIGHTS,
        [fl.mean("arr_delay").windows(window, hop=hop)],
        description=description,
    )


def test_version_ignores_descriptions_and_tags() -> None:
    base = versioned_feature_view().version
    assert len(base) == 16
    assert int(base, 16) >= 0
    assert versioned_feature_view(description="what it is").version == base
    assert versioned_feature_view(tags={"team": "ops"}).version == base
    assert versioned_feature_view(source_description="the raw log").version == base
    assert versioned_feature_view(entity_description="an airline").version == base
    agg = versioned_aggregation_view().version
    assert versioned_aggregation_view(description="stats").version == agg


def test_version_changes_with_semantics() -> None:
    base = versioned_feature_view().version
    assert versioned_feature_view(expr=fl.col("distance") * 3).version != base
    assert versioned_feature_view(expr=fl.col("distance") * 2.0).version != base
    assert versioned_feature_view(ttl="2h").version != base
    agg = versioned_aggregation_view().version
    assert versioned_aggregation_view(window="7d").version != agg
    assert versioned_aggregation_view(hop="5min").version != agg
    assert versioned_aggregation_view(hop="1h").version == agg  # 1h is the default hop of 1d


def test_feature_service_version() -> None:
    stats = carrier_stats()
    base = fl.FeatureService("svc", [stats]).version
    assert fl.FeatureService("svc", [stats], description="model v1").version == base
    renamed = stats[["count_1d"]].rename({"count_1d": "n"})
    assert fl.FeatureService("svc", [renamed]).version != base


@pytest.mark.parametrize("kind", ["view", "feature"])
def test_double_underscore_is_reserved_in_view_and_feature_names(kind: str) -> None:
    ent = fl.Entity("user", {"user_id": fl.Int64})
    src = fl.ParquetSource("ev", "ev.parquet")
    view_name, feature_name = ("user__stats", "x") if kind == "view" else ("stats", "x__y")
    with pytest.raises(fl.DefinitionError, match="'__' is reserved") as info:
        fl.FeatureView(view_name, [ent], src, {feature_name: fl.col("x")})
    assert "view__feature" in (info.value.hint or "")
