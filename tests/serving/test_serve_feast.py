"""Feast-compatible feature endpoints of `featurelib serve`: `/get-online-features` (values,
statuses and row order equal featurelib's own online read) and `/push`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from serve_support import NOW, ROWS, SERVICE, ServerProcess

from featurelib.online.api import get_features, open_store
from featurelib.online.testing import RedisProcess
from featurelib.repo import Repo

KEYS = ["carrier", "origin", "dest", "tailnum"]


@pytest.fixture(scope="module")
def http(scoring_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scoring_server.base_url, timeout=30) as client:
        yield client


def reference(root: Path, redis_url: str, rows: list[dict[str, Any]]) -> Any:
    repo = Repo.load(root)
    keys = pl.DataFrame([{k: r[k] for k in KEYS} for r in rows])
    request = {
        "scheduled_departure": pl.Series([r["scheduled_departure"] for r in rows])
        .str.replace("Z$", "+00:00")
        .str.to_datetime(time_zone="UTC", format="%Y-%m-%dT%H:%M:%S%z")
        .to_list(),
        "distance": [r["distance"] for r in rows],
    }
    return get_features(open_store(repo, redis_url), repo, SERVICE, keys, request, at=NOW)


def test_feature_service_matches_the_online_read_in_request_order(
    http: httpx.Client, serving_repo: Path, serving_redis: RedisProcess
) -> None:
    rows = [{**r, "scheduled_departure": "2013-05-31T14:00:00Z"} for r in ROWS]
    for ordered in (rows, rows[::-1]):
        body = {
            "feature_service": SERVICE,
            "entities": {k: [r[k] for r in ordered] for k in KEYS},
            "request_context": {
                "scheduled_departure": [r["scheduled_departure"] for r in ordered],
                "distance": [r["distance"] for r in ordered],
            },
        }
        response = http.post("/get-online-features", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        expected = reference(serving_repo, serving_redis.url, ordered)
        names = answer["metadata"]["feature_names"]
        assert names == [*KEYS, *expected.features.columns]
        results = dict(zip(names, answer["results"], strict=True))
        assert results["carrier"]["values"] == [r["carrier"] for r in ordered]
        assert results["carrier"]["statuses"] == ["PRESENT"] * 3
        for column in expected.features.columns:
            got = results[column]
            assert got["values"] == pytest.approx(expected.features[column].to_list()), column
            assert got["statuses"] == expected.statuses[column], column
        flights = results["carrier_flights_7d"]["values"]
        assert flights[0 if ordered is rows else 2] > 0  # UA flew that week
        assert results["carrier_flights_7d"]["statuses"][ordered.index(rows[2])] == "PRESENT"


def test_feature_list_with_full_names(http: httpx.Client) -> None:
    body = {
        "features": ["carrier_delays:carrier_flights_7d", "weather_at_origin:temp"],
        "entities": {"carrier": ["UA", "ZZ"], "origin": ["EWR", "JFK"]},
        "full_feature_names": True,
    }
    answer = http.post("/get-online-features", json=body).json()
    assert answer["metadata"]["feature_names"] == [
        "carrier",
        "origin",
        "carrier_delays__carrier_flights_7d",
        "weather_at_origin__temp",
    ]
    flights = answer["results"][2]
    assert flights["values"][0] > 0
    assert flights["values"][1] == 0  # unknown carrier: an empty window counts 0
    assert len(flights["event_timestamps"]) == 2


def test_feature_endpoint_errors(http: httpx.Client) -> None:
    unknown = http.post("/get-online-features", json={"feature_service": "x", "entities": {}})
    assert unknown.status_code == 404
    assert "'x'" in unknown.json()["error"]
    bad_ref = http.post(
        "/get-online-features", json={"features": ["temp"], "entities": {"origin": ["EWR"]}}
    )
    assert bad_ref.status_code == 400
    assert "'temp' is not 'view:feature'" in bad_ref.json()["error"]
    missing = http.post(
        "/get-online-features",
        json={"features": ["route_delays:route_flights_7d"], "entities": {"origin": ["EWR"]}},
    )
    assert missing.status_code == 400
    assert "missing input column 'dest'" in missing.json()["error"]
    scalar = http.post(
        "/get-online-features",
        json={"feature_service": "flight_delay", "entities": {"carrier": "UA"}},
    )
    assert scalar.status_code == 400  # "UA" is not read as two rows, "U" and "A"
    assert "must be lists" in scalar.json()["error"]


def test_push_updates_the_online_store(http: httpx.Client) -> None:
    landed = (NOW - timedelta(minutes=30)).isoformat()
    df = {
        "flight_id": [990001, 990002],
        "carrier": ["QQ", "QQ"],
        "tailnum": ["NQQ001", "NQQ002"],
        "origin": ["EWR", "JFK"],
        "dest": ["BOS", "BOS"],
        "distance": [200.0, 187.0],
        "air_time": [40.0, 38.0],
        "dep_delay": [12.0, -3.0],
        "arr_delay": [30.0, -5.0],
        "cancelled": [False, False],
        "scheduled_departure": [landed, landed],
        "event_timestamp": [landed, landed],
        "created_timestamp": [landed, landed],
    }
    response = http.post("/push", json={"push_source_name": "flights", "df": df})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["source"], summary["received"], summary["appended"]) == ("flights", 2, 2)
    assert summary["to"] == "online_and_offline"  # featurelib's default keeps training in step
    body = {
        "features": ["carrier_delays:carrier_flights_1d", "carrier_delays:carrier_late_rate_1d"],
        "entities": {"carrier": ["QQ"]},
    }
    answer = http.post("/get-online-features", json=body).json()
    assert answer["results"][1]["values"] == [2]
    assert answer["results"][2]["values"] == [0.5]
    bad = {**df, "event_timestamp": [None, landed]}
    refused = http.post("/push", json={"push_source_name": "flights", "df": bad})
    assert refused.status_code == 400
    assert "row 0" in refused.json()["error"]
    assert "event timestamp" in refused.json()["error"]
    unknown = http.post("/push", json={"push_source_name": "nope", "df": df})
    assert unknown.status_code == 404
    # to=online applies a row online without logging it: for rows the batch source already
    # holds (aggregates are recomputed from the offline events, so this one adds nothing).
    third = {k: [v[0]] for k, v in df.items()} | {"flight_id": [990003], "tailnum": ["NQQ003"]}
    online_only = http.post(
        "/push", json={"push_source_name": "flights", "df": third, "to": "online"}
    )
    assert (online_only.json()["appended"], online_only.json()["to"]) == (0, "online")
    assert http.post("/get-online-features", json=body).json()["results"][1]["values"] == [2]
