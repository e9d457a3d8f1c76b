"""The JSON spec: exact, byte-stable round trips of every definition and expression tree, and
SpecErrors (with hints) for malformed, unknown or newer specs.

Floats: literals are finite (fl.lit rejects NaN and +-inf, so specs are strict JSON) and -0.0 is
stored as 0.0 (they compare equal, so equal definitions must get byte-equal specs). The random
trees below therefore draw every float, -0.0 included, and expect the normalized value back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import featurelib as fl
from featurelib import dtypes
from featurelib.expr import BINARY_OPS, Call, Expr, FeatureRef, Literal, Node, When, walk
from featurelib.spec import SPEC_VERSION, from_spec, node_from_spec, node_to_spec

CARRIER = fl.Entity("carrier", {"carrier": fl.String}, description="An airline")
ROUTE = fl.Entity("route", {"origin": fl.String, "flight": fl.Int64})
FLIGHT_COLUMNS = {
    "carrier": fl.String,
    "origin": fl.String,
    "flight": fl.Int64,
    "dest": fl.String,
    "event_timestamp": fl.Timestamp,
    "created": fl.Timestamp,
    "arr_delay": fl.Float64,
    "cancelled": fl.Bool,
}
FLIGHTS = fl.ParquetSource(
    "flights",
    "data/flights",
    created_timestamp_field="created",
    schema=FLIGHT_COLUMNS,
    description="One row per flight",
)
EVENTS_CSV = fl.CsvSource("events", "data/events.csv", timestamp_field="ts")
WEATHER_SQL = fl.DuckDBSource(
    "weather_sql", "SELECT * FROM 'data/weather.parquet' WHERE origin <> 'LGA' -- café"
)
REQUEST = fl.RequestSource("req", {"distance": fl.Float64, "dep_hour": fl.Int64})

PLAIN = fl.FeatureView(
    "flight_facts",
    [CARRIER],
    FLIGHTS,
    {
        "late": fl.col("arr_delay") > 15,
        "dest_lower": fl.col("dest").str.lower(),
        "delay_class": fl.when(fl.col("arr_delay") > 60)
        .then("long")
        .when(fl.col("arr_delay") > 15)
        .then("short")
        .otherwise(None),
        "since_2024": fl.col("event_timestamp") >= datetime(2024, 1, 1),
        "arr_delay": "arr_delay",
    },
    ttl="3h",
    description="Latest flight facts",
    tags={"team": "ops", "tier": "1"},
)
PLAIN_NO_TTL = fl.FeatureView("flight_dest", [ROUTE], FLIGHTS, ["dest"])
STATS = fl.AggregationView(
    "carrier_stats",
    [CARRIER],
    FLIGHTS,
    [
        fl.count().windows("1h", "7d"),
        fl.count("arr_delay").windows("1d"),
        fl.sum(fl.col("arr_delay") > 15).windows("7d", hop="1d"),
        fl.mean("arr_delay").windows("90min", "30d"),
        fl.min("arr_delay").windows("1d", name="best"),
        fl.max(fl.col("arr_delay").fill_null(0)).windows("12h"),
        fl.stddev("arr_delay").windows("13h", hop="13h"),
        fl.last("dest").windows("2w"),
        fl.last_n("dest", 5).windows("1d", hop="10min"),
    ],
    description="Delay statistics",
)
TRIP = fl.OnDemandView(
    "trip",
    [REQUEST, STATS, PLAIN],
    {
        "delay_per_km": fl.col("arr_delay_mean_90min") / fl.col("distance"),
        "late_evening": PLAIN["late"] & (fl.col("dep_hour") >= 18),
        "busy": STATS["count_1h"].fill_null(0) > 10,
    },
    tags={"owner": "ml"},
)
SERVICE = fl.FeatureService(
    "delay_model",
    [
        PLAIN[["late", "arr_delay"]].rename({"arr_delay": "last_delay"}),
        STATS,
        TRIP[["busy"]],
    ],
    description="Features of the delay model",
)
EXPRESSION = (fl.col("x").cast(fl.Float64).clip(0, 1.5) * 2).round(3).fill_null(-1.25)

DEFINITIONS = {
    "entity": CARRIER,
    "entity_two_keys": ROUTE,
    "parquet_source": FLIGHTS,
    "csv_source": EVENTS_CSV,
    "duckdb_source": WEATHER_SQL,
    "request_source": REQUEST,
    "feature_view": PLAIN,
    "feature_view_no_ttl": PLAIN_NO_TTL,
    "aggregation_view": STATS,
    "on_demand_view": TRIP,
    "feature_service": SERVICE,
}


@pytest.mark.parametrize("obj", DEFINITIONS.values(), ids=DEFINITIONS.keys())
def test_round_trip_is_exact(obj: Any) -> None:
    text = fl.dumps(obj)
    back = fl.loads(text)
    assert type(back) is type(obj)
    assert back == obj
    assert hash(back) == hash(obj)
    assert fl.dumps(back) == text  # byte-stable
    assert from_spec(obj.to_spec()) == obj
    if hasattr(obj, "version"):
        assert back.version == obj.version


@pytest.mark.parametrize("obj", DEFINITIONS.values(), ids=DEFINITIONS.keys())
def test_dumps_is_canonical_strict_json(obj: Any) -> None:
    text = fl.dumps(obj)
    raw = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert raw["spec_version"] == SPEC_VERSION
    assert json.dumps(raw, sort_keys=True, separators=(",", ":")) == text


def test_entity_spec_text() -> None:
    assert fl.dumps(CARRIER) == (
        '{"description":"An airline","join_keys":[["carrier","String"]],"kind":"entity",'
        '"name":"carrier","spec_version":1}'
    )


def test_expression_spec() -> None:
    assert (fl.col("x") > 15).to_spec() == {
        "kind": "call",
        "fn": "gt",
        "args": [{"kind": "col", "name": "x"}, {"kind": "lit", "dtype": "Int64", "value": 15}],
        "options": {},
    }
    assert fl.lit(datetime(2024, 1, 2, 3, 4, 5, 6)).to_spec() == {
        "kind": "lit",
        "dtype": "Timestamp",
        "value": "2024-01-02T03:04:05.000006+00:00",
    }


def test_aggregation_view_spec_keeps_hops() -> None:
    windows = {a["name"]: a["windows"] for a in STATS.to_spec()["aggregations"]}  # type: ignore[attr-defined]
    assert windows["count"] == [["1h", "1min"], ["7d", "1h"]]
    assert windows["arr_delay_mean"] == [["90min", "5min"], ["30d", "1d"]]
    assert windows["arr_delay_gt_15_sum"] == [["7d", "1d"]]
    assert windows["dest_last_5"] == [["1d", "10min"]]


def test_expression_round_trip() -> None:
    text = fl.dumps(EXPRESSION)
    back = fl.loads(text)
    assert isinstance(back, Expr)
    assert back.equals(EXPRESSION)
    assert fl.dumps(back) == text


def test_on_demand_view_keeps_feature_refs() -> None:
    back = fl.loads(fl.dumps(TRIP))
    late_evening = dict(back.features)["late_evening"]
    assert late_evening.args[0] == FeatureRef("flight_facts", "late")


# ---------------------------------------------------------------------------------------------
# Random expression trees

NAMES = st.text(min_size=1, max_size=6)
# Naive, UTC and fixed-offset datetimes (any offset within +-23h, seconds included).
OFFSETS: st.SearchStrategy[Any] = (
    st.none()
    | st.just(UTC)
    | st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    )
)
DATETIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=OFFSETS
)
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),  # includes -0.0 and subnormals
    st.booleans(),
    st.text(max_size=8),  # any unicode, including escapes and lone surrogates
    st.none(),
    DATETIMES,
)
LEAVES = st.one_of(
    st.builds(fl.col, NAMES),
    st.builds(lambda v, n: Expr(FeatureRef(v, n)), NAMES, NAMES),
    st.builds(fl.lit, SCALARS),
)
DTYPES = st.sampled_from([fl.Int64, fl.Float64, fl.Bool, fl.String, fl.Timestamp])
BOUND = st.none() | st.integers(-100, 100) | st.floats(-1e9, 1e9)
TIME_ZONES = st.sampled_from([None, "UTC", "America/New_York", "Asia/Kolkata"])


def _clip(e: Expr, a: float | None, b: float | None) -> Expr:
    lower, upper = (a, b) if a is None or b is None or a <= b else (b, a)
    return e.clip(lower, upper)


def _when(branches: list[tuple[Expr, Expr]], otherwise: Expr) -> Expr:
    (c, v), *rest = branches
    chain = fl.when(c).then(v)
    for c, v in rest:
        chain = chain.when(c).then(v)
    return chain.otherwise(otherwise)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    unary = st.sampled_from(
        [
            lambda e: -e,
            lambda e: ~e,
            Expr.abs,
            Expr.sqrt,
            Expr.log,
            Expr.is_null,
            Expr.is_not_null,
            lambda e: e.str.lower(),
            lambda e: e.str.upper(),
            lambda e: e.str.len(),
        ]
    )
    return st.one_of(
        st.builds(
            lambda op, a, b: Expr(Call(op, (a.node, b.node))),
            st.sampled_from(list(BINARY_OPS)),
            children,
            children,
        ),
        st.builds(lambda f, e: f(e), unary, children),
        st.builds(lambda e, v: e.fill_null(v), children, children),
        st.builds(lambda e, t: e.cast(t), children, DTYPES),
        st.builds(_clip, children, BOUND, BOUND),
        st.builds(lambda e, d: e.round(d), children, st.integers(0, 10)),
        st.builds(lambda e, p: e.str.contains(p), children, st.text(max_size=4)),
        st.builds(lambda e, p: e.str.starts_with(p), children, st.text(max_size=4)),
        st.builds(
            lambda e, part, tz: getattr(e.dt, part)(time_zone=tz),
            children,
            st.sampled_from(["hour", "weekday", "day", "month", "year"]),
            TIME_ZONES,
        ),
        st.builds(_when, st.lists(st.tuples(children, children), min_size=1, max_size=3), children),
    )


EXPRESSIONS = st.recursive(LEAVES, _extend, max_leaves=12)


def _literals(node: Node) -> list[Literal]:
    return [n for n in walk(node) if isinstance(n, Literal)]


@settings(max_examples=150, deadline=None)
@given(expr=EXPRESSIONS)
def test_random_expression_trees_round_trip(expr: Expr) -> None:
    node = expr.node
    spec = node_to_spec(node)
    text = json.dumps(spec, sort_keys=True, allow_nan=False)
    back = node_from_spec(json.loads(text))
    assert back == node
    assert hash(back) == hash(node)
    # Same Python types too (1 and 1.0 and True compare equal but are different literals).
    assert [(type(a.value), a.dtype) for a in _literals(back)] == [
        (type(b.value), b.dtype) for b in _literals(node)
    ]
    assert json.dumps(node_to_spec(back), sort_keys=True, allow_nan=False) == text
    assert fl.dumps(fl.loads(fl.dumps(expr))) == fl.dumps(expr)


@settings(max_examples=100, deadline=None)
@given(value=SCALARS)
def test_literals_round_trip_normalized(value: Any) -> None:
    node = fl.lit(value).node
    assert isinstance(node, Literal)
    if isinstance(value, float):
        assert node.value == value
        assert str(node.value) != "-0.0"  # -0.0 is stored as 0.0
    if isinstance(value, datetime):
        assert node.value.tzinfo is UTC  # type: ignore[union-attr]
        expected = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        assert node.value == expected
    back = node_from_spec(json.loads(json.dumps(node_to_spec(node))))
    assert back == node
    assert type(back.value) is type(node.value)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # Hand-written specs are normalized the way fl.lit normalizes values.
        ({"kind": "lit", "dtype": "Float64", "value": 1}, Literal(1.0, dtypes.Float64)),
        ({"kind": "lit", "dtype": "Float64", "value": -0.0}, Literal(0.0, dtypes.Float64)),
        (
            {"kind": "lit", "dtype": "Timestamp", "value": "2024-01-01T12:00:00"},
            Literal(datetime(2024, 1, 1, 12, tzinfo=UTC), dtypes.Timestamp),
        ),
        (
            {"kind": "lit", "dtype": "Timestamp", "value": "2024-01-01T17:00:00+05:00"},
            Literal(datetime(2024, 1, 1, 12, tzinfo=UTC), dtypes.Timestamp),
        ),
        ({"kind": "call", "fn": "is_null", "args": [{"kind": "col", "name": "x"}]}, None),
    ],
)
def test_node_from_spec_normalizes(spec: dict[str, Any], expected: Node | None) -> None:
    node = node_from_spec(spec)
    if expected is not None:
        assert node == expected
        assert type(node.value) is type(expected.value)  # type: ignore[attr-defined]
    again = node_to_spec(node_from_spec(node_to_spec(node)))
    assert again == node_to_spec(node)


# ---------------------------------------------------------------------------------------------
# Errors

COL = {"kind": "col", "name": "x"}


def _text(spec: Any) -> str:
    return json.dumps(spec)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "",
        "[1, 2]",
        "42",
        '"entity"',
        "null",
        '{"spec_version": 1}',
        '{"kind": "entity", "spec_version": 1}',
        '{"kind": "entity", "name": "e", "join_keys": 5}',
        '{"kind": "entity", "name": "e", "join_keys": [["e", "Blob"]]}',
        '{"kind": "entity", "name": "e", "join_keys": [["e", 5]], "spec_version": "1"}',
        '{"kind": "entity", "name": "e", "join_keys": [["e", "String"]], "spec_version": 0}',
        '{"kind": "source", "name": "s", "format": "csv"}',
        '{"kind": "request_source", "name": "r", "schema": {"x": "Int64"}}',
        _text({"kind": "call", "fn": "pow", "args": [COL, COL]}),
        _text({"kind": "call", "fn": "add", "args": [COL]}),
        _text({"kind": "call", "fn": "add", "args": COL}),
        _text({"kind": "call", "fn": "clip", "args": [COL], "options": {"lower": "a"}}),
        _text({"kind": "call", "fn": "round", "args": [COL], "options": {"decimals": [1]}}),
        _text({"kind": "call", "fn": "round", "args": [COL], "options": {"digits": 1}}),
        _text({"kind": "call", "fn": "cast", "args": [COL], "options": {"dtype": "Unknown"}}),
        _text({"kind": "call", "fn": "hour", "args": [COL], "options": {"time_zone": "Nowhere"}}),
        _text({"kind": "lit", "dtype": "Int64", "value": "x"}),
        _text({"kind": "lit", "dtype": "Int64", "value": 1.5}),
        _text({"kind": "lit", "dtype": "Int64", "value": True}),
        _text({"kind": "lit", "dtype": "Bool", "value": 1}),
        _text({"kind": "lit", "dtype": "String", "value": None}),
        _text({"kind": "lit", "dtype": "Unknown", "value": 1}),
        _text({"kind": "lit", "dtype": "Blob", "value": 1}),
        _text({"kind": "lit", "dtype": 5, "value": 1}),
        _text({"kind": "lit", "dtype": "Timestamp", "value": "yesterday"}),
        _text({"kind": "lit", "dtype": "Timestamp", "value": 1700000000}),
        '{"kind": "lit", "dtype": "Float64", "value": NaN}',
        _text({"kind": "lit", "dtype": "Int64"}),
        _text({"kind": "col"}),
        _text({"kind": "col", "name": 5}),
        _text({"kind": "feature", "view": "v"}),
        _text({"kind": "when", "branches": [], "otherwise": COL}),
        _text({"kind": "when", "branches": [[COL]], "otherwise": COL}),
    ],
)
def test_malformed_specs_raise_spec_error(text: str) -> None:
    with pytest.raises(fl.SpecError) as info:
        fl.loads(text)
    assert info.value.hint


def _broken(obj: Any, path: list[Any], value: Any) -> str:
    """The spec text of `obj` with the item at `path` replaced by `value`."""
    raw = json.loads(fl.dumps(obj))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(raw)


@pytest.mark.parametrize(
    ("obj", "path", "value"),
    [
        (PLAIN, ["features"], {"late": COL}),
        (PLAIN, ["features", 0], "late"),
        (PLAIN, ["features", 0, 1], {"kind": "col"}),
        (PLAIN, ["entities"], None),
        (PLAIN, ["source"], {"kind": "nonsense"}),
        (STATS, ["aggregations", 0, "windows"], "1h"),
        (STATS, ["aggregations", 0, "windows"], [["1h", "5min"], ["7d", "1h"]]),
        (STATS, ["aggregations", 0, "arg"], {"kind": "lit", "dtype": "Int64", "value": "1"}),
        (STATS, ["aggregations", 0], None),
        (TRIP, ["inputs", 0], []),
        (SERVICE, ["projections", 0, "features"], [["late"]]),
        (SERVICE, ["projections", 0, "view"], "flight_facts"),
    ],
)
def test_damaged_definition_specs_raise_spec_error(obj: Any, path: list[Any], value: Any) -> None:
    with pytest.raises(fl.SpecError) as info:
        fl.loads(_broken(obj, path, value))
    assert info.value.hint


@pytest.mark.parametrize("kind", ["nonsense", None, 5, "Entity", "aggregation"])
def test_unknown_spec_kind(kind: Any) -> None:
    with pytest.raises(fl.SpecError) as info:
        fl.loads(json.dumps({"kind": kind, "spec_version": 1, "name": "x"}))
    assert "kind" in info.value.what
    assert "entity" in (info.value.hint or "")


def test_unknown_expression_kind() -> None:
    with pytest.raises(fl.SpecError) as info:
        node_from_spec({"kind": "column", "name": "x"})
    assert "col" in (info.value.hint or "")


def test_newer_spec_version() -> None:
    text = fl.dumps(CARRIER).replace('"spec_version":1', f'"spec_version":{SPEC_VERSION + 1}')
    with pytest.raises(fl.SpecError) as info:
        fl.loads(text)
    assert str(SPEC_VERSION + 1) in info.value.what
    assert "upgrade" in (info.value.hint or "")


def test_missing_spec_version_reads_as_current() -> None:
    raw = json.loads(fl.dumps(CARRIER))
    del raw["spec_version"]
    assert fl.loads(json.dumps(raw)) == CARRIER


def test_valid_spec_of_an_invalid_definition_raises_the_definition_error() -> None:
    # Structure is fine, semantics are not: the constructor's own error, with its where/hint.
    text = _broken(PLAIN, ["features", 0, 1], {"kind": "col", "name": "arr_dealy"})
    with pytest.raises(fl.UnknownColumnError) as info:
        fl.loads(text)
    assert info.value.where == "feature view 'flight_facts', feature 'late'"
    assert "arr_delay" in (info.value.hint or "")


def test_when_spec_needs_a_branch() -> None:
    spec = node_to_spec(fl.when(fl.col("a")).then(1).otherwise(2).node)
    assert isinstance(node_from_spec(spec), When)
    spec["branches"] = []
    with pytest.raises(fl.SpecError):
        node_from_spec(spec)
